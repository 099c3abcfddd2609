//! The one eligibility model: whether a node can serve a model tier, and how (on a discrete
//! GPU, in Apple silicon's unified memory, or on the CPU from RAM). `fleet eligible`, the
//! routing pools, `validate`'s capability checks and the health sweep's expectations all ask
//! here, so they cannot disagree.
//!
//! The tier table is data (`data/tiers.toml`, the GatewayAI document's resource tiers); model
//! sizes are data too (`data/models.toml`) or read from the model's tag.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::spec::inventory::Hardware;

/// One tier's requirements.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Tier {
    /// Tier name, e.g. `Llama-3.1-8B`.
    pub name: String,
    /// Size class in billions of parameters.
    pub params_b: f64,
    /// CPU cores.
    pub cores: u64,
    /// RAM in GB.
    pub ram_gb: f64,
    /// GPU memory in GB; absent when a GPU is optional.
    pub vram_gb: Option<f64>,
    /// Disk in GB, to pull a model of this size.
    pub disk_gb: f64,
}

#[derive(Deserialize)]
struct CpuOnly {
    max_priority: u32,
}

#[derive(Deserialize)]
struct TierFile {
    cpu_only: CpuOnly,
    tier: Vec<Tier>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ModelSize {
    Billions(f64),
    Tier(String),
}

#[derive(Deserialize)]
struct ModelFile {
    models: BTreeMap<String, ModelSize>,
}

fn tier_file() -> &'static TierFile {
    static T: OnceLock<TierFile> = OnceLock::new();
    // Compiled in and checked by a unit test, so a parse failure is a build defect; an empty
    // table (nothing eligible, nothing required) is the safe reading of it.
    T.get_or_init(|| {
        toml::from_str(include_str!("../data/tiers.toml")).unwrap_or(TierFile {
            cpu_only: CpuOnly { max_priority: 40 },
            tier: Vec::new(),
        })
    })
}

fn model_file() -> &'static ModelFile {
    static T: OnceLock<ModelFile> = OnceLock::new();
    T.get_or_init(|| {
        toml::from_str(include_str!("../data/models.toml")).unwrap_or(ModelFile {
            models: BTreeMap::new(),
        })
    })
}

/// The tier table, in the document's order.
pub fn tiers() -> &'static [Tier] {
    &tier_file().tier
}

/// The highest routing priority a node gets in a pool it serves on the CPU only.
pub fn cpu_only_max_priority() -> u32 {
    tier_file().cpu_only.max_priority
}

/// Where a node would run a model.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Compute {
    /// A discrete GPU holds the model.
    Gpu,
    /// Apple silicon: the GPU works in unified memory.
    Unified,
    /// The CPU, from RAM: eligible, but slower.
    Cpu,
}

impl Compute {
    /// How a table shows it.
    pub fn label(self) -> &'static str {
        match self {
            Compute::Gpu => "GPU",
            Compute::Unified => "unified memory",
            Compute::Cpu => "CPU-only",
        }
    }
}

/// What a node has, as far as known.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Capacity {
    /// CPU cores.
    pub cores: Option<u64>,
    /// RAM in GB (unified memory on Apple silicon).
    pub ram_gb: Option<f64>,
    /// GPU memory in GB: a discrete GPU's VRAM, the unified memory on Apple silicon, 0 when
    /// the node has no GPU.
    pub vram_gb: Option<f64>,
    /// True on Apple silicon, where RAM and GPU memory are one pool.
    pub unified_memory: bool,
    /// Free disk in GB.
    pub disk_gb: Option<f64>,
}

/// Whether hardware is Apple silicon, from its CPU family or an `M<digit>` chip name.
pub fn is_apple_silicon(hw: &Hardware) -> bool {
    if hw.cpu.as_deref() == Some("apple_silicon") {
        return true;
    }
    let chip = hw.chip.as_deref().unwrap_or("").to_ascii_lowercase();
    chip.strip_prefix('m')
        .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
}

impl Capacity {
    /// From hardware (declared or gathered).
    pub fn of(hw: &Hardware) -> Capacity {
        let unified = is_apple_silicon(hw) && hw.gpu.is_none();
        let vram = match &hw.gpu {
            Some(g) => Some(g.vram_gb),
            None if unified => hw.ram_gb,
            None => Some(0.0),
        };
        Capacity {
            cores: hw.cores,
            ram_gb: hw.ram_gb,
            vram_gb: vram,
            unified_memory: unified,
            disk_gb: hw.disk_gb,
        }
    }

    fn discrete_gpu(&self) -> bool {
        !self.unified_memory && self.vram_gb.is_some_and(|v| v > 0.0)
    }
}

