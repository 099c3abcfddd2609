//! The inventory file(s): fleet settings, variables, groups, nodes and routing, decoded from
//! YAML with every error located. A directory of files is merged; a name defined twice is an error.

use indexmap::IndexMap;

use crate::error::{Diagnostic, Loc};
use crate::spec::decode::{Decoder, Spanned, VarMap};
use crate::spec::yaml::Node;

/// Fleet-wide settings (`fleet:`).
#[derive(Debug, Clone, Default)]
pub struct FleetSettings {
    /// The fleet's name.
    pub name: Option<String>,
    /// The node that runs `fleet serve`.
    pub hq: Option<Spanned<String>>,
    /// Where agents and `fleet check` reach HQ.
    pub hq_url: Option<Spanned<String>>,
    /// An ssh config file passed to ssh with `-F`.
    pub ssh_config: Option<String>,
    /// Webhook for `fleet check --alert`; may name an environment variable with `env:NAME`.
    pub alert_webhook_env: Option<String>,
    /// `fleet serve` may serve plain HTTP on a non-loopback address (default: HTTPS only).
    pub insecure_http: bool,
    /// The network the fleet's nodes reach each other on: `lan` (the default) or `tailscale`.
    pub network: Option<Spanned<String>>,
    /// The tailnet's MagicDNS suffix (`example-tailnet.ts.net`): with `network: tailscale`, a
    /// node without an `address` is reached at `<node>.<tailnet>`.
    pub tailnet: Option<Spanned<String>>,
}

impl FleetSettings {
    /// True when the fleet's network is Tailscale (`fleet.network: tailscale`).
    pub fn tailscale(&self) -> bool {
        self.network
            .as_ref()
            .is_some_and(|n| n.value == "tailscale")
    }
}

/// Declared hardware of a node; gathered facts override it when known.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Hardware {
    /// CPU family: `apple_silicon`, `intel`, `amd`, `arm`.
    pub cpu: Option<String>,
    /// Chip or CPU model, e.g. `M4`, `M2 Max`, `i9-9900K`.
    pub chip: Option<String>,
    /// Machine model, e.g. `Mac mini`, `Mac Studio`, `iMac`.
    pub model: Option<String>,
    /// `x86_64` or `aarch64`.
    pub arch: Option<String>,
    /// Memory in GB.
    pub ram_gb: Option<f64>,
    /// CPU cores.
    pub cores: Option<u64>,
    /// Free disk in GB.
    pub disk_gb: Option<f64>,
    /// `linux` or `macos`.
    pub os: Option<String>,
    /// A discrete GPU.
    pub gpu: Option<Gpu>,
}

/// A discrete GPU.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    /// `nvidia` or `amd`.
    pub vendor: String,
    /// Model name.
    pub name: Option<String>,
    /// Video memory in GB.
    pub vram_gb: f64,
}

/// A node as declared.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Its name (the key under `nodes:`).
    pub name: String,
    /// Where it is declared.
    pub loc: Loc,
    /// Address or ssh alias.
    pub host: String,
    /// The address other machines reach it at (services, routing endpoints, health probes),
    /// when it differs from what `host` resolves to.
    pub address: Option<Spanned<String>>,
    /// Its role.
    pub role: Spanned<String>,
    /// Declared hardware.
    pub hardware: Hardware,
    /// Where `hardware:` was written (for requirement errors).
    pub hardware_loc: Loc,
    /// Models it serves.
    pub models: Vec<Spanned<String>>,
    /// Routing priority (higher first); derived from hardware when absent.
    pub priority: Option<u32>,
    /// Requests it takes at once.
    pub max_concurrent: u32,
    /// Free-form labels.
    pub labels: Vec<String>,
    /// Extra capabilities beyond those of its role (e.g. `embeddings`).
    pub capabilities: Vec<String>,
    /// Node variables.
    pub vars: VarMap,
}

/// A group of nodes with optional variables.
#[derive(Debug, Clone)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// Where it is declared.
    pub loc: Loc,
    /// Member node names.
    pub members: Vec<Spanned<String>>,
    /// Group variables.
    pub vars: VarMap,
}

