//! `fleet completions SHELL`: shell completion scripts, generated from the command definitions.

use clap::CommandFactory;

use crate::error::Result;

/// Arguments of `fleet completions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Prints the completion script.
pub fn run(args: &Args) -> Result<u8> {
    let mut cmd = crate::cli::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "fleet", &mut std::io::stdout());
    Ok(0)
}
