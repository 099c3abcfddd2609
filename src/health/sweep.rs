//! One sweep over the selected nodes: all probes at once (bounded), HQ's view fetched
//! alongside, then a state per node with reasons.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::health::probe::{self, Probe, SshTarget};
use crate::hq::status::{Expectation, human_secs, model_matches, problems};
use crate::hq::wire::{NodeStatus, NodesResponse};
use crate::repo::Repo;
use crate::repo::lookup::VarLookup;
use crate::repo::lookup::role_capabilities;
use crate::spec::inventory::NodeSpec;

/// Settings of a sweep.
#[derive(Debug, Clone)]
pub struct Options {
    /// Per-probe timeout.
    pub timeout: Duration,
    /// Check Docker over SSH instead of trusting the last heartbeat.
    pub deep: bool,
    /// Heartbeats older than this make a node offline.
    pub offline_after: Duration,
    /// Most probes in flight at once.
    pub max_in_flight: usize,
}

/// One node's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct NodeHealth {
    /// Node name.
    pub node: String,
    /// `online`, `degraded`, `offline` or `draining`.
    pub state: String,
    /// What is wrong and what to do.
    pub reasons: Vec<String>,
    /// The probes, by name (`ssh`, `ollama`, `docker`).
    pub checks: BTreeMap<String, Probe>,
    /// Seconds since the last heartbeat HQ has, when HQ answered.
    pub heartbeat_age_secs: Option<f64>,
}

/// A whole sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When it ran (RFC 3339).
    pub checked_at: String,
    /// How long it took, in ms.
    pub duration_ms: u64,
    /// HQ's answer, or why there is none.
    pub hq: Probe,
    /// Per node, in inventory order.
    pub nodes: Vec<NodeHealth>,
    /// Counts by state.
    pub summary: BTreeMap<String, usize>,
}

impl Report {
    /// True when every node is online (or draining: taken out of routing on purpose).
    pub fn all_online(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| n.state == "online" || n.state == crate::hq::drain::DRAINING)
    }
}

/// What the node's role provides, plus the node's own capabilities.
fn node_capabilities(
    caps: &std::collections::HashMap<String, BTreeSet<String>>,
    n: &NodeSpec,
) -> BTreeSet<String> {
    caps.get(&n.role.value)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .chain(n.capabilities.iter().cloned())
        .collect()
}

fn ssh_target(repo: &Repo, lookup: &VarLookup<'_>, n: &NodeSpec) -> SshTarget {
    let s = |k: &str| {
        lookup.get(n, k).and_then(|v| {
            v.as_str()
                .map(str::to_string)
                .or_else(|| v.as_u64().map(|u| u.to_string()))
        })
    };
    SshTarget {
        host: n.host.clone(),
        user: s("ssh_user"),
        port: s("ssh_port").and_then(|p| p.parse().ok()),
        key: s("ssh_key"),
        config: repo.inventory.fleet.ssh_config.clone(),
    }
}

/// What one node's probes found.
struct Deep {
    ssh: Probe,
    ollama: Option<Probe>,
    docker: Option<Probe>,
    /// `--deep`: the listening sockets, with what the node may listen on.
    listeners: Option<(
        Probe,
        Option<Vec<crate::health::listen::Listener>>,
        crate::health::listen::Allowed,
    )>,
    /// `--deep` on a Tailscale fleet: `tailscale status`.
    tailscale: Option<Probe>,
}

/// A variable that says "every interface".
fn is_wildcard(v: Option<serde_json::Value>) -> bool {
    v.as_ref()
        .and_then(serde_json::Value::as_str)
        .is_some_and(|s| matches!(s, "0.0.0.0" | "::" | "*" | "[::]"))
}

