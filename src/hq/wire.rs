//! JSON shapes of HQ's API, shared by `fleet serve`, the agent and the commands that read HQ.

use serde::{Deserialize, Serialize};

/// One node as `GET /api/nodes` reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// `online`, `degraded` or `offline`.
    pub status: String,
    /// RFC 3339 time of the last heartbeat, if any.
    pub last_heartbeat: Option<String>,
    /// Seconds since the last heartbeat.
    pub heartbeat_age_secs: Option<f64>,
}

/// `GET /api/nodes`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodesResponse {
    /// Every node HQ knows.
    pub nodes: Vec<NodeStatus>,
}
