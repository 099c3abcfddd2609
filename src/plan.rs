//! The offline dry-run behind `fleet plan`: for each selected host, every task of every play
//! with its arguments rendered for that host, its `when` decided where the inventory allows,
//! and every file it would place rendered and checksummed. No network, no facts.

use std::collections::BTreeSet;

use minijinja::Environment;
use serde::Serialize;
use serde_json::Value as J;

use crate::error::{Diagnostic, Diagnostics};
use crate::instance::{Phase, Renderer};
use crate::inventory::select::select;
use crate::inventory::vars::{ExtraVars, Layers, host_context};
use crate::play::{Body, Expanded, Origin, expand};
use crate::repo::Repo;
use crate::spec::block::Item;
use crate::spec::playbook::{Play, Playbook};
use crate::spec::task::Task;
use crate::template::{Context, Library};
use crate::util::sha256_hex;

pub use crate::instance::Decision;

/// A file a task would place.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedFile {
    /// Destination on the host.
    pub dest: String,
    /// sha256 of the contents (`***` when the contents read a secret).
    pub sha256: String,
    /// Size in bytes.
    pub bytes: usize,
    /// The contents read a secret: they are never shown.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
    /// The contents (shown with `--diff`; omitted from JSON unless asked; never when secret).
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
    /// Arguments rendered for the host (values that need run-time data stay as written; a
    /// value that read a secret shows as `***`).
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
    /// The account it becomes, when not root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub become_user: Option<String>,
    /// Where the task is written.
    pub source: String,
    /// Runs on one host of its batch; every host gets its result.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub run_once: bool,
    /// Runs on this host instead (as written; rendered at run time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegate_to: Option<String>,
    /// At most this many hosts run it at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle: Option<u32>,
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

/// The agent binary a `fleet_agent` task's arguments give for a node on `platform`
/// (`os/arch`, `?` where unknown), decided as the task itself will decide it
/// (`modules::agent_binary::Choice`); `None` when that cannot be known before the node is
/// reached.
fn agent_binary_for(
    root: &std::path::Path,
    args: &J,
    platform: &str,
) -> Option<Result<crate::modules::agent_binary::Pick, crate::modules::agent_binary::Missing>> {
    use crate::modules::agent_binary::{Choice, Missing};
    let choice = match Choice::from_values(
        args.get("source"),
        args.get("dist"),
        args.get("url"),
        args.get("sha256"),
        root,
    ) {
        Ok(c) => c,
        Err((key, why)) => return Some(Err(Missing::Bad(format!("`{key}`: expected {why}")))),
    };
    let (os, arch) = platform.split_once('/')?;
    let picked = choice.pick(Some(os), Some(arch))?;
    Some(picked.map_err(|m| m.relative_to(root)))
}

