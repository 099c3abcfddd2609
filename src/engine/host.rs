//! One host's run of one play: connect (once, kept across plays), gather facts in one round
//! trip, then the play's tasks in order — runs of simple tasks as one exec ([`batch`]), the
//! rest one by one ([`task`]) — and the notified handlers at the end.
//!
//! [`batch`]: crate::engine::batch
//! [`task`]: crate::engine::task

use std::collections::BTreeSet;
use std::sync::Arc;

use minijinja::Environment;
use serde_json::Value as J;
use tokio::sync::mpsc;

use crate::connection::ssh::{SshConnection, SshTarget};
use crate::connection::{AnyConnection, RunAs, Transport};
use crate::engine::Shared;
use crate::engine::batch::Batched;
use crate::engine::batch_shared::BatchShared;
use crate::engine::events::{Event, HostRecap, Status};
use crate::engine::flow::Flow;
use crate::facts::Facts;
use crate::instance::Renderer;
use crate::inventory::vars::{Layers, host_context};
use crate::play::Origin;
use crate::repo::lookup::VarLookup;
use crate::spec::inventory::NodeSpec;
use crate::spec::playbook::{Play, Playbook};
use crate::spec::task::Task;
use crate::template::Context;

/// What a host keeps between plays.
#[derive(Debug)]
pub struct HostState {
    /// Node name.
    pub name: String,
    pub(crate) conn: Option<AnyConnection>,
    pub(crate) facts: Option<Facts>,
    pub(crate) facts_stale: bool,
    /// Registered results (secret when the task that made them read a secret).
    pub(crate) registered: Context,
    pub(crate) dead: bool,
    /// Paths (directories and files) a check run predicted earlier tasks would create.
    pub(crate) predicted: BTreeSet<String>,
    /// Of those, the directories (created with their parents).
    pub(crate) predicted_dirs: BTreeSet<String>,
    /// `--start-at-task`: whether the named task has been reached (true without it).
    pub(crate) started: bool,
    /// Connections to the hosts tasks are delegated to (`delegate_to`), with their facts.
    pub(crate) delegates: std::collections::BTreeMap<String, (AnyConnection, Facts)>,
}

impl HostState {
    /// A host not yet connected.
    pub fn new(name: &str) -> HostState {
        HostState {
            name: name.to_string(),
            conn: None,
            facts: None,
            facts_stale: false,
            registered: Context::default(),
            dead: false,
            predicted: BTreeSet::new(),
            predicted_dirs: BTreeSet::new(),
            started: true,
            delegates: std::collections::BTreeMap::new(),
        }
    }

    /// A host that leaves the run (it failed or its run panicked).
    pub fn dead(name: &str) -> HostState {
        HostState {
            dead: true,
            ..HostState::new(name)
        }
    }

    /// Closes its connection.
    pub async fn close(&mut self) {
        if let Some(c) = self.conn.take() {
            c.close().await;
        }
        for (_, (c, _)) in std::mem::take(&mut self.delegates) {
            c.close().await;
        }
    }
}

/// How to reach a node over SSH, from its variables and the run's options.
pub fn ssh_target(shared: &Shared, node: &NodeSpec) -> SshTarget {
    let lookup = VarLookup::new(&shared.repo);
    let s = |k: &str| {
        lookup.get(node, k).and_then(|v| {
            v.as_str()
                .map(str::to_string)
                .or_else(|| v.as_u64().map(|u| u.to_string()))
        })
    };
    let expand = |p: String| match p.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(|h| std::path::PathBuf::from(h).join(rest))
            .unwrap_or_else(|| p.into()),
        None => p.into(),
    };
    SshTarget {
        host: node.host.clone(),
        user: s("ssh_user"),
        port: s("ssh_port").and_then(|p| p.parse().ok()),
        key: s("ssh_key").map(expand),
        config: shared
            .opts
            .ssh_config
            .clone()
            .or_else(|| shared.repo.inventory.fleet.ssh_config.clone().map(expand)),
        connect_timeout: shared.opts.connect_timeout,
    }
}

pub(crate) fn is_local(shared: &Shared, node: &NodeSpec) -> bool {
    VarLookup::new(&shared.repo)
        .get(node, "connection")
        .and_then(|v| v.as_str().map(str::to_string))
        .as_deref()
        == Some("local")
}

