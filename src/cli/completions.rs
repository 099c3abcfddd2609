//! `fleet completions SHELL`: the shell's completion script. It registers fleet itself as the
//! completer (clap_complete's dynamic completion), so node names, groups, roles, playbooks
//! and task types complete from the repo at hand, not from a list frozen at install time.

use crate::error::{Error, Result};

/// Arguments of `fleet completions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Prints the completion script (written whole to a buffer first: a closed pipe ends the
/// command quietly instead of failing half-way).
pub fn run(args: &Args) -> Result<u8> {
    use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh};
    let shell: &dyn EnvCompleter = match args.shell {
        clap_complete::Shell::Bash => &Bash,
        clap_complete::Shell::Zsh => &Zsh,
        clap_complete::Shell::Fish => &Fish,
        clap_complete::Shell::Elvish => &Elvish,
        clap_complete::Shell::PowerShell => &Powershell,
        other => {
            return Err(Error::Usage(format!(
                "no completions for {other}: bash, zsh, fish, elvish or powershell"
            )));
        }
    };
    let mut buf = Vec::new();
    shell
        .write_registration("COMPLETE", "fleet", "fleet", "fleet", &mut buf)
        .map_err(|e| Error::Failed(format!("cannot write the completion script: {e}")))?;
    crate::out!("{}", String::from_utf8_lossy(&buf));
    Ok(0)
}
