//! `fleet eligible [NODE]`: the model tiers each node can serve.

use std::path::Path;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::error::{Error, Result};
use crate::tiers::{Capacity, evaluate};

/// Arguments of `fleet eligible`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One node (default: all).
    pub node: Option<String>,
    /// JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `fleet eligible`.
pub fn run(repo_dir: Option<&Path>, args: &Args) -> Result<u8> {
    let repo = crate::cli::load_repo(repo_dir)?;
    let inv = &repo.inventory;
    let nodes: Vec<_> = match &args.node {
        Some(n) => match inv.nodes.get(n) {
            Some(node) => vec![node],
            None => {
                let help =
                    crate::validate::suggest(n, inv.nodes.keys().map(String::as_str), "nodes");
                return Err(Error::Usage(format!(
                    "no node `{n}` in the inventory\n  help: {help}"
                )));
            }
        },
        None => inv.nodes.values().collect(),
    };
    let mut out = Vec::new();
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header([
        "node",
        "source",
        "cores / RAM / VRAM / disk",
        "eligible tiers",
        "next tier needs",
    ]);
    for n in nodes {
        let (hw, source) = crate::facts::effective_hardware(&repo.root, n);
        let cap = Capacity::of(&hw);
        let verdicts = evaluate(&cap);
        let ok: Vec<&str> = verdicts
            .iter()
            .filter(|v| v.eligible)
            .map(|v| v.tier.as_str())
            .collect();
        let next = verdicts
            .iter()
            .find(|v| !v.eligible)
            .map(|v| format!("{}: {}", v.tier, v.missing.join("; ")))
            .unwrap_or_else(|| "-".into());
        let show = |v: Option<f64>| {
            v.map_or("?".to_string(), |x| {
                if x.fract() == 0.0 {
                    format!("{x:.0}")
                } else {
                    format!("{x:.1}")
                }
            })
        };
        table.add_row([
            n.name.clone(),
            source.to_string(),
            format!(
                "{} / {} / {} / {}",
                cap.cores.map_or("?".into(), |c| c.to_string()),
                show(cap.ram_gb),
                show(cap.vram_gb),
                show(cap.disk_gb)
            ),
            match ok.last() {
                None => "none".to_string(),
                Some(top) => format!("{} of {} (up to {top})", ok.len(), verdicts.len()),
            },
            next,
        ]);
        out.push(serde_json::json!({ "node": n.name, "hardware_source": source, "capacity": cap, "tiers": verdicts }));
    }
    if args.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "nodes": out })).unwrap_or_default()
        );
    } else {
        crate::outln!("{table}");
        crate::outln!(
            "unknown values (`?`) are not checked; declare them under the node's `hardware:`"
        );
    }
    Ok(0)
}