/// What `n` may listen on: loopback (always), its fleet addresses, and on every interface the
/// ports its variables open explicitly (`ollama_bind`/`hq_bind` a wildcard, `open_ports`); the
/// SSH port is added once it is known.
fn allowed_listeners(
    repo: &Repo,
    lookup: &VarLookup<'_>,
    caps: &BTreeSet<String>,
    n: &NodeSpec,
    facts: Option<&serde_json::Value>,
) -> crate::health::listen::Allowed {
    let inv = &repo.inventory;
    let mut a = crate::health::listen::Allowed::default();
    let ip = |s: &str| s.parse::<std::net::IpAddr>().ok().map(|i| i.to_string());
    a.addresses
        .extend(crate::inventory::vars::bind_address(inv, n, facts));
    a.addresses
        .extend(n.address.as_ref().and_then(|x| ip(&x.value)));
    for k in ["ollama_bind", "hq_bind"] {
        if let Some(v) = lookup
            .get(n, k)
            .as_ref()
            .and_then(|v| v.as_str())
            .and_then(ip)
        {
            a.addresses.insert(v);
        }
    }
    if inv.fleet.tailscale() {
        a.addresses.extend(
            facts
                .and_then(|f| f.get("tailscale_ip"))
                .and_then(|v| v.as_str())
                .and_then(ip),
        );
    }
    a.addresses.retain(|x| {
        x.parse::<std::net::IpAddr>()
            .is_ok_and(|i| !i.is_unspecified())
    });
    if caps.contains("ollama") && is_wildcard(lookup.get(n, "ollama_bind")) {
        a.open_ports.insert(lookup.port(n, "ollama_port", 11434));
    }
    if caps.contains("hq") && is_wildcard(lookup.get(n, "hq_bind")) {
        a.open_ports.insert(lookup.port(n, "hq_port", 8765));
    }
    if let Some(serde_json::Value::Array(ports)) = lookup.get(n, "open_ports") {
        a.open_ports.extend(
            ports
                .iter()
                .filter_map(|p| p.as_u64().and_then(|p| u16::try_from(p).ok())),
        );
    }
    a
}

