//! `fleet validate`: report every problem in the repo, exit 2 if any is an error.

use std::path::Path;

use crate::cli::style;
use crate::error::{Error, Result};
use crate::repo::{Repo, find_root};
use crate::util::count;

/// Arguments of `fleet validate`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `fleet validate`.
pub fn run(repo_dir: Option<&Path>, _args: &Args, quiet: bool) -> Result<u8> {
    let root = find_root(repo_dir)?;
    // Without an identity the encrypted files are reported (a warning), not fatal.
    crate::repo::encrypted::set_lenient(true);
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
            "{} {}, {}, {}, {}: no errors",
            style::green("ok:"),
            count(summary.nodes as u64, "node", "nodes"),
            count(summary.roles as u64, "role", "roles"),
            count(summary.playbooks as u64, "playbook", "playbooks"),
            count(summary.templates as u64, "template", "templates")
        );
    }
    Ok(0)
}
