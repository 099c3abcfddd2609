//! Facts gathered from hosts: the typed record, and the on-disk cache under `.fleet/facts/`
//! that `fleet render`, `fleet eligible` and the registry read.

pub mod probe;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spec::inventory::{Gpu, Hardware};

/// A disk (mount point) and its space.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// Mount point.
    pub mount: String,
    /// Size in GB.
    pub total_gb: f64,
    /// Free space in GB.
    pub free_gb: f64,
}

/// What fleet knows about a host after gathering facts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Facts {
    /// `linux` or `macos`.
    pub os: Option<String>,
    /// Distribution or macOS version, e.g. `debian 12`, `macOS 15.1`.
    pub os_version: Option<String>,
    /// `x86_64` or `aarch64`.
    pub arch: Option<String>,
    /// CPU model string.
    pub cpu_model: Option<String>,
    /// Logical cores.
    pub cores: Option<u64>,
    /// Memory in GB.
    pub ram_gb: Option<f64>,
    /// Disks.
    #[serde(default)]
    pub disks: Vec<Disk>,
    /// Discrete GPUs.
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    /// Apple chip (`Apple M4`), when Apple silicon.
    pub apple_chip: Option<String>,
    /// Hostname.
    pub hostname: Option<String>,
    /// `systemd`, `launchd`, or another init.
    pub init: Option<String>,
    /// `apt`, `dnf`, `pacman`, `brew`.
    pub package_manager: Option<String>,
    /// Ollama's version when installed.
    pub ollama_version: Option<String>,
    /// Models Ollama has.
    #[serde(default)]
    pub ollama_models: Vec<String>,
    /// The account fleet logs in as (what `become` switches from).
    #[serde(default)]
    pub user: Option<String>,
    /// The host's IP addresses (every interface's, loopback excluded): what a server on it
    /// can bind to.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Its Tailscale IPv4 address (`tailscale ip -4`), when it is on a tailnet.
    #[serde(default)]
    pub tailscale_ip: Option<String>,
    /// Custom facts: each `/etc/fleet/facts.d/NAME.json` of the host, parsed, under `NAME`
    /// (`facts.local.NAME`, Ansible's `ansible_local`).
    #[serde(default)]
    pub local: std::collections::BTreeMap<String, serde_json::Value>,
    /// The custom facts files that are not valid JSON: name → what is wrong.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub local_errors: std::collections::BTreeMap<String, String>,
}

impl Facts {
    /// Free disk of the root (or largest) filesystem in GB.
    pub fn root_free_gb(&self) -> Option<f64> {
        self.disks
            .iter()
            .find(|d| d.mount == "/System/Volumes/Data")
            .or_else(|| self.disks.iter().find(|d| d.mount == "/"))
            .or_else(|| {
                self.disks
                    .iter()
                    .max_by(|a, b| a.total_gb.total_cmp(&b.total_gb))
            })
            .map(|d| d.free_gb)
    }

    /// Hardware as gathered, falling back to what was declared for what facts do not say.
    pub fn overlay(&self, declared: &Hardware) -> Hardware {
        let mut hw = declared.clone();
        if let Some(v) = &self.os {
            hw.os = Some(v.clone());
        }
        if let Some(v) = &self.arch {
            hw.arch = Some(v.clone());
        }
        if let Some(v) = self.ram_gb {
            hw.ram_gb = Some(v);
        }
        if let Some(v) = self.cores {
            hw.cores = Some(v);
        }
        if let Some(v) = self.root_free_gb() {
            hw.disk_gb = Some(v);
        }
        if let Some(c) = &self.apple_chip {
            hw.cpu = Some("apple_silicon".into());
            hw.chip = Some(c.trim_start_matches("Apple ").to_string());
        } else if let Some(m) = &self.cpu_model {
            hw.chip = Some(m.clone());
        }
        if let Some(g) = self
            .gpus
            .iter()
            .max_by(|a, b| a.vram_gb.total_cmp(&b.vram_gb))
        {
            hw.gpu = Some(g.clone());
        }
        hw
    }
}

/// Where a repo keeps cached facts.
pub fn cache_dir(repo_root: &Path) -> PathBuf {
    repo_root.join(".fleet").join("facts")
}

