//! A host's walk through a task list with structure: `block`/`rescue`/`always` and
//! `include_tasks` (its `loop`, `vars` and `when` decided on this host). Runs of plain tasks
//! go to [`Run::tasks`], as in a play without structure.

use std::future::Future;
use std::pin::Pin;

use crate::engine::events::{Event, Status};
use crate::engine::host::Run;
use crate::instance::{Decision, Phase};
use crate::play::{Body, Origin};
use crate::spec::block::{Block, Include, Item};
use crate::spec::playbook::Play;
use crate::spec::task::Task;
use crate::template::Context;

/// How a list of tasks ended on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Every task ran (or failed with `ignore_errors`): go on.
    Next,
    /// A task failed: the host leaves the play unless a `rescue` takes the failure.
    Failed,
    /// The host is gone (unreachable, interrupted): nothing more runs on it.
    Gone,
}

type Walk<'f> = Pin<Box<dyn Future<Output = Flow> + Send + 'f>>;

impl<'r> Run<'r> {
    /// Runs `items` of `body` in order.
    pub(crate) fn items<'f>(
        &'f mut self,
        body: Body<'f>,
        items: &'f [Item],
        base: &'f Context,
        play: &'f Play,
    ) -> Walk<'f>
    where
        'r: 'f,
    {
        Box::pin(async move {
            let mut i = 0;
            while i < items.len() {
                let flow = match &items[i] {
                    Item::Task(_) => {
                        let run: Vec<(Origin<'_>, &Task)> = items[i..]
                            .iter()
                            .map_while(|it| match it {
                                Item::Task(t) => Some((body.origin, &body.tasks[*t])),
                                _ => None,
                            })
                            .collect();
                        i += run.len();
                        self.tasks(&run, base, play).await
                    }
                    Item::Block(b) => {
                        i += 1;
                        self.block(body, b, base, play).await
                    }
                    Item::Include(inc) => {
                        i += 1;
                        self.include(body, inc, base, play).await
                    }
                };
                if flow != Flow::Next {
                    return flow;
                }
            }
            Flow::Next
        })
    }

    /// A block: its tasks; on a failure its `rescue` (which, if it succeeds, leaves the host
    /// in the play); then its `always` whatever happened.
    async fn block<'f>(
        &'f mut self,
        body: Body<'f>,
        b: &'f Block,
        base: &'f Context,
        play: &'f Play,
    ) -> Flow
    where
        'r: 'f,
    {
        let failed_before = self.recap.failed;
        let mut flow = self.items(body, &b.block, base, play).await;
        if flow == Flow::Failed && !b.rescue.is_empty() {
            // The failure is the block's, rescued: counted as such, not as the host's.
            self.recap.failed = failed_before;
            self.recap.rescued += 1;
            // As in Ansible, the rescue sees what failed (its message as printed: masked).
            let mut scope = base.clone();
            let (task, msg) = self.last_failure.clone().unwrap_or_default();
            scope.insert(
                "ansible_failed_task",
                serde_json::json!({ "name": task }),
                false,
            );
            scope.insert(
                "ansible_failed_result",
                serde_json::json!({ "failed": true, "msg": msg.unwrap_or_default() }),
                false,
            );
            flow = self.items(body, &b.rescue, &scope, play).await;
        }
        if flow != Flow::Gone && !b.always.is_empty() {
            let after = self.items(body, &b.always, base, play).await;
            if after != Flow::Next {
                flow = after;
            }
        }
        flow
    }

    /// An `include_tasks`: per loop item (or once), its `vars` rendered and its `when`
    /// decided on this host, then the file's tasks with `item` and those variables.
    async fn include<'f>(
        &'f mut self,
        body: Body<'f>,
        inc: &'f Include,
        base: &'f Context,
        play: &'f Play,
    ) -> Flow
    where
        'r: 'f,
    {
        // Nothing inside is selected by `--tags`/`--skip-tags`: nothing to decide either.
        let mut inside = Vec::new();
        crate::spec::block::task_indices(&inc.body, &mut inside);
        if !inside
            .iter()
            .any(|i| self.selected_by_tags(&body.tasks[*i]))
        {
            return Flow::Next;
        }
        let host = self.state.name.clone();
        let what = format!("for host `{host}` in `{}`", inc.name);
        let ctx = self.task_context(base);
        let fail = |run: &mut Self, msg: String| {
            let mut e = Event::task("task", &host, &inc.name, "include_tasks", Status::Failed);
            e.msg = Some(msg);
            run.emit(e);
            Flow::Failed
        };
        let items = match &inc.loop_ {
            None => vec![None],
            Some(l) => match self.renderer().items(l, &ctx, &what, Phase::Live) {
                Ok(Some(items)) => items.into_iter().map(Some).collect(),
                Ok(None) => vec![None],
                Err(d) => return fail(self, d.to_string()),
            },
        };
        for item in items {
            let mut scope = base.clone();
            let mut cond = ctx.clone();
            if let Some(i) = &item {
                scope.insert("item", i.value.clone(), i.is_secret());
                cond.insert("item", i.value.clone(), i.is_secret());
            }
            for (k, v) in &inc.vars {
                match self.renderer().render_node(v, &cond, &what, Phase::Live) {
                    Ok((r, _)) => {
                        let secret = r.is_secret();
                        scope.insert(k, r.value.clone(), secret);
                        cond.insert(k, r.value, secret);
                    }
                    Err(d) => return fail(self, d.to_string()),
                }
            }
            if let Some(w) = &inc.when {
                match self.renderer().condition(w, &cond, &what, Phase::Live) {
                    Ok(Decision::Run) => {}
                    Ok(_) => {
                        let mut e =
                            Event::task("task", &host, &inc.name, "include_tasks", Status::Skipped);
                        e.item = item.as_ref().map(|i| i.shown.clone());
                        self.emit(e);
                        continue;
                    }
                    Err(d) => return fail(self, d.to_string()),
                }
            }
            let flow = self.items(body, &inc.body, &scope, play).await;
            if flow != Flow::Next {
                return flow;
            }
        }
        Flow::Next
    }
}
