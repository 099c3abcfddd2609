//! One task on one host, one exec per loop item: the instances from the shared pipeline, the
//! module's steps, the result judged (`changed_when`, `failed_when`, `until` with `retries`),
//! check-mode predictions of what earlier tasks create, `register`, the diff.

use std::time::{Duration, Instant};

use serde_json::{Value as J, json};

use crate::engine::batch_shared::OnceResult;
use crate::engine::events::{Event, Status};
use crate::engine::exec;
use crate::engine::host::Run;
use crate::engine::outcome::{Outcome, TaskError};
use crate::instance::{Decision, Instance, Phase};
use crate::modules::{Action, Judged, Mode, Need, Reported};
use crate::play::Origin;
use crate::secret::MASK;
use crate::spec::playbook::Play;
use crate::spec::task::Task;
use crate::template::{self, Context};

impl Run<'_> {
    /// The run's mode.
    pub(crate) fn mode(&self) -> Mode {
        Mode {
            check: self.shared.opts.check,
            diff: self.shared.opts.diff,
        }
    }

    /// Reports a failure of `task` (for `item`); returns whether the host goes on.
    fn fail(&mut self, task: &Task, item: Option<J>, kind: &'static str, msg: String) -> bool {
        let mut e = Event::task(
            kind,
            &self.state.name,
            &task.name,
            task.module.name,
            Status::Failed,
        );
        e.item = item;
        e.msg = Some(msg);
        self.emit(e);
        task.ignore_errors
    }

    /// Runs one task (every loop item); false when the host must leave the play. A
    /// `run_once` task runs on the batch's first running host, the others take its result;
    /// a `throttle`d one waits for a slot; with `--step`, the user decides first.
    pub(crate) async fn run_task(
        &mut self,
        origin: Origin<'_>,
        task: &Task,
        base: &Context,
        play: &Play,
        kind: &'static str,
    ) -> bool {
        if !self.selected_by_tags(task) {
            return true;
        }
        if task.run_once
            && let Ok(r) = self.batch.clone().once(task, &self.state.name).await
        {
            return self.take_once(task, kind, r);
        }
        let batch = self.batch.clone();
        let _slot = match task.throttle {
            Some(n) => batch.throttle(task, n).acquire_owned().await.ok(),
            None => None,
        };
        if self.shared.opts.step && !self.shared.steps.allow(task).await {
            return true;
        }
        self.last = None;
        let ok = self.run_here(origin, task, base, play, kind).await;
        if task.run_once {
            let (value, secret) = self.last.take().unwrap_or_default();
            self.batch.publish(
                task,
                OnceResult {
                    host: self.state.name.clone(),
                    value,
                    secret,
                    failed: !ok,
                },
            );
        }
        ok
    }

    /// Another host of the batch ran this `run_once` task: its result is this host's too.
    fn take_once(&mut self, task: &Task, kind: &'static str, r: OnceResult) -> bool {
        if let Some(name) = &task.register {
            self.state
                .registered
                .insert(name, r.value.clone(), r.secret);
        }
        if r.failed {
            let msg = format!("the `run_once` task failed on `{}`", r.host);
            return self.fail(task, None, kind, msg);
        }
        true
    }

    /// Runs one task here (every loop item); false when the host must leave the play.
    async fn run_here(
        &mut self,
        origin: Origin<'_>,
        task: &Task,
        base: &Context,
        play: &Play,
        kind: &'static str,
    ) -> bool {
        let ctx = self.task_context(base);
        let instances = match self.renderer().instances(task, &ctx, Phase::Live) {
            Ok(i) => i,
            Err(d) => return self.fail(task, None, kind, d.to_string()),
        };
        let host = self.state.name.clone();
        let mut results = Vec::new();
        let mut secret = false;
        for inst in instances {
            let inst = match inst {
                Ok(i) => i,
                Err(d) => {
                    if !self.fail(task, None, kind, d.to_string()) {
                        self.register(task, &results, secret);
                        return false;
                    }
                    continue;
                }
            };
            let item = inst.item.as_ref().map(|i| i.shown.clone());
            secret |= inst.args.as_ref().is_some_and(|a| a.is_secret())
                || inst.item.as_ref().is_some_and(|i| i.is_secret());
            if let Decision::Skip { .. } = inst.decision {
                let mut e = Event::task(kind, &host, &inst.name, task.module.name, Status::Skipped);
                e.item = item;
                self.emit(e);
                continue;
            }
            let started = Instant::now();
            let (outcome, stales) = match self.execute(origin, task, &inst, play).await {
                Ok(o) => o,
                Err(TaskError::Unreachable(m)) => {
                    self.unreachable(m);
                    return false;
                }
                Err(TaskError::Config(d)) => (Outcome::failed(d.to_string()), false),
                Err(e) => (Outcome::failed(e.to_string()), false),
            };
            let mut e = Event::task(kind, &host, &inst.name, task.module.name, outcome.status);
            e.item = item;
            e.msg = outcome.msg;
            e.diff = outcome.diff;
            if self.shared.opts.show_output {
                let text = |k: &str| {
                    outcome.result[k].as_str().map(|s| {
                        if secret {
                            crate::secret::MASK.to_string()
                        } else {
                            s.to_string()
                        }
                    })
                };
                e.rc = outcome.result["rc"].as_i64();
                e.stdout = text("stdout");
                e.stderr = text("stderr");
            }
            e.ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
            let failed = outcome.status == Status::Failed;
            self.record(task, stales, e);
            results.push(outcome.result);
            if failed && !task.ignore_errors {
                self.register(task, &results, secret);
                return false;
            }
        }
        self.register(task, &results, secret);
        true
    }

    /// Keeps a task's result under its `register` name (secret when it read a secret).
    pub(crate) fn register(&mut self, task: &Task, results: &[J], secret: bool) {
        if task.register.is_none() && !task.run_once {
            return;
        }
        let v = if task.loop_.is_some() {
            json!({ "results": results, "changed": results.iter().any(|r| r["changed"] == true) })
        } else {
            results.first().cloned().unwrap_or(J::Null)
        };
        if secret {
            crate::inventory::vars::remember_strings(&v);
        }
        if let Some(r) = &task.register {
            self.state.registered.insert(r, v.clone(), secret);
        }
        // A `run_once` task's result goes to the batch's other hosts.
        self.last = Some((v, secret));
    }

    /// Renders, runs (with retries) and judges one instance. Also says whether the module
    /// makes facts stale when it changes something.
    async fn execute(
        &mut self,
        origin: Origin<'_>,
        task: &Task,
        inst: &Instance,
        play: &Play,
    ) -> Result<(Outcome, bool), TaskError> {
        let action = self.renderer().bind_live(origin, task, inst)?;
        let stales = action.stales_facts();
        if let Some(msg) = action.local() {
            return Ok((
                Outcome {
                    status: Status::Ok,
                    result: json!({ "changed": false, "failed": false, "msg": msg }),
                    msg: Some(msg),
                    diff: None,
                },
                false,
            ));
        }
        let mode = self.mode();
        let timeout = task.timeout_secs.map(Duration::from_secs);
        let what = format!("for host `{}` in task `{}`", self.state.name, task.name);
        let delegate = self.delegate_for(task, inst).await?;
        let mut attempt = 0;
        loop {
            let reported = match &delegate {
                None => {
                    let facts = self.state.facts.clone().unwrap_or_default();
                    let who = self.run_as(task, play);
                    let Some(conn) = &self.state.conn else {
                        return Err(TaskError::Unreachable("not connected".into()));
                    };
                    exec::action(conn, action.as_ref(), &facts, mode, who, timeout).await?
                }
                Some(name) => {
                    self.delegated(name, task, play, action.as_ref(), mode, timeout)
                        .await?
                }
            };
            let (judged, rep) = self.judge(action.as_ref(), reported, mode);
            let mut changed = judged.changed;
            let mut failed = judged.failed.is_some();
            let mut msg = judged.failed.clone().or(judged.note.clone());
            let mut result = json!({
                "changed": changed,
                "failed": failed,
                "rc": rep.rc,
                "stdout": rep.stdout,
                "stderr": rep.stderr,
                "stdout_lines": rep.stdout.lines().collect::<Vec<_>>(),
            });
            if let Some(m) = &judged.failed {
                result["msg"] = J::String(m.clone());
            }
            let mut ectx = inst.ctx.clone();
            let result_secret = inst.args.as_ref().is_some_and(|a| a.is_secret());
            ectx.insert("result", result.clone(), result_secret);
            if let Some(r) = &task.register {
                ectx.insert(r, result.clone(), result_secret);
            }
            if let Some(cw) = &task.changed_when {
                if mode.check && !action.output_in_check() {
                    // The command did not run in check mode: its output cannot be judged.
                    return Ok((
                        Outcome {
                            status: Status::Skipped,
                            result,
                            msg: Some(
                                "not run in check mode (changed_when needs its output)".into(),
                            ),
                            diff: None,
                        },
                        false,
                    ));
                }
                changed = template::eval_expr(&self.env, &cw.value, &ectx, &cw.loc, &what)?
                    .0
                    .is_true();
            }
            if let Some(fw) = &task.failed_when {
                failed = template::eval_expr(&self.env, &fw.value, &ectx, &fw.loc, &what)?
                    .0
                    .is_true();
                if failed && msg.is_none() {
                    msg = Some(format!("failed_when `{}` is true", fw.value));
                }
                if !failed {
                    msg = judged.note.clone();
                }
            }
            result["changed"] = J::Bool(changed);
            result["failed"] = J::Bool(failed);
            let done = match &task.until {
                Some(u) if !mode.check => {
                    ectx.insert("result", result.clone(), result_secret);
                    if let Some(r) = &task.register {
                        ectx.insert(r, result.clone(), result_secret);
                    }
                    template::eval_expr(&self.env, &u.value, &ectx, &u.loc, &what)
                        .map(|(v, _)| v.is_true())
                        .unwrap_or(false)
                }
                _ => !failed,
            };
            if !done && attempt < task.retries {
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(task.delay_secs)).await;
                continue;
            }
            if mode.check && changed && !failed {
                self.predict(action.as_ref());
            }
            if task.until.is_some() && !done {
                failed = true;
                msg.get_or_insert_with(|| {
                    format!(
                        "`until` still false after {}",
                        crate::util::count(attempt as u64 + 1, "attempt", "attempts")
                    )
                });
            }
            let diff = if mode.diff && changed {
                diff_of(action.as_ref(), &rep)
            } else {
                None
            };
            let status = if failed {
                Status::Failed
            } else if changed {
                Status::Changed
            } else {
                Status::Ok
            };
            return Ok((
                Outcome {
                    status,
                    result,
                    msg,
                    diff,
                },
                stales,
            ));
        }
    }

    /// Judges a step's report; in check mode, something it needs that an earlier task is
    /// predicted to create counts as a change instead of a failure.
    pub(crate) fn judge(
        &self,
        action: &dyn Action,
        reported: Result<Reported, String>,
        mode: Mode,
    ) -> (Judged, Reported) {
        let rep = match reported {
            Ok(r) => r,
            Err(m) => {
                return (
                    Judged {
                        changed: false,
                        failed: Some(m.clone()),
                        note: None,
                    },
                    Reported {
                        stderr: m,
                        rc: -1,
                        ..Reported::default()
                    },
                );
            }
        };
        if mode.check
            && rep.missing
            && let Some(need) = action.effects().needs
        {
            let met = match &need {
                Need::Dir(dir) => {
                    self.state.predicted.contains(dir.trim_end_matches('/'))
                        || self
                            .state
                            .predicted_dirs
                            .iter()
                            .any(|p| p.starts_with(&format!("{}/", dir.trim_end_matches('/'))))
                }
                Need::File(p) => self.state.predicted.contains(p.trim_end_matches('/')),
            };
            return if met {
                (
                    Judged {
                        changed: true,
                        ..Judged::default()
                    },
                    rep,
                )
            } else {
                let m = need.message();
                (
                    Judged {
                        changed: false,
                        failed: Some(m.clone()),
                        note: None,
                    },
                    Reported { stderr: m, ..rep },
                )
            };
        }
        (action.judge(&rep, mode), rep)
    }

    /// Check mode: remembers what a task that would change something creates.
    pub(crate) fn predict(&mut self, action: &dyn Action) {
        if let Some((path, dir)) = action.effects().creates {
            let p = path.trim_end_matches('/').to_string();
            if dir {
                self.state.predicted_dirs.insert(p.clone());
            }
            self.state.predicted.insert(p);
        }
    }
}

/// A unified diff of the file a task placed (or, for a file edited in place, its old
/// contents); none for a content that read a secret.
fn diff_of(action: &dyn Action, rep: &Reported) -> Option<String> {
    let before = rep
        .before
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned());
    match action.file() {
        Some((dest, content)) => {
            if content.secret {
                return Some(format!(
                    "--- before: {dest}\n+++ after: {dest}\n(the new content reads a secret: {MASK})\n"
                ));
            }
            let new = String::from_utf8_lossy(&content.bytes).into_owned();
            Some(
                similar::TextDiff::from_lines(before.as_deref().unwrap_or(""), &new)
                    .unified_diff()
                    .context_radius(3)
                    .header(&format!("before: {dest}"), &format!("after: {dest}"))
                    .to_string(),
            )
        }
        None => before.map(|old| {
            format!(
                "--- before\n{}",
                old.lines().map(|l| format!(" {l}\n")).collect::<String>()
            )
        }),
    }
}
