//! `fleet validate`: report every problem in the repo, exit 2 if any is an error.

use std::path::Path;

use crate::cli::style;
use crate::error::{Error, Result};
use crate::repo::{Repo, find_root};

/// Arguments of `fleet validate`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `fleet validate`.
pub fn run(repo_dir: Option<&Path>, _args: &Args, quiet: bool) -> Result<u8> {
    let root = find_root(repo_dir)?;
    let repo = Repo::load(&root);
    let (mut diags, summary) = crate::validate::validate(&repo);
    for w in diags.take_warnings() {
        crate::noteln!("{}", style::diagnostic(&w));
    }
    if diags.has_errors() {
        return Err(Error::Config(diags));
    }
    if !quiet {
        crate::outln!(
            "{} {} nodes, {} roles, {} playbooks, {} templates: no errors",
            style::green("ok:"),
            summary.nodes,
            summary.roles,
            summary.playbooks,
            summary.templates
        );
    }
    Ok(0)
}