/// Cached facts of a node, when a previous run gathered them.
pub fn load_cached(repo_root: &Path, node: &str) -> Option<Facts> {
    let text = std::fs::read_to_string(cache_dir(repo_root).join(format!("{node}.json"))).ok()?;
    let mut facts: Facts = serde_json::from_str(&text).ok()?;
    // A cache written by hand or by an older fleet may say `arm64`: one name per architecture.
    if let Some(a) = facts
        .arch
        .as_deref()
        .and_then(crate::spec::inventory::canonical_arch)
    {
        facts.arch = Some(a.to_string());
    }
    Some(facts)
}

/// Stores a node's facts in the cache (atomically).
pub fn store_cached(repo_root: &Path, node: &str, facts: &Facts) -> crate::error::Result<()> {
    let text = serde_json::to_vec_pretty(facts).unwrap_or_default();
    let path = cache_dir(repo_root).join(format!("{node}.json"));
    // A cache: replaced atomically (readers see the old or the new file), not flushed to
    // disk, and not written at all when nothing changed — only its time is renewed, which
    // says when the facts were gathered (`--facts-max-age`).
    if std::fs::read(&path).is_ok_and(|old| old == text) {
        let touched = std::fs::File::options()
            .append(true)
            .open(&path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        if touched.is_ok() {
            return Ok(());
        }
    }
    crate::util::write_atomic_unsynced(&path, &text)
}

/// Cached facts of a node gathered less than `max_age` ago, and how long ago.
pub fn load_fresh(
    repo_root: &Path,
    node: &str,
    max_age: std::time::Duration,
) -> Option<(Facts, std::time::Duration)> {
    let path = cache_dir(repo_root).join(format!("{node}.json"));
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    // A time in the future (a clock set back) is not fresh: gather again.
    let age = std::time::SystemTime::now().duration_since(modified).ok()?;
    if age >= max_age {
        return None;
    }
    load_cached(repo_root, node).map(|f| (f, age))
}

/// The facts cache of a repo, opened once: a repo that never gathered facts costs no file
/// lookups per node.
#[derive(Debug)]
pub struct FactsCache {
    root: Option<PathBuf>,
}

impl FactsCache {
    /// Opens the cache of a repo.
    pub fn open(repo_root: &Path) -> FactsCache {
        FactsCache {
            root: cache_dir(repo_root)
                .is_dir()
                .then(|| repo_root.to_path_buf()),
        }
    }

    /// A node's hardware: gathered facts over declared values, and where they came from.
    pub fn hardware(&self, node: &crate::spec::inventory::NodeSpec) -> (Hardware, &'static str) {
        match &self.root {
            Some(r) => effective_hardware(r, node),
            None => (node.hardware.clone(), "declared"),
        }
    }
}

/// A node's hardware: gathered facts over declared values, and where they came from.
pub fn effective_hardware(
    repo_root: &Path,
    node: &crate::spec::inventory::NodeSpec,
) -> (Hardware, &'static str) {
    match load_cached(repo_root, &node.name) {
        Some(f) => (f.overlay(&node.hardware), "facts"),
        None => (node.hardware.clone(), "declared"),
    }
}
/// A number rounded to one decimal (GB figures).
pub fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Parses `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits` (MiB).
pub fn parse_nvidia_smi(out: &str) -> Vec<Gpu> {
    out.lines()
        .filter_map(|l| {
            let (name, mib) = l.rsplit_once(',')?;
            let mib: f64 = mib.trim().parse().ok()?;
            Some(Gpu {
                vendor: "nvidia".into(),
                name: Some(name.trim().to_string()),
                vram_gb: round1(mib / 1024.0),
            })
        })
        .collect()
}

#[cfg(test)]
mod arch_tests {
    use super::*;

    #[test]
    fn cached_facts_name_the_architecture_as_fleet_does() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(cache_dir(dir.path())).expect("mkdir");
        std::fs::write(
            cache_dir(dir.path()).join("m.json"),
            r#"{"os":"macos","arch":"arm64"}"#,
        )
        .expect("write");
        let f = load_cached(dir.path(), "m").expect("facts");
        assert_eq!(f.arch.as_deref(), Some("aarch64"));
        assert_eq!(
            f.overlay(&Hardware::default()).arch.as_deref(),
            Some("aarch64")
        );
    }
}
