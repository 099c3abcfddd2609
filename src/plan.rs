//! The offline dry-run behind `fleet plan`: for each selected host, every task of every play
//! with its arguments rendered for that host, its `when` decided where the inventory allows,
//! and every file it would place rendered and checksummed. No network, no facts.

use std::collections::BTreeSet;

use minijinja::Environment;
use serde::Serialize;
use serde_json::Value as J;

use crate::error::{Diagnostic, Diagnostics, Loc};
use crate::inventory::select::select;
use crate::inventory::vars::{ExtraVars, Layers, host_context};
use crate::play::{Expanded, Origin, expand};
use crate::repo::Repo;
use crate::spec::playbook::{Play, Playbook};
use crate::spec::task::Task;
use crate::spec::yaml::{Node, Value};
use crate::template::{self, Library};
use crate::util::sha256_hex;

/// Whether a task will run on a host.
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

/// A file a task would place.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedFile {
    /// Destination on the host.
    pub dest: String,
    /// sha256 of the contents.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: usize,
    /// The contents (shown with `--diff`; omitted from JSON unless asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// One task for one host.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedTask {
    /// The role it comes from, or `null` for the play's own tasks.
    pub role: Option<String>,
    /// Task name (rendered).
    pub name: String,
    /// Module.
    pub module: &'static str,
    /// Arguments rendered for the host (values that need run-time data stay as written).
    pub args: J,
    /// The loop item, when looping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<J>,
    /// Whether it runs.
    pub decision: Decision,
    /// The file it places.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PlannedFile>,
    /// Handlers it notifies.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
    /// Runs with sudo.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub become_: bool,
    /// Where the task is written.
    pub source: String,
}

/// One host's tasks in one play.
#[derive(Debug, Clone, Serialize)]
pub struct HostPlan {
    /// Node name.
    pub node: String,
    /// Its address.
    pub host: String,
    /// Its role.
    pub role: String,
    /// `os/arch` as declared.
    pub platform: String,
    /// Tasks in order.
    pub tasks: Vec<PlannedTask>,
}

/// One play.
#[derive(Debug, Clone, Serialize)]
pub struct PlayPlan {
    /// Play name.
    pub name: String,
    /// Its host pattern.
    pub hosts: String,
    /// Per host.
    pub targets: Vec<HostPlan>,
}

/// A whole plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The playbook.
    pub playbook: String,
    /// Its plays.
    pub plays: Vec<PlayPlan>,
}

/// Options of `fleet plan`.
#[derive(Debug, Default)]
pub struct PlanOptions {
    /// `--limit` pattern.
    pub limit: Option<String>,
    /// `-e` variables.
    pub extra: ExtraVars,
    /// Keep file contents (`--diff`).
    pub with_content: bool,
}

/// Builds the plan; errors are collected for every host and task, not only the first.
pub fn plan_playbook(
    repo: &Repo,
    library: &Library,
    pb: &Playbook,
    opts: &PlanOptions,
) -> (Plan, Diagnostics) {
    let env = crate::inventory::vars::with_nodes(
        library.environment(),
        crate::inventory::vars::nodes_value(&repo.inventory),
    );
    let mut diags = Diagnostics::default();
    let role_names: Vec<&str> = repo.roles.keys().map(String::as_str).collect();
    let limit = match opts
        .limit
        .as_deref()
        .map(|l| select(&repo.inventory, &role_names, l))
    {
        Some(Ok(nodes)) => Some(nodes),
        Some(Err(e)) => {
            diags.push(Diagnostic::error(None, format!("--limit: {e}")));
            Some(Vec::new())
        }
        None => None,
    };
    let mut plays = Vec::new();
    for play in &pb.plays {
        let targets = match select(&repo.inventory, &role_names, &play.hosts.value) {
            Ok(t) => t,
            Err(e) => {
                diags.push(Diagnostic::error(
                    play.hosts.loc.clone(),
                    format!("play `{}`: hosts {e}", play.name),
                ));
                continue;
            }
        };
        let expanded = match expand(&repo.roles, play) {
            Ok(x) => x,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        let mut hosts = Vec::new();
        for name in targets {
            if limit.as_ref().is_some_and(|l| !l.contains(&name)) {
                continue;
            }
            let planner = HostPlanner {
                repo,
                library,
                env: &env,
                play,
                expanded: &expanded,
                opts,
            };
            match planner.plan(&name) {
                Ok(h) => hosts.push(h),
                Err(ds) => diags.extend(ds),
            }
        }
        plays.push(PlayPlan {
            name: play.name.clone(),
            hosts: play.hosts.value.clone(),
            targets: hosts,
        });
    }
    (
        Plan {
            playbook: pb.file.to_string(),
            plays,
        },
        diags,
    )
}

struct HostPlanner<'a> {
    repo: &'a Repo,
    library: &'a Library,
    env: &'a Environment<'static>,
    play: &'a Play,
    expanded: &'a Expanded<'a>,
    opts: &'a PlanOptions,
}

