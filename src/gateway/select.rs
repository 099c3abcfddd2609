//! Which upstreams may serve a request, in the order they are tried: computed from the live
//! routing table with the renderer's own [`route`] (one routing implementation), so the gateway
//! sends work exactly where `fleet route` says it goes. Pure: what is busy or cooling down is
//! decided when each candidate is tried.

use std::collections::BTreeSet;

use crate::hq::status::model_matches;
use crate::render::routing::{Cloud, RoutingTable, Rule, Worker, route};
use crate::spec::inventory::CLOUD_FALLBACK;

/// One upstream to try.
#[derive(Debug, Clone, PartialEq)]
pub enum Candidate {
    /// A worker node's Ollama.
    Node {
        /// Node name.
        name: String,
        /// Its Ollama base URL (`http://host:11434`).
        base: String,
        /// The model to ask it for.
        model: String,
        /// Requests it takes at once (0: no limit).
        max_concurrent: u32,
    },
    /// A cloud provider: the index of the table's cloud fallbacks.
    Cloud(usize),
}

/// Why no candidate list could be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SelectError {
    /// `task:<type>` names no routing rule.
    #[error("no routing rule for task `{task}`{}", suggest(known))]
    UnknownTask {
        /// The task asked for.
        task: String,
        /// The task types the fleet has.
        known: Vec<String>,
    },
    /// A task served by a capability (e.g. a browser), not by a chat model.
    #[error("task `{task}` is served by the `{capability}` capability, not by a chat model")]
    NotChat {
        /// The task.
        task: String,
        /// Its capability.
        capability: String,
    },
    /// No worker lists the model, no rule names it, and there is no cloud fallback.
    #[error("no worker serves model `{0}` and the fleet has no cloud fallback")]
    UnknownModel(String),
    /// The `model` field is empty.
    #[error("`model` is empty: write `task:<type>` or a model name")]
    Empty,
}

