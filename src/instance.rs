//! A task's instances on one host: its `vars`, its loop items, each item's `when` decided,
//! its name and arguments rendered — every value paired with what printers may show of it —
//! and its module's arguments decoded into an [`Action`]. One pipeline for `fleet plan`
//! (offline: what only a run can know stays as written) and for the engine (live).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use minijinja::Environment;
use serde::Serialize;
use serde_json::Value as J;

use crate::error::Diagnostic;
use crate::modules::{Action, ArgError, ArgReader, FileContent, Files, Inputs};
use crate::play::Origin;
use crate::secret::{MASK, Rendered};
use crate::spec::task::Task;
use crate::spec::yaml::{Node, Value};
use crate::template::{self, Context, Library};

/// Whether a task instance runs.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Decision {
    /// It runs.
    Run,
    /// Its `when` is false for this host.
    Skip {
        /// The condition.
        when: String,
    },
    /// Its `when` needs facts or registered results: decided on the host.
    AtRunTime {
        /// The condition.
        when: String,
    },
}

/// When the pipeline runs.
#[derive(Debug, Clone, Copy)]
pub enum Phase<'a> {
    /// `fleet plan`: names only a run knows (registered results, facts) are kept as written.
    Offline {
        /// Those names.
        runtime: &'a BTreeSet<String>,
    },
    /// A run on the host: everything is known.
    Live,
}

/// What the pipeline renders with.
#[derive(Clone, Copy)]
pub struct Renderer<'a> {
    /// The repo root (repo files, tokens).
    pub root: &'a Path,
    /// Templates.
    pub library: &'a Library,
    /// The environment (holds the `nodes` global).
    pub env: &'a Environment<'static>,
    /// The host.
    pub node: &'a str,
}

impl std::fmt::Debug for Renderer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("node", &self.node)
            .finish()
    }
}

/// One loop item (or the task itself, without a loop) on one host.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The task's name as printers show it (`***` when it read a secret).
    pub name: String,
    /// The loop item.
    pub item: Option<Rendered>,
    /// Whether it runs.
    pub decision: Decision,
    /// Its variables: the host's, the task's `vars`, `item`.
    pub ctx: Context,
    /// Its rendered arguments (`None` when skipped).
    pub args: Option<Rendered>,
    /// Offline: every argument could be rendered (nothing waits for the run).
    pub complete: bool,
}

/// True when every variable the text misses is one that only exists at run time.
fn needs_runtime(
    env: &Environment<'_>,
    text: &str,
    ctx: &Context,
    runtime: &BTreeSet<String>,
    is_expr: bool,
) -> bool {
    let src = if is_expr {
        let t = text.trim();
        t.strip_prefix("{{")
            .and_then(|s| s.strip_suffix("}}"))
            .unwrap_or(t)
            .to_string()
    } else {
        text.to_string()
    };
    let missing = template::missing_variables(env, &src, ctx, is_expr);
    !missing.is_empty()
        && missing
            .iter()
            .all(|m| runtime.contains(m.split('.').next().unwrap_or(m)))
}

fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

impl<'a> Renderer<'a> {
    /// Renders a YAML value: each templated string with the context (a whole `{{ expr }}`
    /// keeps its type); returns the value and whether every part could be rendered.
    pub fn render_node(
        &self,
        n: &Node,
        ctx: &Context,
        what: &str,
        phase: Phase<'_>,
    ) -> Result<(Rendered, bool), Diagnostic> {
        Ok(match &n.value {
            Value::Scalar { text, .. } if is_template(text) => {
                match template::render_value(self.env, text, ctx, &n.loc, what) {
                    Ok(r) => (r, true),
                    Err(_) if matches!(phase, Phase::Offline { runtime } if needs_runtime(self.env, text, ctx, runtime, false)) => {
                        (Rendered::plain(J::String(text.clone())), false)
                    }
                    Err(e) => return Err(e),
                }
            }
            Value::Scalar { .. } => (Rendered::plain(n.to_json()), true),
            Value::Seq(items) => {
                let (mut value, mut shown, mut complete) = (Vec::new(), Vec::new(), true);
                for i in items {
                    let (r, c) = self.render_node(i, ctx, what, phase)?;
                    value.push(r.value);
                    shown.push(r.shown);
                    complete &= c;
                }
                (
                    Rendered {
                        value: J::Array(value),
                        shown: J::Array(shown),
                    },
                    complete,
                )
            }
            Value::Map(entries) => {
                let (mut value, mut shown, mut complete) =
                    (serde_json::Map::new(), serde_json::Map::new(), true);
                for (k, v) in entries {
                    let (r, c) = self.render_node(v, ctx, what, phase)?;
                    value.insert(k.key_text().to_string(), r.value);
                    shown.insert(k.key_text().to_string(), r.shown);
                    complete &= c;
                }
                (
                    Rendered {
                        value: J::Object(value),
                        shown: J::Object(shown),
                    },
                    complete,
                )
            }
        })
    }

