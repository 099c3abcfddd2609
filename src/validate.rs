//! `fleet validate`: everything that can be checked without touching a host. Every
//! reference (roles, includes, handlers, groups, the hq node, routing rules) and every
//! template is checked, and every playbook is planned for every host, so undefined variables
//! surface here rather than on a machine.

use std::collections::BTreeSet;

use crate::error::{Diagnostic, Diagnostics, Loc, did_you_mean};
use crate::plan::{PlanOptions, plan_playbook};
use crate::play::role_order;
use crate::repo::{Repo, shown};
use crate::spec::decode::Spanned;
use crate::spec::inventory::{CLOUD_FALLBACK, Inventory, NodeSpec};
use crate::spec::role::{Requires, Role};
use crate::template::Library;

/// Summary counts for the success line.
#[derive(Debug, Default)]
pub struct Summary {
    /// Nodes in the inventory.
    pub nodes: usize,
    /// Roles.
    pub roles: usize,
    /// Playbooks.
    pub playbooks: usize,
    /// Templates compiled.
    pub templates: usize,
}

/// Validates a loaded repo; returns all diagnostics (errors and warnings).
pub fn validate(repo: &Repo) -> (Diagnostics, Summary) {
    let mut diags = repo.diags.clone();
    let inv = &repo.inventory;
    check_inventory_refs(repo, &mut diags);
    check_roles(repo, &mut diags);
    check_routing(repo, &mut diags);
    check_cloud_prices(repo, &mut diags);
    check_bind_addresses(repo, &mut diags);

    let library = Library::new(&repo.templates);
    let env = crate::inventory::vars::with_nodes(
        library.environment(),
        crate::inventory::vars::nodes_value(&repo.inventory),
    );
    let mut templates = 0;
    for name in library.names() {
        templates += 1;
        if let Err(e) = env.get_template(name) {
            let shown = library
                .get(name)
                .map(|s| s.shown.clone())
                .unwrap_or_else(|| name.into());
            let d = crate::template::render_error_in(
                &e,
                &crate::error::Loc::file_start(&shown),
                &[],
                &format!("in `{shown}`"),
                Some(name),
            );
            diags.push(d);
        }
    }

    let mut guards = BTreeSet::new();
    for role in repo.roles.values() {
        for t in role.tasks.iter().chain(role.handlers.iter()) {
            check_task_syntax(&env, t, &mut guards, &mut diags);
        }
    }

    // Routing problems no single file shows (empty pools, cycles, models nobody can hold).
    if !diags.has_errors() {
        let (_, routing_diags) = crate::render::routing::build(
            repo,
            &|n| crate::facts::effective_hardware(&repo.root, n).0,
            None,
        );
        diags.extend(routing_diags);
    }
    // What `fleet serve` needs to keep the conductor's routing table live.
    if let Err(e) = crate::hq::conductor::settings(repo) {
        let loc = inv
            .fleet
            .hq
            .as_ref()
            .and_then(|h| inv.nodes.get(&h.value))
            .map(|n| n.loc.clone());
        diags.push(
            Diagnostic::error(loc, e.to_string())
                .with_help("see docs/hq.md, \"The conductor's routing table\""),
        );
    }

    // Planning every playbook for every host finds undefined variables and missing files;
    // it only runs on an otherwise clean repo, so one typo does not cascade into dozens.
    let clean = !diags.has_errors();
    let paths = repo.playbook_paths();
    for p in &paths {
        match repo.load_playbook(p) {
            Ok((pb, pdiags)) => {
                let had_errors = pdiags.has_errors();
                diags.extend(pdiags);
                if had_errors {
                    continue;
                }
                let before = diags.error_count();
                // A block's `when` is every task's inside it: checked once.
                let mut guards = BTreeSet::new();
                for play in &pb.plays {
                    for t in play.tasks.iter().chain(play.handlers.iter()) {
                        check_task_syntax(&env, t, &mut guards, &mut diags);
                    }
                }
                if clean && crate::repo::encrypted::skipped() > 0 {
                    diags.push(Diagnostic::warning(
                        Loc::file_start(&pb.file),
                        "not planned: encrypted variables files could not be read (no identity), so the variables they define are unknown",
                    ).with_help("give an identity (`--identity FILE`) to check the plays too"));
                } else if clean && diags.error_count() == before {
                    check_play_handlers(repo, &pb, &mut diags);
                    let (plan, plan_diags) =
                        plan_playbook(repo, &library, &pb, &PlanOptions::default());
                    diags.extend(plan_diags);
                    diags.extend(crate::plan::missing_agent_binaries(
                        &repo.root, &plan, false,
                    ));
                }
            }
            Err(e) => diags.push(Diagnostic::error(None, e.to_string())),
        }
    }
    let summary = Summary {
        nodes: inv.nodes.len(),
        roles: repo.roles.len(),
        playbooks: paths.len(),
        templates,
    };
    (diags, summary)
}

