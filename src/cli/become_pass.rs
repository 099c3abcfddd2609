//! `--ask-become-pass` / `-K`: the sudo password for `become`, asked once per run. On a
//! terminal it is prompted for without echo; otherwise it is the first line of standard
//! input (`pass show sudo | fleet apply -K …`): never an argument or an environment
//! variable, which other users and child processes can read.

use std::io::{BufRead, IsTerminal};

use crate::error::{Error, Result};
use crate::secret::Secret;

/// The flag, shared by `apply`, `provision`, `run` and `sh`.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct AskBecomePass {
    /// Ask for the sudo password once (no echo; the first line of stdin when it is not a
    /// terminal) and give it to `sudo -S` for tasks with `become`.
    #[arg(short = 'K', long = "ask-become-pass")]
    pub ask_become_pass: bool,
}

impl AskBecomePass {
    /// The password, when asked for.
    pub fn read(&self) -> Result<Option<Secret<String>>> {
        if !self.ask_become_pass {
            return Ok(None);
        }
        let pw = if std::io::stdin().is_terminal() {
            rpassword::prompt_password("BECOME password: ")
                .map_err(|e| Error::Usage(format!("cannot read the become password: {e}")))?
        } else {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| Error::Usage(format!("cannot read the become password: {e}")))?;
            line.trim_end_matches(['\n', '\r']).to_string()
        };
        if pw.is_empty() {
            return Err(Error::Usage(
                "--ask-become-pass: no password was given".into(),
            ));
        }
        crate::secret::remember(&pw);
        Ok(Some(Secret::new(pw)))
    }
}