/// Test builds only: `FLEET_FAILPOINT=host-panic:NODE` makes that host's run panic once it is
/// connected, so the tests can check that a panicking host is a failed host.
#[cfg(debug_assertions)]
fn failpoint(node: &str) {
    if std::env::var("FLEET_FAILPOINT").is_ok_and(|f| f == format!("host-panic:{node}")) {
        panic!("failpoint host-panic:{node}");
    }
}

#[cfg(not(debug_assertions))]
fn failpoint(_node: &str) {}

/// One host's run of one play.
pub(crate) struct Run<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) env: Environment<'static>,
    pub(crate) state: HostState,
    pub(crate) tx: mpsc::UnboundedSender<Event>,
    pub(crate) recap: HostRecap,
    pub(crate) notified: BTreeSet<String>,
    /// What the hosts of this batch share (`run_once`, `throttle`).
    pub(crate) batch: Arc<BatchShared>,
    /// The last task's result as `register` keeps it (for `run_once`).
    pub(crate) last: Option<(J, bool)>,
    /// The last failed task's name and message (secrets masked), for a `rescue`.
    pub(crate) last_failure: Option<(String, Option<String>)>,
}

/// Runs play `pi` of `pb` on one host; returns the host's state and its counts.
pub async fn run_play(
    shared: Arc<Shared>,
    pb: Arc<Playbook>,
    pi: usize,
    state: HostState,
    tx: mpsc::UnboundedSender<Event>,
    batch: Arc<BatchShared>,
) -> (HostState, HostRecap) {
    // However this run ends, the batch's other hosts stop waiting for this one.
    let _finished = batch.guard(&state.name);
    let mut run = Run {
        shared: &shared,
        env: shared.environment(),
        state,
        tx,
        recap: HostRecap::default(),
        notified: BTreeSet::new(),
        batch,
        last: None,
        last_failure: None,
    };
    run.play(&pb.plays[pi]).await;
    (run.state, run.recap)
}