/// Runs one sweep over `nodes` (names from the inventory).
pub async fn sweep(repo: &Repo, nodes: &[String], opts: &Options) -> Report {
    let started = std::time::Instant::now();
    let lookup = VarLookup::new(repo);
    let caps = role_capabilities(repo);
    // The client's own limit is looser so each probe's timeout (and its message) decides.
    let client = crate::hq::client::http_client(opts.timeout * 2).unwrap_or_default();
    let permits = Arc::new(Semaphore::new(opts.max_in_flight.max(1)));
    // `ssh -G` is a process each: a few at a time.
    let resolvers = Arc::new(Semaphore::new(16));

    let hq_url = repo
        .inventory
        .fleet
        .hq_url
        .as_ref()
        .map(|u| u.value.clone());
    let hq_task = {
        // HQ over HTTPS: trust exactly the fleet CA (`tls/ca.pem`).
        let ca = crate::hq::client::repo_ca(&repo.root);
        let hq_client = match &hq_url {
            Some(u) => crate::hq::client::hq_client(u, opts.timeout * 2, Some(&ca)),
            None => Ok(client.clone()),
        };
        let timeout = opts.timeout;
        let url = hq_url.clone();
        let token = crate::hq::client::client_token(&repo.root);
        tokio::spawn(async move {
            match hq_client {
                Ok(c) => fetch_hq(&c, url.as_deref(), token.as_deref(), timeout).await,
                Err(detail) => (
                    Probe {
                        ok: false,
                        target: url.unwrap_or_default(),
                        detail,
                        ms: 0,
                        models: None,
                    },
                    None,
                ),
            }
        })
    };

    let mut tasks = Vec::new();
    for name in nodes {
        let Some(n) = repo.inventory.nodes.get(name) else {
            continue;
        };
        let node_caps = node_capabilities(&caps, n);
        let mut ssh = ssh_target(repo, &lookup, n);
        // With an ssh config, `host` may be an alias: probe the address ssh would use (asked
        // of `ssh -G` inside the node's task, so a thousand nodes resolve concurrently).
        let resolve =
            repo.inventory
                .fleet
                .ssh_config
                .as_ref()
                .map(|cfg| crate::connection::ssh::SshTarget {
                    host: n.host.clone(),
                    port: ssh.port,
                    config: Some(cfg.into()),
                    ..Default::default()
                });
        let ollama_port = node_caps
            .contains("ollama")
            .then(|| lookup.port(n, "ollama_port", 11434));
        let deep = opts.deep && node_caps.contains("docker");
        let audit = opts.deep;
        let cached = crate::facts::load_cached(&repo.root, &n.name)
            .and_then(|f| serde_json::to_value(f).ok());
        let mut allowed = allowed_listeners(repo, &lookup, &node_caps, n, cached.as_ref());
        let tailscale = opts.deep && repo.inventory.fleet.tailscale();
        // Services are reached at the node's `address` when it has one (ssh may go elsewhere,
        // e.g. through a jump host); on a Tailscale fleet at its tailnet address.
        let service_host = (n.address.is_some() || repo.inventory.fleet.tailscale())
            .then(|| crate::inventory::vars::fleet_address(&repo.inventory, n, cached.as_ref()));
        let (client, permits, resolvers, timeout, host) = (
            client.clone(),
            permits.clone(),
            resolvers.clone(),
            opts.timeout,
            n.host.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (host, resolved_port) = match &resolve {
                Some(t) => {
                    let _r = resolvers.acquire().await.ok();
                    crate::connection::ssh::resolve_async(t).await
                }
                None => (host, ssh.port),
            };
            ssh.port = ssh.port.or(resolved_port);
            let ssh_port = ssh.port.unwrap_or(22);
            allowed.open_ports.insert(ssh_port);
            let ollama_base = ollama_port.map(|p| {
                let h = service_host.as_deref().unwrap_or(&host);
                format!("http://{}:{p}", crate::render::routing::url_host(h))
            });
            let ssh_probe = async {
                let _p = permits.acquire().await.ok();
                probe::ssh(&host, ssh_port, timeout).await
            };
            let ollama_probe = async {
                match &ollama_base {
                    Some(b) => {
                        let _p = permits.acquire().await.ok();
                        Some(probe::ollama(&client, b, timeout).await)
                    }
                    None => None,
                }
            };
            let docker_probe = async {
                if deep {
                    let _p = permits.acquire().await.ok();
                    Some(probe::docker_over_ssh(&ssh, timeout * 2).await)
                } else {
                    None
                }
            };
            let audit_probe = async {
                if audit {
                    let _p = permits.acquire().await.ok();
                    Some(probe::listeners_over_ssh(&ssh, timeout * 2).await)
                } else {
                    None
                }
            };
            let tailscale_probe = async {
                if tailscale {
                    let _p = permits.acquire().await.ok();
                    Some(probe::tailscale_over_ssh(&ssh, timeout * 2).await)
                } else {
                    None
                }
            };
            let (s, o, d, a, t) = tokio::join!(
                ssh_probe,
                ollama_probe,
                docker_probe,
                audit_probe,
                tailscale_probe
            );
            Deep {
                ssh: s,
                ollama: o,
                docker: d,
                listeners: a.map(|(p, l)| (p, l, allowed)),
                tailscale: t,
            }
        }));
    }
    let hq = hq_task.await.unwrap_or_else(|e| {
        (
            Probe {
                ok: false,
                target: String::new(),
                detail: e.to_string(),
                ms: 0,
                models: None,
            },
            None,
        )
    });
    let (hq_probe, hq_nodes) = hq;
    let by_name: BTreeMap<String, NodeStatus> = hq_nodes
        .map(|r| r.nodes.into_iter().map(|n| (n.name.clone(), n)).collect())
        .unwrap_or_default();
    let hq_name = repo.inventory.fleet.hq.as_ref().map(|h| h.value.clone());

    let mut out = Vec::new();
    for (name, task) in nodes
        .iter()
        .filter(|n| repo.inventory.nodes.contains_key(*n))
        .zip(tasks)
    {
        let n = &repo.inventory.nodes[name];
        let node_caps = node_capabilities(&caps, n);
        let probes = match task.await {
            Ok(r) => r,
            Err(e) => Deep {
                ssh: Probe {
                    ok: false,
                    target: n.host.clone(),
                    detail: e.to_string(),
                    ms: 0,
                    models: None,
                },
                ollama: None,
                docker: None,
                listeners: None,
                tailscale: None,
            },
        };
        // Only what the node can serve is expected (the routing pools' rule).
        let (hw, _) = crate::facts::effective_hardware(&repo.root, n);
        let expected =
            crate::eligibility::served_models(n.models.iter().map(|m| m.value.as_str()), &hw);
        out.push(judge(
            n,
            &expected,
            &node_caps,
            probes,
            &hq_probe,
            by_name.get(name),
            hq_name.as_deref() == Some(name.as_str()),
            opts,
        ));
    }
    let mut summary: BTreeMap<String, usize> = ["online", "degraded", "offline"]
        .iter()
        .map(|s| (s.to_string(), 0))
        .collect();
    for n in &out {
        *summary.entry(n.state.clone()).or_default() += 1;
    }
    Report {
        checked_at: crate::hq::store::rfc3339(crate::hq::store::now_ms()),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        hq: hq_probe,
        nodes: out,
        summary,
    }
}

