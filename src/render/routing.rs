//! The routing table (`openclaw_workers.json`): every worker with its endpoint, kind, models,
//! capabilities, priority and capacity; per task type, the pool of workers able to serve it
//! (holding the model and the memory for it, or having the capability), ordered by priority,
//! then the fallback chain with the cloud API always last. Deterministic: same inputs, same bytes.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::eligibility::{Capacity, Compute, fit_model, model_need, pool_priority};
use crate::error::{Diagnostic, Diagnostics};
use crate::inventory::priority::default_priority;
use crate::repo::Repo;
use crate::repo::lookup::{VarLookup, role_capabilities};
use crate::spec::inventory::{CLOUD_FALLBACK, Hardware, NodeSpec};

/// One worker.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Worker {
    /// Node name.
    pub name: String,
    /// `ollama` or `browser`.
    pub kind: &'static str,
    /// The main endpoint (Ollama's API, or the browser's DevTools endpoint).
    pub endpoint: String,
    /// Every endpoint by service.
    pub endpoints: BTreeMap<String, String>,
    /// Models it holds (only those it has the memory for).
    pub models: Vec<String>,
    /// Capabilities, sorted.
    pub capabilities: Vec<String>,
    /// Routing priority (higher first).
    pub priority: u32,
    /// Requests it takes at once.
    pub max_concurrent: u32,
    /// Memory available for models (RAM plus discrete VRAM), when known.
    pub memory_gb: Option<f64>,
    /// Models it serves on the CPU only (no GPU memory for them): its priority in their pools
    /// is capped (`data/tiers.toml`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpu_only: Vec<String>,
    /// `online`/`degraded`/`offline`/`draining` when rendered from live HQ data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A cloud provider of the last fallback of every rule (`cloud_api`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cloud {
    /// Always `cloud_api`.
    pub name: &'static str,
    /// Always `cloud`.
    pub kind: &'static str,
    /// Provider.
    pub provider: String,
    /// Model at the provider.
    pub model: String,
    /// Environment variable holding the key (never the key); absent when the key is in a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// File holding the key (never the key), when it is read from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<String>,
    /// Base URL override.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

/// How one task type is served.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rule {
    /// Task type.
    pub task: String,
    /// Model that serves it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Capability that serves it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// The model tier that decides who can serve it (`data/tiers.toml`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Workers able to serve it, by priority in this pool (higher first), then name.
    pub pool: Vec<String>,
    /// Each pool member's priority in this pool: its own, capped where it serves the model
    /// on the CPU only.
    pub priorities: BTreeMap<String, u32>,
    /// Where requests go when the pool cannot take them: task types, then `cloud_api` last.
    pub fallback: Vec<String>,
}

/// The whole table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RoutingTable {
    /// Fleet name.
    pub fleet: Option<String>,
    /// Where status came from: `inventory` (static) or `hq` (live).
    pub status_source: &'static str,
    /// Workers, by name.
    pub workers: Vec<Worker>,
    /// The cloud fallback's first provider: the field conductors that know one provider read.
    pub cloud: Option<Cloud>,
    /// Every cloud provider of the fallback, in the order they are tried (the first is
    /// `cloud`); absent when there is no cloud fallback.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cloud_providers: Vec<Cloud>,
    /// Rules, in inventory order.
    pub rules: Vec<Rule>,
}

impl RoutingTable {
    /// A table with no workers, rules or cloud (what the gateway has before its first look).
    pub fn empty() -> Self {
        RoutingTable {
            fleet: None,
            status_source: "hq",
            workers: Vec::new(),
            cloud: None,
            cloud_providers: Vec::new(),
            rules: Vec::new(),
        }
    }
}

/// Live node states from HQ: node → `online`/`degraded`/`offline`/`draining`.
pub type StatusMap = BTreeMap<String, String>;