/// Compiles every template string and expression of a task, whether or not a play uses it.
fn check_task_syntax(
    env: &minijinja::Environment<'_>,
    t: &crate::spec::task::Task,
    guards: &mut BTreeSet<String>,
    diags: &mut Diagnostics,
) {
    let what = format!("in task `{}`", t.name);
    let mut strings: Vec<&crate::spec::yaml::Node> = Vec::new();
    collect_strings(&t.args, &mut strings);
    if let Some(l) = &t.loop_ {
        collect_strings(l, &mut strings);
    }
    for n in strings {
        if let crate::spec::yaml::Value::Scalar { text, .. } = &n.value
            && let Err(e) = env.template_from_str(text)
        {
            diags.push(crate::template::render_error(&e, &n.loc, &[], &what));
        }
    }
    let new_guards: Vec<_> = t
        .guards
        .iter()
        .filter(|g| guards.insert(g.loc.to_string()))
        .collect();
    for e in [&t.when, &t.until, &t.changed_when, &t.failed_when]
        .into_iter()
        .flatten()
        .chain(new_guards)
    {
        let text = e.value.trim();
        let inner = text
            .strip_prefix("{{")
            .and_then(|s| s.strip_suffix("}}"))
            .unwrap_or(text);
        if let Err(err) = env.compile_expression(inner) {
            diags.push(crate::template::render_error(&err, &e.loc, &[], &what));
        }
    }
}

fn collect_strings<'n>(n: &'n crate::spec::yaml::Node, out: &mut Vec<&'n crate::spec::yaml::Node>) {
    match &n.value {
        crate::spec::yaml::Value::Scalar { text, .. }
            if text.contains("{{") || text.contains("{%") =>
        {
            out.push(n)
        }
        crate::spec::yaml::Value::Scalar { .. } => {}
        crate::spec::yaml::Value::Seq(items) => items.iter().for_each(|i| collect_strings(i, out)),
        crate::spec::yaml::Value::Map(entries) => {
            entries.iter().for_each(|(_, v)| collect_strings(v, out))
        }
    }
}

/// "did you mean", or else the list of known names when it is short.
pub fn suggest<'a>(
    found: &str,
    known: impl IntoIterator<Item = &'a str> + Clone,
    what: &str,
) -> String {
    did_you_mean(found, known.clone()).unwrap_or_else(|| {
        let all: Vec<&str> = known.into_iter().collect();
        if all.is_empty() {
            format!("there are no {what} yet")
        } else if all.len() <= 12 {
            format!("{what}: {}", all.join(", "))
        } else {
            format!("{what}: {}, …", all[..12].join(", "))
        }
    })
}

