//! `fleet token issue|revoke NODE`: per-node agent tokens. The token is shown once (or
//! written to a 0600 file); HQ's store keeps only its hash.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::hq::store::Store;
use crate::hq::tokens;

/// Arguments of `fleet token`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// Token actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Create (or replace) a node's token.
    Issue {
        /// The node.
        node: String,
        /// Write the token to this file (mode 0600) instead of printing it.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// HQ's state file (default: `.fleet/hq.sqlite` in the repo).
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
    /// Revoke a node's token; its heartbeats are refused from then on.
    Revoke {
        /// The node.
        node: String,
        /// HQ's state file.
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
}

/// Writes a secret file readable by its owner only, atomically.
pub fn write_secret(path: &Path, contents: &[u8]) -> Result<()> {
    crate::util::write_atomic(path, contents)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io("set the mode of", path, e))?;
    }
    Ok(())
}

/// Runs `fleet token`.
pub fn run(repo_dir: Option<&Path>, args: &Args) -> Result<u8> {
    let repo = crate::cli::load_repo(repo_dir)?;
    let root = repo.root.clone();
    let known = |node: &str| -> Result<()> {
        if repo.inventory.nodes.contains_key(node) {
            return Ok(());
        }
        let help = crate::validate::suggest(
            node,
            repo.inventory.nodes.keys().map(String::as_str),
            "nodes",
        );
        Err(Error::Usage(format!(
            "no node `{node}` in the inventory\n  help: {help}"
        )))
    };
    let open = |db: &Option<PathBuf>| {
        Store::open(
            &db.clone()
                .unwrap_or_else(|| crate::cli::serve::default_db(&root)),
        )
        .map_err(Error::Failed)
    };
    match &args.action {
        Action::Issue { node, out, db } => {
            known(node)?;
            let token = tokens::generate().map_err(Error::Failed)?;
            let store = open(db)?;
            if let Some(path) = out {
                write_secret(path, format!("{token}\n").as_bytes())?;
            }
            store
                .set_token(node, &tokens::hash(&token))
                .map_err(Error::Failed)?;
            match out {
                Some(path) => crate::noteln!(
                    "token for `{node}` written to {} (mode 0600); HQ keeps only its hash",
                    path.display()
                ),
                None => {
                    crate::outln!("{token}");
                    crate::noteln!("token for `{node}`: shown once; HQ keeps only its hash");
                }
            }
            Ok(0)
        }
        Action::Revoke { node, db } => {
            known(node)?;
            if open(db)?.revoke_token(node).map_err(Error::Failed)? {
                crate::noteln!("token of `{node}` revoked");
                Ok(0)
            } else {
                Err(Error::Failed(format!("`{node}` has no active token")))
            }
        }
    }
}