/// Where other machines reach each node: its `address`; on a Tailscale fleet
/// (`fleet.network: tailscale`) else its tailnet name `<node>.<tailnet>` or its gathered
/// Tailscale IP; else the host name ssh connects to for its `host` (an ssh alias resolves
/// through the fleet's ssh config).
pub fn reachable_hosts(repo: &Repo) -> BTreeMap<String, String> {
    let inv = &repo.inventory;
    let config = inv
        .fleet
        .ssh_config
        .as_deref()
        .map(|c| match c.strip_prefix("~/") {
            Some(rest) => std::env::var_os("HOME")
                .map(|h| std::path::PathBuf::from(h).join(rest))
                .unwrap_or_else(|| c.into()),
            None => c.into(),
        });
    // On a Tailscale fleet a node is reached on the tailnet: its `address`, else its MagicDNS
    // name (`fleet.tailnet`), else the Tailscale IP its gathered facts hold.
    let tailnet = |n: &NodeSpec| -> Option<String> {
        if !inv.fleet.tailscale() || n.address.is_some() {
            return None;
        }
        let facts = inv.fleet.tailnet.is_none().then(|| {
            crate::facts::load_cached(&repo.root, &n.name)
                .and_then(|f| serde_json::to_value(f).ok())
        });
        let a = crate::inventory::vars::fleet_address(inv, n, facts.flatten().as_ref());
        (a != n.host).then_some(a)
    };
    let on_tailnet: BTreeMap<String, String> = inv
        .nodes
        .values()
        .filter_map(|n| tailnet(n).map(|a| (n.name.clone(), a)))
        .collect();
    let unresolved: Vec<&NodeSpec> = inv
        .nodes
        .values()
        .filter(|n| n.address.is_none() && !on_tailnet.contains_key(&n.name))
        .collect();
    let hosts: Vec<&str> = unresolved.iter().map(|n| n.host.as_str()).collect();
    let names = crate::connection::resolve::hostnames(config.as_deref(), &hosts);
    let mut out: BTreeMap<String, String> = unresolved
        .iter()
        .zip(names)
        .map(|(n, h)| (n.name.clone(), h))
        .collect();
    for n in inv.nodes.values() {
        if let Some(a) = &n.address {
            out.insert(n.name.clone(), a.value.clone());
        }
    }
    out.extend(on_tailnet);
    out
}

/// A host as a URL writes it: IPv6 addresses in brackets.
pub fn url_host(h: &str) -> String {
    if h.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{h}]")
    } else {
        h.to_string()
    }
}

/// Memory available for models: RAM, plus VRAM of a discrete GPU.
pub fn model_memory_gb(hw: &Hardware) -> Option<f64> {
    let ram = hw.ram_gb?;
    Some(ram + hw.gpu.as_ref().map_or(0.0, |g| g.vram_gb))
}