fn unknown_role(repo: &Repo, name: &Spanned<String>) -> Diagnostic {
    let help =
        did_you_mean(&name.value, repo.roles.keys().map(String::as_str)).unwrap_or_else(|| {
            format!(
                "roles in this repo: {}",
                repo.roles.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        });
    Diagnostic::error(name.loc.clone(), format!("unknown role `{}`", name.value)).with_help(help)
}

fn check_inventory_refs(repo: &Repo, diags: &mut Diagnostics) {
    let inv = &repo.inventory;
    match &inv.fleet.hq {
        Some(hq) if !inv.nodes.contains_key(&hq.value) => {
            let help = suggest(
                &hq.value,
                inv.nodes.keys().map(String::as_str),
                "nodes in this inventory",
            );
            diags.push(
                Diagnostic::error(
                    hq.loc.clone(),
                    format!("`fleet.hq` names `{}`, which is not a node", hq.value),
                )
                .with_help(help),
            );
        }
        Some(hq) => {
            if let Some(n) = inv.nodes.get(&hq.value)
                && n.role.value != "hq"
            {
                diags.push(
                    Diagnostic::warning(
                        n.role.loc.clone(),
                        format!(
                            "`{}` is the fleet's hq but has role `{}`",
                            n.name, n.role.value
                        ),
                    )
                    .with_help("give it `role: hq` so it runs the registry"),
                );
            }
        }
        None if !inv.nodes.is_empty() && !repo.inventory_files.is_empty() => {
            let file = shown(&repo.inventory_files[0]);
            diags.push(
                Diagnostic::error(
                    crate::error::Loc::file_start(&file),
                    "the inventory names no hq node",
                )
                .with_help("add `fleet: { hq: NODE, hq_url: http://NODE:8765 }`"),
            );
        }
        None => {}
    }
    let hqs: Vec<&NodeSpec> = inv
        .nodes
        .values()
        .filter(|n| n.role.value == "hq")
        .collect();
    if hqs.len() > 1 {
        for n in &hqs[1..] {
            diags.push(
                Diagnostic::error(
                    n.role.loc.clone(),
                    format!(
                        "a second node with role `hq` (`{}`); a fleet has exactly one",
                        n.name
                    ),
                )
                .with_help(format!("`{}` is already the hq", hqs[0].name)),
            );
        }
    }
    for n in inv.nodes.values() {
        if !repo.roles.contains_key(&n.role.value) {
            diags.push(unknown_role(repo, &n.role));
        }
    }
    for g in inv.groups.values() {
        if inv.nodes.contains_key(&g.name) {
            diags.push(
                Diagnostic::error(
                    g.loc.clone(),
                    format!("group `{}` has the same name as a node", g.name),
                )
                .with_help("rename the group so host patterns are unambiguous"),
            );
        }
        for m in &g.members {
            if !inv.nodes.contains_key(&m.value) {
                let help = suggest(
                    &m.value,
                    inv.nodes.keys().map(String::as_str),
                    "nodes in this inventory",
                );
                diags.push(
                    Diagnostic::error(
                        m.loc.clone(),
                        format!(
                            "group `{}` lists `{}`, which is not a node",
                            g.name, m.value
                        ),
                    )
                    .with_help(help),
                );
            }
        }
    }
}

/// The requirements of a role and everything it includes, combined (the strictest wins).
pub fn combined_requires(roles: &[&Role]) -> Requires {
    let mut req = Requires::default();
    for r in roles {
        let q = &r.requires;
        req.ram_gb = max_opt(req.ram_gb, q.ram_gb);
        req.disk_gb = max_opt(req.disk_gb, q.disk_gb);
        req.cores = req.cores.max(q.cores);
        if !q.os.is_empty() {
            req.os = if req.os.is_empty() {
                q.os.clone()
            } else {
                req.os
                    .iter()
                    .filter(|o| q.os.contains(o))
                    .cloned()
                    .collect()
            };
        }
        if !q.arch.is_empty() {
            req.arch = if req.arch.is_empty() {
                q.arch.clone()
            } else {
                req.arch
                    .iter()
                    .filter(|o| q.arch.contains(o))
                    .cloned()
                    .collect()
            };
        }
    }
    req
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Why a node's hardware misses a role's requirements, one message per miss.
pub fn requirement_misses(
    role: &str,
    node: &str,
    req: &Requires,
    hw: &crate::spec::inventory::Hardware,
) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(need), Some(have)) = (req.ram_gb, hw.ram_gb)
        && have < need
    {
        out.push(format!(
            "role `{role}` needs {need} GB RAM; `{node}` has {have} GB"
        ));
    }
    if let (Some(need), Some(have)) = (req.cores, hw.cores)
        && have < need
    {
        out.push(format!(
            "role `{role}` needs {need} CPU cores; `{node}` has {have}"
        ));
    }
    if let (Some(need), Some(have)) = (req.disk_gb, hw.disk_gb)
        && have < need
    {
        out.push(format!(
            "role `{role}` needs {need} GB free disk; `{node}` has {have} GB"
        ));
    }
    if let Some(os) = &hw.os
        && !req.os.is_empty()
        && !req.os.contains(os)
    {
        out.push(format!(
            "role `{role}` runs on {}; `{node}` runs {os}",
            req.os.join(" or ")
        ));
    }
    if let Some(arch) = &hw.arch
        && !req.arch.is_empty()
        && !req.arch.contains(arch)
    {
        out.push(format!(
            "role `{role}` needs {}; `{node}` is {arch}",
            req.arch.join(" or ")
        ));
    }
    out
}

