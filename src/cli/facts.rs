//! `fleet facts NODE…`: gather facts over SSH (one round trip per host) and cache them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// Arguments of `fleet facts`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Nodes or patterns (default: all).
    #[arg(add = crate::cli::candidates::patterns())]
    pub nodes: Vec<String>,
    /// JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// An ssh config file (`-F`).
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
}

/// Runs `fleet facts`.
pub fn run(repo_dir: Option<&Path>, args: &Args) -> Result<u8> {
    let repo = crate::cli::load_repo(repo_dir)?;
    let roles: Vec<&str> = repo.roles.keys().map(String::as_str).collect();
    let pattern = if args.nodes.is_empty() {
        "all".to_string()
    } else {
        args.nodes.join(",")
    };
    let nodes = crate::inventory::select::select(&repo.inventory, &roles, &pattern)
        .map_err(Error::Usage)?;
    let opts = crate::engine::RunOptions {
        ssh_config: args.ssh_config.clone(),
        ..Default::default()
    };
    let shared = Arc::new(crate::engine::Shared {
        library: crate::template::Library::new(&repo.templates),
        repo,
        opts,
        nodes: Default::default(),
        steps: Default::default(),
    });
    let rt = crate::cli::runtime()?;
    let results = rt.block_on(async {
        let mut joins = Vec::new();
        for n in nodes {
            let shared = shared.clone();
            joins.push(tokio::spawn(async move {
                let node = &shared.repo.inventory.nodes[&n];
                let target = crate::engine::host::ssh_target(&shared, node);
                let r = crate::facts::probe::gather_over_ssh(&target).await;
                (n, r)
            }));
        }
        let mut out = Vec::new();
        for j in joins {
            if let Ok(r) = j.await {
                out.push(r);
            }
        }
        out
    });
    let mut failed = Vec::new();
    let mut all = serde_json::Map::new();
    for (n, r) in results {
        match r {
            Ok(f) => {
                crate::facts::store_cached(&shared.repo.root, &n, &f)?;
                // A custom facts file that is not JSON: said; the other facts stand.
                for problem in f.local_errors.values() {
                    crate::noteln!("warning: {n}: custom facts: {problem}");
                }
                if !args.json {
                    let hw = f.overlay(&Default::default());
                    crate::outln!(
                        "{n}: {} {} ({}), {}, {} GB RAM, {} GB free, init {}, packages {}{}",
                        f.os.clone().unwrap_or_default(),
                        f.os_version.clone().unwrap_or_default(),
                        f.arch.clone().unwrap_or_default(),
                        f.cores
                            .map_or("? cores".into(), |c| crate::util::count(c, "core", "cores")),
                        f.ram_gb.map_or("?".into(), |c| c.to_string()),
                        f.root_free_gb().map_or("?".into(), |c| c.to_string()),
                        f.init.clone().unwrap_or_default(),
                        f.package_manager.clone().unwrap_or_else(|| "none".into()),
                        hw.gpu
                            .map(|g| format!(
                                ", GPU {} {} GB",
                                g.name.unwrap_or(g.vendor),
                                g.vram_gb
                            ))
                            .unwrap_or_default()
                    );
                }
                all.insert(n, serde_json::to_value(&f).unwrap_or_default());
            }
            Err(e) => {
                crate::errln!("{}: {n}: {e}", crate::cli::style::red("unreachable"));
                failed.push(n);
            }
        }
    }
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
    }
    if failed.is_empty() {
        Ok(0)
    } else {
        Err(Error::Failed(format!(
            "{} unreachable: {}",
            crate::util::count(failed.len() as u64, "host", "hosts"),
            failed.join(", ")
        )))
    }
}