/// Hosts whose `fleet_agent` task would find no fleet binary for their platform (declared or
/// gathered): no `source`, no `dist/fleet-<os>-<arch>`, no release `url` with a sha256 for it,
/// and the node is not on this controller's platform. Found while planning, so a run stops
/// before its first task rather than at the agent's, after everything before it has changed
/// the host. `error`: errors (apply, provision, which run from this controller) or warnings
/// (`validate` and `plan`, which describe the repo: CI may plan a Mac fleet on Linux).
pub fn missing_agent_binaries(root: &std::path::Path, plan: &Plan, error: bool) -> Diagnostics {
    let mut out = Diagnostics::default();
    let mut seen = std::collections::BTreeSet::new();
    for play in &plan.plays {
        for host in &play.targets {
            for t in &host.tasks {
                if t.module != "fleet_agent" || matches!(t.decision, Decision::Skip { .. }) {
                    continue;
                }
                // Arguments rendered only when the task runs (from `item`, a registered
                // value): the task itself decides then, before it changes anything.
                let deferred = ["source", "dist", "url", "sha256"].iter().any(|k| {
                    t.args.get(k).is_some_and(|v| {
                        let text = v.to_string();
                        text.contains("{{") || text.contains("{%")
                    })
                });
                if deferred {
                    continue;
                }
                let Some(Err(missing)) = agent_binary_for(root, &t.args, &host.platform) else {
                    continue;
                };
                if !seen.insert(host.node.clone()) {
                    continue;
                }
                let message = format!(
                    "`{}` ({}): {missing} (task `{}` at {})",
                    host.node, host.platform, t.name, t.source
                );
                let diag = if error {
                    Diagnostic::error(None, message)
                } else {
                    Diagnostic::warning(None, message)
                };
                out.push(diag.with_help(missing.help()));
            }
        }
    }
    out
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
        .chain(expanded.handlers.iter())
        .filter_map(|(_, t)| t.register.clone())
        .collect();
    names.insert("facts".into());
    // What a `rescue` sees of the failure it handles.
    names.insert("ansible_failed_task".into());
    names.insert("ansible_failed_result".into());
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
                crate::repo::add_repo_facts(&mut c, self.repo);
                c
            }
            Err(d) => {
                diags.push(d);
                return Err(diags);
            }
        };
        let runtime = runtime_names(self.expanded);
        let renderer = Renderer {
            root: &self.repo.root,
            library: self.library,
            env: self.env,
            node: name,
        };
        let mut tasks = Vec::new();
        if self.expanded.is_flat() {
            for (origin, task) in &self.expanded.tasks {
                match self.plan_task(&renderer, *origin, task, &ctx, &runtime) {
                    Ok(mut t) => tasks.append(&mut t),
                    Err(d) => diags.push(d),
                }
            }
        } else {
            let mut walk = Walk {
                planner: self,
                renderer: &renderer,
                tasks: &mut tasks,
                diags: &mut diags,
            };
            for body in &self.expanded.bodies {
                walk.items(*body, body.items, &ctx, &runtime, None);
            }
        }
        if diags.has_errors() {
            return Err(diags);
        }
        let hw = &node.hardware;
        // What the node was found to be (the facts cache every run and `fleet facts` fill),
        // else what the inventory declares: the run decides from facts too.
        let cached = crate::facts::load_cached(&self.repo.root, name);
        let os = cached
            .as_ref()
            .and_then(|f| f.os.clone())
            .or_else(|| hw.os.clone());
        let arch = cached.and_then(|f| f.arch).or_else(|| hw.arch.clone());
        Ok(HostPlan {
            node: name.to_string(),
            host: node.host.clone(),
            role: node.role.value.clone(),
            platform: format!(
                "{}/{}",
                os.as_deref().unwrap_or("?"),
                arch.as_deref().unwrap_or("?")
            ),
            tasks,
        })
    }

    fn plan_task(
        &self,
        renderer: &Renderer<'_>,
        origin: Origin<'_>,
        task: &Task,
        base: &Context,
        runtime: &BTreeSet<String>,
    ) -> Result<Vec<PlannedTask>, Diagnostic> {
        let phase = Phase::Offline { runtime };
        if let Some(d) = &task.delegate_to
            && !d.value.contains("{{")
            && !crate::spec::task::is_localhost(&d.value)
            && !self.repo.inventory.nodes.contains_key(&d.value)
        {
            return Err(Diagnostic::error(
                d.loc.clone(),
                format!("`delegate_to: {}` names no node of the inventory", d.value),
            )
            .with_help(
                crate::error::did_you_mean(
                    &d.value,
                    self.repo.inventory.nodes.keys().map(String::as_str),
                )
                .unwrap_or_else(|| "name a node, or `localhost` for this machine".into()),
            ));
        }
        let mut out = Vec::new();
        for inst in renderer.instances(task, base, phase)? {
            let inst = inst?;
            let become_ = task
                .become_as(
                    self.play.become_,
                    self.play.become_user.as_ref().map(|u| u.value.as_str()),
                )
                .map(str::to_string);
            let args = match &inst.args {
                Some(a) => a.shown.clone(),
                None => task.args.to_json(),
            };
            // Arguments that only a run can render are checked then; the rest now.
            let file = if inst.complete && inst.args.is_some() {
                match renderer.bind(origin, task, &inst, phase)? {
                    Some(a) => a.file().map(|(dest, c)| PlannedFile {
                        dest: dest.to_string(),
                        sha256: if c.secret {
                            crate::secret::MASK.to_string()
                        } else {
                            sha256_hex(&c.bytes)
                        },
                        bytes: c.bytes.len(),
                        secret: c.secret,
                        content: (self.opts.with_content && !c.secret)
                            .then(|| String::from_utf8_lossy(&c.bytes).into_owned()),
                    }),
                    // A template that needs gathered facts is rendered on the host's run.
                    None => None,
                }
            } else {
                None
            };
            out.push(PlannedTask {
                role: origin.map(str::to_string),
                name: inst.name,
                module: task.module.name,
                args,
                item: inst.item.map(|i| i.shown),
                decision: inst.decision,
                file,
                notify: task.notify.iter().map(|n| n.value.clone()).collect(),
                become_: become_.is_some(),
                become_user: become_.filter(|u| u != "root"),
                source: format!("{}:{}", task.loc.file, task.loc.line),
                run_once: task.run_once,
                delegate_to: task.delegate_to.as_ref().map(|d| d.value.clone()),
                throttle: task.throttle,
            });
        }
        Ok(out)
    }
}

