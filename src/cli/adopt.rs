//! `fleet adopt NAME --role ROLE`, on the controller: a machine that joined (`fleet join`) and
//! waits in HQ's store becomes a node. It is provisioned the way `fleet provision` brings a new
//! node up — facts over ssh, requirements, its agent token issued, the role run, its services
//! verified, the node written into the inventory (hardware from its facts; its priority follows
//! from that hardware) — and it leaves the pending list once it is in the inventory. A machine
//! ssh cannot reach stays pending.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::provision::{Joined, provision};
use crate::error::{Error, Result};
use crate::hq::store::Store;

/// Arguments of `fleet adopt`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pending machine's name (`fleet nodes --pending`).
    pub name: String,
    /// Its role.
    #[arg(long, add = crate::cli::candidates::roles())]
    pub role: String,
    /// Show unified diffs of files.
    #[arg(long)]
    pub diff: bool,
    /// JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
    /// Extra variables.
    #[arg(short = 'e', long = "extra-vars", value_name = "KEY=VALUE")]
    pub extra: Vec<String>,
    /// An ssh config file (`-F`).
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// How long services may take to answer after the run.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub verify_timeout: Duration,
    /// HQ's state file, where pending machines wait and agent tokens are issued (default:
    /// `.fleet/hq.sqlite` in the repo, as on the HQ machine).
    #[arg(long, value_name = "PATH")]
    pub hq_db: Option<PathBuf>,
    /// The sudo password (as for `fleet provision`).
    #[command(flatten)]
    pub become_pass: crate::cli::become_pass::AskBecomePass,
}

/// Runs `fleet adopt`.
pub fn run(repo_dir: Option<&Path>, args: &Args, verbose: bool) -> Result<u8> {
    let repo = crate::cli::load_repo(repo_dir)?;
    let name = &args.name;
    if repo.inventory.nodes.contains_key(name) {
        return Err(Error::Usage(format!(
            "`{name}` is already in the inventory; `fleet provision {name}` provisions it"
        )));
    }
    if !repo.roles.contains_key(&args.role) {
        let help =
            crate::validate::suggest(&args.role, repo.roles.keys().map(String::as_str), "roles");
        return Err(Error::Usage(format!(
            "unknown role `{}`\n  help: {help}",
            args.role
        )));
    }
    let db = args
        .hq_db
        .clone()
        .unwrap_or_else(|| crate::cli::serve::default_db(&repo.root));
    if !db.is_file() {
        return Err(Error::Usage(format!(
            "no HQ store at `{}`: run `fleet adopt` where HQ keeps its state (the HQ machine's repo), or pass --hq-db",
            db.display()
        )));
    }
    let store = Store::open(&db).map_err(Error::Failed)?;
    let pending = store.pending().map_err(Error::Failed)?;
    let Some(p) = pending.iter().find(|p| &p.name == name) else {
        let help = crate::validate::suggest(
            name,
            pending.iter().map(|p| p.name.as_str()),
            "pending machines",
        );
        return Err(Error::Usage(format!(
            "no pending machine `{name}`\n  help: {help}; `fleet nodes --pending` lists them"
        )));
    };
    let facts = crate::facts::Facts::from(&p.request.facts);
    let hardware = facts.overlay(&Default::default());
    crate::noteln!(
        "adopting `{name}` ({}@{}:{}) as {}; its priority from its hardware: {}",
        p.request.ssh.user,
        p.request.ssh.address,
        p.request.ssh.port,
        args.role,
        crate::inventory::priority::default_priority(&hardware)
    );
    let joined = Joined {
        ssh_user: Some(p.request.ssh.user.clone()),
        ssh_port: Some(p.request.ssh.port).filter(|port| *port != 22),
        hardware: crate::spec::inventory::Hardware {
            disk_gb: None,
            ..hardware
        },
    };
    let pargs = crate::cli::provision::Args {
        node: name.clone(),
        role: Some(args.role.clone()),
        host: Some(p.request.ssh.address.clone()),
        check: false,
        diff: args.diff,
        json: args.json,
        extra: args.extra.clone(),
        ssh_config: args.ssh_config.clone(),
        no_render: false,
        verify_timeout: args.verify_timeout,
        hq_db: Some(db.clone()),
        become_pass: args.become_pass,
    };
    let result = provision(repo_dir, &pargs, verbose, Some(&joined));
    // Once the node is in the inventory it is no longer pending, even when its services did
    // not answer yet (`fleet provision NAME` goes on from there); otherwise it stays pending.
    let adopted = crate::repo::Repo::load(&repo.root)
        .inventory
        .nodes
        .contains_key(name);
    if adopted {
        store.remove_pending(name).map_err(Error::Failed)?;
        crate::noteln!("`{name}` is adopted: no longer pending");
    } else {
        crate::noteln!("`{name}` stays pending (`fleet adopt {name} --role ROLE` tries again)");
    }
    result
}