/// Builds the routing table and its static checks. `hardware` gives each node's effective
/// hardware (facts over declared); `status` is live HQ data when available.
pub fn build(
    repo: &Repo,
    hardware: &dyn Fn(&NodeSpec) -> Hardware,
    status: Option<&StatusMap>,
) -> (RoutingTable, Diagnostics) {
    let inv = &repo.inventory;
    let mut diags = Diagnostics::default();
    let lookup = VarLookup::new(repo);
    let role_caps = role_capabilities(repo);
    let reach = reachable_hosts(repo);
    let mut workers = Vec::new();
    // (node, model) → why the node cannot serve a model it lists.
    let mut refused: BTreeMap<(String, String), String> = BTreeMap::new();
    for n in inv.nodes.values() {
        let hw = hardware(n);
        let mut caps: BTreeSet<String> = role_caps.get(&n.role.value).cloned().unwrap_or_default();
        caps.extend(n.capabilities.iter().cloned());
        let memory = model_memory_gb(&hw);
        let cap = Capacity::of(&hw);
        let mut models = Vec::new();
        let mut cpu_only = Vec::new();
        for m in &n.models {
            let fit = fit_model(&m.value, &cap);
            if !fit.serves() {
                refused.insert(
                    (n.name.clone(), m.value.clone()),
                    format!("`{}`: {}", n.name, fit.reason()),
                );
                diags.push(
                    Diagnostic::warning(
                        m.loc.clone(),
                        format!(
                            "`{}` lists `{}`, which it cannot serve ({}); it stays out of that model's pool",
                            n.name,
                            m.value,
                            fit.reason()
                        ),
                    )
                    .with_help("remove the model from this node, or give the node more memory"),
                );
                continue;
            }
            if fit.compute() == Some(Compute::Cpu) {
                cpu_only.push(m.value.clone());
            }
            models.push(m.value.clone());
        }
        let mut endpoints = BTreeMap::new();
        let host = url_host(reach.get(&n.name).map_or(n.host.as_str(), String::as_str));
        if caps.contains("ollama") {
            endpoints.insert(
                "ollama".to_string(),
                format!("http://{host}:{}", lookup.port(n, "ollama_port", 11434)),
            );
        }
        if caps.contains("browser") {
            endpoints.insert(
                "browser".to_string(),
                format!("http://{host}:{}", lookup.port(n, "browser_port", 9222)),
            );
        }
        let kind = if caps.contains("ollama") && !n.models.is_empty() {
            "ollama"
        } else if caps.contains("browser") {
            "browser"
        } else {
            continue;
        };
        workers.push(Worker {
            name: n.name.clone(),
            kind,
            endpoint: endpoints.get(kind).cloned().unwrap_or_default(),
            endpoints,
            models,
            capabilities: caps.into_iter().collect(),
            priority: n.priority.unwrap_or_else(|| default_priority(&hw)),
            max_concurrent: n.max_concurrent,
            memory_gb: memory,
            cpu_only,
            status: status.map(|s| s.get(&n.name).cloned().unwrap_or_else(|| "unknown".into())),
        });
    }
    workers.sort_by(|a, b| a.name.cmp(&b.name));

    let cloud_providers: Vec<Cloud> = inv
        .routing
        .cloud_fallback
        .iter()
        .map(|c| Cloud {
            name: CLOUD_FALLBACK,
            kind: "cloud",
            provider: c.provider.clone(),
            model: c.model.clone(),
            api_key_env: c.api_key_env().map(str::to_string),
            api_key_file: c.api_key_file().map(str::to_string),
            base_url: c.base_url.clone(),
        })
        .collect();
    let cloud = cloud_providers.first().cloned();

    // Offline nodes cannot take work; draining ones must not get new work (their in-flight
    // requests finish). The gateway reads the same live status.
    let serving = |w: &Worker| {
        status.is_none_or(|_| !matches!(w.status.as_deref(), Some("offline" | "draining")))
    };
    let mut rules = Vec::new();
    for r in &inv.routing.rules {
        let tier = r
            .model
            .as_ref()
            .and_then(|m| model_need(&m.value).tier_name().map(str::to_string));
        let in_pool = |w: &Worker| -> u32 {
            let cpu = r
                .model
                .as_ref()
                .is_some_and(|m| w.cpu_only.contains(&m.value));
            pool_priority(w.priority, cpu.then_some(Compute::Cpu))
        };
        let mut pool: Vec<&Worker> = workers
            .iter()
            .filter(|w| match (&r.model, &r.capability) {
                (Some(m), _) => w.kind == "ollama" && w.models.contains(&m.value),
                (None, Some(c)) => w.capabilities.contains(&c.value),
                _ => false,
            })
            .filter(|w| serving(w))
            .collect();
        pool.sort_by(|a, b| in_pool(b).cmp(&in_pool(a)).then(a.name.cmp(&b.name)));
        let mut fallback: Vec<String> = r
            .fallback
            .iter()
            .map(|f| f.value.clone())
            .filter(|f| f != CLOUD_FALLBACK)
            .collect();
        if r.fallback.iter().any(|f| f.value == CLOUD_FALLBACK) || cloud.is_some() {
            if let Some(pos) = r.fallback.iter().position(|f| f.value == CLOUD_FALLBACK)
                && pos + 1 != r.fallback.len()
            {
                diags.push(
                    Diagnostic::warning(r.fallback[pos].loc.clone(), format!("rule `{}` lists `{CLOUD_FALLBACK}` before other fallbacks; the cloud API always comes last", r.task.value))
                        .with_help("move `cloud_api` to the end of `fallback`"),
                );
            }
            if cloud.is_some() {
                fallback.push(CLOUD_FALLBACK.to_string());
            }
        }
        rules.push(Rule {
            task: r.task.value.clone(),
            model: r.model.as_ref().map(|m| m.value.clone()),
            capability: r.capability.as_ref().map(|c| c.value.clone()),
            tier,
            pool: pool.iter().map(|w| w.name.clone()).collect(),
            priorities: pool.iter().map(|w| (w.name.clone(), in_pool(w))).collect(),
            fallback,
        });
    }
    let table = RoutingTable {
        fleet: inv.fleet.name.clone(),
        status_source: if status.is_some() { "hq" } else { "inventory" },
        workers,
        cloud,
        cloud_providers,
        rules,
    };
    diags.extend(static_checks(repo, &table, &refused, status.is_some()));
    (table, diags)
}

