//! One host's run of one play: connect (once, kept across plays), gather facts in one round
//! trip, then each task: tags, `when`, `loop`, arguments rendered with the host's variables
//! and facts, one exec of the module's script, `changed_when`/`failed_when`, `retries`/`until`,
//! `register`, `notify`; notified handlers at the end.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use minijinja::Environment;
use serde_json::{Value as J, json};
use tokio::sync::mpsc;

use crate::command::Masker;
use crate::connection::ssh::{SshConnection, SshTarget};
use crate::connection::{AnyConnection, ConnError, Connection};
use crate::engine::Shared;
use crate::engine::events::{Event, HostRecap, Status};
use crate::facts::Facts;
use crate::inventory::vars::{Layers, host_context};
use crate::modules::scripts::{self, Reported};
use crate::play::Origin;
use crate::render::routing::VarLookup;
use crate::spec::playbook::Playbook;
use crate::spec::task::Task;
use crate::spec::yaml::{Node, Value};
use crate::template;

/// What a host keeps between plays.
#[derive(Debug)]
pub struct HostState {
    /// Node name.
    pub name: String,
    conn: Option<AnyConnection>,
    facts: Option<Facts>,
    facts_stale: bool,
    registered: serde_json::Map<String, J>,
    dead: bool,
    /// Paths (directories and files) a check run predicted earlier tasks would create.
    predicted: BTreeSet<String>,
    /// Of those, the directories (created with their parents).
    predicted_dirs: BTreeSet<String>,
}

impl HostState {
    /// A host not yet connected.
    pub fn new(name: &str) -> HostState {
        HostState {
            name: name.to_string(),
            conn: None,
            facts: None,
            facts_stale: false,
            registered: serde_json::Map::new(),
            dead: false,
            predicted: BTreeSet::new(),
            predicted_dirs: BTreeSet::new(),
        }
    }
}

/// How to reach a node over SSH, from its variables and the run's options.
pub fn ssh_target(shared: &Shared, node: &crate::spec::inventory::NodeSpec) -> SshTarget {
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

fn is_local(shared: &Shared, node: &crate::spec::inventory::NodeSpec) -> bool {
    let lookup = VarLookup::new(&shared.repo);
    lookup
        .get(node, "connection")
        .and_then(|v| v.as_str().map(str::to_string))
        .as_deref()
        == Some("local")
}

struct Run<'a> {
    shared: &'a Shared,
    env: Environment<'static>,
    state: HostState,
    tx: mpsc::UnboundedSender<Event>,
    recap: HostRecap,
    masker: Masker,
    notified: BTreeSet<String>,
}

/// Runs play `pi` of `pb` on one host; returns the host's state and its counts.
pub async fn run_play(
    shared: Arc<Shared>,
    pb: Arc<Playbook>,
    pi: usize,
    state: HostState,
    tx: mpsc::UnboundedSender<Event>,
) -> (HostState, HostRecap) {
    let env = shared.environment();
    let mut masker = Masker::default();
    if let Some(c) = &shared.repo.inventory.routing.cloud_fallback
        && let Ok(v) = std::env::var(&c.api_key_env)
    {
        masker.add(&v);
    }
    let mut run = Run {
        shared: &shared,
        env,
        state,
        tx,
        recap: HostRecap::default(),
        masker,
        notified: BTreeSet::new(),
    };
    run.play(&pb, pi).await;
    (run.state, run.recap)
}