/// A host's plan of a task list with structure (blocks, includes).
struct Walk<'w, 'a> {
    planner: &'w HostPlanner<'a>,
    renderer: &'w Renderer<'w>,
    tasks: &'w mut Vec<PlannedTask>,
    diags: &'w mut Diagnostics,
}

impl Walk<'_, '_> {
    /// Plans `items`; `only`: a decision every task's `Run` becomes (a rescue's, or a skipped
    /// or run-time include's).
    fn items(
        &mut self,
        body: Body<'_>,
        items: &[Item],
        ctx: &Context,
        runtime: &BTreeSet<String>,
        only: Option<&Decision>,
    ) {
        for item in items {
            match item {
                Item::Task(i) => {
                    let task = &body.tasks[*i];
                    match self
                        .planner
                        .plan_task(self.renderer, body.origin, task, ctx, runtime)
                    {
                        Ok(planned) => self.tasks.extend(planned.into_iter().map(|mut t| {
                            if let Some(d) = only
                                && !matches!(t.decision, Decision::Skip { .. })
                            {
                                t.decision = d.clone();
                            }
                            t
                        })),
                        Err(d) => self.diags.push(d),
                    }
                }
                Item::Block(b) => {
                    self.items(body, &b.block, ctx, runtime, only);
                    let rescue = only.cloned().unwrap_or(Decision::AtRunTime {
                        when: format!("block `{}` fails", b.name),
                    });
                    self.items(body, &b.rescue, ctx, runtime, Some(&rescue));
                    self.items(body, &b.always, ctx, runtime, only);
                }
                Item::Include(inc) => self.include(body, inc, ctx, runtime, only),
            }
        }
    }

    fn include(
        &mut self,
        body: Body<'_>,
        inc: &crate::spec::block::Include,
        ctx: &Context,
        runtime: &BTreeSet<String>,
        only: Option<&Decision>,
    ) {
        let what = format!("for host `{}` in `{}`", self.renderer.node, inc.name);
        let phase = Phase::Offline { runtime };
        let items = match &inc.loop_ {
            None => Some(vec![None]),
            Some(l) => match self.renderer.items(l, ctx, &what, phase) {
                Ok(Some(items)) => Some(items.into_iter().map(Some).collect()),
                Ok(None) => None,
                Err(d) => {
                    self.diags.push(d);
                    return;
                }
            },
        };
        let Some(items) = items else {
            // Items only a run knows: the file's tasks once, `item` and the include's
            // variables decided on the host.
            let mut rt = runtime.clone();
            rt.insert("item".into());
            rt.extend(inc.vars.keys().cloned());
            let d = only.cloned().unwrap_or(Decision::AtRunTime {
                when: format!("for each item of `{}`", inc.name),
            });
            self.items(body, &inc.body, ctx, &rt, Some(&d));
            return;
        };
        for item in items {
            let mut scope = ctx.clone();
            if let Some(i) = &item {
                scope.insert("item", i.value.clone(), i.is_secret());
            }
            for (k, v) in &inc.vars {
                match self.renderer.render_node(v, &scope, &what, phase) {
                    Ok((r, _)) => {
                        let secret = r.is_secret();
                        scope.insert(k, r.value, secret);
                    }
                    Err(d) => {
                        self.diags.push(d);
                        return;
                    }
                }
            }
            let decision = match &inc.when {
                None => None,
                Some(w) => match self.renderer.condition(w, &scope, &what, phase) {
                    Ok(Decision::Run) => None,
                    Ok(d) => Some(d),
                    Err(d) => {
                        self.diags.push(d);
                        return;
                    }
                },
            };
            if let Some(Decision::Skip { .. }) = &decision {
                // Not rendered: a skipped include's tasks may not make sense for this host.
                let mut idx = Vec::new();
                crate::spec::block::task_indices(&inc.body, &mut idx);
                for i in idx {
                    let t = &body.tasks[i];
                    self.tasks.push(PlannedTask {
                        role: body.origin.map(str::to_string),
                        name: t.name.clone(),
                        module: t.module.name,
                        args: t.args.to_json(),
                        item: item.as_ref().map(|i| i.shown.clone()),
                        decision: decision.clone().unwrap_or(Decision::Run),
                        file: None,
                        notify: Vec::new(),
                        become_: false,
                        become_user: None,
                        source: format!("{}:{}", t.loc.file, t.loc.line),
                        run_once: t.run_once,
                        delegate_to: t.delegate_to.as_ref().map(|d| d.value.clone()),
                        throttle: t.throttle,
                    });
                }
                continue;
            }
            let d = decision.as_ref().or(only);
            self.items(body, &inc.body, &scope, runtime, d);
        }
    }
}