/// Whether the model still has to be pulled (so the disk counts) or is already on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disk {
    /// Joining a tier: the model must fit on the disk.
    Pull,
    /// The node lists the model: it is (or will be) there; the disk does not decide.
    Held,
}

/// Whether a node can serve a tier, how, and why not.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    /// Tier name.
    pub tier: String,
    /// True when every known requirement is met.
    pub eligible: bool,
    /// Where it would run, when eligible.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compute: Option<Compute>,
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

/// Requirements not met and requirements that could not be checked.
#[derive(Default)]
struct Findings {
    missing: Vec<String>,
    unchecked: Vec<String>,
}

impl Findings {
    fn need(&mut self, what: &str, need: f64, have: Option<f64>) {
        match have {
            Some(h) if h + 1e-9 < need => {
                self.missing
                    .push(format!("needs {} {what}, has {}", fmt(need), fmt(h)))
            }
            Some(_) => {}
            None => self.unchecked.push(what.to_string()),
        }
    }
}

/// Judges one tier against a capacity: the single rule every command uses.
pub fn judge(t: &Tier, cap: &Capacity, disk: Disk) -> Verdict {
    let mut f = Findings::default();
    f.need("cores", t.cores as f64, cap.cores.map(|c| c as f64));
    let compute = match t.vram_gb {
        None => {
            f.need("GB RAM", t.ram_gb, cap.ram_gb);
            if cap.unified_memory {
                Compute::Unified
            } else if cap.discrete_gpu() {
                Compute::Gpu
            } else {
                Compute::Cpu
            }
        }
        Some(v) if cap.unified_memory => {
            f.need("GB unified memory", t.ram_gb.max(v), cap.ram_gb);
            Compute::Unified
        }
        Some(v) if cap.vram_gb.is_some_and(|have| have + 1e-9 >= v) => {
            f.need("GB RAM", t.ram_gb, cap.ram_gb);
            Compute::Gpu
        }
        Some(v) => {
            // On the CPU, RAM holds what the GPU would have held too.
            let cpu_need = t.ram_gb + v;
            match cap.ram_gb {
                Some(have) if have + 1e-9 < cpu_need => f.missing.push(format!(
                    "needs {} GB VRAM (has {}) or {} GB RAM to run on the CPU (has {})",
                    fmt(v),
                    fmt(cap.vram_gb.unwrap_or(0.0)),
                    fmt(cpu_need),
                    fmt(have)
                )),
                Some(_) => {}
                None => f.unchecked.push("GB RAM".to_string()),
            }
            Compute::Cpu
        }
    };
    if disk == Disk::Pull {
        f.need("GB disk", t.disk_gb, cap.disk_gb);
    }
    let eligible = f.missing.is_empty();
    Verdict {
        tier: t.name.clone(),
        eligible,
        compute: eligible.then_some(compute),
        missing: f.missing,
        unchecked: f.unchecked,
    }
}

/// Every tier, in table order, judged for joining (the disk counts).
pub fn evaluate(cap: &Capacity) -> Vec<Verdict> {
    tiers().iter().map(|t| judge(t, cap, Disk::Pull)).collect()
}

/// What a model needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Need {
    /// The tier that decides.
    Tier(&'static Tier),
    /// Neither listed nor sized by its tag: nothing is checked.
    Unknown,
    /// Larger than the largest tier: no node can serve it.
    TooLarge {
        /// Its size in billions of parameters.
        params_b: f64,
        /// The largest tier's name.
        largest: String,
    },
}

impl Need {
    /// The tier's name, when there is one.
    pub fn tier_name(&self) -> Option<&str> {
        match self {
            Need::Tier(t) => Some(&t.name),
            _ => None,
        }
    }
}

/// Billions of parameters from an Ollama tag (`:8b`, `:0.5b`, `:360m`, `:8x7b`, `:7b-q4_0`).
fn params_from_tag(model: &str) -> Option<f64> {
    let tag = model.rsplit_once(':').map(|(_, tag)| tag)?;
    let size = tag.split(['-', '_']).next()?.to_ascii_lowercase();
    let b = if let Some((experts, each)) = size.strip_suffix('b').and_then(|s| s.split_once('x')) {
        experts.parse::<f64>().ok()? * each.parse::<f64>().ok()? * 0.8
    } else if let Some(b) = size.strip_suffix('b') {
        b.parse::<f64>().ok()?
    } else if let Some(m) = size.strip_suffix('m') {
        m.parse::<f64>().ok()? / 1000.0
    } else {
        return None;
    };
    (b.is_finite() && b > 0.0).then_some(b)
}