fn check_roles(repo: &Repo, diags: &mut Diagnostics) {
    for role in repo.roles.values() {
        for inc in &role.includes {
            if !repo.roles.contains_key(&inc.value) {
                diags.push(unknown_role(repo, inc));
            }
        }
        let me = Spanned::new(role.name.clone(), role.loc.clone());
        let closure = match role_order(&repo.roles, std::slice::from_ref(&me)) {
            Ok(c) => c,
            Err(d) => {
                if !d.message.starts_with("unknown role") {
                    diags.push(d);
                }
                continue;
            }
        };
        let handlers: BTreeSet<&str> = closure
            .iter()
            .flat_map(|r| r.handlers.iter())
            .flat_map(|h| {
                std::iter::once(h.name.as_str()).chain(h.listen.iter().map(String::as_str))
            })
            .collect();
        for t in role.tasks.iter().chain(role.handlers.iter()) {
            for n in &t.notify {
                if !handlers.contains(n.value.as_str()) {
                    let help =
                        did_you_mean(&n.value, handlers.iter().copied()).unwrap_or_else(|| {
                            format!("add a handler named `{}` to role `{}`", n.value, role.name)
                        });
                    diags.push(Diagnostic::error(n.loc.clone(), format!("task `{}` notifies `{}`, which is not a handler of role `{}` or the roles it includes", t.name, n.value, role.name)).with_help(help));
                }
            }
        }
    }
    // Declared hardware against each node's role requirements.
    for n in repo.inventory.nodes.values() {
        let Ok(closure) = role_order(&repo.roles, std::slice::from_ref(&n.role)) else {
            continue;
        };
        let req = combined_requires(&closure);
        for miss in requirement_misses(&n.role.value, &n.name, &req, &n.hardware) {
            diags.push(
                Diagnostic::error(n.hardware_loc.clone(), miss).with_help(
                    "give this node a role its hardware can carry, or correct `hardware:`",
                ),
            );
        }
    }
}

fn check_play_handlers(repo: &Repo, pb: &crate::spec::playbook::Playbook, diags: &mut Diagnostics) {
    for play in &pb.plays {
        let Ok(expanded) = crate::play::expand(&repo.roles, play) else {
            continue;
        };
        for (_, t) in expanded.tasks.iter().chain(expanded.handlers.iter()) {
            for n in &t.notify {
                if expanded.handler(&n.value).is_none() {
                    let names = expanded.handlers.iter().map(|(_, h)| h.name.as_str());
                    let help = did_you_mean(&n.value, names).unwrap_or_else(|| {
                        format!(
                            "add a handler named `{}` to the play or one of its roles",
                            n.value
                        )
                    });
                    diags.push(
                        Diagnostic::error(
                            n.loc.clone(),
                            format!(
                                "task `{}` notifies `{}`, which is no handler in play `{}`",
                                t.name, n.value, play.name
                            ),
                        )
                        .with_help(help),
                    );
                }
            }
        }
    }
}