/// The routing table as the conductor reads it (`openclaw_workers.json`), through the repo's
/// template (`routing/openclaw_workers.json.j2`, built in unless the repo overrides it): the
/// bytes `fleet render` writes and `fleet serve` keeps live.
pub fn render_file(
    env: &minijinja::Environment<'_>,
    table: &RoutingTable,
) -> Result<String, minijinja::Error> {
    let ctx = crate::template::data_context("routing", table);
    let mut text = crate::template::render_data(env, "routing/openclaw_workers.json.j2", ctx)?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// Problems a routing table can have that no single file shows: empty pools, models nobody
/// can hold, fallback cycles, single points of failure.
fn static_checks(
    repo: &Repo,
    table: &RoutingTable,
    refused: &BTreeMap<(String, String), String>,
    live: bool,
) -> Diagnostics {
    let mut diags = Diagnostics::default();
    let inv = &repo.inventory;
    for (spec, rule) in inv.routing.rules.iter().zip(&table.rules) {
        let loc = spec.task.loc.clone();
        let task = &rule.task;
        let explicit_fallback = !spec.fallback.is_empty();
        if rule.pool.is_empty() {
            if let Some(m) = &rule.model
                && !live
            {
                let listers: Vec<&NodeSpec> = inv
                    .nodes
                    .values()
                    .filter(|n| n.models.iter().any(|x| &x.value == m))
                    .collect();
                let serving: Vec<&Worker> = table
                    .workers
                    .iter()
                    .filter(|w| w.kind == "ollama" && listers.iter().any(|n| n.name == w.name))
                    .collect();
                if !listers.is_empty() && serving.is_empty() {
                    let names = listers
                        .iter()
                        .map(|n| format!("`{}` ({})", n.name, n.role.value))
                        .collect::<Vec<_>>()
                        .join(", ");
                    diags.push(
                        Diagnostic::error(loc.clone(), format!("rule `{task}` needs model `{m}`; {names} {} it, but no role there runs Ollama", if listers.len() == 1 { "lists" } else { "list" }))
                            .with_help("give those nodes a role that includes `ollama` (its capability is `ollama`)"),
                    );
                    continue;
                }
                let why: Vec<String> = serving
                    .iter()
                    .filter(|w| !w.models.contains(m))
                    .filter_map(|w| refused.get(&(w.name.clone(), m.clone())))
                    .cloned()
                    .collect();
                if !why.is_empty() {
                    diags.push(
                        Diagnostic::error(
                            loc.clone(),
                            format!(
                                "no node can serve `{m}` for rule `{task}`: {}",
                                why.join("; ")
                            ),
                        )
                        .with_help(
                            "route this task to a smaller model, or add a node with enough memory",
                        ),
                    );
                    continue;
                }
            }
            if live {
                diags.push(Diagnostic::warning(
                    loc.clone(),
                    format!(
                        "rule `{task}` has no online worker; requests go to {}",
                        describe_fallback(&rule.fallback)
                    ),
                ));
            } else if rule.fallback.is_empty() {
                diags.push(
                    Diagnostic::error(
                        loc.clone(),
                        format!(
                            "rule `{task}` has no worker and no fallback: its requests would fail"
                        ),
                    )
                    .with_help(
                        "add a node that serves it, a `fallback`, or `routing.cloud_fallback`",
                    ),
                );
            } else {
                diags.push(Diagnostic::warning(
                    loc.clone(),
                    format!(
                        "rule `{task}` has no worker; every request goes to {}",
                        describe_fallback(&rule.fallback)
                    ),
                ));
            }
        } else if rule.pool.len() == 1 && !explicit_fallback && !live {
            let after = if rule.fallback.is_empty() {
                "its requests fail".to_string()
            } else {
                format!(
                    "every request goes to {}",
                    describe_fallback(&rule.fallback)
                )
            };
            diags.push(
                Diagnostic::warning(loc.clone(), format!("rule `{task}` is served by one worker (`{}`) and has no fallback of its own: when it is down, {after}", rule.pool[0]))
                    .with_help("add a second node with this model, or a `fallback`"),
            );
        }
    }
    // Fallback cycles between task types.
    let edges: BTreeMap<&str, Vec<&str>> = inv
        .routing
        .rules
        .iter()
        .map(|r| {
            (
                r.task.value.as_str(),
                r.fallback
                    .iter()
                    .map(|f| f.value.as_str())
                    .filter(|f| *f != CLOUD_FALLBACK)
                    .collect(),
            )
        })
        .collect();
    let mut reported: BTreeSet<Vec<&str>> = BTreeSet::new();
    for r in &inv.routing.rules {
        let mut path = vec![r.task.value.as_str()];
        if let Some(cycle) = find_cycle(&edges, &mut path) {
            let mut key = cycle[..cycle.len() - 1].to_vec();
            key.sort_unstable();
            if reported.insert(key) {
                diags.push(
                    Diagnostic::error(
                        r.task.loc.clone(),
                        format!("routing fallbacks form a cycle: {}", cycle.join(" → ")),
                    )
                    .with_help("a fallback chain must end; remove one of these fallbacks"),
                );
            }
        }
    }
    diags
}

fn find_cycle<'a>(
    edges: &BTreeMap<&'a str, Vec<&'a str>>,
    path: &mut Vec<&'a str>,
) -> Option<Vec<&'a str>> {
    let last = *path.last()?;
    for next in edges.get(last).into_iter().flatten() {
        if let Some(pos) = path.iter().position(|p| p == next) {
            let mut c = path[pos..].to_vec();
            c.push(next);
            return Some(c);
        }
        path.push(next);
        if let Some(c) = find_cycle(edges, path) {
            return Some(c);
        }
        path.pop();
    }
    None
}

