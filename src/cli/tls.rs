//! `fleet tls init|issue-hq`: the fleet's own CA and HQ's certificate. The CA certificate
//! (`tls/ca.pem`) is committed and pinned by agents and CLI commands; its key
//! (`.fleet/tls/ca.key`, 0600, git-ignored) never leaves the controller.

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::hq::tls::{self, Issued};

/// Arguments of `fleet tls`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// TLS actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Create the fleet CA (unless the repo has one) and issue HQ's certificate.
    Init(IssueArgs),
    /// Issue HQ's certificate again when it is missing, due for renewal, or no longer covers
    /// HQ's names (`--force`: always).
    IssueHq(IssueArgs),
}

/// Options of issuing HQ's certificate.
#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    /// Validity of HQ's certificate, in days.
    #[arg(long, default_value_t = tls::HQ_DAYS, value_parser = clap::value_parser!(u32).range(2..=825))]
    pub days: u32,
    /// Re-issue when the certificate expires within this many days.
    #[arg(long, default_value_t = tls::RENEW_WITHIN_DAYS)]
    pub renew_within: u32,
    /// Issue a new certificate even when the current one is fresh.
    #[arg(long)]
    pub force: bool,
}

/// Makes sure `.fleet/` (where the CA key lives) is git-ignored.
fn ignore_state(root: &Path) -> Result<()> {
    let path = root.join(".gitignore");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let ignored = text
        .lines()
        .map(str::trim)
        .any(|l| matches!(l, ".fleet" | ".fleet/" | "/.fleet" | "/.fleet/"));
    if !ignored {
        let mut t = text;
        if !t.is_empty() && !t.ends_with('\n') {
            t.push('\n');
        }
        t.push_str(
            "# fleet's local state: the CA key, HQ's key, tokens, facts, HQ database\n.fleet/\n",
        );
        crate::util::write_atomic(&path, t.as_bytes())?;
        crate::noteln!("added `.fleet/` to {}", path.display());
    }
    Ok(())
}

/// Creates the CA of the repo at `root` when missing (`.fleet/` git-ignored first) and issues
/// HQ's certificate for the inventory's names when it is missing or due; true when it made the
/// CA. Shared with `fleet init`.
pub fn init(root: &Path, repo: &crate::repo::Repo, a: &IssueArgs) -> Result<bool> {
    ignore_state(root)?;
    let name = repo
        .inventory
        .fleet
        .name
        .clone()
        .unwrap_or_else(|| "fleet".into());
    let made = tls::init_ca(root, &name)?;
    if made {
        crate::noteln!(
            "created the fleet CA: {} (commit it: agents and CLI commands trust only it); its key {} stays on this machine (0600, git-ignored)",
            tls::CA_CERT,
            tls::CA_KEY
        );
    }
    issue_hq(root, repo, a)?;
    Ok(made)
}

fn issue_hq(root: &Path, repo: &crate::repo::Repo, a: &IssueArgs) -> Result<()> {
    let names = tls::hq_names(repo);
    let within = Duration::from_secs(u64::from(a.renew_within.min(a.days - 1)) * 86_400);
    let done = if a.force {
        // Issued first: a failure leaves the current certificate in place.
        let (cert, key) = tls::issue(root, &names, a.days)?;
        tls::save_hq(root, &cert, &key)?;
        Issued::Renewed("--force".into())
    } else {
        tls::ensure_hq(root, &names, a.days, within)?
    };
    match done {
        Issued::Fresh => crate::noteln!(
            "HQ's certificate {} is fresh (more than {} days left); nothing to do",
            tls::HQ_CERT,
            a.renew_within
        ),
        Issued::Renewed(why) => crate::noteln!(
            "issued HQ's certificate {} for {}, valid {} days ({why}); apply the hq role to place it on HQ",
            tls::HQ_CERT,
            names.join(", "),
            a.days
        ),
    }
    Ok(())
}

/// Runs `fleet tls`.
pub fn run(repo_dir: Option<&Path>, args: &Args) -> Result<u8> {
    let repo = crate::cli::load_repo(repo_dir)?;
    let root = repo.root.clone();
    match &args.action {
        Action::Init(a) => {
            init(&root, &repo, a)?;
        }
        Action::IssueHq(a) => issue_hq(&root, &repo, a)?,
    }
    Ok(0)
}
