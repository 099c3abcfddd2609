//! Runs plays on hosts: every host of a play in parallel (bounded by `--forks`), each host's
//! tasks in order, handlers at the end of the play. Each host's state (connection, facts,
//! registered results, notified handlers) is owned by that host's task; nothing is shared
//! across awaits but the event channel.
//!
//! A host whose run panics is a failed host (its message and place in the recap); SIGINT or
//! SIGTERM stops the run: hosts still running are reported as interrupted and every SSH
//! master is closed before fleet exits.

pub mod batch;
pub mod batch_shared;
pub mod delegate;
pub mod events;
pub mod exec;
pub mod flow;
pub mod host;
pub mod outcome;
pub mod rolling;
pub mod step;
pub mod task;

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
    /// Put each task's output (rc, stdout, stderr) in its event: ad-hoc commands show it.
    pub show_output: bool,
    /// `--start-at-task`: leave out every task before the first with this name.
    pub start_at_task: Option<String>,
    /// `--step`: ask on the terminal before each task.
    pub step: bool,
    /// The sudo password for `become` (`-K`); a host's `become_password` variable wins.
    pub become_password: Option<crate::secret::Secret<String>>,
    /// Cached facts younger than this are used instead of gathering them again.
    pub facts_max_age: Option<Duration>,
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
            show_output: false,
            start_at_task: None,
            step: false,
            become_password: None,
            facts_max_age: None,
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
    /// `--step` answers.
    pub steps: step::Steps,
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

/// Resolves when fleet receives SIGINT or SIGTERM; names it.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
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
    let stop = stop_signal();
    tokio::pin!(stop);
    let mut interrupted: Option<&'static str> = None;
    let mut aborted = false;
    for (pi, play) in pb.plays.iter().enumerate() {
        if interrupted.is_some() {
            break;
        }
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
        let batches = crate::spec::playbook::batches(&targets, &play.serial);
        for (bi, batch) in batches.iter().enumerate() {
            if interrupted.is_some() {
                break;
            }
            if batches.len() > 1 {
                let _ = tx.send(Event::batch(&play.name, bi + 1, batches.len(), batch));
            }
            let shared_batch = batch_shared::BatchShared::new(batch.clone());
            let permits = Arc::new(Semaphore::new(shared.opts.forks.max(1)));
            let mut joins = Vec::new();
            for name in batch.iter().cloned() {
                let state = states.remove(&name).unwrap_or_else(|| {
                    let mut s = host::HostState::new(&name);
                    s.started = shared.opts.start_at_task.is_none();
                    s
                });
                let (shared, pb, tx, permits, shared_batch) = (
                    shared.clone(),
                    pb.clone(),
                    tx.clone(),
                    permits.clone(),
                    shared_batch.clone(),
                );
                // Every log line of this host's run (`-v`, `-vv`) names the node.
                let span = tracing::info_span!("host", node = %name);
                let job = tokio::spawn(tracing::Instrument::instrument(
                    crate::panic::CatchUnwind::new(async move {
                        let _permit = permits.acquire_owned().await.ok();
                        host::run_play(shared, pb, pi, state, tx, shared_batch).await
                    }),
                    span,
                ));
                joins.push((name, job));
            }
            for (name, mut job) in joins {
                let joined = if interrupted.is_some() {
                    job.abort();
                    job.await
                } else {
                    tokio::select! {
                        j = &mut job => j,
                        sig = &mut stop => {
                            interrupted = Some(sig);
                            job.abort();
                            job.await
                        }
                    }
                };
                let failure = match joined {
                    Ok(Ok((state, r))) => {
                        recap.entry(name.clone()).or_default().add(&r);
                        states.insert(name, state);
                        continue;
                    }
                    Ok(Err(caught)) => format!("this host's run stopped: {caught}"),
                    Err(e) if e.is_cancelled() => format!(
                        "interrupted by {}: the host's run was stopped",
                        interrupted.unwrap_or("a signal")
                    ),
                    Err(e) => format!("this host's run stopped: {e}"),
                };
                // The host is out of the run: a failed host in the recap and the exit code.
                let mut e = Event::task("task", &name, "run", "-", Status::Failed);
                e.msg = Some(failure);
                e.mask_secrets();
                recap.entry(name.clone()).or_default().count(Status::Failed);
                let _ = tx.send(e);
                states.insert(name.clone(), host::HostState::dead(&name));
            }
            if let Some(why) = rolling::stops(play, &recap, batch, bi, batches.len()) {
                // Later batches do not start; their hosts are shown as not reached.
                let left: Vec<&String> = batches[bi + 1..].iter().flatten().collect();
                for h in &left {
                    recap.entry((*h).clone()).or_default().not_reached = 1;
                }
                let msg = if left.is_empty() {
                    format!("{why}: the run stops")
                } else {
                    format!(
                        "{why}: the run stops; not reached: {}",
                        left.iter()
                            .map(|h| h.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                let _ = tx.send(Event::stop(&play.name, msg));
                aborted = true;
                break;
            }
        }
        if aborted {
            break;
        }
    }
    // Every master closes now, not after its persist time.
    for (_, mut s) in states {
        s.close().await;
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