fn describe_fallback(f: &[String]) -> String {
    if f.is_empty() {
        "nowhere".to_string()
    } else {
        f.iter()
            .map(|x| format!("`{x}`"))
            .collect::<Vec<_>>()
            .join(", then ")
    }
}

/// Which worker takes a task now, and the chain after it.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// Task type.
    pub task: String,
    /// The worker that takes it, or the fallback that does when the pool is empty.
    pub target: Option<String>,
    /// The pool in order.
    pub pool: Vec<String>,
    /// Each pool worker's endpoint for this task (a browser task: the browser's endpoint).
    pub endpoints: BTreeMap<String, String>,
    /// The chain, expanded: each fallback task type's pool, then the cloud.
    pub chain: Vec<ChainStep>,
}

/// One step of a fallback chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainStep {
    /// The fallback's name (a task type or `cloud_api`).
    pub via: String,
    /// Workers of that step (empty for the cloud).
    pub workers: Vec<String>,
    /// Each worker's endpoint for that step's task.
    pub endpoints: BTreeMap<String, String>,
}

/// The service a rule's requests go to on a worker: its capability, else `ollama`.
pub fn rule_service(rule: &Rule) -> &str {
    rule.capability.as_deref().unwrap_or("ollama")
}

/// Each of `workers`' endpoints for `rule`'s service (falling back to the main endpoint).
fn endpoints_for(
    table: &RoutingTable,
    rule: &Rule,
    workers: &[String],
) -> BTreeMap<String, String> {
    let service = rule_service(rule);
    workers
        .iter()
        .filter_map(|name| {
            let w = table.workers.iter().find(|w| &w.name == name)?;
            let e = w.endpoints.get(service).unwrap_or(&w.endpoint);
            Some((name.clone(), e.clone()))
        })
        .collect()
}

/// Resolves a task type against the table.
pub fn route(table: &RoutingTable, task: &str) -> Option<Route> {
    let rule = table.rules.iter().find(|r| r.task == task)?;
    let mut chain = Vec::new();
    let mut seen: BTreeSet<&str> = BTreeSet::from([task]);
    let mut queue: Vec<&str> = rule.fallback.iter().map(String::as_str).collect();
    while !queue.is_empty() {
        let f = queue.remove(0);
        if f == CLOUD_FALLBACK {
            if !chain.iter().any(|c: &ChainStep| c.via == CLOUD_FALLBACK) {
                chain.push(ChainStep {
                    via: f.to_string(),
                    workers: Vec::new(),
                    endpoints: BTreeMap::new(),
                });
            }
            continue;
        }
        if !seen.insert(f) {
            continue;
        }
        if let Some(fr) = table.rules.iter().find(|r| r.task == f) {
            chain.push(ChainStep {
                via: f.to_string(),
                workers: fr.pool.clone(),
                endpoints: endpoints_for(table, fr, &fr.pool),
            });
            // The fallback's own fallbacks come before the cloud, which stays last.
            let mut next: Vec<&str> = fr.fallback.iter().map(String::as_str).collect();
            next.append(&mut queue);
            next.sort_by_key(|x| *x == CLOUD_FALLBACK);
            queue = next;
        }
    }
    let target = rule.pool.first().cloned().or_else(|| {
        chain.iter().find_map(|c| {
            if c.via == CLOUD_FALLBACK {
                Some(CLOUD_FALLBACK.to_string())
            } else {
                c.workers.first().cloned()
            }
        })
    });
    Some(Route {
        task: task.to_string(),
        target,
        pool: rule.pool.clone(),
        endpoints: endpoints_for(table, rule, &rule.pool),
        chain,
    })
}
