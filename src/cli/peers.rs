//! `fleet peers`: the workers taking work now — online nodes with their models and how many
//! requests each has in flight of how many it takes — and the cloud providers after them.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::cli::hq_api::Hq;
use crate::error::Result;
use crate::gateway::api::GatewayView;

/// Arguments of `fleet peers`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Every worker, also those offline or degraded.
    #[arg(long)]
    pub all: bool,
    /// HQ's URL (default: the inventory's `fleet.hq_url`).
    #[arg(long, value_name = "URL")]
    pub hq: Option<String>,
}

/// Runs `fleet peers`.
pub fn run(repo_dir: Option<&std::path::Path>, args: &Args) -> Result<u8> {
    let repo = crate::cli::load_repo(repo_dir)?;
    let hq = Hq::for_repo(
        &repo,
        args.hq.as_deref(),
        Some(std::time::Duration::from_secs(10)),
    )?;
    let view: GatewayView = crate::hq::client::block_on(hq.get_json("/api/gateway"))
        .map_err(crate::error::Error::Failed)??;
    let workers: Vec<_> = view
        .workers
        .iter()
        .filter(|w| args.all || w.status == "online" || w.status == "cloud")
        .collect();
    if args.json {
        let out = serde_json::json!({ "peers": workers });
        crate::outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(0);
    }
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    t.set_header([
        "worker",
        "state",
        "models",
        "in flight",
        "priority",
        "breaker",
    ]);
    for w in &workers {
        let max = if w.max_concurrent == 0 {
            "∞".to_string()
        } else {
            w.max_concurrent.to_string()
        };
        t.add_row([
            w.name.clone(),
            w.status.clone(),
            w.models.join(", "),
            format!("{}/{max}", w.in_flight),
            if w.status == "cloud" {
                "last".into()
            } else {
                w.priority.to_string()
            },
            w.breaker.state.clone(),
        ]);
    }
    crate::outln!("{t}");
    let online = workers.iter().filter(|w| w.status == "online").count();
    crate::noteln!(
        "{} taking work; spent today: ${:.4}",
        crate::util::count(online as u64, "node", "nodes"),
        view.spend_today_usd
    );
    Ok(0)
}