/// Names whose values only exist on the host at run time.
fn runtime_names(expanded: &Expanded<'_>) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = expanded
        .tasks
        .iter()
        .filter_map(|(_, t)| t.register.clone())
        .collect();
    names.insert("facts".into());
    names
}

impl HostPlanner<'_> {
    fn plan(&self, name: &str) -> Result<HostPlan, Diagnostics> {
        let inv = &self.repo.inventory;
        let mut diags = Diagnostics::default();
        let Some(node) = inv.nodes.get(name) else {
            return Err(diags);
        };
        let layers = Layers {
            role_defaults: self.expanded.defaults(),
            play: Some(&self.play.vars),
            extra: Some(&self.opts.extra),
        };
        let ctx = match host_context(inv, node, &layers, None, self.env) {
            Ok(mut c) => {
                crate::inventory::vars::add_repo_facts(&mut c, self.repo);
                c
            }
            Err(d) => {
                diags.push(d);
                return Err(diags);
            }
        };
        let runtime = runtime_names(self.expanded);
        let mut tasks = Vec::new();
        for (origin, task) in &self.expanded.tasks {
            match self.plan_task(name, *origin, task, &ctx, &runtime) {
                Ok(mut t) => tasks.append(&mut t),
                Err(d) => diags.push(d),
            }
        }
        if diags.has_errors() {
            return Err(diags);
        }
        let hw = &node.hardware;
        Ok(HostPlan {
            node: name.to_string(),
            host: node.host.clone(),
            role: node.role.value.clone(),
            platform: format!(
                "{}/{}",
                hw.os.as_deref().unwrap_or("?"),
                hw.arch.as_deref().unwrap_or("?")
            ),
            tasks,
        })
    }

    fn plan_task(
        &self,
        host: &str,
        origin: Origin<'_>,
        task: &Task,
        base: &J,
        runtime: &BTreeSet<String>,
    ) -> Result<Vec<PlannedTask>, Diagnostic> {
        let what = format!("for host `{host}` in task `{}`", task.name);
        let mut ctx = base.clone();
        if let Some(obj) = ctx.as_object_mut() {
            for (k, v) in &task.vars {
                obj.insert(k.clone(), v.to_json());
            }
        }
        let items: Vec<Option<J>> = match &task.loop_ {
            None => vec![None],
            Some(l) => self
                .loop_items(l, &ctx, &what, runtime)?
                .into_iter()
                .map(Some)
                .collect(),
        };
        let mut out = Vec::new();
        for item in items {
            let mut ictx = ctx.clone();
            if let (Some(obj), Some(i)) = (ictx.as_object_mut(), &item) {
                obj.insert("item".into(), i.clone());
            }
            let decision = match &task.when {
                None => Decision::Run,
                Some(w) => match template::eval_expr(self.env, &w.value, &ictx, &w.loc, &what) {
                    Ok(v) if v.is_true() => Decision::Run,
                    Ok(_) => Decision::Skip {
                        when: w.value.clone(),
                    },
                    Err(e) if needs_runtime(self.env, &w.value, &ictx, runtime, true) => {
                        let _ = e;
                        Decision::AtRunTime {
                            when: w.value.clone(),
                        }
                    }
                    Err(e) => return Err(e),
                },
            };
            let name = template::render_inline(self.env, &task.name, &ictx, &task.loc, &what)?;
            let (args, file) = if matches!(decision, Decision::Skip { .. }) {
                (task.args.to_json(), None)
            } else {
                let args = self.render_args(&task.args, &ictx, &what, runtime)?;
                let file = match self.planned_file(origin, task, &args, &ictx, &what) {
                    Ok(f) => f,
                    // A template that needs gathered facts is rendered on the host's run.
                    Err(_) if self.template_needs_runtime(origin, &args, &ictx, runtime) => None,
                    Err(e) => return Err(e),
                };
                (args, file)
            };
            out.push(PlannedTask {
                role: origin.map(str::to_string),
                name,
                module: task.module.name,
                args,
                item,
                decision,
                file,
                notify: task.notify.iter().map(|n| n.value.clone()).collect(),
                become_: task.become_ || self.play.become_,
                source: format!("{}:{}", task.loc.file, task.loc.line),
            });
        }
        Ok(out)
    }

    fn template_needs_runtime(
        &self,
        origin: Origin<'_>,
        args: &J,
        ctx: &J,
        runtime: &BTreeSet<String>,
    ) -> bool {
        let Some(src) = args.get("src").and_then(J::as_str) else {
            return false;
        };
        let Some((name, _)) = resolve_template(self.library, origin, src) else {
            return false;
        };
        let Some(source) = self.library.get(&name) else {
            return false;
        };
        needs_runtime(self.env, &source.text, ctx, runtime, false)
    }

    fn loop_items(
        &self,
        l: &Node,
        ctx: &J,
        what: &str,
        runtime: &BTreeSet<String>,
    ) -> Result<Vec<J>, Diagnostic> {
        let v = match &l.value {
            Value::Scalar { text, .. } => {
                match template::render_value(self.env, text, ctx, &l.loc, what) {
                    Ok(v) => v,
                    Err(_) if needs_runtime(self.env, text, ctx, runtime, false) => {
                        return Ok(vec![J::String(format!("<each of {text}, at run time>"))]);
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => self.render_args(l, ctx, what, runtime)?,
        };
        match v {
            J::Array(items) => Ok(items),
            J::Null => Ok(Vec::new()),
            other => Err(Diagnostic::error(
                l.loc.clone(),
                format!("`loop` {what}: expected a list, found {other}"),
            )
            .with_help(
                "give a YAML list, or a template that yields one such as \"{{ node.models }}\"",
            )),
        }
    }

    fn render_args(
        &self,
        n: &Node,
        ctx: &J,
        what: &str,
        runtime: &BTreeSet<String>,
    ) -> Result<J, Diagnostic> {
        Ok(match &n.value {
            Value::Scalar { text, .. } if text.contains("{{") || text.contains("{%") => {
                match template::render_value(self.env, text, ctx, &n.loc, what) {
                    Ok(v) => v,
                    Err(_) if needs_runtime(self.env, text, ctx, runtime, false) => {
                        J::String(text.clone())
                    }
                    Err(e) => return Err(e),
                }
            }
            Value::Scalar { .. } => n.to_json(),
            Value::Seq(items) => J::Array(
                items
                    .iter()
                    .map(|i| self.render_args(i, ctx, what, runtime))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Map(entries) => {
                let mut m = serde_json::Map::new();
                for (k, v) in entries {
                    m.insert(
                        k.key_text().to_string(),
                        self.render_args(v, ctx, what, runtime)?,
                    );
                }
                J::Object(m)
            }
        })
    }

    fn planned_file(
        &self,
        origin: Origin<'_>,
        task: &Task,
        args: &J,
        ctx: &J,
        what: &str,
    ) -> Result<Option<PlannedFile>, Diagnostic> {
        let dest = args
            .get("dest")
            .and_then(J::as_str)
            .unwrap_or_default()
            .to_string();
        let Some(content) = task_file_content(
            self.repo,
            self.library,
            self.env,
            origin,
            task,
            args,
            ctx,
            what,
        )?
        else {
            return Ok(None);
        };
        Ok(Some(PlannedFile {
            dest,
            sha256: sha256_hex(&content),
            bytes: content.len(),
            content: self
                .opts
                .with_content
                .then(|| String::from_utf8_lossy(&content).into_owned()),
        }))
    }
}

/// The bytes a `template` or `copy` task places on a host (`None` for other modules): the
/// template rendered with the host's context, or the file from the role's (or repo's) `files/`.
#[allow(clippy::too_many_arguments)]
pub fn task_file_content(
    repo: &Repo,
    library: &Library,
    env: &Environment<'static>,
    origin: Origin<'_>,
    task: &Task,
    args: &J,
    ctx: &J,
    what: &str,
) -> Result<Option<Vec<u8>>, Diagnostic> {
    let content: Vec<u8> = match task.module.name {
        "template" => {
            let Some(src) = args.get("src").and_then(J::as_str) else {
                return Ok(None);
            };
            let Some((tname, source)) = resolve_template(library, origin, src) else {
                return Err(Diagnostic::error(
                    task.args
                        .get("src")
                        .map_or(task.loc.clone(), |n| n.loc.clone()),
                    format!("template `{src}` not found {what}"),
                )
                .with_help(match origin {
                    Some(r) => {
                        format!("put it in `roles/{r}/templates/{src}` or `templates/{src}`")
                    }
                    None => format!("put it in `templates/{src}`"),
                }));
            };
            let tmpl = env.get_template(&tname).map_err(|e| {
                template::render_error(
                    &e,
                    &Loc::file_start(&source),
                    &[],
                    &format!("in `{source}`"),
                )
            })?;
            let text = tmpl.render(template::ctx_value(ctx)).map_err(|e| {
                let missing = template::missing_variables(
                    env,
                    &library
                        .get(&tname)
                        .map(|s| s.text.clone())
                        .unwrap_or_default(),
                    ctx,
                    false,
                );
                template::render_error(
                    &e,
                    &Loc::file_start(&source),
                    &missing,
                    &format!("in template `{src}` {what}"),
                )
            })?;
            text.into_bytes()
        }
        "copy" => {
            if let Some(c) = args.get("content").and_then(J::as_str) {
                c.as_bytes().to_vec()
            } else if let Some(src) = args.get("src").and_then(J::as_str) {
                // The role's files/, the repo's files/, then any file of the repo by its path
                // (the hq role ships the inventory and roles to HQ that way); never outside it.
                let in_repo = (!src.starts_with('/') && !src.split('/').any(|c| c == ".."))
                    .then(|| repo.root.join(src));
                let candidates = [
                    origin.map(|r| repo.root.join("roles").join(r).join("files").join(src)),
                    Some(repo.root.join("files").join(src)),
                    in_repo,
                ];
                match candidates.iter().flatten().find(|p| p.is_file()) {
                    Some(p) => std::fs::read(p).map_err(|e| {
                        Diagnostic::error(
                            task.loc.clone(),
                            format!("cannot read `{}`: {e}", p.display()),
                        )
                    })?,
                    None => {
                        return Err(Diagnostic::error(
                            task.args
                                .get("src")
                                .map_or(task.loc.clone(), |n| n.loc.clone()),
                            format!("file `{src}` not found {what}"),
                        )
                        .with_help(match origin {
                            Some(r) => {
                                format!("put it in `roles/{r}/files/{src}` or `files/{src}`")
                            }
                            None => format!("put it in `files/{src}`"),
                        }));
                    }
                }
            } else {
                return Ok(None);
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(content))
}

/// Finds a template for a task: the role's own `templates/` first, then the repo's, then the
/// built-ins. Returns the library name and the shown path.
pub fn resolve_template(
    library: &Library,
    origin: Origin<'_>,
    src: &str,
) -> Option<(String, std::sync::Arc<str>)> {
    let role_name = origin.map(|r| role_template_name(r, src));
    role_name
        .into_iter()
        .chain(std::iter::once(src.to_string()))
        .find_map(|n| library.get(&n).map(|s| (n.clone(), s.shown.clone())))
}

/// Library name of a role-local template.
pub fn role_template_name(role: &str, src: &str) -> String {
    format!("@{role}/{src}")
}

/// True when every variable the text misses is one that only exists at run time.
fn needs_runtime(
    env: &Environment<'_>,
    text: &str,
    ctx: &J,
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