/// The cloud API used as the last fallback.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CloudFallback {
    /// Provider name (anthropic, openai, gemini, groq, together, openrouter).
    pub provider: String,
    /// Model at the provider.
    pub model: String,
    /// Name of the environment variable holding the key; never the key.
    pub api_key_env: String,
    /// Override of the provider's API base URL.
    pub base_url: Option<String>,
}

/// One routing rule: a task type and what serves it.
#[derive(Debug, Clone)]
pub struct RoutingRule {
    /// The task type.
    pub task: Spanned<String>,
    /// Model that serves it.
    pub model: Option<Spanned<String>>,
    /// Capability that serves it (e.g. `browser`).
    pub capability: Option<Spanned<String>>,
    /// Fallback chain: other task types, or `cloud_api`.
    pub fallback: Vec<Spanned<String>>,
}

/// Routing section.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// Last fallback for every rule.
    pub cloud_fallback: Option<CloudFallback>,
    /// Where `cloud_fallback:` is written, also when it could not be decoded (its errors are
    /// reported there; later checks must not add that it is not set).
    pub cloud_fallback_loc: Option<Loc>,
    /// Rules in order.
    pub rules: Vec<RoutingRule>,
}

/// The merged inventory.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Fleet settings.
    pub fleet: FleetSettings,
    /// Fleet-wide variables.
    pub vars: VarMap,
    /// Groups by name.
    pub groups: IndexMap<String, Group>,
    /// Nodes by name, in file order.
    pub nodes: IndexMap<String, NodeSpec>,
    /// Routing rules.
    pub routing: Routing,
}

/// Cloud providers fleet knows the API shape of.
pub const PROVIDERS: &[&str] = &[
    "anthropic",
    "openai",
    "gemini",
    "groq",
    "together",
    "openrouter",
];

/// The environment variable a provider's API key conventionally lives in: its own SDK's name
/// for the known providers (`OPENAI_API_KEY`), else `<PROVIDER>_API_KEY` with the provider's
/// name upper-cased and anything but letters and digits turned into `_`.
pub fn provider_key_env(provider: &str) -> String {
    match provider {
        "anthropic" => "ANTHROPIC_API_KEY".into(),
        "openai" => "OPENAI_API_KEY".into(),
        "gemini" => "GEMINI_API_KEY".into(),
        "groq" => "GROQ_API_KEY".into(),
        "together" => "TOGETHER_API_KEY".into(),
        "openrouter" => "OPENROUTER_API_KEY".into(),
        other => {
            let mut name = String::new();
            for c in other.trim().chars() {
                if c.is_ascii_alphanumeric() {
                    name.push(c.to_ascii_uppercase());
                } else if !name.is_empty() && !name.ends_with('_') {
                    name.push('_');
                }
            }
            let name = name.trim_end_matches('_');
            if name.is_empty() {
                "PROVIDER_API_KEY".into()
            } else if name.starts_with(|c: char| c.is_ascii_digit()) {
                format!("P{name}_API_KEY")
            } else {
                format!("{name}_API_KEY")
            }
        }
    }
}

/// A small model of a known provider, for examples and `fleet init`'s default.
pub fn provider_example_model(provider: &str) -> &'static str {
    match provider {
        "openai" => "gpt-4o-mini",
        "gemini" => "gemini-2.0-flash",
        "groq" => "llama-3.1-8b-instant",
        "together" => "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        "openrouter" => "openrouter/auto",
        _ => "claude-haiku",
    }
}

/// The name `fallback:` lists use for the cloud API.
pub const CLOUD_FALLBACK: &str = "cloud_api";

const TOP: &[&str] = &["fleet", "vars", "groups", "nodes", "routing"];
const FLEET: &[&str] = &[
    "name",
    "hq",
    "hq_url",
    "ssh_config",
    "alert_webhook_env",
    "insecure_http",
    "network",
    "tailnet",
];
const NODE: &[&str] = &[
    "host",
    "address",
    "role",
    "hardware",
    "models",
    "priority",
    "max_concurrent",
    "labels",
    "capabilities",
    "vars",
];
const HARDWARE: &[&str] = &[
    "cpu", "chip", "model", "arch", "ram_gb", "cores", "disk_gb", "os", "gpu",
];
const GPU: &[&str] = &["vendor", "name", "vram_gb"];
const ROUTING: &[&str] = &["cloud_fallback", "rules"];
const CLOUD: &[&str] = &["provider", "model", "api_key_env", "api_key", "base_url"];
const RULE: &[&str] = &["task", "model", "capability", "fallback"];

