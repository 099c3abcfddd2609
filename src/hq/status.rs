//! A node's state from its last heartbeat and what its role promises: `online`, `degraded`
//! (reporting, but a service or model is missing) or `offline` (silent too long, or never
//! heard from), with reasons a person can act on.

use std::collections::BTreeSet;

use crate::eligibility::served_models;
use crate::hq::store::rfc3339;
use crate::hq::wire::{Heartbeat, NodeStatus};
use crate::spec::inventory::{Hardware, NodeSpec};

/// What the inventory expects of a node.
#[derive(Debug, Clone, Default)]
pub struct Expectation {
    /// Node name.
    pub name: String,
    /// Capabilities of its role (`ollama`, `docker`, …).
    pub capabilities: BTreeSet<String>,
    /// Models it should hold.
    pub models: Vec<String>,
}

impl Expectation {
    /// From an inventory node, its effective hardware and its role's capabilities: it is
    /// expected to hold the models it lists and can serve (the routing pools' rule).
    pub fn of(node: &NodeSpec, hw: &Hardware, capabilities: BTreeSet<String>) -> Self {
        Expectation {
            name: node.name.clone(),
            capabilities,
            models: served_models(node.models.iter().map(|m| m.value.as_str()), hw),
        }
    }
}

/// Free disk below which a node is degraded.
pub const MIN_FREE_DISK_GB: f64 = 5.0;

/// Formats a duration in seconds as `4m12s`.
pub fn human_secs(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// Problems a heartbeat shows against the expectation.
pub fn problems(exp: &Expectation, hb: &Heartbeat) -> Vec<String> {
    let mut out = Vec::new();
    if exp.capabilities.contains("ollama") {
        match hb.services.get("ollama") {
            Some(s) if s.up => {
                let missing: Vec<&str> = exp
                    .models
                    .iter()
                    .filter(|m| !s.models.iter().any(|x| model_matches(x, m)))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() {
                    out.push(format!(
                        "ollama on {} answers but {} missing; run `fleet provision {}`",
                        exp.name,
                        describe_missing(&missing),
                        exp.name
                    ));
                }
            }
            Some(s) => out.push(format!(
                "ollama is down on {}{}",
                exp.name,
                s.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )),
            None => out.push(format!("the agent on {} reports no ollama state", exp.name)),
        }
    }
    if exp.capabilities.contains("docker") {
        match hb.services.get("docker") {
            Some(s) if s.up => {}
            Some(s) => out.push(format!(
                "docker is down on {}{}",
                exp.name,
                s.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )),
            None => out.push(format!("the agent on {} reports no docker state", exp.name)),
        }
    }
    for d in &hb.resources.disks {
        if d.mount == "/" && d.free_gb < MIN_FREE_DISK_GB {
            out.push(format!(
                "disk nearly full on {}: {} GB free on /",
                exp.name, d.free_gb
            ));
        }
    }
    out
}

fn describe_missing(m: &[&str]) -> String {
    match m {
        [one] => format!("{one} is"),
        many => format!("{} are", many.join(", ")),
    }
}

/// `llama3.1:8b` matches `llama3.1:8b`; a bare `mistral` matches `mistral:latest`.
pub fn model_matches(have: &str, want: &str) -> bool {
    have == want || (!want.contains(':') && have == format!("{want}:latest"))
}

/// The status of a node now.
pub fn status(
    exp: &Expectation,
    last: Option<(i64, &Heartbeat)>,
    now_ms: i64,
    offline_after_secs: f64,
) -> NodeStatus {
    let Some((at, hb)) = last else {
        return NodeStatus {
            name: exp.name.clone(),
            status: "offline".into(),
            reasons: vec![format!(
                "no heartbeat from {} yet; is its agent installed and running?",
                exp.name
            )],
            last_heartbeat: None,
            heartbeat_age_secs: None,
            last: None,
            draining_since: None,
        };
    };
    let age = ((now_ms - at) as f64 / 1000.0).max(0.0);
    let (state, reasons) = if age > offline_after_secs {
        (
            "offline",
            vec![format!(
                "no heartbeat from {} for {} (offline after {})",
                exp.name,
                human_secs(age),
                human_secs(offline_after_secs)
            )],
        )
    } else {
        let p = problems(exp, hb);
        (if p.is_empty() { "online" } else { "degraded" }, p)
    };
    NodeStatus {
        name: exp.name.clone(),
        status: state.into(),
        reasons,
        last_heartbeat: Some(rfc3339(at)),
        heartbeat_age_secs: Some((age * 10.0).round() / 10.0),
        last: Some(hb.clone()),
        draining_since: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hq::wire::ServiceState;

    fn exp() -> Expectation {
        Expectation {
            name: "maestro".into(),
            capabilities: ["ollama".to_string()].into(),
            models: vec!["llama3.1:70b".into(), "mistral".into()],
        }
    }

    fn hb(models: &[&str], up: bool) -> Heartbeat {
        let mut services = std::collections::BTreeMap::new();
        services.insert(
            "ollama".into(),
            ServiceState {
                up,
                models: models.iter().map(|m| m.to_string()).collect(),
                ..Default::default()
            },
        );
        Heartbeat {
            node: "maestro".into(),
            agent_version: "t".into(),
            sent_at: String::new(),
            seq: 0,
            uptime_secs: 0,
            resources: Default::default(),
            services,
        }
    }

    #[test]
    fn states_and_reasons() {
        let now = 1_000_000;
        let s = status(&exp(), None, now, 180.0);
        assert_eq!(s.status, "offline");
        let good = hb(&["llama3.1:70b", "mistral:latest"], true);
        assert_eq!(
            status(&exp(), Some((now - 5_000, &good)), now, 180.0).status,
            "online"
        );
        let s = status(&exp(), Some((now - 200_000, &good)), now, 180.0);
        assert_eq!(s.status, "offline");
        assert_eq!(
            s.reasons,
            vec!["no heartbeat from maestro for 3m20s (offline after 3m00s)"]
        );
        let missing = hb(&["mistral:latest"], true);
        let s = status(&exp(), Some((now, &missing)), now, 180.0);
        assert_eq!(s.status, "degraded");
        assert_eq!(
            s.reasons,
            vec![
                "ollama on maestro answers but llama3.1:70b is missing; run `fleet provision maestro`"
            ]
        );
        assert_eq!(
            status(&exp(), Some((now, &hb(&[], false))), now, 180.0).reasons,
            vec!["ollama is down on maestro"]
        );
    }
}
