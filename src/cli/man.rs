//! `fleet man [--out DIR]`: the man pages, generated from the command definitions
//! (clap_mangen): `fleet.1` and one page per command (`fleet-apply.1`, …).

use std::path::PathBuf;

use clap::CommandFactory;

use crate::error::{Error, Result};

/// Arguments of `fleet man`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write `fleet.1` and `fleet-COMMAND.1` into this directory (default: `fleet.1` on stdout).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

fn render(cmd: &clap::Command) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .map_err(|e| Error::Failed(format!("cannot render the man page: {e}")))?;
    Ok(buf)
}

/// Prints or writes the man pages.
pub fn run(args: &Args) -> Result<u8> {
    let mut cmd = crate::cli::Cli::command();
    cmd.build();
    let Some(dir) = &args.out else {
        let page = render(&cmd)?;
        crate::out!("{}", String::from_utf8_lossy(&page));
        return Ok(0);
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let mut written = 0u64;
    crate::util::write_atomic_mode(&dir.join("fleet.1"), &render(&cmd)?, 0o644)?;
    written += 1;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("fleet-{}", sub.get_name());
        let page = render(&sub.clone().name(name.clone()))?;
        crate::util::write_atomic_mode(&dir.join(format!("{name}.1")), &page, 0o644)?;
        written += 1;
    }
    crate::noteln!(
        "wrote {} in {}",
        crate::util::count(written, "man page", "man pages"),
        dir.display()
    );
    Ok(0)
}