impl Inventory {
    /// Decodes one inventory file and merges it into `self`.
    pub fn merge_file(&mut self, d: &mut Decoder, root: &Node) {
        let Some(f) = d.fields(root, "the inventory", TOP) else {
            return;
        };
        if let Some(n) = f.get("fleet") {
            self.decode_fleet(d, n);
        }
        if let Some(n) = f.get("vars") {
            for (k, v) in d.vars(n, "fleet `vars`") {
                if let Some(prev) = self.vars.get(&k) {
                    d.push(
                        Diagnostic::error(
                            v.loc.clone(),
                            format!("fleet variable `{k}` is defined twice"),
                        )
                        .with_help(format!("it is also defined at {}", prev.loc)),
                    );
                }
                self.vars.insert(k, v);
            }
        }
        if let Some(n) = f.get("nodes")
            && let Some(entries) = d.map(n, "`nodes`")
        {
            for (k, v) in entries {
                let name = k.key_text().to_string();
                if let Some(prev) = self.nodes.get(&name) {
                    d.push(
                        Diagnostic::error(k.loc.clone(), format!("node `{name}` is defined twice"))
                            .with_help(format!("it is also defined at {}", prev.loc)),
                    );
                    continue;
                }
                if let Some(node) = decode_node(d, &name, k, v) {
                    self.nodes.insert(name, node);
                }
            }
        }
        if let Some(n) = f.get("groups")
            && let Some(entries) = d.map(n, "`groups`")
        {
            for (k, v) in entries {
                let name = k.key_text().to_string();
                if self.groups.contains_key(&name) {
                    d.error(&k.loc, format!("group `{name}` is defined twice"));
                    continue;
                }
                let group = decode_group(d, &name, k, v);
                self.groups.insert(name, group);
            }
        }
        if let Some(n) = f.get("routing") {
            self.decode_routing(d, n);
        }
    }

    fn decode_fleet(&mut self, d: &mut Decoder, n: &Node) {
        let Some(f) = d.fields(n, "`fleet`", FLEET) else {
            return;
        };
        let set = |d: &mut Decoder, key: &str, slot: &mut Option<Spanned<String>>| {
            if let Some(v) = f.get(key) {
                if slot.is_some() {
                    d.error(
                        &v.loc,
                        format!("`fleet.{key}` is set in more than one inventory file"),
                    );
                }
                *slot = d.spanned_string(v, &format!("`fleet.{key}`"));
            }
        };
        let mut name = None;
        set(d, "name", &mut name);
        if let Some(n) = name {
            self.fleet.name = Some(n.value);
        }
        set(d, "hq", &mut self.fleet.hq);
        set(d, "hq_url", &mut self.fleet.hq_url);
        let mut ssh = None;
        set(d, "ssh_config", &mut ssh);
        if let Some(s) = ssh {
            self.fleet.ssh_config = Some(s.value);
        }
        let mut hook = None;
        set(d, "alert_webhook_env", &mut hook);
        if let Some(h) = hook {
            check_env_name(d, &h, "`fleet.alert_webhook_env`");
            self.fleet.alert_webhook_env = Some(h.value);
        }
        if let Some(v) = f.get("insecure_http") {
            self.fleet.insecure_http = d.boolean(v, "`fleet.insecure_http`").unwrap_or(false);
        }
        set(d, "network", &mut self.fleet.network);
        if let Some(n) = &self.fleet.network
            && !matches!(n.value.as_str(), "lan" | "tailscale")
        {
            d.error_help(
                &n.loc,
                format!(
                    "`fleet.network`: expected `lan` or `tailscale`, found `{}`",
                    n.value
                ),
                "`lan`: nodes reach each other at their inventory addresses; `tailscale`: over the tailnet (docs/inventory.md)",
            );
        }
        set(d, "tailnet", &mut self.fleet.tailnet);
        if let Some(t) = &self.fleet.tailnet
            && (!is_address(&t.value) || t.value.parse::<std::net::IpAddr>().is_ok())
        {
            d.error_help(
                &t.loc,
                format!(
                    "`fleet.tailnet`: expected the tailnet's DNS name, found {:?}",
                    t.value
                ),
                "write the MagicDNS suffix from the Tailscale admin console, e.g. `tail1234.ts.net`",
            );
        }
        if let Some(url) = &self.fleet.hq_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            d.error_help(
                &url.loc,
                format!(
                    "`fleet.hq_url`: expected an http(s) URL, found `{}`",
                    url.value
                ),
                "write e.g. `http://bob.local:8765`",
            );
        }
    }

    fn decode_routing(&mut self, d: &mut Decoder, n: &Node) {
        let Some(f) = d.fields(n, "`routing`", ROUTING) else {
            return;
        };
        if let Some(c) = f.get("cloud_fallback") {
            self.routing.cloud_fallback_loc = Some(c.loc.clone());
            self.routing.cloud_fallback = decode_cloud(d, c);
        }
        if let Some(rules) = f.get("rules") {
            for r in d.list(rules, "`routing.rules`") {
                let Some(rf) = d.fields(r, "a routing rule", RULE) else {
                    continue;
                };
                let Some(task) = d
                    .require(&rf, "task", "a routing rule")
                    .and_then(|t| d.spanned_string(t, "rule `task`"))
                else {
                    continue;
                };
                let model = rf
                    .get("model")
                    .and_then(|m| d.spanned_string(m, "rule `model`"));
                let capability = rf
                    .get("capability")
                    .and_then(|m| d.spanned_string(m, "rule `capability`"));
                if model.is_some() == capability.is_some() {
                    d.error_help(
                        &r.loc,
                        format!("routing rule `{}` needs exactly one of `model` or `capability`", task.value),
                        "a rule is served either by nodes holding a model or by nodes with a capability",
                    );
                }
                let fallback = rf
                    .get("fallback")
                    .map(|n| d.string_list(n, "rule `fallback`"))
                    .unwrap_or_default();
                if self
                    .routing
                    .rules
                    .iter()
                    .any(|x| x.task.value == task.value)
                {
                    d.error(
                        &task.loc,
                        format!("routing rule for task `{}` is defined twice", task.value),
                    );
                    continue;
                }
                self.routing.rules.push(RoutingRule {
                    task,
                    model,
                    capability,
                    fallback,
                });
            }
        }
    }
}