    /// The loop's items; offline, `None` when only a run can know them.
    fn loop_items(
        &self,
        l: &Node,
        ctx: &Context,
        what: &str,
        phase: Phase<'_>,
    ) -> Result<Option<Vec<Rendered>>, Diagnostic> {
        let r = match &l.value {
            Value::Scalar { text, .. } => {
                match template::render_value(self.env, text, ctx, &l.loc, what) {
                    Ok(r) => r,
                    Err(_) if matches!(phase, Phase::Offline { runtime } if needs_runtime(self.env, text, ctx, runtime, false)) =>
                    {
                        return Ok(None);
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => {
                let (r, complete) = self.render_node(l, ctx, what, phase)?;
                if !complete {
                    return Ok(None);
                }
                r
            }
        };
        let secret = r.shown == MASK;
        match (r.value, r.shown) {
            (J::Array(values), shown) => {
                let shown: Vec<J> = match shown {
                    J::Array(s) if s.len() == values.len() => s,
                    _ => vec![J::String(MASK.into()); values.len()],
                };
                Ok(Some(
                    values
                        .into_iter()
                        .zip(shown)
                        .map(|(value, shown)| {
                            if secret {
                                Rendered::new(value, true)
                            } else {
                                Rendered { value, shown }
                            }
                        })
                        .collect(),
                ))
            }
            (J::Null, _) => Ok(Some(Vec::new())),
            (_, shown) => Err(Diagnostic::error(
                l.loc.clone(),
                format!(
                    "`loop` {what}: expected a list, found {}",
                    match shown {
                        J::String(s) if s == MASK => MASK.to_string(),
                        other => other.to_string(),
                    }
                ),
            )
            .with_help(
                "give a YAML list, or a template that yields one such as \"{{ node.models }}\"",
            )),
        }
    }

    /// The instances of `task` on this host, from the host's context `base`. An error of the
    /// task as a whole (its loop) is the outer error; an item's own error (its `when`, its
    /// arguments) is that item's.
    pub fn instances(
        &self,
        task: &Task,
        base: &Context,
        phase: Phase<'_>,
    ) -> Result<Vec<Result<Instance, Diagnostic>>, Diagnostic> {
        let what = format!("for host `{}` in task `{}`", self.node, task.name);
        let mut ctx0 = base.clone();
        self.add_task_vars(task, &mut ctx0, &what, phase)?;
        let items: Vec<Option<Rendered>> = match &task.loop_ {
            None => vec![None],
            Some(l) => match self.loop_items(l, &ctx0, &what, phase)? {
                Some(items) => items.into_iter().map(Some).collect(),
                // Offline, a loop over what only a run knows: one instance stands for its
                // items, with its condition and arguments as written.
                None => {
                    let text = match &l.value {
                        Value::Scalar { text, .. } => text.clone(),
                        _ => "the loop".to_string(),
                    };
                    let mut args = task.args.to_json();
                    if let (Some(key), J::String(_) | J::Null) = (task.module.free_form, &args) {
                        args = serde_json::json!({ key: args });
                    }
                    return Ok(vec![Ok(Instance {
                        name: task.name.clone(),
                        item: Some(Rendered::plain(J::String(format!(
                            "<each of {text}, at run time>"
                        )))),
                        decision: match task.guards.iter().chain(&task.when).next() {
                            None => Decision::Run,
                            Some(w) => Decision::AtRunTime {
                                when: w.value.clone(),
                            },
                        },
                        ctx: ctx0,
                        args: Some(Rendered::plain(args)),
                        complete: false,
                    })]);
                }
            },
        };
        Ok(items
            .into_iter()
            .map(|item| self.instance(task, &ctx0, item, &what, phase))
            .collect())
    }

    /// Whether an instance runs: the conditions of the task's blocks and imports, then its
    /// own `when`; the first that is false skips it.
    fn decide(
        &self,
        task: &Task,
        ctx: &Context,
        what: &str,
        phase: Phase<'_>,
    ) -> Result<Decision, Diagnostic> {
        let mut decision = Decision::Run;
        for w in task.guards.iter().chain(&task.when) {
            match self.condition(w, ctx, what, phase)? {
                Decision::Run => {}
                d @ Decision::Skip { .. } => return Ok(d),
                d @ Decision::AtRunTime { .. } => {
                    if decision == Decision::Run {
                        decision = d;
                    }
                }
            }
        }
        Ok(decision)
    }

    /// Decides one condition for this host.
    pub fn condition(
        &self,
        w: &crate::spec::decode::Spanned<String>,
        ctx: &Context,
        what: &str,
        phase: Phase<'_>,
    ) -> Result<Decision, Diagnostic> {
        Ok(
            match template::eval_expr(self.env, &w.value, ctx, &w.loc, what) {
                Ok((v, _)) if v.is_true() => Decision::Run,
                Ok(_) => Decision::Skip {
                    when: w.value.clone(),
                },
                Err(_) if matches!(phase, Phase::Offline { runtime } if needs_runtime(self.env, &w.value, ctx, runtime, true)) => {
                    Decision::AtRunTime {
                        when: w.value.clone(),
                    }
                }
                Err(e) => return Err(e),
            },
        )
    }

    /// The items of a loop (an `include_tasks`'s); offline, `None` when only a run knows them.
    pub fn items(
        &self,
        l: &Node,
        ctx: &Context,
        what: &str,
        phase: Phase<'_>,
    ) -> Result<Option<Vec<Rendered>>, Diagnostic> {
        self.loop_items(l, ctx, what, phase)
    }

    fn add_task_vars(
        &self,
        task: &Task,
        ctx: &mut Context,
        what: &str,
        phase: Phase<'_>,
    ) -> Result<(), Diagnostic> {
        for (k, v) in &task.vars {
            let (r, _) = self.render_node(v, ctx, what, phase)?;
            let secret = r.is_secret();
            ctx.insert(k, r.value, secret);
        }
        Ok(())
    }

    fn instance(
        &self,
        task: &Task,
        ctx0: &Context,
        item: Option<Rendered>,
        what: &str,
        phase: Phase<'_>,
    ) -> Result<Instance, Diagnostic> {
        let mut ctx = ctx0.clone();
        if let Some(i) = &item {
            ctx.insert("item", i.value.clone(), i.is_secret());
        }
        let decision = self.decide(task, &ctx, what, phase)?;
        let name = match template::render_str(self.env, &task.name, &ctx, &task.loc, what) {
            Ok((_, true)) => MASK.to_string(),
            Ok((n, false)) => n,
            Err(_) if matches!(phase, Phase::Offline { .. }) || !is_template(&task.name) => {
                task.name.clone()
            }
            // A name that cannot render is shown as written; the run goes on.
            Err(_) => task.name.clone(),
        };
        let (args, complete) = if matches!(decision, Decision::Skip { .. }) {
            (None, true)
        } else {
            let (mut r, complete) = self.render_node(&task.args, &ctx, what, phase)?;
            // A bare string sets the module's free-form argument (`command: uname -a`).
            if let (Some(key), J::String(_) | J::Null) = (task.module.free_form, &r.value) {
                r = Rendered {
                    value: serde_json::json!({ key: r.value }),
                    shown: serde_json::json!({ key: r.shown }),
                };
            }
            (Some(r), complete)
        };
        Ok(Instance {
            name,
            item,
            decision,
            ctx,
            args,
            complete,
        })
    }

    /// Decodes an instance's arguments into its module's [`Action`]; an error is located at
    /// the argument to blame. Offline, `None` when only a run can decode them (a template
    /// that reads facts or registered results).
    pub fn bind(
        &self,
        origin: Origin<'_>,
        task: &Task,
        inst: &Instance,
        phase: Phase<'_>,
    ) -> Result<Option<Box<dyn Action>>, Diagnostic> {
        let Some(module) = crate::modules::lookup(task.module.name) else {
            return Err(Diagnostic::error(
                task.loc.clone(),
                format!("module `{}` has no implementation", task.module.name),
            ));
        };
        let empty = Rendered::plain(J::Object(serde_json::Map::new()));
        let args = inst.args.as_ref().unwrap_or(&empty);
        let reader = ArgReader::new(module.spec().name, &args.value, &args.shown);
        let files = TaskFiles {
            r: self,
            origin,
            task,
            ctx: &inst.ctx,
            phase,
            deferred: std::cell::Cell::new(false),
        };
        let inputs = Inputs {
            node: self.node,
            files: &files,
        };
        match module.bind(&reader, &inputs) {
            Ok(a) => Ok(Some(a)),
            Err(_) if files.deferred.get() => Ok(None),
            Err(e) => Err(self.arg_error(task, e)),
        }
    }

    /// [`Renderer::bind`] in a run, where everything is known.
    pub fn bind_live(
        &self,
        origin: Origin<'_>,
        task: &Task,
        inst: &Instance,
    ) -> Result<Box<dyn Action>, Diagnostic> {
        self.bind(origin, task, inst, Phase::Live)?.ok_or_else(|| {
            Diagnostic::error(task.loc.clone(), "the task's arguments cannot be decoded")
        })
    }

    /// An argument error as a diagnostic at the argument (or its own place).
    pub fn arg_error(&self, task: &Task, e: ArgError) -> Diagnostic {
        let loc = e.at.clone().unwrap_or_else(|| {
            e.key
                .and_then(|k| task.args.get(k))
                .map_or_else(|| task.args.loc.clone(), |n| n.loc.clone())
        });
        // An error with a place of its own (a template file) already says where it is from.
        let message = if e.at.is_some() {
            e.message
        } else {
            format!(
                "{} for host `{}` in task `{}`",
                e.message, self.node, task.name
            )
        };
        let d = Diagnostic::error(loc, message);
        match e.help {
            Some(h) => d.with_help(h),
            None => d,
        }
    }
}

/// The files a task's module may use: its role's templates and files, the repo's.
struct TaskFiles<'a, 'r> {
    r: &'a Renderer<'r>,
    origin: Origin<'a>,
    task: &'a Task,
    ctx: &'a Context,
    phase: Phase<'a>,
    /// Offline, a template needed what only a run knows.
    deferred: std::cell::Cell<bool>,
}

/// Finds a template for a task: the role's own `templates/` first, then the repo's, then the
/// built-ins. Returns the library name and the shown path.
pub fn resolve_template(
    library: &Library,
    origin: Origin<'_>,
    src: &str,
) -> Option<(String, Arc<str>)> {
    let role_name = origin.map(|r| crate::repo::role_template_name(r, src));
    role_name
        .into_iter()
        .chain(std::iter::once(src.to_string()))
        .find_map(|n| library.get(&n).map(|s| (n.clone(), s.shown.clone())))
}

impl Files for TaskFiles<'_, '_> {
    fn template(&self, src: &str, extra: &[(&str, J)]) -> Result<FileContent, ArgError> {
        let Some((name, shown)) = resolve_template(self.r.library, self.origin, src) else {
            return Err(
                ArgError::arg("src", format!("template `{src}` not found")).help(
                    match self.origin {
                        Some(r) => {
                            format!("put it in `roles/{r}/templates/{src}` or `templates/{src}`")
                        }
                        None => format!("put it in `templates/{src}`"),
                    },
                ),
            );
        };
        let mut ctx = self.ctx.clone();
        for (k, v) in extra {
            ctx.insert(k, v.clone(), false);
        }
        let text = self
            .r
            .library
            .get(&name)
            .map(|s| s.text.clone())
            .unwrap_or_default();
        let what = format!(
            "in template `{src}` for host `{}` in task `{}`",
            self.r.node, self.task.name
        );
        match template::render_file(self.r.env, &name, &text, &shown, &ctx, &what) {
            Ok((text, secret)) => Ok(FileContent {
                bytes: Arc::from(text.into_bytes()),
                secret,
            }),
            Err(d) => {
                if let Phase::Offline { runtime } = self.phase
                    && needs_runtime(self.r.env, &text, &ctx, runtime, false)
                {
                    self.deferred.set(true);
                }
                Err(ArgError {
                    key: None,
                    message: d.message,
                    help: d.help,
                    at: d.loc,
                })
            }
        }
    }

    fn repo_file(&self, src: &str) -> Result<Vec<u8>, ArgError> {
        let root = self.r.root;
        // The role's files/, the repo's files/, then any file of the repo by its path (the
        // hq role ships the inventory and roles to HQ that way); never outside it.
        let inside = !src.starts_with('/') && !src.split('/').any(|c| c == "..");
        let candidates = [
            self.origin
                .filter(|_| inside)
                .map(|r| root.join("roles").join(r).join("files").join(src)),
            inside.then(|| root.join("files").join(src)),
            inside.then(|| root.join(src)),
        ];
        match candidates.iter().flatten().find(|p| p.is_file()) {
            Some(p) => std::fs::read(p)
                .map_err(|e| ArgError::arg("src", format!("cannot read `{}`: {e}", p.display()))),
            None => Err(ArgError::arg(
                "src",
                if inside {
                    format!("file `{src}` not found")
                } else {
                    format!("file `{src}` is outside the repo")
                },
            )
            .help(match self.origin {
                Some(r) => format!("put it in `roles/{r}/files/{src}` or `files/{src}`"),
                None => format!("put it in `files/{src}`"),
            })),
        }
    }

    fn repo_root(&self) -> &Path {
        self.r.root
    }

    fn var(&self, name: &str) -> Option<J> {
        self.ctx.get(name).cloned()
    }
}