impl Run<'_> {
    /// Sends an event with every secret value masked, and counts it.
    pub(crate) fn emit(&mut self, mut e: Event) {
        if let Some(s) = e.status {
            self.recap.count(s);
        }
        // A module that needs facts (package, service) fails without them: say why.
        if e.status == Some(Status::Failed)
            && self.state.facts.is_none()
            && !self.state.dead
            && let Some(m) = &mut e.msg
        {
            m.push_str(" (this host has no facts: the play says `gather_facts: false` and none are cached; `fleet facts NODE` caches them)");
        }
        e.mask_secrets();
        if e.status == Some(Status::Failed) {
            // What a `rescue` sees as `ansible_failed_task` / `ansible_failed_result`.
            self.last_failure = Some((e.task.clone(), e.msg.clone()));
        }
        let _ = self.tx.send(e);
    }

    /// The renderer for this host.
    pub(crate) fn renderer(&self) -> Renderer<'_> {
        Renderer {
            root: &self.shared.repo.root,
            library: &self.shared.library,
            env: &self.env,
            node: &self.state.name,
        }
    }

    /// The account a task runs as.
    pub(crate) fn run_as<'t>(&'t self, task: &'t Task, play: &'t Play) -> RunAs<'t> {
        match task.become_as(
            play.become_,
            play.become_user.as_ref().map(|u| u.value.as_str()),
        ) {
            None => RunAs::Login,
            Some(user) => RunAs::Become {
                user,
                login: self.state.facts.as_ref().and_then(|f| f.user.as_deref()),
            },
        }
    }

    async fn connect(&mut self) -> Result<(), String> {
        if self.state.conn.is_some() {
            return Ok(());
        }
        let Some(node) = self.shared.repo.inventory.nodes.get(&self.state.name) else {
            return Err(format!("no node `{}`", self.state.name));
        };
        let started = std::time::Instant::now();
        let local = is_local(self.shared, node);
        let conn = if local {
            AnyConnection::new(Transport::Local(crate::connection::local::LocalConnection))
        } else {
            AnyConnection::new(Transport::Ssh(
                SshConnection::connect(&ssh_target(self.shared, node))
                    .await
                    .map_err(|e| e.to_string())?,
            ))
        };
        tracing::info!(
            via = if local { "local" } else { "ssh" },
            ms = started.elapsed().as_millis() as u64,
            "connected"
        );
        self.state.conn = Some(conn);
        Ok(())
    }

    /// Gathers facts when there are none yet or a change made them stale; with
    /// `--facts-max-age`, cached facts younger than that are used instead (no round trip).
    /// A play with `gather_facts: false` uses the cached facts, when there are any, and never
    /// contacts the host for them.
    pub(crate) async fn gather(&mut self, play: &Play) -> Result<(), String> {
        if self.state.facts.is_some() && (!self.state.facts_stale || !play.gather_facts) {
            return Ok(());
        }
        let cached = |max_age: Option<std::time::Duration>| {
            let (root, name) = (self.shared.repo.root.clone(), self.state.name.clone());
            tokio::task::spawn_blocking(move || match max_age {
                Some(age) => crate::facts::load_fresh(&root, &name, age),
                None => crate::facts::load_cached(&root, &name).map(|f| (f, Default::default())),
            })
        };
        let fresh = match (play.gather_facts, self.shared.opts.facts_max_age) {
            (false, _) => cached(None).await.ok().flatten(),
            (true, Some(age)) if !self.state.facts_stale => cached(Some(age)).await.ok().flatten(),
            (true, _) => None,
        };
        if fresh.is_some() || !play.gather_facts {
            if let Some((f, age)) = fresh {
                tracing::info!(age_s = age.as_secs(), "facts from the cache (not gathered)");
                self.state.facts = Some(f);
            } else {
                tracing::info!("no facts: `gather_facts: false` and none cached");
            }
            self.state.facts_stale = false;
            return Ok(());
        }
        let Some(conn) = &self.state.conn else {
            return Err("not connected".into());
        };
        let started = std::time::Instant::now();
        let facts = crate::facts::probe::gather(conn).await?;
        tracing::info!(
            os = facts.os.as_deref().unwrap_or("?"),
            arch = facts.arch.as_deref().unwrap_or("?"),
            ms = started.elapsed().as_millis() as u64,
            "facts gathered"
        );
        // A custom facts file that is not JSON: said, and the other facts are used.
        for problem in facts.local_errors.values() {
            tracing::warn!("custom facts: {problem}");
        }
        // File I/O off the runtime's threads, which the other hosts are using.
        let (root, name, f) = (
            self.shared.repo.root.clone(),
            self.state.name.clone(),
            facts.clone(),
        );
        let _ =
            tokio::task::spawn_blocking(move || crate::facts::store_cached(&root, &name, &f)).await;
        self.state.facts = Some(facts);
        self.state.facts_stale = false;
        Ok(())
    }

    /// The host leaves the run: its connection is gone.
    pub(crate) fn unreachable(&mut self, msg: String) {
        self.state.dead = true;
        self.state.conn = None;
        let e = Event::unreachable(&self.state.name, msg);
        self.emit(e);
    }

    async fn play(&mut self, play: &Play) {
        if self.state.dead {
            return;
        }
        if let Err(e) = self.connect().await {
            self.unreachable(e);
            return;
        }
        if let Err(e) = self.gather(play).await {
            self.unreachable(e);
            return;
        }
        failpoint(&self.state.name);
        let expanded = match crate::play::expand(&self.shared.repo.roles, play) {
            Ok(x) => x,
            Err(d) => {
                self.fail_host("roles", d.to_string());
                return;
            }
        };
        let Some(node) = self.shared.repo.inventory.nodes.get(&self.state.name) else {
            return;
        };
        let layers = Layers {
            role_defaults: expanded.defaults(),
            play: Some(&play.vars),
            extra: Some(&self.shared.opts.extra),
        };
        // No facts (`gather_facts: false`, none cached): `facts` is undefined, not empty.
        let facts_json = self
            .state
            .facts
            .as_ref()
            .map(|f| serde_json::to_value(f).unwrap_or(J::Null));
        let base = match host_context(
            &self.shared.repo.inventory,
            node,
            &layers,
            facts_json.as_ref(),
            &self.env,
        ) {
            Ok(mut c) => {
                crate::repo::add_repo_facts(&mut c, &self.shared.repo);
                c
            }
            Err(d) => {
                self.fail_host("variables", d.to_string());
                return;
            }
        };
        self.set_become_password(&base);
        if expanded.is_flat() {
            // Plain tasks, as one sequence across the roles: what every play without blocks
            // or includes runs, batched exactly as before.
            if self.tasks(&expanded.tasks, &base, play).await != Flow::Next {
                return;
            }
        } else {
            for body in &expanded.bodies {
                if self.items(*body, body.items, &base, play).await != Flow::Next {
                    return;
                }
            }
        }
        // Handlers run once each, in the order they are defined, when notified.
        let handlers: Vec<(Origin<'_>, &Task)> = expanded
            .handlers
            .iter()
            .filter(|(_, h)| {
                self.notified.contains(&h.name)
                    || h.listen.iter().any(|l| self.notified.contains(l))
            })
            .copied()
            .collect();
        for (origin, h) in handlers {
            if !self.run_task(origin, h, &base, play, "handler").await {
                return;
            }
        }
        self.notified.clear();
    }

    /// Runs a sequence of plain tasks: runs of simple ones as one exec, the rest one by one.
    pub(crate) async fn tasks(
        &mut self,
        tasks: &[(Origin<'_>, &Task)],
        base: &Context,
        play: &Play,
    ) -> Flow {
        let mut i = 0;
        while i < tasks.len() {
            let (origin, task) = tasks[i];
            if !self.state.started {
                // `--start-at-task`: everything before the named task is left out.
                if !self.starts_here(task) {
                    i += 1;
                    continue;
                }
                self.state.started = true;
            }
            // Runs of simple tasks go to the host as one exec; the rest, and everything in
            // check mode, one task per exec.
            match self.batch(&tasks[i..], base, play).await {
                Batched::Done(n) => i += n,
                Batched::Stop => return self.stopped(),
                Batched::No => {
                    if !self.run_task(origin, task, base, play, "task").await {
                        return self.stopped();
                    }
                    i += 1;
                }
            }
        }
        Flow::Next
    }

    /// Why a task sequence stopped: the host is gone, or a task failed.
    pub(crate) fn stopped(&self) -> Flow {
        if self.state.dead || self.state.conn.is_none() {
            Flow::Gone
        } else {
            Flow::Failed
        }
    }

    /// `--start-at-task NAME`: whether `task` is the named one.
    fn starts_here(&self, task: &Task) -> bool {
        self.shared
            .opts
            .start_at_task
            .as_deref()
            .is_none_or(|n| n == task.name)
    }

    /// The sudo password `become` uses on this host: its `become_password` variable, else
    /// `--ask-become-pass`'s; none: `sudo -n` (no password).
    fn set_become_password(&self, base: &Context) {
        let from_var = base.get("become_password").and_then(|v| match v {
            J::String(s) => Some(s.clone()),
            J::Number(n) => Some(n.to_string()),
            _ => None,
        });
        if let Some(p) = &from_var {
            crate::secret::remember(p);
        }
        let password = from_var
            .map(crate::secret::Secret::new)
            .or_else(|| self.shared.opts.become_password.clone());
        if let Some(c) = &self.state.conn {
            c.set_become_password(password);
        }
    }

    /// The host fails before any task (its variables or roles cannot be used).
    fn fail_host(&mut self, what: &str, msg: String) {
        let mut e = Event::task("task", &self.state.name, what, "-", Status::Failed);
        e.msg = Some(msg);
        self.emit(e);
    }

    /// A task's base context: the host's, its registered results and its latest facts.
    pub(crate) fn task_context(&self, base: &Context) -> Context {
        let mut ctx = base.clone();
        for (k, v) in self.state.registered.vars() {
            ctx.insert(k, v.clone(), self.state.registered.is_secret(k));
        }
        if let Some(f) = &self.state.facts {
            let fj = serde_json::to_value(f).unwrap_or(J::Null);
            if let Some(os) = fj.get("os").filter(|v| !v.is_null()) {
                ctx.set_field("node", "os", os.clone());
            }
            if let Some(a) = fj.get("arch").filter(|v| !v.is_null()) {
                ctx.set_field("node", "arch", a.clone());
            }
            ctx.insert("facts", fj, false);
        }
        ctx
    }

    /// Whether `--tags` / `--skip-tags` select the task.
    pub(crate) fn selected_by_tags(&self, task: &Task) -> bool {
        let o = &self.shared.opts;
        if task.tags.iter().any(|t| o.skip_tags.contains(t)) {
            return false;
        }
        o.tags.is_empty()
            || task.tags.iter().any(|t| o.tags.contains(t))
            || task.tags.iter().any(|t| t == "always")
    }

    /// Reports a task's outcome; a change notifies its handlers and, for modules that say so,
    /// makes the facts stale (they are gathered again at the host's next play).
    pub(crate) fn record(&mut self, task: &Task, stales_facts: bool, e: Event) {
        if e.status == Some(Status::Changed) {
            for n in &task.notify {
                self.notified.insert(n.value.clone());
            }
            if stales_facts {
                self.state.facts_stale = true;
            }
        }
        self.emit(e);
    }
}
