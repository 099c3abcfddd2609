//! Runs plays on hosts: every host of a play in parallel (bounded by `--forks`), each host's
//! tasks in order, handlers at the end of the play. Each host's state (connection, facts,
//! registered results, notified handlers) is owned by that host's task; nothing is shared
//! across awaits but the event channel.

pub mod events;
pub mod host;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};

use crate::engine::events::{Event, HostRecap, Status};
use crate::inventory::vars::ExtraVars;
use crate::repo::Repo;
use crate::spec::playbook::Playbook;
use crate::template::Library;

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Predict, change nothing.
    pub check: bool,
    /// Show file differences.
    pub diff: bool,
    /// Hosts at once.
    pub forks: usize,
    /// `--limit` pattern.
    pub limit: Option<String>,
    /// Only tasks with one of these tags (empty: all).
    pub tags: Vec<String>,
    /// Skip tasks with these tags.
    pub skip_tags: Vec<String>,
    /// `-e` variables.
    pub extra: ExtraVars,
    /// An ssh config file overriding the inventory's.
    pub ssh_config: Option<PathBuf>,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            check: false,
            diff: false,
            forks: 50,
            limit: None,
            tags: Vec::new(),
            skip_tags: Vec::new(),
            extra: ExtraVars::default(),
            ssh_config: None,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything a run needs, shared read-only by every host task.
pub struct Shared {
    /// The repo.
    pub repo: Repo,
    /// Templates.
    pub library: Library,
    /// Options.
    pub opts: RunOptions,
    /// The `nodes` template global, made once for every host (see `environment`).
    pub nodes: std::sync::OnceLock<minijinja::Value>,
}

impl Shared {
    /// A template environment for rendering hosts' tasks: the library's templates and the
    /// `nodes` global.
    pub fn environment(&self) -> minijinja::Environment<'static> {
        let nodes = self
            .nodes
            .get_or_init(|| crate::inventory::vars::nodes_value(&self.repo.inventory))
            .clone();
        crate::inventory::vars::with_nodes(self.library.environment(), nodes)
    }
}

/// Runs a playbook; events go to `tx`; returns the recap per host.
pub async fn run_playbook(
    shared: Arc<Shared>,
    pb: Arc<Playbook>,
    tx: mpsc::UnboundedSender<Event>,
) -> BTreeMap<String, HostRecap> {
    let role_names: Vec<String> = shared.repo.roles.keys().cloned().collect();
    let roles: Vec<&str> = role_names.iter().map(String::as_str).collect();
    let limit = shared.opts.limit.as_deref().map(|l| {
        crate::inventory::select::select(&shared.repo.inventory, &roles, l).unwrap_or_default()
    });
    let mut recap: BTreeMap<String, HostRecap> = BTreeMap::new();
    // Host state that lasts across plays (facts, registered results, the connection).
    let mut states: BTreeMap<String, host::HostState> = BTreeMap::new();
    for (pi, play) in pb.plays.iter().enumerate() {
        let targets: Vec<String> =
            crate::inventory::select::select(&shared.repo.inventory, &roles, &play.hosts.value)
                .unwrap_or_default()
                .into_iter()
                .filter(|h| limit.as_ref().is_none_or(|l| l.contains(h)))
                .filter(|h| {
                    recap
                        .get(h)
                        .is_none_or(|r| r.failed == 0 && r.unreachable == 0)
                })
                .collect();
        let _ = tx.send(Event::play(&play.name, targets.len()));
        let permits = Arc::new(Semaphore::new(shared.opts.forks.max(1)));
        let mut joins = Vec::new();
        for name in targets {
            let state = states
                .remove(&name)
                .unwrap_or_else(|| host::HostState::new(&name));
            let (shared, pb, tx, permits) =
                (shared.clone(), pb.clone(), tx.clone(), permits.clone());
            joins.push(tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.ok();
                host::run_play(shared, pb, pi, state, tx).await
            }));
        }
        for j in joins {
            if let Ok((state, r)) = j.await {
                recap.entry(state.name.clone()).or_default().add(&r);
                states.insert(state.name.clone(), state);
            }
        }
    }
    for (h, r) in &recap {
        let _ = tx.send(Event::recap(h, r));
    }
    recap
}

/// True when the status counts as a failure for the exit code.
pub fn is_failure(s: Status) -> bool {
    matches!(s, Status::Failed | Status::Unreachable)
}
