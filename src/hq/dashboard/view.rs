//! The dashboard's page, rendered on the server from what HQ knows now: every node's state and
//! why, heartbeat age, resources as bars, models and requests in flight; the live routing
//! table; today's spend. HTML-escaped by the template engine (node names, reasons and models
//! come from the fleet and are never trusted as markup).

use std::sync::OnceLock;

use minijinja::Environment;
use serde::Serialize;

use crate::gateway::Gateway;
use crate::hq::wire::NodeStatus;
use crate::render::routing::RoutingTable;

/// One resource bar.
#[derive(Debug, Serialize)]
struct Bar {
    /// Filled share, 0–100.
    pct: f64,
    /// What it says.
    text: String,
}

fn bar(used: f64, total: f64, text: String) -> Option<Bar> {
    (total > 0.0).then(|| Bar {
        pct: ((used / total) * 100.0).clamp(0.0, 100.0).round(),
        text,
    })
}

#[derive(Debug, Serialize)]
struct NodeRow {
    name: String,
    role: String,
    status: String,
    reasons: Vec<String>,
    age: String,
    cpu: Option<Bar>,
    memory: Option<Bar>,
    disks: Vec<Bar>,
    gpus: Vec<String>,
    models: Vec<String>,
    in_flight: String,
}

#[derive(Debug, Serialize)]
struct RuleRow {
    task: String,
    serves: String,
    pool: Vec<String>,
    fallback: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Page {
    fleet: String,
    generated_at: String,
    online: usize,
    in_flight: u32,
    spend_today: String,
    nodes: Vec<NodeRow>,
    rules: Vec<RuleRow>,
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // `.html` names turn on HTML auto-escaping.
        for (name, text) in [
            ("page.html", include_str!("page.html")),
            ("live.html", include_str!("live.html")),
        ] {
            if let Err(e) = env.add_template(name, text) {
                tracing::error!("dashboard template {name}: {e}");
            }
        }
        env
    })
}

/// What the page shows, gathered now.
pub struct Inputs<'a> {
    /// Fleet name.
    pub fleet: &'a str,
    /// Node statuses.
    pub nodes: &'a [NodeStatus],
    /// Each node's role.
    pub roles: &'a dyn Fn(&str) -> String,
    /// The live routing table.
    pub table: &'a RoutingTable,
    /// The gateway.
    pub gateway: &'a Gateway,
}

fn page(i: &Inputs<'_>) -> Page {
    let nodes: Vec<NodeRow> = i
        .nodes
        .iter()
        .map(|n| {
            let worker = i.table.workers.iter().find(|w| w.name == n.name);
            let (mut cpu, mut memory, mut disks, mut gpus, mut models) =
                (None, None, Vec::new(), Vec::new(), Vec::new());
            if let Some(hb) = &n.last {
                let r = &hb.resources;
                if let (Some(l), Some(c)) = (r.load_1m, r.cores) {
                    cpu = bar(l, c as f64, format!("load {l:.2} on {c} cores"));
                }
                if let (Some(u), Some(t)) = (r.ram_used_gb, r.ram_gb) {
                    memory = bar(u, t, format!("{u:.1} of {t:.1} GB"));
                }
                disks = r
                    .disks
                    .iter()
                    .filter_map(|d| {
                        bar(
                            d.total_gb - d.free_gb,
                            d.total_gb,
                            format!("{} {:.0} GB free", d.mount, d.free_gb),
                        )
                    })
                    .collect();
                gpus = r
                    .gpus
                    .iter()
                    .map(|g| {
                        format!(
                            "{} {} · {:.0} GB",
                            g.vendor,
                            g.name.as_deref().unwrap_or(""),
                            g.vram_gb
                        )
                    })
                    .collect();
                models = hb
                    .services
                    .get("ollama")
                    .map(|s| s.models.clone())
                    .unwrap_or_default();
            }
            let in_flight = match worker {
                Some(w) if w.kind == "ollama" => {
                    format!("{}/{}", i.gateway.inflight.count(&n.name), w.max_concurrent)
                }
                _ => String::new(),
            };
            NodeRow {
                name: n.name.clone(),
                role: (i.roles)(&n.name),
                status: n.status.clone(),
                reasons: n.reasons.clone(),
                age: n.heartbeat_age_secs.map_or_else(
                    || "never".into(),
                    |a| format!("{} ago", crate::hq::status::human_secs(a)),
                ),
                cpu,
                memory,
                disks,
                gpus,
                models,
                in_flight,
            }
        })
        .collect();
    let rules = i
        .table
        .rules
        .iter()
        .map(|r| RuleRow {
            task: r.task.clone(),
            serves: r
                .model
                .clone()
                .or_else(|| r.capability.clone().map(|c| format!("capability {c}")))
                .unwrap_or_default(),
            pool: r.pool.clone(),
            fallback: r.fallback.clone(),
        })
        .collect();
    let in_flight = i.gateway.inflight.snapshot().iter().map(|(_, n)| n).sum();
    let spend = i
        .gateway
        .ledger
        .spent_on(&crate::gateway::ledger::today())
        .unwrap_or(0.0);
    Page {
        fleet: i.fleet.to_string(),
        generated_at: crate::util::rfc3339(crate::util::now_ms()),
        online: nodes.iter().filter(|n| n.status == "online").count(),
        in_flight,
        spend_today: format!("{spend:.4}"),
        nodes,
        rules,
    }
}

/// The whole page.
pub fn full(i: &Inputs<'_>) -> Result<String, minijinja::Error> {
    env()
        .get_template("page.html")?
        .render(minijinja::value::Serde(page(i)))
}

/// The live part (what the page's event stream replaces).
pub fn live(i: &Inputs<'_>) -> Result<String, minijinja::Error> {
    env()
        .get_template("live.html")?
        .render(minijinja::value::Serde(page(i)))
}