/// The name fleet uses for an architecture, given any name machines print for it: `uname -m`
/// says `arm64` on macOS and `aarch64` on Linux for the same 64-bit ARM; Debian's and Go's
/// `amd64` is `x86_64`. Every comparison of architectures goes through this.
pub fn canonical_arch(name: &str) -> Option<&'static str> {
    match name {
        "x86_64" | "amd64" => Some("x86_64"),
        "aarch64" | "arm64" => Some("aarch64"),
        _ => None,
    }
}

/// `name` as fleet writes it, or a located error (and `None`) when it is no architecture fleet
/// knows.
pub fn checked_arch(d: &mut Decoder, loc: &Loc, what: &str, name: &str) -> Option<String> {
    if let Some(a) = canonical_arch(name) {
        return Some(a.to_string());
    }
    let help = match name.to_ascii_lowercase().as_str() {
        "x64" | "x86-64" | "x86" | "i386" | "i686" | "intel" => {
            "write `x86_64` (64-bit Intel and AMD; fleet supports no 32-bit machines)".to_string()
        }
        "arm" | "armv8" | "arm64e" | "apple" | "apple_silicon" => {
            "write `aarch64` (Apple silicon and 64-bit ARM; `arm64` means the same)".to_string()
        }
        _ => "write `x86_64` or `aarch64` (`uname -m` on the machine says which; `amd64` and `arm64` are accepted too)".to_string(),
    };
    d.error_help(
        loc,
        format!("{what}: expected `x86_64` or `aarch64`, found `{name}`"),
        help,
    );
    None
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn check_env_name(d: &mut Decoder, s: &Spanned<String>, what: &str) -> bool {
    let ok = is_env_name(&s.value);
    if !ok {
        d.error_help(
            &s.loc,
            format!("{what} must name an environment variable, found something that is not a variable name"),
            "write the variable's NAME (e.g. `ANTHROPIC_API_KEY`) and export the secret in the environment; never put a secret in the inventory",
        );
    }
    ok
}

fn decode_cloud(d: &mut Decoder, n: &Node) -> Option<CloudFallback> {
    let f = d.fields(n, "`routing.cloud_fallback`", CLOUD)?;
    let text = |key: &str| match f.get(key).and_then(Node::resolve) {
        Some(crate::spec::yaml::Resolved::Str(s)) => Some(s),
        _ => None,
    };
    let example_provider = text("provider")
        .filter(|p| PROVIDERS.contains(p))
        .unwrap_or("anthropic");
    let literal_key = f.key("api_key");
    if let Some(k) = literal_key {
        // The value is never put into a message: it is (or may be) the key itself.
        let env = match text("provider") {
            Some(p) => provider_key_env(p),
            None => "<PROVIDER>_API_KEY".to_string(),
        };
        let help = if text("api_key").is_some_and(is_env_name) {
            format!(
                "`api_key` holds the key itself; to name the variable that holds it, rename `api_key` to `api_key_env` (e.g. `api_key_env: {env}`)"
            )
        } else if f.get("api_key_env").is_some() {
            "remove it and rotate the key (it has been written to a file); `api_key_env` already names the variable that holds it".to_string()
        } else {
            format!(
                "remove it, rotate the key, and write `api_key_env: {env}` (the name of the environment variable that holds the key) instead; then `export {env}=…` where fleet runs"
            )
        };
        d.error_help(
            &k.loc,
            "a literal API key in the inventory (`api_key`)",
            help,
        );
    }
    // Every missing key in one error (with a literal `api_key`, its error already says to
    // write `api_key_env`).
    let missing: Vec<&str> = ["provider", "model", "api_key_env"]
        .into_iter()
        .filter(|k| f.get(k).is_none() && !(*k == "api_key_env" && literal_key.is_some()))
        .collect();
    if !missing.is_empty() {
        let keys: Vec<String> = missing.iter().map(|k| format!("`{k}`")).collect();
        let msg = match keys.as_slice() {
            [one] => format!("`routing.cloud_fallback` is missing the required key {one}"),
            [init @ .., last] => format!(
                "`routing.cloud_fallback` is missing the required keys {} and {last}",
                init.join(", ")
            ),
            [] => String::new(),
        };
        d.error_help(
            &f.loc,
            msg,
            format!(
                "write e.g. `cloud_fallback: {{ provider: {example_provider}, model: {}, api_key_env: {} }}`",
                provider_example_model(example_provider),
                provider_key_env(example_provider)
            ),
        );
    }
    let provider = f
        .get("provider")
        .and_then(|p| d.spanned_string(p, "`cloud_fallback.provider`"));
    if let Some(p) = &provider
        && !PROVIDERS.contains(&p.value.as_str())
    {
        let help = crate::error::did_you_mean(&p.value, PROVIDERS.iter().copied())
            .unwrap_or_else(|| format!("known providers: {}", PROVIDERS.join(", ")));
        d.error_help(
            &p.loc,
            format!("unknown cloud provider `{}`", p.value),
            help,
        );
    }
    let model = f
        .get("model")
        .and_then(|m| d.string(m, "`cloud_fallback.model`"));
    let key_env = f
        .get("api_key_env")
        .and_then(|k| d.spanned_string(k, "`cloud_fallback.api_key_env`"));
    if let Some(k) = &key_env {
        check_env_name(d, k, "`api_key_env`");
    }
    let base_url = f
        .get("base_url")
        .and_then(|b| d.string(b, "`cloud_fallback.base_url`"));
    Some(CloudFallback {
        provider: provider?.value,
        model: model?,
        api_key_env: key_env?.value,
        base_url,
    })
}

fn decode_group(d: &mut Decoder, name: &str, k: &Node, v: &Node) -> Group {
    // `group: [a, b]` or `group: { nodes: [a, b], vars: {...} }`
    let (members, vars) = if v.as_map().is_some() {
        match d.fields(v, &format!("group `{name}`"), &["nodes", "vars"]) {
            Some(f) => (
                f.get("nodes")
                    .map(|n| d.string_list(n, &format!("group `{name}` nodes")))
                    .unwrap_or_default(),
                f.get("vars")
                    .map(|n| d.vars(n, &format!("group `{name}` vars")))
                    .unwrap_or_default(),
            ),
            None => (Vec::new(), VarMap::new()),
        }
    } else {
        (d.string_list(v, &format!("group `{name}`")), VarMap::new())
    };
    Group {
        name: name.to_string(),
        loc: k.loc.clone(),
        members,
        vars,
    }
}

fn decode_hardware(d: &mut Decoder, name: &str, n: &Node) -> Hardware {
    let what = format!("node `{name}` hardware");
    let Some(f) = d.fields(n, &what, HARDWARE) else {
        return Hardware::default();
    };
    let s = |d: &mut Decoder, key: &str| {
        f.get(key)
            .and_then(|v| d.string(v, &format!("{what} `{key}`")))
    };
    let mut hw = Hardware {
        cpu: s(d, "cpu"),
        chip: s(d, "chip"),
        model: s(d, "model"),
        arch: s(d, "arch"),
        os: s(d, "os"),
        ram_gb: f
            .get("ram_gb")
            .and_then(|v| d.number(v, &format!("{what} `ram_gb`"))),
        cores: f
            .get("cores")
            .and_then(|v| d.uint(v, &format!("{what} `cores`"))),
        disk_gb: f
            .get("disk_gb")
            .and_then(|v| d.number(v, &format!("{what} `disk_gb`"))),
        gpu: None,
    };
    if let Some(os) = f.get("os")
        && let Some(v) = &hw.os
        && !matches!(v.as_str(), "linux" | "macos")
    {
        let help = crate::error::did_you_mean(v, ["linux", "macos"])
            .unwrap_or_else(|| "write `linux` or `macos`".into());
        d.error_help(
            &os.loc,
            format!("{what} `os`: expected `linux` or `macos`, found `{v}`"),
            help,
        );
        hw.os = None;
    }
    if let Some(arch) = f.get("arch")
        && let Some(v) = hw.arch.take()
    {
        hw.arch = checked_arch(d, &arch.loc, &format!("{what} `arch`"), &v);
    }
    if let Some(g) = f.get("gpu")
        && let Some(gf) = d.fields(g, &format!("{what} `gpu`"), GPU)
    {
        let vendor = d
            .require(&gf, "vendor", &format!("{what} `gpu`"))
            .and_then(|v| d.string(v, "gpu `vendor`"));
        let vram = d
            .require(&gf, "vram_gb", &format!("{what} `gpu`"))
            .and_then(|v| d.number(v, "gpu `vram_gb`"));
        let gname = gf.get("name").and_then(|v| d.string(v, "gpu `name`"));
        if let (Some(vendor), Some(vram_gb)) = (vendor, vram) {
            hw.gpu = Some(Gpu {
                vendor,
                name: gname,
                vram_gb,
            });
        }
    }
    hw
}

/// An IP address, or a DNS host name (RFC 1123 labels of letters, digits and `-`).
pub fn is_address(s: &str) -> bool {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !s.is_empty()
        && s.len() <= 253
        && s.trim_end_matches('.').split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn decode_node(d: &mut Decoder, name: &str, k: &Node, v: &Node) -> Option<NodeSpec> {
    let what = format!("node `{name}`");
    if !crate::spec::decode::is_identifier(&name.replace('-', "_")) {
        d.error_help(
            &k.loc,
            format!("node name `{name}` has characters fleet cannot use in names"),
            "use letters, digits, `-` and `_`",
        );
    }
    let f = d.fields(v, &what, NODE)?;
    let host = f
        .get("host")
        .and_then(|h| d.string(h, &format!("{what} `host`")));
    let address = f.get("address").and_then(|a| {
        let v = d.spanned_string(a, &format!("{what} `address`"))?;
        if is_address(&v.value) {
            Some(v)
        } else {
            d.error_help(
                &a.loc,
                format!(
                    "{what} `address`: expected a host name or an IP address, found {:?}",
                    v.value
                ),
                "write the name or IP other machines reach it at, e.g. `10.0.0.7`, `fd7a::7` or `forge.lan` (no scheme, port or path)",
            );
            None
        }
    });
    let role = d
        .require(&f, "role", &what)
        .and_then(|r| d.spanned_string(r, &format!("{what} `role`")));
    let (hardware, hardware_loc) = match f.get("hardware") {
        Some(h) => (decode_hardware(d, name, h), h.loc.clone()),
        None => (Hardware::default(), k.loc.clone()),
    };
    let models = f
        .get("models")
        .map(|m| d.string_list(m, &format!("{what} `models`")))
        .unwrap_or_default();
    let priority = f.get("priority").and_then(|p| {
        let v = d.uint(p, &format!("{what} `priority`"))?;
        if v > 100 {
            d.error_help(
                &p.loc,
                format!("{what} `priority`: expected 0 to 100, found {v}"),
                "priorities run from 0 (last) to 100 (first)",
            );
            return None;
        }
        u32::try_from(v).ok()
    });
    let max_concurrent = f
        .get("max_concurrent")
        .and_then(|m| d.uint(m, &format!("{what} `max_concurrent`")))
        .map_or(1, |m| u32::try_from(m.max(1)).unwrap_or(u32::MAX));
    let labels = f
        .get("labels")
        .map(|m| {
            d.string_list(m, &format!("{what} `labels`"))
                .into_iter()
                .map(|s| s.value)
                .collect()
        })
        .unwrap_or_default();
    let capabilities = f
        .get("capabilities")
        .map(|m| {
            d.string_list(m, &format!("{what} `capabilities`"))
                .into_iter()
                .map(|s| s.value)
                .collect()
        })
        .unwrap_or_default();
    let vars = f
        .get("vars")
        .map(|m| d.vars(m, &format!("{what} `vars`")))
        .unwrap_or_default();
    Some(NodeSpec {
        name: name.to_string(),
        loc: k.loc.clone(),
        host: host.unwrap_or_else(|| name.to_string()),
        address,
        role: role?,
        hardware,
        hardware_loc,
        models,
        priority,
        max_concurrent,
        labels,
        capabilities,
        vars,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::yaml::parse;
    use std::sync::Arc;

    fn inv(src: &str) -> (Inventory, Vec<String>) {
        let n = parse(&Arc::from("inv.yaml"), src).expect("yaml");
        let mut d = Decoder::default();
        let mut i = Inventory::default();
        i.merge_file(&mut d, &n);
        (i, d.diags.sorted().iter().map(|x| x.to_string()).collect())
    }

    #[test]
    fn decodes_nodes_and_routing() {
        let (i, e) = inv(
            "fleet: { name: s, hq: bob, hq_url: \"http://bob:8765\" }\nnodes:\n  bob: { role: hq, hardware: { ram_gb: 16, os: macos } }\nrouting:\n  cloud_fallback: { provider: anthropic, model: claude-haiku, api_key_env: ANTHROPIC_API_KEY }\n  rules:\n    - { task: classify, model: \"llama3.2:3b\", fallback: [cloud_api] }\n",
        );
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(i.nodes["bob"].hardware.ram_gb, Some(16.0));
        assert_eq!(i.routing.rules[0].fallback[0].value, "cloud_api");
    }

    #[test]
    fn provider_key_variables() {
        assert_eq!(provider_key_env("openrouter"), "OPENROUTER_API_KEY");
        assert_eq!(provider_key_env("Mistral AI"), "MISTRAL_AI_API_KEY");
        assert_eq!(provider_key_env("  x--y.z  "), "X_Y_Z_API_KEY");
        assert_eq!(provider_key_env("01ai"), "P01AI_API_KEY");
        assert_eq!(provider_key_env("-"), "PROVIDER_API_KEY");
        assert_eq!(canonical_arch("arm64"), Some("aarch64"));
        assert_eq!(canonical_arch("amd64"), Some("x86_64"));
        assert_eq!(canonical_arch("armv7l"), None);
    }

    #[test]
    fn literal_keys_are_rejected() {
        let (_, e) = inv(
            "routing:\n  cloud_fallback: { provider: openai, model: m, api_key_env: sk-abc123 }\n",
        );
        assert!(
            e.iter()
                .any(|m| m.contains("must name an environment variable")),
            "{e:?}"
        );
        let (_, e) = inv(
            "routing:\n  cloud_fallback: { provider: openai, model: m, api_key: sk-abc, api_key_env: K }\n",
        );
        assert!(e.iter().any(|m| m.contains("literal API key")), "{e:?}");
        // The secret itself never appears in the message.
        assert!(e.iter().all(|m| !m.contains("sk-abc")), "{e:?}");
    }
}