/// Services that listen on the node's fleet address (issue 16): a node whose role runs one
/// needs an IP to bind it to — a DNS name or an ssh alias is none — unless its bind variable
/// names one. Located at the node, before the plan would stop on the role's `fail()`.
fn check_bind_addresses(repo: &Repo, diags: &mut Diagnostics) {
    let lookup = crate::repo::lookup::VarLookup::new(repo);
    let inv = &repo.inventory;
    for n in inv.nodes.values() {
        let Ok(closure) = role_order(&repo.roles, std::slice::from_ref(&n.role)) else {
            continue;
        };
        let empty = |k: &str| {
            lookup
                .get(n, k)
                .is_none_or(|v| v.is_null() || v.as_str() == Some(""))
        };
        let mut services = Vec::new();
        // The roles that run them are the ones whose defaults have their bind variable.
        let runs = |var: &str| closure.iter().any(|r| r.defaults.contains_key(var));
        if runs("ollama_bind") && empty("ollama_bind") {
            services.push(("Ollama", "ollama_bind"));
        }
        if runs("hq_bind")
            && lookup.get(n, "hq_service") != Some(serde_json::Value::Bool(false))
            && empty("hq_bind")
        {
            services.push(("HQ", "hq_bind"));
        }
        let Some((_, var)) = services.first() else {
            continue;
        };
        if let Some(ip) = crate::inventory::vars::bind_address(inv, n, None) {
            // Facts a run gathered say which addresses the node has: one it does not have is
            // nothing its services can bind to (they would fail to start).
            let facts = crate::facts::load_cached(&repo.root, &n.name);
            let loopback = ip
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback());
            if let Some(f) = facts.filter(|f| !f.addresses.is_empty())
                && !loopback
                && !f.addresses.contains(&ip)
            {
                let loc = n.address.as_ref().map_or(n.loc.clone(), |a| a.loc.clone());
                diags.push(
                    Diagnostic::warning(
                        loc,
                        format!(
                            "node `{}` would listen on {ip}, which is none of its addresses when its facts were gathered ({})",
                            n.name,
                            f.addresses.join(", ")
                        ),
                    )
                    .with_help("correct its `address`, or gather its facts again (`fleet facts NODE`) if it changed"),
                );
            }
            continue;
        }
        let what = services
            .iter()
            .map(|(s, _)| *s)
            .collect::<Vec<_>>()
            .join(" and ");
        let what = if services.len() == 1 {
            format!("{what}, which listens")
        } else {
            format!("{what}, which listen")
        };
        let (loc, given) = match &n.address {
            Some(a) => (a.loc.clone(), format!("its `address` {:?}", a.value)),
            None => (n.loc.clone(), format!("its `host` {:?}", n.host)),
        };
        let msg = if inv.fleet.tailscale() {
            format!(
                "node `{}` runs {what} on its Tailscale IP, and none is known: {given} is not an IP",
                n.name
            )
        } else {
            format!(
                "node `{}` runs {what} on its fleet address, and {given} is not an IP a server can bind to",
                n.name
            )
        };
        diags.push(Diagnostic::error(loc, msg).with_help(format!(
            "write the node's fleet IP as `address:` (on a Tailscale fleet its `tailscale ip -4`), or set `{var}` for it; `{var}: 0.0.0.0` listens on every network the node is on (docs/roles.md, \"Listening addresses\")"
        )));
    }
}

/// Capabilities of a node: its role's (with includes) plus its own.
pub fn node_capabilities(repo: &Repo, n: &NodeSpec) -> BTreeSet<String> {
    let mut caps: BTreeSet<String> = n.capabilities.iter().cloned().collect();
    if let Ok(closure) = role_order(&repo.roles, std::slice::from_ref(&n.role)) {
        caps.extend(closure.iter().flat_map(|r| r.capabilities.iter().cloned()));
    }
    caps
}

