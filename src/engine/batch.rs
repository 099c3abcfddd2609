//! A host's run of simple tasks in one exec: every unit framed under one nonce, the paths
//! they compare looked up with one `stat`, each unit's result judged and reported exactly as
//! if it had run alone. Real runs only: a check run keeps one exec per task, where the
//! engine tracks what earlier tasks would have created.

use std::time::Instant;

use serde_json::Value as J;

use crate::connection::RunAs;
use crate::engine::events::{Event, Status};
use crate::engine::exec;
use crate::engine::host::Run;
use crate::instance::{Decision, Phase};
use crate::modules::{Action, Step};
use crate::play::Origin;
use crate::script::frame::{self, Nonce};
use crate::spec::playbook::Play;
use crate::spec::task::Task;
use crate::template::Context;

/// What [`Run::batch`] did.
pub(crate) enum Batched {
    /// Ran this many tasks (all fine).
    Done(usize),
    /// A task failed or the host went away: the host leaves the play.
    Stop,
    /// The first task cannot be batched.
    No,
}

/// One loop item of one task, ready to run (or skipped by its `when`).
struct Unit {
    name: String,
    item: Option<J>,
    work: Option<(Box<dyn Action>, Step)>,
}

/// A task can share an exec when nothing about it needs its own result before the next task
/// (registered output, conditions on its result, retries, its own time limit).
fn batchable(task: &Task) -> bool {
    task.register.is_none()
        && task.changed_when.is_none()
        && task.failed_when.is_none()
        && task.until.is_none()
        && task.retries == 0
        && task.timeout_secs.is_none()
        && !task.run_once
        && task.delegate_to.is_none()
        && task.throttle.is_none()
}

impl Run<'_> {
    /// A task's units, rendered and built, without running anything; `None` when something
    /// needs the one-task path (which also reports any error).
    fn prepare(&self, origin: Origin<'_>, task: &Task, base: &Context) -> Option<Vec<Unit>> {
        let facts = self.state.facts.clone().unwrap_or_default();
        let ctx = self.task_context(base);
        let r = self.renderer();
        let mut units = Vec::new();
        for inst in r.instances(task, &ctx, Phase::Live).ok()? {
            let inst = inst.ok()?;
            let item = inst.item.as_ref().map(|i| i.shown.clone());
            if let Decision::Skip { .. } = inst.decision {
                units.push(Unit {
                    name: inst.name,
                    item,
                    work: None,
                });
                continue;
            }
            let action = r.bind_live(origin, task, &inst).ok()?;
            if action.local().is_some() || !action.batchable() {
                return None;
            }
            let step = action.script(&facts).ok()?;
            if step.stdin.is_some() {
                return None;
            }
            units.push(Unit {
                name: inst.name,
                item,
                work: Some((action, step)),
            });
        }
        Some(units)
    }

    /// Runs the longest run of batchable tasks at the head of `tasks` (with the same account)
    /// in one exec.
    pub(crate) async fn batch(
        &mut self,
        tasks: &[(Origin<'_>, &Task)],
        base: &Context,
        play: &Play,
    ) -> Batched {
        if self.shared.opts.check || self.shared.opts.diff || self.shared.opts.step {
            return Batched::No;
        }
        let Some((_, first)) = tasks.first() else {
            return Batched::No;
        };
        let who: RunAs<'_> = self.run_as(first, play);
        let mut group: Vec<(&Task, Vec<Unit>)> = Vec::new();
        for (origin, task) in tasks {
            if !batchable(task) || self.run_as(task, play) != who || !self.selected_by_tags(task) {
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
        let who = self.run_as(group[0].0, play);
        let units: Vec<frame::Unit<'_>> = group
            .iter()
            .flat_map(|(t, units)| {
                units.iter().filter_map(move |u| {
                    u.work.as_ref().map(|(_, step)| frame::Unit {
                        script: &step.script,
                        stat_path: step.stat_path.as_deref(),
                        ignore_errors: t.ignore_errors,
                        own_path: step.own_path,
                    })
                })
            })
            .collect();
        let started = Instant::now();
        let nonce = Nonce::new();
        let facts = self.state.facts.clone().unwrap_or_default();
        let (results, status, stderr) = if units.is_empty() {
            (Vec::new(), 0, String::new())
        } else {
            let script =
                frame::compose(&units, self.mode(), exec::host_kind(&facts), &nonce, false);
            let Some(conn) = &self.state.conn else {
                return Batched::Stop;
            };
            match conn.exec(script.text(), None, who, None).await {
                Ok(out) => (
                    frame::split(&out.stdout, &out.stderr, &nonce),
                    out.status,
                    out.stderr,
                ),
                Err(e) => {
                    self.unreachable(e.to_string());
                    return Batched::Stop;
                }
            }
        };
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
            / u64::try_from(units.len().max(1)).unwrap_or(1);
        drop(units);
        let host = self.state.name.clone();
        let mode = self.mode();
        let mut next = results.into_iter();
        let mut ran = 0;
        for (task, units) in &group {
            for u in units {
                let Some((action, _)) = &u.work else {
                    let mut e =
                        Event::task("task", &host, &u.name, task.module.name, Status::Skipped);
                    e.item = u.item.clone();
                    self.record(task, false, e);
                    continue;
                };
                let reported = match next.next() {
                    Some(out) => exec::unit_report(&out, &nonce),
                    // The exec ended before this unit reported: it did not finish.
                    None => Err(exec::ended_early(status, &stderr)),
                };
                let (judged, _) = self.judge(action.as_ref(), reported, mode);
                let status = match (&judged.failed, judged.changed) {
                    (Some(_), _) => Status::Failed,
                    (None, true) => Status::Changed,
                    (None, false) => Status::Ok,
                };
                let mut e = Event::task("task", &host, &u.name, task.module.name, status);
                e.item = u.item.clone();
                e.msg = judged.failed.or(judged.note);
                e.ms = Some(ms);
                self.record(task, action.stales_facts(), e);
                if status == Status::Failed && !task.ignore_errors {
                    return Batched::Stop;
                }
            }
            ran += 1;
        }
        Batched::Done(ran)
    }
}