/// The tier a model of `params_b` billions falls in: the smallest at least its size.
fn tier_of_size(params_b: f64) -> Need {
    let best = tiers()
        .iter()
        .filter(|t| t.params_b + 1e-9 >= params_b)
        .min_by(|a, b| a.params_b.total_cmp(&b.params_b));
    match best {
        Some(t) => Need::Tier(t),
        None => Need::TooLarge {
            params_b,
            largest: tiers()
                .iter()
                .max_by(|a, b| a.params_b.total_cmp(&b.params_b))
                .map(|t| t.name.clone())
                .unwrap_or_default(),
        },
    }
}

/// What a model (an Ollama name such as `llama3.1:8b`) needs.
pub fn model_need(model: &str) -> Need {
    match model_file().models.get(model) {
        Some(ModelSize::Tier(name)) => tiers()
            .iter()
            .find(|t| &t.name == name)
            .map_or(Need::Unknown, Need::Tier),
        Some(ModelSize::Billions(b)) => tier_of_size(*b),
        None => params_from_tag(model).map_or(Need::Unknown, tier_of_size),
    }
}

/// Whether a node that lists a model can serve it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFit {
    /// What the model needs.
    pub need: Need,
    /// The judgement; `None` when the need is unknown (then the node serves it, unchecked).
    pub verdict: Option<Verdict>,
}

impl ModelFit {
    /// True when the node may serve it (eligible, or nothing known to check).
    pub fn serves(&self) -> bool {
        match (&self.need, &self.verdict) {
            (Need::TooLarge { .. }, _) => false,
            (_, Some(v)) => v.eligible,
            (_, None) => true,
        }
    }

    /// Where it runs, when known and eligible.
    pub fn compute(&self) -> Option<Compute> {
        self.verdict.as_ref().and_then(|v| v.compute)
    }

    /// Why not, in one phrase (empty when it serves).
    pub fn reason(&self) -> String {
        match (&self.need, &self.verdict) {
            (Need::TooLarge { params_b, largest }, _) => format!(
                "it has {}B parameters, more than the largest tier ({largest})",
                fmt(*params_b)
            ),
            (Need::Tier(t), Some(v)) if !v.eligible => {
                format!("tier {}: {}", t.name, v.missing.join("; "))
            }
            _ => String::new(),
        }
    }
}

/// Judges a model a node lists (the disk does not count: the model is held, not pulled).
pub fn fit_model(model: &str, cap: &Capacity) -> ModelFit {
    let need = model_need(model);
    let verdict = match &need {
        Need::Tier(t) => Some(judge(t, cap, Disk::Held)),
        _ => None,
    };
    ModelFit { need, verdict }
}

/// The models of `listed` that hardware can serve, in order: what routing puts the node in
/// the pools of, and what the health sweep and HQ expect it to hold.
pub fn served_models<'a>(listed: impl IntoIterator<Item = &'a str>, hw: &Hardware) -> Vec<String> {
    let cap = Capacity::of(hw);
    listed
        .into_iter()
        .filter(|m| fit_model(m, &cap).serves())
        .map(str::to_string)
        .collect()
}

