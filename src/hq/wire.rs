//! JSON shapes of HQ's API, shared by `fleet serve`, the agent and the commands that read HQ.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::facts::Disk;
use crate::spec::inventory::Gpu;

/// What an agent measured on its node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Resources {
    /// CPU model.
    pub cpu_model: Option<String>,
    /// Logical cores.
    pub cores: Option<u64>,
    /// 1-minute load average.
    pub load_1m: Option<f64>,
    /// Total memory, GB.
    pub ram_gb: Option<f64>,
    /// Used memory, GB.
    pub ram_used_gb: Option<f64>,
    /// Disks.
    #[serde(default)]
    pub disks: Vec<Disk>,
    /// GPUs.
    #[serde(default)]
    pub gpus: Vec<Gpu>,
}

/// One service's state on the node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServiceState {
    /// Whether it answered.
    pub up: bool,
    /// Its version, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Models it holds (Ollama).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Why it is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /api/heartbeat` body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The node (must match the token).
    pub node: String,
    /// fleet version of the agent.
    pub agent_version: String,
    /// When the agent sent it (RFC 3339).
    pub sent_at: String,
    /// The agent's counter, increasing per heartbeat since it started.
    #[serde(default)]
    pub seq: u64,
    /// Seconds the node has been up.
    #[serde(default)]
    pub uptime_secs: u64,
    /// Measurements.
    #[serde(default)]
    pub resources: Resources,
    /// Services by name (`ollama`, `docker`).
    #[serde(default)]
    pub services: BTreeMap<String, ServiceState>,
}

/// One node as `GET /api/nodes` reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// `online`, `degraded` or `offline`.
    pub status: String,
    /// Why it is not online.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// RFC 3339 time of the last heartbeat, if any.
    pub last_heartbeat: Option<String>,
    /// Seconds since the last heartbeat.
    pub heartbeat_age_secs: Option<f64>,
    /// The last heartbeat's contents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Heartbeat>,
}

/// `GET /api/nodes`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodesResponse {
    /// Every node of the inventory, and any other that reported.
    pub nodes: Vec<NodeStatus>,
}

/// `GET /api/nodes/{name}`: the node and its recent heartbeats (newest first).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeDetail {
    /// Status.
    #[serde(flatten)]
    pub node: NodeStatus,
    /// Recent heartbeats with the time HQ received each.
    pub history: Vec<HistoryEntry>,
}

/// One stored heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryEntry {
    /// When HQ received it (RFC 3339).
    pub received_at: String,
    /// What the agent sent.
    pub heartbeat: Heartbeat,
}

/// An error answer: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    /// What was wrong.
    pub error: String,
}
