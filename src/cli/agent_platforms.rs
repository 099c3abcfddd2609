//! Before a run: the platform of each node that will install the fleet agent, learned from
//! its facts when neither the inventory nor the facts cache says it (a node never reached
//! before), so that a node with no fleet binary for its platform is refused before any task
//! runs on any node, not when its agent task comes.

use crate::engine::Shared;
use crate::plan::{Decision, Plan};

/// Fills in `platform` for the plan's hosts that have a `fleet_agent` task to run and no
/// known platform: a facts probe over SSH (cached, as `fleet facts` does), or this controller's
/// own platform for `connection: local` nodes. A node that cannot be reached keeps `?/?`: the
/// run reports it unreachable as usual.
pub async fn learn_agent_platforms(shared: &Shared, plan: &mut Plan) {
    let mut wanted = std::collections::BTreeSet::new();
    for play in &plan.plays {
        for host in &play.targets {
            let unknown = host.platform.split('/').any(|p| p == "?" || p.is_empty());
            // A task with its own `source` needs no platform.
            let installs = host.tasks.iter().any(|t| {
                t.module == "fleet_agent"
                    && !matches!(t.decision, Decision::Skip { .. })
                    && t.args
                        .get("source")
                        .and_then(|s| s.as_str())
                        .is_none_or(|s| s.trim().is_empty())
            });
            if unknown && installs {
                wanted.insert(host.node.clone());
            }
        }
    }
    if wanted.is_empty() {
        return;
    }
    let mut learned = std::collections::BTreeMap::new();
    let mut joins = Vec::new();
    crate::noteln!(
        "learning the platform of {} node{} never reached before (for the agent binary)",
        wanted.len(),
        if wanted.len() == 1 { "" } else { "s" }
    );
    // No more connections at once than the run itself opens.
    let forks = std::sync::Arc::new(tokio::sync::Semaphore::new(shared.opts.forks.max(1)));
    for name in wanted {
        let Some(node) = shared.repo.inventory.nodes.get(&name) else {
            continue;
        };
        if crate::engine::host::is_local(shared, node) {
            let (os, arch) = crate::modules::agent_binary::controller();
            learned.insert(name, format!("{os}/{arch}"));
            continue;
        }
        let target = crate::engine::host::ssh_target(shared, node);
        let forks = forks.clone();
        joins.push(tokio::spawn(async move {
            let _slot = forks.acquire_owned().await;
            let r = crate::facts::probe::gather_over_ssh(&target).await;
            (name, r)
        }));
    }
    for j in joins {
        let Ok((name, Ok(facts))) = j.await else {
            continue;
        };
        let root = shared.repo.root.clone();
        let (n, f) = (name.clone(), facts.clone());
        if let Ok(Err(e)) =
            tokio::task::spawn_blocking(move || crate::facts::store_cached(&root, &n, &f)).await
        {
            tracing::warn!(node = %name, "cannot cache facts: {e}");
        }
        if let (Some(os), Some(arch)) = (facts.os, facts.arch) {
            learned.insert(name, format!("{os}/{arch}"));
        }
    }
    for play in &mut plan.plays {
        for host in &mut play.targets {
            if let Some(p) = learned.get(&host.node) {
                host.platform = p.clone();
            }
        }
    }
}