impl Run<'_> {
    fn emit(&mut self, mut e: Event) {
        if let Some(s) = e.status {
            self.recap.count(s);
        }
        e.msg = e
            .msg
            .map(|m| template::secrets::mask(&self.masker.mask(&m)));
        e.diff = e
            .diff
            .map(|d| template::secrets::mask(&self.masker.mask(&d)));
        e.task = template::secrets::mask(&e.task);
        e.item = e.item.map(|i| {
            serde_json::from_str(&template::secrets::mask(&i.to_string())).unwrap_or(J::Null)
        });
        let _ = self.tx.send(e);
    }

    async fn connect(&mut self) -> Result<(), String> {
        if self.state.conn.is_some() {
            return Ok(());
        }
        let Some(node) = self.shared.repo.inventory.nodes.get(&self.state.name) else {
            return Err(format!("no node `{}`", self.state.name));
        };
        let conn = if is_local(self.shared, node) {
            AnyConnection::Local(crate::connection::local::LocalConnection)
        } else {
            AnyConnection::Ssh(
                SshConnection::connect(&ssh_target(self.shared, node))
                    .await
                    .map_err(|e| e.to_string())?,
            )
        };
        self.state.conn = Some(conn);
        Ok(())
    }

    async fn gather(&mut self) -> Result<(), String> {
        if self.state.facts.is_some() && !self.state.facts_stale {
            return Ok(());
        }
        let Some(conn) = &self.state.conn else {
            return Err("not connected".into());
        };
        let facts = crate::facts::probe::gather(conn).await?;
        let _ = crate::facts::store_cached(&self.shared.repo.root, &self.state.name, &facts);
        self.state.facts = Some(facts);
        self.state.facts_stale = false;
        Ok(())
    }

    async fn play(&mut self, pb: &Playbook, pi: usize) {
        let play = &pb.plays[pi];
        if self.state.dead {
            return;
        }
        if let Err(e) = self.connect().await {
            self.state.dead = true;
            let e = Event::unreachable(&self.state.name, e);
            self.emit(e);
            return;
        }
        if let Err(e) = self.gather().await {
            self.state.dead = true;
            self.state.conn = None;
            let e = Event::unreachable(&self.state.name, e);
            self.emit(e);
            return;
        }
        let Ok(expanded) = crate::play::expand(&self.shared.repo.roles, play) else {
            return;
        };
        let Some(node) = self.shared.repo.inventory.nodes.get(&self.state.name) else {
            return;
        };
        let layers = Layers {
            role_defaults: expanded.defaults(),
            play: Some(&play.vars),
            extra: Some(&self.shared.opts.extra),
        };
        let facts_json =
            serde_json::to_value(self.state.facts.clone().unwrap_or_default()).unwrap_or(J::Null);
        let base = match host_context(
            &self.shared.repo.inventory,
            node,
            &layers,
            Some(&facts_json),
            &self.env,
        ) {
            Ok(mut c) => {
                crate::inventory::vars::add_repo_facts(&mut c, &self.shared.repo);
                c
            }
            Err(d) => {
                let mut e = Event::task("task", &self.state.name, "variables", "-", Status::Failed);
                e.msg = Some(d.to_string());
                self.emit(e);
                return;
            }
        };
        let mut i = 0;
        while i < expanded.tasks.len() {
            // Runs of simple tasks go to the host as one exec (see `batch`); the rest, and
            // everything in check mode, one task per exec.
            match self.batch(&expanded.tasks[i..], &base, play.become_).await {
                Batched::Done(n) => i += n,
                Batched::Stop => return,
                Batched::No => {
                    let (origin, task) = expanded.tasks[i];
                    if !self
                        .run_task(origin, task, &base, play.become_, "task")
                        .await
                    {
                        return;
                    }
                    i += 1;
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
            if !self
                .run_task(origin, h, &base, play.become_, "handler")
                .await
            {
                return;
            }
        }
        self.notified.clear();
    }

    fn ctx_with(&self, base: &J, task: &Task, item: Option<&J>) -> J {
        let mut ctx = base.clone();
        if let Some(obj) = ctx.as_object_mut() {
            for (k, v) in &self.state.registered {
                obj.insert(k.clone(), v.clone());
            }
            if let Some(f) = &self.state.facts {
                let fj = serde_json::to_value(f).unwrap_or(J::Null);
                if let Some(n) = obj.get_mut("node").and_then(J::as_object_mut) {
                    if let Some(os) = fj.get("os").filter(|v| !v.is_null()) {
                        n.insert("os".into(), os.clone());
                    }
                    if let Some(a) = fj.get("arch").filter(|v| !v.is_null()) {
                        n.insert("arch".into(), a.clone());
                    }
                }
                obj.insert("facts".into(), fj);
            }
            for (k, v) in &task.vars {
                obj.insert(k.clone(), v.to_json());
            }
            if let Some(i) = item {
                obj.insert("item".into(), i.clone());
            }
        }
        ctx
    }

    fn render(&self, n: &Node, ctx: &J, what: &str) -> Result<J, String> {
        Ok(match &n.value {
            Value::Scalar { text, .. } if text.contains("{{") || text.contains("{%") => {
                template::render_value(&self.env, text, ctx, &n.loc, what)
                    .map_err(|d| d.to_string())?
            }
            Value::Scalar { .. } => n.to_json(),
            Value::Seq(items) => J::Array(
                items
                    .iter()
                    .map(|i| self.render(i, ctx, what))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Map(entries) => {
                let mut m = serde_json::Map::new();
                for (k, v) in entries {
                    m.insert(k.key_text().to_string(), self.render(v, ctx, what)?);
                }
                J::Object(m)
            }
        })
    }

    fn selected_by_tags(&self, task: &Task) -> bool {
        let o = &self.shared.opts;
        if task.tags.iter().any(|t| o.skip_tags.contains(t)) {
            return false;
        }
        o.tags.is_empty()
            || task.tags.iter().any(|t| o.tags.contains(t))
            || task.tags.iter().any(|t| t == "always")
    }

    /// Runs one task (every loop item); false when the host must leave the play.
    async fn run_task(
        &mut self,
        origin: Origin<'_>,
        task: &Task,
        base: &J,
        play_become: bool,
        kind: &'static str,
    ) -> bool {
        let host = self.state.name.clone();
        let what = format!("for host `{host}` in task `{}`", task.name);
        if !self.selected_by_tags(task) {
            return true;
        }
        let ctx0 = self.ctx_with(base, task, None);
        let items: Vec<Option<J>> = match &task.loop_ {
            None => vec![None],
            Some(l) => match self.render(l, &ctx0, &what) {
                Ok(J::Array(a)) => a.into_iter().map(Some).collect(),
                Ok(J::Null) => Vec::new(),
                Ok(other) => {
                    return self.fail(
                        task,
                        None,
                        kind,
                        format!("`loop` must be a list, found {other}"),
                        task.ignore_errors,
                    );
                }
                Err(e) => return self.fail(task, None, kind, e, task.ignore_errors),
            },
        };
        let mut results = Vec::new();
        for item in items {
            let ctx = self.ctx_with(base, task, item.as_ref());
            let name = template::render_inline(&self.env, &task.name, &ctx, &task.loc, &what)
                .unwrap_or_else(|_| task.name.clone());
            if let Some(w) = &task.when {
                match template::eval_expr(&self.env, &w.value, &ctx, &w.loc, &what) {
                    Ok(v) if v.is_true() => {}
                    Ok(_) => {
                        let mut e =
                            Event::task(kind, &host, &name, task.module.name, Status::Skipped);
                        e.item = item.clone();
                        self.emit(e);
                        continue;
                    }
                    Err(d) => {
                        if !self.fail(task, item.as_ref(), kind, d.to_string(), task.ignore_errors)
                        {
                            return false;
                        }
                        continue;
                    }
                }
            }
            let started = Instant::now();
            let outcome = self.execute(origin, task, &ctx, play_become, &what).await;
            let (status, result, msg, diff) = match outcome {
                Err(Exec::Unreachable(m)) => {
                    self.state.dead = true;
                    self.state.conn = None;
                    let e = Event::unreachable(&host, m);
                    self.emit(e);
                    return false;
                }
                Err(Exec::Failed(m)) => (
                    Status::Failed,
                    json!({ "failed": true, "changed": false, "msg": m }),
                    Some(m),
                    None,
                ),
                Ok((status, result, msg, diff)) => (status, result, msg, diff),
            };
            let mut e = Event::task(kind, &host, &name, task.module.name, status);
            e.item = item.clone();
            e.msg = msg;
            e.diff = diff;
            e.ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
            let failed = status == Status::Failed;
            self.record(task, e);
            results.push(result);
            if failed && !task.ignore_errors {
                self.register(task, &results);
                return false;
            }
        }
        self.register(task, &results);
        true
    }

    /// Reports a task's outcome; a change notifies its handlers, and a package or user change
    /// makes the facts stale.
    fn record(&mut self, task: &Task, e: Event) {
        if e.status == Some(Status::Changed) {
            for n in &task.notify {
                self.notified.insert(n.value.clone());
            }
            if matches!(task.module.name, "package" | "user") {
                self.state.facts_stale = true;
            }
        }
        self.emit(e);
    }

    fn register(&mut self, task: &Task, results: &[J]) {
        if let Some(r) = &task.register {
            let v = if task.loop_.is_some() {
                json!({ "results": results, "changed": results.iter().any(|r| r["changed"] == true) })
            } else {
                results.first().cloned().unwrap_or(J::Null)
            };
            self.state.registered.insert(r.clone(), v);
        }
    }

    fn fail(
        &mut self,
        task: &Task,
        item: Option<&J>,
        kind: &'static str,
        msg: String,
        ignore: bool,
    ) -> bool {
        let mut e = Event::task(
            kind,
            &self.state.name,
            &task.name,
            task.module.name,
            Status::Failed,
        );
        e.item = item.cloned();
        e.msg = Some(msg);
        self.emit(e);
        ignore
    }

    /// Renders, runs (with retries), and judges one task for one item.
    async fn execute(
        &mut self,
        origin: Origin<'_>,
        task: &Task,
        ctx: &J,
        play_become: bool,
        what: &str,
    ) -> Result<(Status, J, Option<String>, Option<String>), Exec> {
        let args = self.render(&task.args, ctx, what).map_err(Exec::Failed)?;
        if task.module.name == "fleet_agent" {
            return self
                .fleet_agent(&args, ctx, task.become_ || play_become)
                .await;
        }
        let content = crate::plan::task_file_content(
            &self.shared.repo,
            &self.shared.library,
            &self.env,
            origin,
            task,
            &args,
            ctx,
            what,
        )
        .map_err(|d| Exec::Failed(d.to_string()))?;
        let facts = self.state.facts.clone().unwrap_or_default();
        let check = self.shared.opts.check;
        let built = scripts::build(
            task.module.name,
            &args,
            content.clone(),
            &facts,
            check,
            self.shared.opts.diff,
        )
        .map_err(Exec::Failed)?;
        if let Some(msg) = built.local_only {
            return Ok((
                Status::Ok,
                json!({ "changed": false, "msg": msg }),
                Some(msg),
                None,
            ));
        }
        let become_ = task.become_ || play_become;
        let timeout = task.timeout_secs.map(Duration::from_secs);
        let mut attempt = 0;
        loop {
            let Some(conn) = &self.state.conn else {
                return Err(Exec::Unreachable("not connected".into()));
            };
            let out = conn
                .exec(&built.script, built.stdin.as_deref(), become_, timeout)
                .await;
            let out = match out {
                Ok(o) => o,
                Err(ConnError::Timeout(t)) => {
                    return Err(Exec::Failed(format!("timed out after {t}")));
                }
                Err(ConnError::Unreachable(m)) => return Err(Exec::Unreachable(m)),
            };
            let rep = scripts::parse_output(out.status, &out.stdout, &out.stderr);
            let (mut changed, mut failed, mut msg, rep) = match rep {
                Ok(r) if r.missing_path => {
                    let path = args
                        .get("path")
                        .and_then(J::as_str)
                        .unwrap_or_default()
                        .to_string();
                    if self.state.predicted.contains(&path) {
                        (true, false, None, r)
                    } else {
                        let m = format!(
                            "{path} does not exist or is not a regular file (use state: touch to create it)"
                        );
                        (false, true, Some(m.clone()), Reported { stderr: m, ..r })
                    }
                }
                Ok(r) if r.missing_dir => {
                    let dest = args.get("dest").and_then(J::as_str).unwrap_or_default();
                    let dir = dest.rsplit_once('/').map_or("", |(d, _)| d).to_string();
                    // `mkdir -p` creates the parents too: a predicted directory below `dir` will create it.
                    if self.state.predicted.contains(&dir)
                        || self.state.predicted.iter().any(|p| {
                            p.starts_with(&format!("{dir}/"))
                                && self.state.predicted_dirs.contains(p)
                        })
                    {
                        (true, false, None, r)
                    } else {
                        let m = format!(
                            "directory {dir} does not exist (create it with a file task first)"
                        );
                        (false, true, Some(m.clone()), Reported { stderr: m, ..r })
                    }
                }
                Ok(r) => {
                    let cmd_failed = matches!(task.module.name, "command" | "shell") && r.rc != 0;
                    let m = if cmd_failed {
                        Some(format!(
                            "exit {}: {}",
                            r.rc,
                            last_line(&r.stderr, &r.stdout)
                        ))
                    } else {
                        None
                    };
                    (r.changed, cmd_failed, m, r)
                }
                Err(m) => (
                    false,
                    true,
                    Some(m.clone()),
                    Reported {
                        stderr: m,
                        rc: out.status,
                        ..Reported::default()
                    },
                ),
            };
            let mut result = json!({ "changed": changed, "failed": failed, "rc": rep.rc, "stdout": rep.stdout, "stderr": rep.stderr, "stdout_lines": rep.stdout.lines().collect::<Vec<_>>() });
            let mut ectx = ctx.clone();
            if let Some(obj) = ectx.as_object_mut() {
                obj.insert("result".into(), result.clone());
                if let Some(r) = &task.register {
                    obj.insert(r.clone(), result.clone());
                }
            }
            if let Some(cw) = &task.changed_when {
                if check && matches!(task.module.name, "command" | "shell") {
                    // The command did not run in check mode: its output cannot be judged.
                    return Ok((
                        Status::Skipped,
                        result,
                        Some("not run in check mode (changed_when needs its output)".into()),
                        None,
                    ));
                }
                changed = template::eval_expr(&self.env, &cw.value, &ectx, &cw.loc, what)
                    .map_err(|d| Exec::Failed(d.to_string()))?
                    .is_true();
            }
            if let Some(fw) = &task.failed_when {
                failed = template::eval_expr(&self.env, &fw.value, &ectx, &fw.loc, what)
                    .map_err(|d| Exec::Failed(d.to_string()))?
                    .is_true();
                if failed && msg.is_none() {
                    msg = Some(format!("failed_when `{}` is true", fw.value));
                }
                if !failed {
                    msg = None;
                }
            }
            result["changed"] = J::Bool(changed);
            result["failed"] = J::Bool(failed);
            let done = match &task.until {
                Some(u) if !check => {
                    if let Some(obj) = ectx.as_object_mut() {
                        obj.insert("result".into(), result.clone());
                        if let Some(r) = &task.register {
                            obj.insert(r.clone(), result.clone());
                        }
                    }
                    template::eval_expr(&self.env, &u.value, &ectx, &u.loc, what)
                        .map(|v| v.is_true())
                        .unwrap_or(false)
                }
                _ => !failed,
            };
            if !done && attempt < task.retries {
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(task.delay_secs)).await;
                continue;
            }
            if check && changed && !failed {
                let created = match task.module.name {
                    "file"
                        if matches!(
                            args.get("state").and_then(J::as_str),
                            Some("directory" | "touch" | "link")
                        ) =>
                    {
                        args.get("path")
                    }
                    "copy" | "template" | "get_url" => args.get("dest"),
                    "lineinfile" => args.get("path"),
                    _ => None,
                };
                if let Some(p) = created.and_then(J::as_str) {
                    let p = p.trim_end_matches('/').to_string();
                    if task.module.name == "file"
                        && args.get("state").and_then(J::as_str) == Some("directory")
                    {
                        self.state.predicted_dirs.insert(p.clone());
                    }
                    self.state.predicted.insert(p);
                }
            }
            if task.until.is_some() && !done {
                failed = true;
                msg.get_or_insert_with(|| {
                    format!("`until` still false after {} attempts", attempt + 1)
                });
            }
            let diff = match (&rep.before, &content, self.shared.opts.diff, changed) {
                (before, Some(new), true, true) => {
                    let old = before.clone().unwrap_or_default();
                    let new = String::from_utf8_lossy(new).into_owned();
                    let dest = args
                        .get("dest")
                        .or_else(|| args.get("path"))
                        .and_then(J::as_str)
                        .unwrap_or("file");
                    Some(
                        similar::TextDiff::from_lines(&old, &new)
                            .unified_diff()
                            .context_radius(3)
                            .header(&format!("before: {dest}"), &format!("after: {dest}"))
                            .to_string(),
                    )
                }
                (Some(old), None, true, true) if task.module.name == "lineinfile" => {
                    let dest = args.get("path").and_then(J::as_str).unwrap_or("file");
                    Some(format!(
                        "--- before: {dest}\n{}",
                        old.lines().map(|l| format!(" {l}\n")).collect::<String>()
                    ))
                }
                _ => None,
            };
            let status = if failed {
                Status::Failed
            } else if changed {
                Status::Changed
            } else {
                Status::Ok
            };
            if task.module.name == "ollama_model"
                && changed
                && !check
                && !rep.stderr.trim().is_empty()
            {
                msg = Some(rep.stderr.lines().last().unwrap_or_default().to_string());
            }
            return Ok((status, result, msg, diff));
        }
    }
}

impl Run<'_> {
    async fn script(&self, built: &scripts::Built, become_: bool) -> Result<Reported, Exec> {
        let Some(conn) = &self.state.conn else {
            return Err(Exec::Unreachable("not connected".into()));
        };
        let out = conn
            .exec(&built.script, built.stdin.as_deref(), become_, None)
            .await
            .map_err(|e| match e {
                ConnError::Unreachable(m) => Exec::Unreachable(m),
                ConnError::Timeout(t) => Exec::Failed(format!("timed out after {t}")),
            })?;
        scripts::parse_output(out.status, &out.stdout, &out.stderr).map_err(Exec::Failed)
    }

    /// `fleet_agent`: the agent binary (uploaded only when its checksum differs), the node's
    /// token (0600, from `.fleet/tokens/NODE.token` on the controller), the systemd unit or
    /// launchd plist from the `services/` templates, and the service started (restarted
    /// when any of those changed).
    async fn fleet_agent(
        &mut self,
        args: &J,
        ctx: &J,
        become_: bool,
    ) -> Result<(Status, J, Option<String>, Option<String>), Exec> {
        let check = self.shared.opts.check;
        let facts = self.state.facts.clone().unwrap_or_default();
        let node = self.state.name.clone();
        let get = |k: &str, d: &str| args.get(k).and_then(J::as_str).unwrap_or(d).to_string();
        let binary = get("binary", "/usr/local/bin/fleet");
        let token_file = get("token_file", "/etc/fleet/agent.token");
        let interval = get("interval", "60s");
        let hq_url = args
            .get("hq_url")
            .and_then(J::as_str)
            .ok_or_else(|| Exec::Failed("`hq_url` is required".into()))?
            .to_string();
        let macos = facts.os.as_deref() == Some("macos");
        // 1. The binary: this controller's own when the platforms match, else `source`.
        // The agent runs as this account (the unit's User=, the plist's UserName): it must be
        // able to read its token and write its log.
        let user = args
            .get("user")
            .and_then(J::as_str)
            .or_else(|| ctx.get("fleet_user").and_then(J::as_str))
            .unwrap_or("root")
            .to_string();
        let source = match args
            .get("source")
            .and_then(J::as_str)
            .filter(|s| !s.is_empty())
        {
            Some(s) => std::path::PathBuf::from(s),
            None => {
                let same = facts.os.as_deref() == Some(std::env::consts::OS)
                    && facts.arch.as_deref() == Some(std::env::consts::ARCH);
                if !same {
                    return Err(Exec::Failed(format!(
                        "no fleet binary for {}/{}: this controller is {}/{}; set `source:` to a fleet binary built for the node",
                        facts.os.clone().unwrap_or_default(),
                        facts.arch.clone().unwrap_or_default(),
                        std::env::consts::OS,
                        std::env::consts::ARCH
                    )));
                }
                std::env::current_exe()
                    .map_err(|e| Exec::Failed(format!("cannot find fleet's own binary: {e}")))?
            }
        };
        let bytes = std::fs::read(&source)
            .map_err(|e| Exec::Failed(format!("cannot read {}: {e}", source.display())))?;
        let sum = crate::util::sha256_hex(&bytes);
        let q = crate::command::shquote(&binary);
        let probe = scripts::Built {
            script: format!(
                "CHECK=1; s=$(sha256sum {q} 2>/dev/null | cut -d' ' -f1 || shasum -a 256 {q} 2>/dev/null | cut -d' ' -f1); if [ \"$s\" = {sum} ]; then printf '\\n__FLEET__ changed=0 rc=0\\n'; else printf '\\n__FLEET__ changed=1 rc=0\\n'; fi"
            ),
            ..Default::default()
        };
        let mut changed_any = false;
        let bin_changed = self.script(&probe, become_).await?.changed;
        if bin_changed {
            changed_any = true;
            if !check {
                let dir = binary
                    .rsplit_once('/')
                    .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d })
                    .to_string();
                let mkdir = scripts::build(
                    "file",
                    &json!({ "path": dir, "state": "directory" }),
                    None,
                    &facts,
                    false,
                    false,
                )
                .map_err(Exec::Failed)?;
                self.script(&mkdir, become_).await?;
                let up = scripts::build(
                    "copy",
                    &json!({ "dest": binary, "mode": "0755" }),
                    Some(bytes),
                    &facts,
                    false,
                    false,
                )
                .map_err(Exec::Failed)?;
                self.script(&up, become_).await?;
            }
        }
        // 2. The token, issued on HQ (`fleet token issue NODE --out .fleet/tokens/NODE.token`).
        let token_src = args
            .get("token_source")
            .and_then(J::as_str)
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                self.shared
                    .repo
                    .root
                    .join(".fleet/tokens")
                    .join(format!("{node}.token"))
            });
        let token = match std::fs::read_to_string(&token_src) {
            Ok(t) => Some(t),
            // A check run before `fleet provision` issued the token: placing it is a change.
            Err(_) if check => None,
            Err(_) => {
                return Err(Exec::Failed(format!(
                    "no token for `{node}` at {}; issue one with `fleet token issue {node} --out {}` against HQ's store (`fleet provision` does it when HQ's store is local)",
                    token_src.display(),
                    token_src.display()
                )));
            }
        };
        if let Some(t) = &token {
            self.masker.add(t.trim());
        }
        let tdir = token_file
            .rsplit_once('/')
            .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d })
            .to_string();
        for (dir, owner) in [(tdir.as_str(), None), ("/var/log/fleet", Some(&user))] {
            let mut spec = json!({ "path": dir, "state": "directory", "mode": "0755" });
            if let Some(o) = owner {
                spec["owner"] = J::String(o.clone());
            }
            let mk =
                scripts::build("file", &spec, None, &facts, check, false).map_err(Exec::Failed)?;
            changed_any |= self.script(&mk, become_).await?.changed;
        }
        let tok = match &token {
            Some(t) => Some(
                scripts::build(
                    "copy",
                    &json!({ "dest": token_file, "mode": "0600", "owner": user }),
                    Some(format!("{}\n", t.trim()).into_bytes()),
                    &facts,
                    check,
                    false,
                )
                .map_err(Exec::Failed)?,
            ),
            None => None,
        };
        let tok_changed = match &tok {
            Some(t) => self.script(t, become_).await?.changed,
            None => true,
        };
        changed_any |= tok_changed;
        // 3. The unit (systemd) or plist (launchd).
        let (tmpl, dest, service) = if macos {
            (
                "services/com.fleet.agent.plist.j2",
                "/Library/LaunchDaemons/com.fleet.agent.plist",
                "com.fleet.agent",
            )
        } else {
            (
                "services/fleet-agent.service.j2",
                "/etc/systemd/system/fleet-agent.service",
                "fleet-agent",
            )
        };
        let mut uctx = ctx.clone();
        if let Some(o) = uctx.as_object_mut() {
            o.insert("agent_binary".into(), J::String(binary.clone()));
            o.insert("agent_token_file".into(), J::String(token_file.clone()));
            o.insert("agent_interval".into(), J::String(interval.clone()));
            if let Some(f) = o.get_mut("fleet").and_then(J::as_object_mut) {
                f.insert("hq_url".into(), J::String(hq_url.clone()));
            }
        }
        let unit = self
            .env
            .get_template(tmpl)
            .and_then(|t| t.render(template::ctx_value(&uctx)))
            .map_err(|e| Exec::Failed(format!("rendering {tmpl}: {e}")))?;
        let mkunit = scripts::build(
            "file",
            &json!({ "path": dest.rsplit_once('/').map_or("/", |(d, _)| d), "state": "directory" }),
            None,
            &facts,
            check,
            false,
        )
        .map_err(Exec::Failed)?;
        changed_any |= self.script(&mkunit, become_).await?.changed;
        let u = scripts::build(
            "copy",
            &json!({ "dest": dest, "mode": "0644" }),
            Some(unit.clone().into_bytes()),
            &facts,
            check,
            self.shared.opts.diff,
        )
        .map_err(Exec::Failed)?;
        let ur = self.script(&u, become_).await?;
        changed_any |= ur.changed;
        let diff = (self.shared.opts.diff && ur.changed).then(|| {
            similar::TextDiff::from_lines(ur.before.as_deref().unwrap_or(""), &unit)
                .unified_diff()
                .header(&format!("before: {dest}"), &format!("after: {dest}"))
                .to_string()
        });
        // 4. The service: restarted when anything it runs on changed.
        let restart = bin_changed || tok_changed || ur.changed;
        let state = if restart { "restarted" } else { "started" };
        if !check || !restart {
            let svc = scripts::build(
                "service",
                &json!({ "name": service, "state": state, "enabled": true }),
                None,
                &facts,
                check,
                false,
            )
            .map_err(Exec::Failed)?;
            changed_any |= self.script(&svc, become_).await?.changed;
        }
        let status = if changed_any {
            Status::Changed
        } else {
            Status::Ok
        };
        Ok((
            status,
            json!({ "changed": changed_any, "failed": false }),
            None,
            diff,
        ))
    }
}

