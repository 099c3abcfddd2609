//! Alerts on state changes only: compares a sweep with the states recorded in the store,
//! posts one Slack-compatible message for the nodes that changed, and records the new states
//! only once the message went out (a failed post is retried by the next sweep).

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::health::sweep::Report;
use crate::hq::store::Store;

/// One node's change.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Transition {
    /// Node.
    pub node: String,
    /// Previous state (`unknown` the first time).
    pub from: String,
    /// New state.
    pub to: String,
    /// Why.
    pub reasons: Vec<String>,
}

/// The changes between the recorded states and this sweep. A node seen for the first time
/// counts as a change unless it is online.
pub fn transitions(store: &Store, report: &Report) -> Result<Vec<Transition>, String> {
    let mut out = Vec::new();
    for n in &report.nodes {
        let before = store.alert_state(&n.node)?;
        let changed = match &before {
            Some(b) => b != &n.state,
            None => n.state != "online",
        };
        if changed {
            out.push(Transition {
                node: n.node.clone(),
                from: before.unwrap_or_else(|| "unknown".into()),
                to: n.state.clone(),
                reasons: n.reasons.clone(),
            });
        }
    }
    Ok(out)
}

fn icon(state: &str) -> &'static str {
    match state {
        "online" => ":large_green_circle:",
        "degraded" => ":large_yellow_circle:",
        _ => ":red_circle:",
    }
}

/// The webhook payload (Slack's `text`, plus the transitions as data).
pub fn payload(fleet: Option<&str>, ts: &[Transition]) -> serde_json::Value {
    let mut lines = vec![format!(
        "*fleet {}*: {} node{} changed state",
        fleet.unwrap_or(""),
        ts.len(),
        if ts.len() == 1 { "" } else { "s" }
    )];
    for t in ts {
        let why = if t.reasons.is_empty() {
            String::new()
        } else {
            format!(" — {}", t.reasons.join("; "))
        };
        lines.push(format!(
            "{} *{}*: {} → {}{why}",
            icon(&t.to),
            t.node,
            t.from,
            t.to
        ));
    }
    serde_json::json!({ "text": lines.join("\n"), "fleet": fleet, "transitions": ts })
}

/// Posts the alert; the error says why in one line.
pub async fn post(url: &str, body: &serde_json::Value) -> Result<(), String> {
    let client = crate::hq::client::http_client(Duration::from_secs(10))?;
    let r = client
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| crate::hq::client::describe(&e))?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("the webhook answered {}", r.status()))
    }
}

/// What an alert round did.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing changed.
    Quiet,
    /// Posted these changes.
    Sent(Vec<Transition>),
    /// Could not post; states left as they were so the next sweep retries.
    Failed(Vec<Transition>, String),
}

/// Compares, posts and records.
pub async fn run(
    db: &Path,
    webhook: &str,
    fleet: Option<&str>,
    report: &Report,
) -> Result<Outcome, String> {
    let store = Store::open(db)?;
    let ts = transitions(&store, report)?;
    if ts.is_empty() {
        // Keep states of online nodes seen for the first time, so a later fall is a change.
        for n in &report.nodes {
            if store.alert_state(&n.node)?.is_none() {
                store.set_alert_state(&n.node, &n.state)?;
            }
        }
        return Ok(Outcome::Quiet);
    }
    match post(webhook, &payload(fleet, &ts)).await {
        Ok(()) => {
            for n in &report.nodes {
                store.set_alert_state(&n.node, &n.state)?;
            }
            Ok(Outcome::Sent(ts))
        }
        Err(e) => {
            for n in &report.nodes {
                if !ts.iter().any(|t| t.node == n.node) {
                    store.set_alert_state(&n.node, &n.state)?;
                }
            }
            Ok(Outcome::Failed(ts, e))
        }
    }
}
