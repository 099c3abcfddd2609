//! `fleet eligible [NODE]`: the model tiers each node can serve.

use std::path::Path;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::eligibility::{Capacity, Compute, evaluate, fit_model};
use crate::error::{Error, Result};

/// Arguments of `fleet eligible`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One node (default: all).
    #[arg(add = crate::cli::candidates::nodes())]
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
        "cores / RAM / GPU memory / disk",
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
        let cpu_from = verdicts
            .iter()
            .find(|v| {
                v.compute == Some(Compute::Cpu)
                    && (cap.unified_memory || cap.vram_gb.is_some_and(|g| g > 0.0))
            })
            .map(|v| v.tier.as_str());
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
        // The models the node lists, judged by the same rule as the routing pools.
        let models: Vec<serde_json::Value> = n
            .models
            .iter()
            .map(|m| {
                let fit = fit_model(&m.value, &cap);
                serde_json::json!({
                    "model": m.value,
                    "tier": fit.need.tier_name(),
                    "serves": fit.serves(),
                    "compute": fit.compute(),
                    "reason": Some(fit.reason()).filter(|r| !r.is_empty()),
                })
            })
            .collect();
        let how = if cap.unified_memory {
            "unified memory".to_string()
        } else if cap.vram_gb.is_some_and(|g| g > 0.0) {
            "GPU".to_string()
        } else {
            "CPU-only".to_string()
        };
        table.add_row([
            n.name.clone(),
            source.to_string(),
            format!(
                "{} / {} / {} / {}",
                cap.cores.map_or("?".into(), |c| c.to_string()),
                show(cap.ram_gb),
                if cap.unified_memory {
                    "unified".to_string()
                } else {
                    show(cap.vram_gb)
                },
                show(cap.disk_gb)
            ),
            match ok.last() {
                None => "none".to_string(),
                Some(top) => {
                    let mut s = format!("{} of {} (up to {top}; {how}", ok.len(), verdicts.len());
                    if let Some(from) = cpu_from {
                        s.push_str(&format!(", CPU-only from {from}"));
                    }
                    s.push(')');
                    s
                }
            },
            next,
        ]);
        out.push(serde_json::json!({ "node": n.name, "hardware_source": source, "capacity": cap, "tiers": verdicts, "models": models }));
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