fn suggest(known: &[String]) -> String {
    if known.is_empty() {
        " (the inventory has no routing rules)".into()
    } else {
        format!(
            " (known: {})",
            known
                .iter()
                .map(|k| format!("task:{k}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// The cloud fallbacks of `table`, in the order they are tried.
pub fn clouds(table: &RoutingTable) -> Vec<&Cloud> {
    table.cloud_providers.iter().collect()
}

/// Whether a worker takes work now: live tables carry each node's state and only `online`
/// nodes are sent requests (a degraded node misses something its role expects); a static
/// table (rendered without HQ) has no state and every worker counts.
pub fn takes_work(w: &Worker) -> bool {
    w.status.as_deref().is_none_or(|s| s == "online")
}

/// The candidates for a request's `model` field: `task:<type>` takes that rule's pool, then
/// its fallback rules' pools, then the cloud providers; a model name takes the first rule
/// serving that model the same way, else every worker holding it by priority, then the cloud.
pub fn candidates(table: &RoutingTable, wanted: &str) -> Result<Vec<Candidate>, SelectError> {
    let wanted = wanted.trim();
    if wanted.is_empty() {
        return Err(SelectError::Empty);
    }
    let rule = match wanted.strip_prefix("task:") {
        Some(task) => Some(table.rules.iter().find(|r| r.task == task).ok_or_else(|| {
            SelectError::UnknownTask {
                task: task.to_string(),
                known: table.rules.iter().map(|r| r.task.clone()).collect(),
            }
        })?),
        None => table.rules.iter().find(|r| {
            r.model
                .as_deref()
                .is_some_and(|m| model_matches(m, wanted) || model_matches(wanted, m))
        }),
    };
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    match rule {
        Some(rule) => from_rule(table, rule, &mut out, &mut seen)?,
        None => {
            let mut holders: Vec<&Worker> = table
                .workers
                .iter()
                .filter(|w| w.kind == "ollama" && w.models.iter().any(|m| model_matches(m, wanted)))
                .collect();
            holders.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)));
            for w in holders {
                push_node(&mut out, &mut seen, w, wanted);
            }
            out.extend((0..clouds(table).len()).map(Candidate::Cloud));
        }
    }
    if out.is_empty() && rule.is_none() {
        return Err(SelectError::UnknownModel(wanted.to_string()));
    }
    Ok(out)
}

fn push_node(out: &mut Vec<Candidate>, seen: &mut BTreeSet<String>, w: &Worker, model: &str) {
    if !takes_work(w) || !seen.insert(w.name.clone()) {
        return;
    }
    let base = w
        .endpoints
        .get("ollama")
        .unwrap_or(&w.endpoint)
        .trim_end_matches('/')
        .to_string();
    out.push(Candidate::Node {
        name: w.name.clone(),
        base,
        model: model.to_string(),
        max_concurrent: w.max_concurrent,
    });
}

/// A rule's pool, then each fallback step's pool, then the cloud: the chain [`route`] expands.
fn from_rule(
    table: &RoutingTable,
    rule: &Rule,
    out: &mut Vec<Candidate>,
    seen: &mut BTreeSet<String>,
) -> Result<(), SelectError> {
    let (Some(model), None) = (&rule.model, &rule.capability) else {
        return Err(SelectError::NotChat {
            task: rule.task.clone(),
            capability: rule.capability.clone().unwrap_or_default(),
        });
    };
    let Some(r) = route(table, &rule.task) else {
        return Ok(());
    };
    let worker = |name: &str| table.workers.iter().find(|w| w.name == name);
    for name in &r.pool {
        if let Some(w) = worker(name) {
            push_node(out, seen, w, model);
        }
    }
    for step in &r.chain {
        if step.via == CLOUD_FALLBACK {
            out.extend((0..clouds(table).len()).map(Candidate::Cloud));
            continue;
        }
        // A fallback step serves its own rule's model (a capability step cannot take a chat).
        let Some(step_model) = table
            .rules
            .iter()
            .find(|x| x.task == step.via)
            .and_then(|x| {
                x.capability
                    .is_none()
                    .then_some(x.model.as_deref())
                    .flatten()
            })
        else {
            continue;
        };
        for name in &step.workers {
            if let Some(w) = worker(name) {
                push_node(out, seen, w, step_model);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn worker(name: &str, priority: u32, models: &[&str], status: &str) -> Worker {
        Worker {
            name: name.into(),
            kind: "ollama",
            endpoint: format!("http://{name}:11434"),
            endpoints: BTreeMap::from([("ollama".into(), format!("http://{name}:11434"))]),
            models: models.iter().map(|m| m.to_string()).collect(),
            capabilities: vec!["ollama".into()],
            priority,
            max_concurrent: 2,
            memory_gb: None,
            cpu_only: vec![],
            status: Some(status.into()),
        }
    }

    fn rule(task: &str, model: &str, pool: &[&str], fallback: &[&str]) -> Rule {
        Rule {
            task: task.into(),
            model: Some(model.into()),
            capability: None,
            tier: None,
            pool: pool.iter().map(|p| p.to_string()).collect(),
            priorities: BTreeMap::new(),
            fallback: fallback.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn table() -> RoutingTable {
        let openai = Cloud {
            name: CLOUD_FALLBACK,
            kind: "cloud",
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            api_key_env: Some("OPENAI_API_KEY".into()),
            api_key_file: None,
            base_url: None,
        };
        RoutingTable {
            fleet: None,
            status_source: "hq",
            workers: vec![
                worker("big", 90, &["llama3.1:70b", "llama3.1:8b"], "online"),
                worker("mini", 50, &["llama3.1:8b"], "online"),
                worker("down", 99, &["llama3.1:8b"], "degraded"),
            ],
            cloud: Some(openai.clone()),
            cloud_providers: vec![openai],
            rules: vec![
                rule(
                    "reason",
                    "llama3.1:70b",
                    &["big"],
                    &["chat", CLOUD_FALLBACK],
                ),
                rule(
                    "chat",
                    "llama3.1:8b",
                    &["down", "big", "mini"],
                    &[CLOUD_FALLBACK],
                ),
            ],
        }
    }

    fn names(c: &[Candidate]) -> Vec<String> {
        c.iter()
            .map(|c| match c {
                Candidate::Node { name, model, .. } => format!("{name}/{model}"),
                Candidate::Cloud(i) => format!("cloud{i}"),
            })
            .collect()
    }

    #[test]
    fn a_task_takes_its_pool_then_its_fallbacks_then_the_cloud() {
        let c = candidates(&table(), "task:reason").expect("candidates");
        // `big` serves the 70b in its own pool and is not tried twice for the fallback;
        // `down` is degraded and never tried.
        assert_eq!(
            names(&c),
            ["big/llama3.1:70b", "mini/llama3.1:8b", "cloud0"]
        );
    }

    #[test]
    fn a_model_name_takes_the_rule_that_serves_it() {
        let c = candidates(&table(), "llama3.1:8b").expect("candidates");
        assert_eq!(names(&c), ["big/llama3.1:8b", "mini/llama3.1:8b", "cloud0"]);
    }

    #[test]
    fn a_model_no_rule_names_goes_to_its_holders_by_priority() {
        let mut t = table();
        t.workers[1].models.push("qwen2.5:7b".into());
        t.workers[0].models.push("qwen2.5:7b".into());
        let c = candidates(&t, "qwen2.5:7b").expect("candidates");
        assert_eq!(names(&c), ["big/qwen2.5:7b", "mini/qwen2.5:7b", "cloud0"]);
    }

    #[test]
    fn unknown_names_are_errors_that_list_what_exists() {
        let e = candidates(&table(), "task:nope").expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "no routing rule for task `nope` (known: task:reason, task:chat)"
        );
        let mut t = table();
        t.cloud = None;
        t.cloud_providers.clear();
        assert_eq!(
            candidates(&t, "mistral").expect_err("unknown"),
            SelectError::UnknownModel("mistral".into())
        );
        assert_eq!(candidates(&t, "  ").expect_err("empty"), SelectError::Empty);
    }

    #[test]
    fn a_capability_task_is_not_a_chat() {
        let mut t = table();
        t.rules.push(Rule {
            capability: Some("browser".into()),
            model: None,
            ..rule("scrape", "", &[], &[])
        });
        assert!(matches!(
            candidates(&t, "task:scrape"),
            Err(SelectError::NotChat { .. })
        ));
    }
}