async fn fetch_hq(
    client: &reqwest::Client,
    url: Option<&str>,
    token: Option<&str>,
    timeout: Duration,
) -> (Probe, Option<NodesResponse>) {
    let Some(url) = url else {
        return (
            Probe {
                ok: false,
                target: String::new(),
                detail: "no `fleet.hq_url` in the inventory".into(),
                ms: 0,
                models: None,
            },
            None,
        );
    };
    let start = std::time::Instant::now();
    let target = format!("{}/api/nodes", url.trim_end_matches('/'));
    let fetch = async {
        let r = crate::hq::client::get(client, &target, token).await?;
        r.json::<NodesResponse>()
            .await
            .map_err(|e| format!("unexpected answer: {e}"))
    };
    let ms = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    match tokio::time::timeout(timeout, fetch).await {
        Ok(Ok(nodes)) => (
            Probe {
                ok: true,
                target,
                detail: crate::util::count(nodes.nodes.len() as u64, "node", "nodes"),
                ms: ms(),
                models: None,
            },
            Some(nodes),
        ),
        Ok(Err(e)) => (
            Probe {
                ok: false,
                target,
                detail: e,
                ms: ms(),
                models: None,
            },
            None,
        ),
        Err(_) => (
            Probe {
                ok: false,
                target,
                detail: format!("no answer within {}", humantime::format_duration(timeout)),
                ms: ms(),
                models: None,
            },
            None,
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn judge(
    n: &NodeSpec,
    expected: &[String],
    caps: &BTreeSet<String>,
    probes: Deep,
    hq: &Probe,
    hb: Option<&NodeStatus>,
    is_hq: bool,
    opts: &Options,
) -> NodeHealth {
    let Deep {
        ssh,
        ollama,
        docker,
        listeners,
        tailscale,
    } = probes;
    let mut reasons = Vec::new();
    let mut offline = false;
    let mut degraded = false;
    if !ssh.ok {
        offline = true;
        reasons.push(format!(
            "{} is unreachable: ssh port {} ({})",
            n.name, ssh.target, ssh.detail
        ));
    }
    // An unreachable node's other failures say nothing new.
    if let Some(o) = ollama.as_ref().filter(|_| ssh.ok) {
        if !o.ok {
            degraded = true;
            let base = o
                .target
                .trim_end_matches("/api/tags")
                .trim_start_matches("http://");
            reasons.push(format!("ollama on {base} does not answer: {}", o.detail));
        } else if let Some(models) = &o.models {
            let missing: Vec<&str> = expected
                .iter()
                .map(String::as_str)
                .filter(|m| !models.iter().any(|x| model_matches(x, m)))
                .collect();
            if !missing.is_empty() {
                degraded = true;
                let base = o
                    .target
                    .trim_end_matches("/api/tags")
                    .trim_start_matches("http://");
                reasons.push(format!(
                    "ollama on {base} answers but {} missing; run `fleet provision {}`",
                    if missing.len() == 1 {
                        format!("{} is", missing[0])
                    } else {
                        format!("{} are", missing.join(", "))
                    },
                    n.name
                ));
            }
        }
    }
    let mut age = None;
    // HQ refusing this command's read (no or a wrong token) is not HQ being down: the
    // summary says so, and the nodes are judged without heartbeats.
    if is_hq && !hq.ok && !hq.detail.starts_with("HQ refused the read") {
        degraded = true;
        reasons.push(format!(
            "the HQ registry at {} does not answer ({}); run `fleet provision {}`",
            hq.target.trim_end_matches("/api/nodes"),
            hq.detail,
            n.name
        ));
    }
    if hq.ok && ssh.ok {
        match hb.and_then(|h| h.last.as_ref().map(|l| (h, l))) {
            Some((h, last)) => {
                age = h.heartbeat_age_secs;
                if h.heartbeat_age_secs
                    .is_some_and(|a| a > opts.offline_after.as_secs_f64())
                {
                    offline = true;
                    reasons.push(format!(
                        "no heartbeat from {} for {}; is its agent running? (`fleet provision {}` reinstalls it)",
                        n.name,
                        human_secs(h.heartbeat_age_secs.unwrap_or_default()),
                        n.name
                    ));
                } else {
                    // Docker and disk from the heartbeat; Ollama is probed directly above, and
                    // with --deep Docker is too.
                    let exp = Expectation {
                        name: n.name.clone(),
                        capabilities: caps
                            .iter()
                            .filter(|c| *c != "ollama" && !(opts.deep && *c == "docker"))
                            .cloned()
                            .collect(),
                        models: Vec::new(),
                    };
                    let p = problems(&exp, last);
                    degraded |= !p.is_empty();
                    reasons.extend(p);
                }
            }
            None => {
                offline = true;
                reasons.push(format!(
                    "HQ has no heartbeat from {}; install its agent with `fleet provision {}`",
                    n.name, n.name
                ));
            }
        }
    }
    if let Some(d) = &docker
        && !d.ok
    {
        degraded = true;
        reasons.push(format!("docker is down on {}: {}", n.name, d.detail));
    }
    // An unreachable node's other failures say nothing new.
    if let Some(t) = tailscale.as_ref().filter(|_| ssh.ok)
        && !t.ok
    {
        degraded = true;
        reasons.push(format!(
            "{} is not on the tailnet: {}; run `fleet provision {}`",
            n.name, t.detail, n.name
        ));
    }
    let mut listen_probe = None;
    if let Some((p, found, allowed)) = listeners.filter(|_| ssh.ok) {
        match &found {
            Some(l) => {
                let open = crate::health::listen::beyond_fleet(l, &allowed);
                for o in &open {
                    degraded = true;
                    reasons.push(format!(
                        "port {} on {} is open beyond the fleet network: {}; bind it to loopback or the fleet address, or stop it",
                        o.port,
                        n.name,
                        o.describe()
                    ));
                }
                let mut p = p;
                if !open.is_empty() {
                    p.ok = false;
                    p.detail = format!("{}, {} beyond the fleet network", p.detail, open.len());
                }
                listen_probe = Some(p);
            }
            None => {
                degraded = true;
                reasons.push(format!(
                    "cannot audit {}'s open ports: {}",
                    n.name, p.detail
                ));
                listen_probe = Some(p);
            }
        }
    }
    let mut checks = BTreeMap::new();
    checks.insert("ssh".to_string(), ssh);
    if let Some(p) = listen_probe {
        checks.insert("listeners".to_string(), p);
    }
    if let Some(t) = tailscale {
        checks.insert("tailscale".to_string(), t);
    }
    if let Some(o) = ollama {
        checks.insert("ollama".to_string(), o);
    }
    if let Some(d) = docker {
        checks.insert("docker".to_string(), d);
    }
    // A draining node is out of routing on purpose (`fleet drain`): that is its state, with
    // HQ's reason first; what the probes found stays listed.
    let draining = hb.filter(|h| h.status == crate::hq::drain::DRAINING);
    if let Some(why) = draining.and_then(|h| h.reasons.first()) {
        reasons.insert(0, why.clone());
    }
    let state = if draining.is_some() {
        crate::hq::drain::DRAINING
    } else if offline {
        "offline"
    } else if degraded {
        "degraded"
    } else {
        "online"
    };
    NodeHealth {
        node: n.name.clone(),
        state: state.into(),
        reasons,
        checks,
        heartbeat_age_secs: age,
    }
}
