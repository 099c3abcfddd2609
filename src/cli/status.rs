//! `fleet status [NODE]`: each node as HQ and its gateway see it now — state and why, heartbeat
//! age, resources, models, requests in flight, breaker, and recent upstream errors.

use crate::cli::hq_api::Hq;
use crate::error::{Error, Result};
use crate::gateway::api::{GatewayView, WorkerView};
use crate::hq::wire::{NodeStatus, NodesResponse};

/// Arguments of `fleet status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One node (default: all).
    #[arg(value_name = "NODE", add = crate::cli::candidates::nodes())]
    pub node: Option<String>,
    /// JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// HQ's URL (default: the inventory's `fleet.hq_url`).
    #[arg(long, value_name = "URL")]
    pub hq: Option<String>,
}

fn gb(v: Option<f64>) -> String {
    v.map_or_else(|| "?".into(), |g| format!("{g:.1}"))
}

fn bar(used: f64, total: f64) -> String {
    if total <= 0.0 {
        return String::new();
    }
    let filled = ((used / total).clamp(0.0, 1.0) * 10.0).round() as usize;
    format!(
        "[{}{}] {:.0}%",
        "#".repeat(filled),
        ".".repeat(10 - filled),
        used / total * 100.0
    )
}

fn show(n: &NodeStatus, w: Option<&WorkerView>) {
    let age = n.heartbeat_age_secs.map_or_else(
        || "never".into(),
        |a| format!("{} ago", crate::hq::status::human_secs(a)),
    );
    crate::outln!("{} — {} (heartbeat {age})", n.name, n.status);
    for r in &n.reasons {
        crate::outln!("  why: {r}");
    }
    if let Some(hb) = &n.last {
        let r = &hb.resources;
        crate::outln!(
            "  cpu: {} cores, load {}",
            r.cores.map_or_else(|| "?".into(), |c| c.to_string()),
            r.load_1m.map_or_else(|| "?".into(), |l| format!("{l:.2}"))
        );
        crate::outln!(
            "  memory: {} / {} GB {}",
            gb(r.ram_used_gb),
            gb(r.ram_gb),
            bar(r.ram_used_gb.unwrap_or(0.0), r.ram_gb.unwrap_or(0.0))
        );
        for d in &r.disks {
            crate::outln!(
                "  disk {}: {} GB free of {} GB",
                d.mount,
                gb(Some(d.free_gb)),
                gb(Some(d.total_gb))
            );
        }
        for g in &r.gpus {
            crate::outln!(
                "  gpu: {} {} ({} GB)",
                g.vendor,
                g.name.as_deref().unwrap_or(""),
                g.vram_gb
            );
        }
        let models: Vec<&str> = hb
            .services
            .get("ollama")
            .map(|s| s.models.iter().map(String::as_str).collect())
            .unwrap_or_default();
        if !models.is_empty() {
            crate::outln!("  models: {}", models.join(", "));
        }
    }
    if let Some(w) = w {
        let max = if w.max_concurrent == 0 {
            "∞".to_string()
        } else {
            w.max_concurrent.to_string()
        };
        crate::outln!(
            "  in flight: {}/{max}; breaker {}",
            w.in_flight,
            w.breaker.state
        );
        for e in &w.recent_errors {
            crate::outln!("  error at {}: {}", e.at, e.error);
        }
    }
}

/// Runs `fleet status`.
pub fn run(repo_dir: Option<&std::path::Path>, args: &Args) -> Result<u8> {
    let repo = crate::cli::load_repo(repo_dir)?;
    let hq = Hq::for_repo(
        &repo,
        args.hq.as_deref(),
        Some(std::time::Duration::from_secs(10)),
    )?;
    let (nodes, gw) = crate::hq::client::block_on(async {
        let nodes = hq.get_json::<NodesResponse>("/api/nodes").await?;
        let gw = hq.get_json::<GatewayView>("/api/gateway").await?;
        Ok::<_, Error>((nodes, gw))
    })
    .map_err(Error::Failed)??;
    let selected: Vec<&NodeStatus> = nodes
        .nodes
        .iter()
        .filter(|n| args.node.as_ref().is_none_or(|w| &n.name == w))
        .collect();
    if let Some(want) = &args.node
        && selected.is_empty()
    {
        return Err(Error::Usage(format!("HQ knows no node `{want}`")));
    }
    let worker = |name: &str| gw.workers.iter().find(|w| w.name == name);
    if args.json {
        let list: Vec<serde_json::Value> = selected
            .iter()
            .map(|n| serde_json::json!({ "node": n, "gateway": worker(&n.name) }))
            .collect();
        let clouds: Vec<&WorkerView> = gw.workers.iter().filter(|w| w.status == "cloud").collect();
        let out = serde_json::json!({
            "nodes": list,
            "clouds": if args.node.is_none() { serde_json::to_value(clouds).unwrap_or_default() } else { serde_json::Value::Null },
            "spend_today_usd": gw.spend_today_usd,
        });
        crate::outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        for n in &selected {
            show(n, worker(&n.name));
        }
        if args.node.is_none() {
            for c in gw.workers.iter().filter(|w| w.status == "cloud") {
                crate::outln!(
                    "{} — in flight {}; breaker {}",
                    c.name,
                    c.in_flight,
                    c.breaker.state
                );
                for e in &c.recent_errors {
                    crate::outln!("  error at {}: {}", e.at, e.error);
                }
            }
            crate::outln!("spent today: ${:.4}", gw.spend_today_usd);
        }
    }
    // Exit 1 when a selected node is not online, like `fleet check` (a draining node is out
    // on purpose: not a failure).
    Ok(u8::from(selected.iter().any(|n| {
        n.status != "online" && n.status != crate::hq::drain::DRAINING
    })))
}
