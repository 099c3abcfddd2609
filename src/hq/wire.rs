//! JSON shapes of HQ's API, shared by `fleet serve`, the agent and the commands that read HQ.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::facts::Disk;
use crate::spec::inventory::Gpu;

/// What an agent measured on its node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
    /// Since when the node is draining (RFC 3339), when it is: its status is then `draining`
    /// and it is in no routing pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining_since: Option<String>,
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

/// The answer to a stored heartbeat: `{"stored": true}`, with `"stop": true` when the node is
/// draining and has no request in flight (its agent then stops).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HeartbeatAnswer {
    /// The heartbeat is durable.
    pub stored: bool,
    /// The agent should stop: its node is drained.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop: bool,
    /// Why it should stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How the controller reaches a machine that joins, over ssh.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SshEndpoint {
    /// Address (IP or DNS name) the controller connects to.
    pub address: String,
    /// Account to log in as.
    pub user: String,
    /// sshd's port.
    pub port: u16,
}

/// What a joining machine found out about itself (the facts fleet gathers, as sent).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JoinFacts {
    /// `linux` or `macos`.
    pub os: Option<String>,
    /// Distribution or macOS version.
    pub os_version: Option<String>,
    /// `x86_64` or `aarch64`.
    pub arch: Option<String>,
    /// CPU model.
    pub cpu_model: Option<String>,
    /// Apple chip (`Apple M4`).
    pub apple_chip: Option<String>,
    /// Logical cores.
    pub cores: Option<u64>,
    /// Memory in GB.
    pub ram_gb: Option<f64>,
    /// Disks.
    #[serde(default)]
    pub disks: Vec<Disk>,
    /// GPUs.
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    /// Its host name.
    pub hostname: Option<String>,
    /// `systemd`, `launchd` or another.
    pub init: Option<String>,
    /// `apt`, `brew`, …
    pub package_manager: Option<String>,
    /// Its addresses (loopback excluded).
    #[serde(default)]
    pub addresses: Vec<String>,
}

impl From<&crate::facts::Facts> for JoinFacts {
    fn from(f: &crate::facts::Facts) -> Self {
        JoinFacts {
            os: f.os.clone(),
            os_version: f.os_version.clone(),
            arch: f.arch.clone(),
            cpu_model: f.cpu_model.clone(),
            apple_chip: f.apple_chip.clone(),
            cores: f.cores,
            ram_gb: f.ram_gb,
            disks: f.disks.clone(),
            gpus: f.gpus.clone(),
            hostname: f.hostname.clone(),
            init: f.init.clone(),
            package_manager: f.package_manager.clone(),
            addresses: f.addresses.clone(),
        }
    }
}

impl From<&JoinFacts> for crate::facts::Facts {
    fn from(j: &JoinFacts) -> Self {
        crate::facts::Facts {
            os: j.os.clone(),
            os_version: j.os_version.clone(),
            arch: j.arch.clone(),
            cpu_model: j.cpu_model.clone(),
            apple_chip: j.apple_chip.clone(),
            cores: j.cores,
            ram_gb: j.ram_gb,
            disks: j.disks.clone(),
            gpus: j.gpus.clone(),
            hostname: j.hostname.clone(),
            init: j.init.clone(),
            package_manager: j.package_manager.clone(),
            addresses: j.addresses.clone(),
            ..Default::default()
        }
    }
}

/// `POST /api/join` body: a new machine asks to be adopted (with a join token).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The node name it proposes.
    pub name: String,
    /// How to reach it over ssh.
    pub ssh: SshEndpoint,
    /// Its facts.
    pub facts: JoinFacts,
    /// The fleet version that joined.
    pub fleet_version: String,
}

/// A machine that joined and waits for `fleet adopt`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PendingNode {
    /// Its name.
    pub name: String,
    /// When it joined (RFC 3339).
    pub joined_at: String,
    /// The join token it used (by name).
    pub token: String,
    /// What it sent.
    pub request: JoinRequest,
}

/// `GET /api/pending`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PendingResponse {
    /// Every pending machine, by name.
    pub pending: Vec<PendingNode>,
}

/// An error answer: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    /// What was wrong.
    pub error: String,
}

/// Whether `s` is an RFC 3339 date-time: `YYYY-MM-DDTHH:MM:SS`, optional fraction, then `Z`
/// or an offset `±HH:MM`, with a real calendar date.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 || !s.is_ascii() {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let shape = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    let zone = &s[i..];
    let zone_ok = matches!(zone, "Z" | "z")
        || (zone.len() == 6
            && matches!(zone.as_bytes()[0], b'+' | b'-')
            && zone.as_bytes()[3] == b':'
            && zone[1..3].parse::<u8>().is_ok_and(|h| h < 24)
            && zone[4..6].parse::<u8>().is_ok_and(|m| m < 60));
    // humantime checks the calendar (month lengths, leap years) and the clock's ranges.
    zone_ok && humantime::parse_rfc3339(&format!("{}T{}Z", &s[..10], &s[11..19])).is_ok()
}

#[cfg(test)]
mod tests {
    use super::is_rfc3339;

    #[test]
    fn rfc3339_times() {
        for ok in [
            "2026-11-23T10:00:00Z",
            "2026-11-23T10:00:00.123Z",
            "2024-02-29T23:59:59+02:00",
            "2026-11-23t10:00:00-05:30",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "y",
            "",
            "2026-11-23",
            "2026-11-23 10:00:00Z",
            "2026-02-30T10:00:00Z",
            "2026-11-23T25:00:00Z",
            "2026-11-23T10:00:00",
            "2026-11-23T10:00:00.Z",
            "2026-11-23T10:00:00+2:00",
            "2026-11-23T10:00:00Zjunk",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }
}
