//! The node registry (`nodes_registry.json`): every node with its address, role, hardware
//! (gathered facts when cached, else declared), services, and live status when HQ answers.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use crate::repo::Repo;
use crate::repo::lookup::VarLookup;
use crate::repo::lookup::role_capabilities;
use crate::spec::inventory::{Hardware, NodeSpec};

/// Live data HQ has about a node.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, Serialize)]
pub struct LiveNode {
    /// `online` / `degraded` / `offline`.
    pub status: String,
    /// RFC 3339 time of the last heartbeat.
    pub last_heartbeat: Option<String>,
}

/// One node of the registry.
#[derive(Debug, Clone, Serialize)]
pub struct RegistryNode {
    /// Name.
    pub name: String,
    /// Address.
    pub host: String,
    /// Role.
    pub role: String,
    /// Whether it is the fleet's HQ.
    pub hq: bool,
    /// Hardware.
    pub hardware: Hardware,
    /// `facts` or `declared`.
    pub hardware_source: &'static str,
    /// Services by name with their settings.
    pub services: BTreeMap<String, serde_json::Value>,
    /// Status: `unknown` unless rendered live.
    pub status: String,
    /// Last heartbeat, when rendered live.
    pub last_heartbeat: Option<String>,
}

/// The registry file.
#[derive(Debug, Clone, Serialize)]
pub struct Registry {
    /// Fleet name.
    pub fleet: Option<String>,
    /// HQ node.
    pub hq: Option<String>,
    /// HQ URL.
    pub hq_url: Option<String>,
    /// `inventory` or `hq`.
    pub status_source: &'static str,
    /// Nodes by name.
    pub nodes: Vec<RegistryNode>,
}

/// Builds the registry.
pub fn build(
    repo: &Repo,
    hardware: &dyn Fn(&NodeSpec) -> (Hardware, &'static str),
    live: Option<&BTreeMap<String, LiveNode>>,
) -> Registry {
    let inv = &repo.inventory;
    let lookup = VarLookup::new(repo);
    let role_caps = role_capabilities(repo);
    let hq = inv.fleet.hq.as_ref().map(|h| h.value.clone());
    let mut nodes: Vec<RegistryNode> = inv
        .nodes
        .values()
        .map(|n| {
            let (hw, source) = hardware(n);
            let mut caps = role_caps.get(&n.role.value).cloned().unwrap_or_default();
            caps.extend(n.capabilities.iter().cloned());
            let mut services = BTreeMap::new();
            for c in &caps {
                let v = match c.as_str() {
                    "ollama" => json!({ "port": lookup.port(n, "ollama_port", 11434), "models": n.models.iter().map(|m| &m.value).collect::<Vec<_>>() }),
                    "browser" => json!({ "port": lookup.port(n, "browser_port", 9222) }),
                    "hq" => json!({ "port": lookup.port(n, "hq_port", 8765) }),
                    _ => json!({}),
                };
                services.insert(c.clone(), v);
            }
            let l = live.and_then(|m| m.get(&n.name));
            RegistryNode {
                name: n.name.clone(),
                host: n.host.clone(),
                role: n.role.value.clone(),
                hq: hq.as_deref() == Some(n.name.as_str()),
                hardware: hw,
                hardware_source: source,
                services,
                status: match (live, l) {
                    (None, _) => "unknown".into(),
                    (Some(_), None) => "offline".into(),
                    (Some(_), Some(l)) => l.status.clone(),
                },
                last_heartbeat: l.and_then(|l| l.last_heartbeat.clone()),
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Registry {
        fleet: inv.fleet.name.clone(),
        hq,
        hq_url: inv.fleet.hq_url.as_ref().map(|u| u.value.clone()),
        status_source: if live.is_some() { "hq" } else { "inventory" },
        nodes,
    }
}