/// A node's priority in one model's pool: its own, capped when it serves the model CPU-only.
pub fn pool_priority(node_priority: u32, compute: Option<Compute>) -> u32 {
    match compute {
        Some(Compute::Cpu) => node_priority.min(cpu_only_max_priority()),
        _ => node_priority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::inventory::Gpu;

    fn hw(cpu: &str, ram: f64, cores: u64) -> Hardware {
        Hardware {
            cpu: Some(cpu.into()),
            ram_gb: Some(ram),
            cores: Some(cores),
            ..Hardware::default()
        }
    }

    fn verdict<'a>(v: &'a [Verdict], tier: &str) -> &'a Verdict {
        v.iter().find(|x| x.tier == tier).expect("tier")
    }

    #[test]
    fn data_files_parse() {
        let t: TierFile = toml::from_str(include_str!("../data/tiers.toml")).expect("tiers.toml");
        assert_eq!(t.tier.len(), 10);
        let _: ModelFile = toml::from_str(include_str!("../data/models.toml")).expect("models");
        for (name, size) in &model_file().models {
            if let ModelSize::Tier(t) = size {
                assert!(tiers().iter().any(|x| &x.name == t), "{name} names {t}");
            }
        }
    }

    #[test]
    fn intel_imac_64gb_runs_70b_on_the_cpu() {
        // maestro in the node-infrastructure document: Intel, 64 GB, no GPU, "CPU-only mode".
        let v = evaluate(&Capacity::of(&hw("intel", 64.0, 8)));
        let t8 = verdict(&v, "Llama-3.1-8B");
        assert!(t8.eligible, "{t8:?}");
        assert_eq!(t8.compute, Some(Compute::Cpu));
        assert_eq!(t8.unchecked, vec!["GB disk"]);
        let t70 = verdict(&v, "Llama-3.1-70B");
        assert!(t70.eligible, "{t70:?}");
        assert_eq!(t70.compute, Some(Compute::Cpu));
        let t405 = verdict(&v, "Llama-3.1-405B");
        assert_eq!(
            t405.missing,
            vec![
                "needs 16 cores, has 8",
                "needs 48 GB VRAM (has 0) or 112 GB RAM to run on the CPU (has 64)"
            ]
        );
    }

    #[test]
    fn apple_silicon_uses_unified_memory() {
        let cap = Capacity::of(&hw("apple_silicon", 24.0, 10));
        assert!(cap.unified_memory);
        let v = evaluate(&cap);
        let t8 = verdict(&v, "Llama-3.1-8B");
        assert_eq!(t8.compute, Some(Compute::Unified));
        assert_eq!(
            verdict(&v, "Llama-3.1-70B").missing,
            vec!["needs 32 GB unified memory, has 24"]
        );
    }

    #[test]
    fn discrete_gpu_then_cpu_when_vram_is_short() {
        let mut h = hw("amd", 128.0, 16);
        h.gpu = Some(Gpu {
            vendor: "nvidia".into(),
            name: None,
            vram_gb: 24.0,
        });
        let v = evaluate(&Capacity::of(&h));
        assert_eq!(
            verdict(&v, "Llama-3.1-70B").compute,
            Some(Compute::Gpu),
            "24 GB VRAM holds the 70B tier"
        );
        let big = verdict(&v, "Llama-3.1-405B");
        assert!(big.eligible, "128 GB RAM holds 64 + 48 on the CPU");
        assert_eq!(big.compute, Some(Compute::Cpu));
    }

    #[test]
    fn small_machine_is_refused_with_reasons() {
        let v = evaluate(&Capacity::of(&hw("intel", 8.0, 4)));
        assert!(verdict(&v, "Llama-3.2-3B").eligible);
        let t8 = verdict(&v, "Llama-3.1-8B");
        assert!(!t8.eligible);
        assert_eq!(t8.compute, None);
        assert_eq!(
            t8.missing,
            vec!["needs 8 GB VRAM (has 0) or 20 GB RAM to run on the CPU (has 8)"]
        );
    }

    #[test]
    fn models_map_to_tiers() {
        assert_eq!(model_need("llama3.1:8b").tier_name(), Some("Llama-3.1-8B"));
        assert_eq!(model_need("mistral:7b").tier_name(), Some("Llama-3.1-8B"));
        assert_eq!(
            model_need("qwen2.5-coder:32b").tier_name(),
            Some("Llama-3.1-70B")
        );
        assert_eq!(model_need("qwen2.5:72b").tier_name(), Some("Llama-3.1-70B"));
        assert_eq!(model_need("llama3.2:3b").tier_name(), Some("Llama-3.2-3B"));
        assert_eq!(model_need("tiny:360m").tier_name(), Some("SmolLM-360M"));
        assert_eq!(
            model_need("nomic-embed-text").tier_name(),
            Some("SmolLM-360M")
        );
        assert_eq!(
            model_need("mixtral:8x22b").tier_name(),
            Some("Llama-3.1-405B")
        );
        assert_eq!(model_need("foo:latest"), Need::Unknown);
        assert_eq!(model_need("foo:nanb"), Need::Unknown);
        assert_eq!(model_need("foo:-1b"), Need::Unknown);
        assert!(matches!(
            model_need("deepseek-v3:671b"),
            Need::TooLarge { .. }
        ));
    }

    #[test]
    fn cpu_only_caps_priority_in_the_pool() {
        assert_eq!(pool_priority(85, Some(Compute::Cpu)), 40);
        assert_eq!(pool_priority(30, Some(Compute::Cpu)), 30);
        assert_eq!(pool_priority(85, Some(Compute::Gpu)), 85);
        assert_eq!(pool_priority(85, None), 85);
    }

    #[test]
    fn a_held_model_ignores_the_disk() {
        let mut h = hw("apple_silicon", 24.0, 10);
        h.disk_gb = Some(5.0);
        let cap = Capacity::of(&h);
        assert!(fit_model("llama3.1:8b", &cap).serves());
        assert!(!verdict(&evaluate(&cap), "Llama-3.1-8B").eligible);
    }
}
