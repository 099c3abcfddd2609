//! `fleet spend`: what the cloud fallback cost, today and this month (UTC days), by provider,
//! model and client, from HQ's ledger.

use std::collections::BTreeMap;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::cli::hq_api::Hq;
use crate::error::{Error, Result};
use crate::gateway::api::SpendView;
use crate::gateway::ledger::Row;

/// Arguments of `fleet spend`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON on stdout instead of tables.
    #[arg(long)]
    pub json: bool,
    /// First day (`YYYY-MM-DD`, UTC; default: the first of this month).
    #[arg(long, value_name = "DAY")]
    pub from: Option<String>,
    /// Last day (default: today).
    #[arg(long, value_name = "DAY")]
    pub to: Option<String>,
    /// HQ's URL (default: the inventory's `fleet.hq_url`).
    #[arg(long, value_name = "URL")]
    pub hq: Option<String>,
}

/// Totals of some rows.
#[derive(Debug, Default, Clone, serde::Serialize)]
struct Total {
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    usd: f64,
}

impl Total {
    fn add(&mut self, r: &Row) {
        self.requests += r.requests;
        self.input_tokens += r.input_tokens;
        self.output_tokens += r.output_tokens;
        self.usd += r.usd;
    }
}

fn by<'a>(rows: &[&'a Row], key: impl Fn(&'a Row) -> String) -> BTreeMap<String, Total> {
    let mut m: BTreeMap<String, Total> = BTreeMap::new();
    for r in rows {
        m.entry(key(r)).or_default().add(r);
    }
    m
}

fn total(rows: &[&Row]) -> Total {
    let mut t = Total::default();
    rows.iter().for_each(|r| t.add(r));
    t
}

fn is_day(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// Runs `fleet spend`.
pub fn run(repo_dir: Option<&std::path::Path>, args: &Args) -> Result<u8> {
    for d in [&args.from, &args.to].into_iter().flatten() {
        if !is_day(d) {
            return Err(Error::Usage(format!("`{d}` is not a day like 2026-12-01")));
        }
    }
    let repo = crate::cli::load_repo(repo_dir)?;
    let hq = Hq::for_repo(
        &repo,
        args.hq.as_deref(),
        Some(std::time::Duration::from_secs(10)),
    )?;
    let mut path = "/api/spend?".to_string();
    if let Some(f) = &args.from {
        path.push_str(&format!("from={f}&"));
    }
    if let Some(t) = &args.to {
        path.push_str(&format!("to={t}"));
    }
    let view: SpendView =
        crate::hq::client::block_on(hq.get_json(&path)).map_err(Error::Failed)??;
    let all: Vec<&Row> = view.rows.iter().collect();
    let today: Vec<&Row> = all
        .iter()
        .copied()
        .filter(|r| r.day == view.today)
        .collect();
    let periods = [("today", today), ("period", all)];
    if args.json {
        let mut out = serde_json::json!({ "today": view.today, "from": view.from, "to": view.to });
        for (name, rows) in &periods {
            out[*name] = serde_json::json!({
                "total": total(rows),
                "by_provider": by(rows, |r| r.provider.clone()),
                "by_model": by(rows, |r| format!("{}/{}", r.provider, r.model)),
                "by_client": by(rows, |r| r.client.clone()),
            });
        }
        out["rows"] = serde_json::to_value(&view.rows).unwrap_or_default();
        crate::outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(0);
    }
    for (name, rows) in &periods {
        let title = if *name == "today" {
            format!("today ({})", view.today)
        } else {
            format!("{} to {}", view.from, view.to)
        };
        let t = total(rows);
        crate::outln!(
            "{title}: ${:.4} ({} request{}, {} tokens in, {} out)",
            t.usd,
            t.requests,
            if t.requests == 1 { "" } else { "s" },
            t.input_tokens,
            t.output_tokens
        );
        if rows.is_empty() {
            continue;
        }
        let mut table = Table::new();
        table.load_style(UTF8_FULL_CONDENSED);
        table.set_header([
            "provider/model",
            "client",
            "requests",
            "tokens in",
            "tokens out",
            "USD",
        ]);
        for r in by(rows, |r| {
            format!("{}/{}\t{}", r.provider, r.model, r.client)
        }) {
            let (pm, client) = r.0.split_once('\t').unwrap_or((&r.0, ""));
            table.add_row([
                pm.to_string(),
                client.to_string(),
                r.1.requests.to_string(),
                r.1.input_tokens.to_string(),
                r.1.output_tokens.to_string(),
                format!("{:.4}", r.1.usd),
            ]);
        }
        crate::outln!("{table}");
    }
    Ok(0)
}