/// What `batch` did.
enum Batched {
    /// Ran this many tasks (all fine).
    Done(usize),
    /// A task failed or the host went away: the host leaves the play.
    Stop,
    /// The first task cannot be batched.
    No,
}

/// One loop item of one task, ready to run.
struct Unit {
    name: String,
    item: Option<J>,
    built: Option<scripts::Built>,
}

fn batchable(task: &Task) -> bool {
    !matches!(
        task.module.name,
        "debug" | "fleet_agent" | "wait_for" | "http"
    ) && task.register.is_none()
        && task.changed_when.is_none()
        && task.failed_when.is_none()
        && task.until.is_none()
        && task.retries == 0
        && task.timeout_secs.is_none()
}

impl Run<'_> {
    /// Prepares a task's units (when, loop, rendering, script) without running anything;
    /// `None` when something needs the one-task path (its errors are reported there).
    fn prepare(&self, origin: Origin<'_>, task: &Task, base: &J) -> Option<Vec<Unit>> {
        let what = format!("for host `{}` in task `{}`", self.state.name, task.name);
        let ctx0 = self.ctx_with(base, task, None);
        let items: Vec<Option<J>> = match &task.loop_ {
            None => vec![None],
            Some(l) => match self.render(l, &ctx0, &what).ok()? {
                J::Array(a) => a.into_iter().map(Some).collect(),
                J::Null => Vec::new(),
                _ => return None,
            },
        };
        let facts = self.state.facts.clone().unwrap_or_default();
        let mut units = Vec::new();
        for item in items {
            let ctx = self.ctx_with(base, task, item.as_ref());
            let name = template::render_inline(&self.env, &task.name, &ctx, &task.loc, &what)
                .unwrap_or_else(|_| task.name.clone());
            if let Some(w) = &task.when
                && !template::eval_expr(&self.env, &w.value, &ctx, &w.loc, &what)
                    .ok()?
                    .is_true()
            {
                units.push(Unit {
                    name,
                    item,
                    built: None,
                });
                continue;
            }
            let args = self.render(&task.args, &ctx, &what).ok()?;
            let content = crate::plan::task_file_content(
                &self.shared.repo,
                &self.shared.library,
                &self.env,
                origin,
                task,
                &args,
                &ctx,
                &what,
            )
            .ok()?;
            if content.as_ref().is_some_and(|c| !scripts::inlinable(c)) {
                return None;
            }
            let built = scripts::build_for_batch(
                task.module.name,
                &args,
                content,
                &facts,
                self.shared.opts.diff,
            )
            .ok()?;
            if built.local_only.is_some() || built.stdin.is_some() {
                return None;
            }
            units.push(Unit {
                name,
                item,
                built: Some(built),
            });
        }
        Some(units)
    }

    /// Runs the longest run of batchable tasks at the head of `tasks` in one exec (real runs
    /// only: check mode keeps one exec per task, where the engine tracks what earlier tasks
    /// would have created). Results are judged and reported per task exactly as one by one.
    async fn batch(
        &mut self,
        tasks: &[(Origin<'_>, &Task)],
        base: &J,
        play_become: bool,
    ) -> Batched {
        if self.shared.opts.check || self.shared.opts.diff {
            return Batched::No;
        }
        let mut group: Vec<(&Task, Vec<Unit>)> = Vec::new();
        let become_ = tasks.first().is_some_and(|(_, t)| t.become_ || play_become);
        for (origin, task) in tasks {
            if !batchable(task)
                || (task.become_ || play_become) != become_
                || !self.selected_by_tags(task)
            {
                break;
            }
            match self.prepare(*origin, task, base) {
                Some(units) => group.push((task, units)),
                None => break,
            }
        }
        if group.len() < 2 {
            return Batched::No;
        }
        let parts: Vec<scripts::BatchPart<'_>> = group
            .iter()
            .flat_map(|(t, units)| {
                units.iter().filter_map(move |u| {
                    u.built.as_ref().map(|b| scripts::BatchPart {
                        script: &b.script,
                        stat_path: b.stat_path.as_deref(),
                        ignore_errors: t.ignore_errors,
                    })
                })
            })
            .collect();
        let started = Instant::now();
        let results = if parts.is_empty() {
            Vec::new()
        } else {
            let bsd = self
                .state
                .facts
                .as_ref()
                .and_then(|f| f.os.as_deref())
                .is_some_and(|os| os != "linux");
            let script = scripts::batch(&parts, bsd);
            let Some(conn) = &self.state.conn else {
                return Batched::Stop;
            };
            match conn.exec_piped(&script, become_, None).await {
                Ok(out) => scripts::split_batch(&out.stdout, &out.stderr),
                Err(e) => {
                    self.state.dead = true;
                    self.state.conn = None;
                    let ev = Event::unreachable(&self.state.name, e.to_string());
                    self.emit(ev);
                    return Batched::Stop;
                }
            }
        };
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
            / u64::try_from(parts.len().max(1)).unwrap_or(1);
        let host = self.state.name.clone();
        let mut next = results.into_iter();
        let mut ran = 0;
        for (task, units) in &group {
            for u in units {
                let status_msg =
                    match &u.built {
                        None => Some((Status::Skipped, None)),
                        Some(_) => next.next().map(|(rc, stdout, stderr)| {
                            match scripts::parse_output(rc, &stdout, &stderr) {
                                Ok(r)
                                    if matches!(task.module.name, "command" | "shell")
                                        && r.rc != 0 =>
                                {
                                    (
                                        Status::Failed,
                                        Some(format!(
                                            "exit {}: {}",
                                            r.rc,
                                            last_line(&r.stderr, &r.stdout)
                                        )),
                                    )
                                }
                                Ok(r) if r.changed => (Status::Changed, None),
                                Ok(_) => (Status::Ok, None),
                                Err(m) => (Status::Failed, Some(m)),
                            }
                        }),
                    };
                // A task after a failure in the batch did not run: the host stops here.
                let Some((status, msg)) = status_msg else {
                    return Batched::Stop;
                };
                let mut e = Event::task("task", &host, &u.name, task.module.name, status);
                e.item = u.item.clone();
                e.msg = msg;
                if u.built.is_some() {
                    e.ms = Some(ms);
                }
                self.record(task, e);
                if status == Status::Failed && !task.ignore_errors {
                    return Batched::Stop;
                }
            }
            ran += 1;
        }
        Batched::Done(ran)
    }
}

enum Exec {
    Unreachable(String),
    Failed(String),
}

fn last_line(a: &str, b: &str) -> String {
    a.lines()
        .rev()
        .chain(b.lines().rev())
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}
