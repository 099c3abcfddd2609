//! Model tiers a node can serve, from the table in `data/tiers.toml` and the node's cores,
//! RAM, VRAM (Apple silicon's unified memory counts) and free disk.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::spec::inventory::Hardware;

/// One tier's requirements.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Tier {
    /// Model name.
    pub name: String,
    /// CPU cores.
    pub cores: u64,
    /// RAM in GB.
    pub ram_gb: f64,
    /// VRAM in GB; absent when no GPU is needed.
    pub vram_gb: Option<f64>,
    /// Free disk in GB.
    pub disk_gb: f64,
}

#[derive(Deserialize)]
struct TierFile {
    tier: Vec<Tier>,
}

/// The tier table.
pub fn tiers() -> &'static [Tier] {
    static T: OnceLock<Vec<Tier>> = OnceLock::new();
    T.get_or_init(|| {
        toml::from_str::<TierFile>(include_str!("../data/tiers.toml"))
            .map(|f| f.tier)
            .unwrap_or_default()
    })
}

/// What a node has, as far as known.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Capacity {
    /// CPU cores.
    pub cores: Option<u64>,
    /// RAM in GB.
    pub ram_gb: Option<f64>,
    /// GPU memory in GB (unified memory on Apple silicon); 0 when the node has no GPU.
    pub vram_gb: Option<f64>,
    /// Free disk in GB.
    pub disk_gb: Option<f64>,
}

impl Capacity {
    /// From hardware (declared or gathered).
    pub fn of(hw: &Hardware) -> Capacity {
        let apple = hw.cpu.as_deref() == Some("apple_silicon");
        let vram = match (&hw.gpu, apple) {
            (Some(g), _) => Some(g.vram_gb),
            (None, true) => hw.ram_gb,
            (None, false) => Some(0.0),
        };
        Capacity {
            cores: hw.cores,
            ram_gb: hw.ram_gb,
            vram_gb: vram,
            disk_gb: hw.disk_gb,
        }
    }
}

/// Whether a node can serve a tier, and why not.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    /// Tier name.
    pub tier: String,
    /// True when every known requirement is met.
    pub eligible: bool,
    /// Requirements not met (`needs 32 GB RAM, has 16`).
    pub missing: Vec<String>,
    /// Requirements that could not be checked (unknown capacity).
    pub unchecked: Vec<String>,
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Every tier, in table order, judged against a capacity.
pub fn evaluate(cap: &Capacity) -> Vec<Verdict> {
    tiers()
        .iter()
        .map(|t| {
            let mut missing = Vec::new();
            let mut unchecked = Vec::new();
            let mut check = |what: &str, need: f64, have: Option<f64>| match have {
                Some(h) if h + 1e-9 < need => {
                    missing.push(format!("needs {} {what}, has {}", fmt(need), fmt(h)))
                }
                Some(_) => {}
                None => unchecked.push(what.to_string()),
            };
            check("cores", t.cores as f64, cap.cores.map(|c| c as f64));
            check("GB RAM", t.ram_gb, cap.ram_gb);
            if let Some(v) = t.vram_gb {
                check("GB VRAM", v, cap.vram_gb);
            }
            check("GB disk", t.disk_gb, cap.disk_gb);
            Verdict {
                tier: t.name.clone(),
                eligible: missing.is_empty(),
                missing,
                unchecked,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_ten_tiers() {
        assert_eq!(tiers().len(), 10);
        assert_eq!(tiers()[7].vram_gb, Some(8.0));
    }

    #[test]
    fn mac_mini_m4_24gb() {
        let hw = Hardware {
            cpu: Some("apple_silicon".into()),
            cores: Some(10),
            ram_gb: Some(24.0),
            disk_gb: Some(200.0),
            ..Hardware::default()
        };
        let v = evaluate(&Capacity::of(&hw));
        let ok: Vec<&str> = v
            .iter()
            .filter(|x| x.eligible)
            .map(|x| x.tier.as_str())
            .collect();
        assert!(
            ok.contains(&"Llama-3.1-8B"),
            "unified memory counts as VRAM"
        );
        let big = v.iter().find(|x| x.tier == "Llama-3.1-70B").expect("70B");
        assert_eq!(
            big.missing,
            vec!["needs 32 GB RAM, has 24", "needs 150 GB disk, has 200"]
                .into_iter()
                .take(1)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn intel_without_gpu_and_unknown_disk() {
        let hw = Hardware {
            cpu: Some("intel".into()),
            cores: Some(8),
            ram_gb: Some(64.0),
            ..Hardware::default()
        };
        let v = evaluate(&Capacity::of(&hw));
        let t = v.iter().find(|x| x.tier == "Llama-3.1-8B").expect("8B");
        assert_eq!(t.missing, vec!["needs 8 GB VRAM, has 0"]);
        assert_eq!(t.unchecked, vec!["GB disk"]);
        assert!(
            v.iter()
                .find(|x| x.tier == "Llama-3.2-3B")
                .expect("3B")
                .eligible
        );
    }
}
