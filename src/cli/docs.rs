//! `fleet docs modules`: prints `docs/modules.md` from the module registry.

use crate::error::Result;

/// Which reference to print.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `modules`.
    #[arg(value_parser = ["modules"])]
    pub what: String,
}

/// Prints the generated reference.
pub fn run(_args: &Args) -> Result<u8> {
    crate::out!("{}", crate::modules::markdown());
    Ok(0)
}
