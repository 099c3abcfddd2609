//! `fleet nodes`: the inventory as a table or JSON; `--pending`: the machines that joined and
//! wait for `fleet adopt`, from HQ.

use std::path::Path;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::json;

use crate::error::Result;
use crate::inventory::priority::default_priority;

/// Arguments of `fleet nodes`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The machines that joined (`fleet join`) and wait for `fleet adopt`, from HQ.
    #[arg(long)]
    pub pending: bool,
    /// Add each node's live status from HQ (`online`, `degraded`, `offline`, `draining`);
    /// says so and goes on without it when HQ does not answer.
    #[arg(long, conflicts_with = "pending")]
    pub live: bool,
}

/// Fetches `GET /api/pending` from the inventory's HQ with the client token.
pub fn fetch_pending(
    repo: &crate::repo::Repo,
) -> std::result::Result<Vec<crate::hq::wire::PendingNode>, String> {
    let Some(url) = &repo.inventory.fleet.hq_url else {
        return Err("the inventory sets no `fleet.hq_url`".into());
    };
    let token = crate::hq::client::client_token(&repo.root);
    let ca = crate::hq::client::repo_ca(&repo.root);
    let base = url.value.trim_end_matches('/').to_string();
    crate::hq::client::block_on(async {
        let client =
            crate::hq::client::hq_client(&base, std::time::Duration::from_secs(10), Some(&ca))?;
        let url = format!("{base}/api/pending");
        let resp = crate::hq::client::get(&client, &url, token.as_deref())
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        resp.json::<crate::hq::wire::PendingResponse>()
            .await
            .map(|r| r.pending)
            .map_err(|e| format!("{url}: unexpected answer: {e}"))
    })?
}

/// `fleet nodes --pending`.
fn pending(repo: &crate::repo::Repo, json: bool) -> Result<u8> {
    let list = fetch_pending(repo).map_err(crate::error::Error::Failed)?;
    if json {
        let out = serde_json::to_string_pretty(&json!({ "pending": list })).unwrap_or_default();
        crate::outln!("{out}");
        return Ok(0);
    }
    if list.is_empty() {
        crate::noteln!(
            "no machine waits to be adopted (`fleet join` on a new machine registers it)"
        );
        return Ok(0);
    }
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    t.set_header([
        "name", "ssh", "os/arch", "cpu", "memory", "gpu", "priority", "joined",
    ]);
    for p in &list {
        let f = &p.request.facts;
        let hw = crate::facts::Facts::from(f).overlay(&Default::default());
        let ssh = &p.request.ssh;
        t.add_row([
            p.name.clone(),
            format!("{}@{}:{}", ssh.user, ssh.address, ssh.port),
            format!(
                "{}/{}",
                hw.os.as_deref().unwrap_or("?"),
                hw.arch.as_deref().unwrap_or("?")
            ),
            format!(
                "{} × {}",
                hw.cores.map_or("?".into(), |c| c.to_string()),
                hw.chip.as_deref().unwrap_or("?")
            ),
            fmt_gb(hw.ram_gb),
            hw.gpu
                .as_ref()
                .map(|g| {
                    format!(
                        "{} {}",
                        g.name.clone().unwrap_or_else(|| g.vendor.clone()),
                        fmt_gb(Some(g.vram_gb))
                    )
                })
                .unwrap_or_else(|| "-".into()),
            format!("{} (hw)", default_priority(&hw)),
            p.joined_at.clone(),
        ]);
    }
    crate::outln!("{t}");
    crate::noteln!("adopt one with `fleet adopt NAME --role ROLE`");
    Ok(0)
}

fn fmt_gb(v: Option<f64>) -> String {
    v.map(|g| {
        if g.fract() == 0.0 {
            format!("{g:.0} GB")
        } else {
            format!("{g} GB")
        }
    })
    .unwrap_or_else(|| "?".into())
}

/// Runs `fleet nodes`.
pub fn run(repo_dir: Option<&Path>, args: &Args) -> Result<u8> {
    let repo = crate::cli::load_repo(repo_dir)?;
    if args.pending {
        return pending(&repo, args.json);
    }
    let inv = &repo.inventory;
    let live = if args.live {
        match crate::cli::render::live_status(&repo, std::time::Duration::from_secs(3)) {
            Ok(l) => Some(l),
            Err(why) => {
                crate::noteln!("no live status: {why}");
                None
            }
        }
    } else {
        None
    };
    let status_of = |name: &str| {
        live.as_ref().map(|l| {
            l.get(name)
                .map_or("unknown".to_string(), |n| n.status.clone())
        })
    };
    if args.json {
        let nodes: Vec<_> = inv
            .nodes
            .values()
            .map(|n| {
                let mut j = json!({
                    "name": n.name,
                    "role": n.role.value,
                    "host": n.host,
                    "address": n.address.as_ref().map(|a| &a.value),
                    "hardware": n.hardware,
                    "models": n.models.iter().map(|m| &m.value).collect::<Vec<_>>(),
                    "priority": n.priority.unwrap_or_else(|| default_priority(&n.hardware)),
                    "priority_source": if n.priority.is_some() { "inventory" } else { "hardware" },
                    "max_concurrent": n.max_concurrent,
                    "labels": n.labels,
                    "hq": inv.fleet.hq.as_ref().is_some_and(|h| h.value == n.name),
                });
                if let Some(s) = status_of(&n.name) {
                    j["status"] = s.into();
                }
                j
            })
            .collect();
        let out = serde_json::to_string_pretty(&json!({ "fleet": inv.fleet.name, "nodes": nodes }))
            .unwrap_or_default();
        crate::outln!("{out}");
        return Ok(0);
    }
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    let mut header = vec!["node", "role", "address", "hardware", "models", "priority"];
    if live.is_some() {
        header.push("status");
    }
    t.set_header(header);
    for n in inv.nodes.values() {
        let hw = &n.hardware;
        let mut parts: Vec<String> = Vec::new();
        if let Some(m) = &hw.model {
            parts.push(m.clone());
        }
        if let Some(c) = &hw.chip {
            parts.push(c.clone());
        }
        parts.push(fmt_gb(hw.ram_gb));
        if let Some(g) = &hw.gpu {
            parts.push(format!(
                "{} {}",
                g.name.clone().unwrap_or_else(|| g.vendor.clone()),
                fmt_gb(Some(g.vram_gb))
            ));
        }
        if let (Some(os), Some(arch)) = (&hw.os, &hw.arch) {
            parts.push(format!("{os}/{arch}"));
        }
        let prio = match n.priority {
            Some(p) => p.to_string(),
            None => format!("{} (hw)", default_priority(hw)),
        };
        let role =
            if inv.fleet.hq.as_ref().is_some_and(|h| h.value == n.name) && n.role.value != "hq" {
                format!("{} (hq)", n.role.value)
            } else {
                n.role.value.clone()
            };
        let models = if n.models.is_empty() {
            "-".to_string()
        } else {
            n.models
                .iter()
                .map(|m| m.value.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut row = vec![
            n.name.clone(),
            role,
            match &n.address {
                Some(a) if a.value != n.host => format!("{} (ssh: {})", a.value, n.host),
                _ => n.host.clone(),
            },
            parts.join(", "),
            models,
            prio,
        ];
        if let Some(s) = status_of(&n.name) {
            row.push(s);
        }
        t.add_row(row);
    }
    crate::outln!("{t}");
    Ok(0)
}