/// Spend is counted only for what has a price: with `routing.cost`, every cloud provider
/// needs one; a `routing.prices` entry no provider uses is likely a typo of one that does.
fn check_cloud_prices(repo: &Repo, diags: &mut Diagnostics) {
    let r = &repo.inventory.routing;
    let prices = match crate::gateway::prices::PriceTable::with_overrides(&r.prices) {
        Ok(p) => p,
        Err(e) => {
            diags.push(Diagnostic::error(None, e));
            return;
        }
    };
    if r.cost.is_some() {
        for c in &r.cloud_fallback {
            if prices.price(&c.provider, &c.model).is_none() {
                diags.push(
                    Diagnostic::warning(
                        c.loc.clone(),
                        format!(
                            "no price is known for `{}/{}`: its spend cannot count against `routing.cost`",
                            c.provider, c.model
                        ),
                    )
                    .with_help(format!(
                        "add `routing.prices: {{ \"{}/{}\": {{ input: …, output: … }} }}` (USD per 1M tokens, from the provider's pricing page)",
                        c.provider, c.model
                    )),
                );
            }
        }
    }
    let used: Vec<String> = r
        .cloud_fallback
        .iter()
        .map(|c| format!("{}/{}", c.provider, c.model))
        .collect();
    for p in &r.prices {
        let name = format!("{}/{}", p.provider, p.model);
        if !used.contains(&name) {
            let help = did_you_mean(&name, used.iter().map(String::as_str)).unwrap_or_else(|| {
                "prices matter only for the providers and models `routing.cloud_fallback` lists"
                    .to_string()
            });
            diags.push(
                Diagnostic::warning(
                    p.loc.clone(),
                    format!("a price for `{name}`, which no `routing.cloud_fallback` entry uses"),
                )
                .with_help(help),
            );
        }
    }
}

fn check_routing(repo: &Repo, diags: &mut Diagnostics) {
    let inv: &Inventory = &repo.inventory;
    let rules = &inv.routing.rules;
    let models: BTreeSet<&str> = inv
        .nodes
        .values()
        .flat_map(|n| n.models.iter().map(|m| m.value.as_str()))
        .collect();
    let caps: BTreeSet<String> = inv
        .nodes
        .values()
        .flat_map(|n| node_capabilities(repo, n))
        .collect();
    for r in rules {
        if let Some(m) = &r.model
            && !models.contains(m.value.as_str())
        {
            let help = did_you_mean(&m.value, models.iter().copied()).unwrap_or_else(|| {
                format!(
                    "add `{}` to some node's `models`, or route this task to a model the fleet has",
                    m.value
                )
            });
            diags.push(
                Diagnostic::error(
                    m.loc.clone(),
                    format!(
                        "routing rule `{}` needs model `{}`, which no node serves",
                        r.task.value, m.value
                    ),
                )
                .with_help(help),
            );
        }
        if let Some(c) = &r.capability
            && !caps.contains(&c.value)
        {
            let help =
                did_you_mean(&c.value, caps.iter().map(String::as_str)).unwrap_or_else(|| {
                    format!(
                        "capabilities in this fleet: {}",
                        caps.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                });
            diags.push(
                Diagnostic::error(
                    c.loc.clone(),
                    format!(
                        "routing rule `{}` needs capability `{}`, which no node has",
                        r.task.value, c.value
                    ),
                )
                .with_help(help),
            );
        }
        for f in &r.fallback {
            if f.value == CLOUD_FALLBACK {
                // A `cloud_fallback:` that is written but malformed has its own located error.
                if inv.routing.cloud_fallback.is_empty() && inv.routing.cloud_fallback_loc.is_none()
                {
                    diags.push(Diagnostic::error(f.loc.clone(), format!("routing rule `{}` falls back to `{CLOUD_FALLBACK}`, but `routing.cloud_fallback` is not set", r.task.value))
                        .with_help("add `routing: { cloud_fallback: { provider, model, api_key_env } }`"));
                }
            } else if !rules.iter().any(|o| o.task.value == f.value) {
                let known = rules
                    .iter()
                    .map(|o| o.task.value.as_str())
                    .chain([CLOUD_FALLBACK]);
                let help = did_you_mean(&f.value, known).unwrap_or_else(|| {
                    format!("a fallback is another rule's task type or `{CLOUD_FALLBACK}`")
                });
                diags.push(
                    Diagnostic::error(
                        f.loc.clone(),
                        format!(
                            "routing rule `{}` falls back to `{}`, which is no routing rule",
                            r.task.value, f.value
                        ),
                    )
                    .with_help(help),
                );
            }
        }
    }
}
