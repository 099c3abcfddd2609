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

/// Where a cloud provider's API key is read from at request time; never the key itself.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiKeySource {
    /// The name of an environment variable of the process that calls the provider.
    Env(String),
    /// A file holding the key (a relative path is read from the repo root; `~/` is the
    /// user's home).
    File(String),
}

/// One cloud provider of the ordered cloud fallback (`routing.cloud_fallback`).
#[derive(Debug, Clone)]
pub struct CloudFallback {
    /// Provider name: one of [`PROVIDERS`], or any OpenAI-compatible one given a `base_url`.
    pub provider: String,
    /// Model at the provider.
    pub model: String,
    /// Where the key comes from.
    pub key: ApiKeySource,
    /// Override of the provider's API base URL.
    pub base_url: Option<String>,
    /// Where the entry is written.
    pub loc: Loc,
}

impl CloudFallback {
    /// The environment variable holding the key, when it comes from one.
    pub fn api_key_env(&self) -> Option<&str> {
        match &self.key {
            ApiKeySource::Env(e) => Some(e),
            ApiKeySource::File(_) => None,
        }
    }

    /// The file holding the key, when it comes from one.
    pub fn api_key_file(&self) -> Option<&str> {
        match &self.key {
            ApiKeySource::File(f) => Some(f),
            ApiKeySource::Env(_) => None,
        }
    }
}

/// Where `api_key_file` points: `~/…` under `$HOME`, a relative path under the repo root.
pub fn key_file_path(repo_root: &std::path::Path, file: &str) -> std::path::PathBuf {
    if let Some(rest) = file.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return std::path::PathBuf::from(home).join(rest);
    }
    repo_root.join(file)
}

/// Daily spend limits on the cloud fallback (`routing.cost`), in USD.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostLimits {
    /// Above this day's spend, cloud candidates are skipped.
    pub max_daily_spend: Option<f64>,
    /// At this day's spend, one alert.
    pub warn_at: Option<f64>,
}

/// A price the inventory sets for one provider's model (`routing.prices`), USD per 1M tokens.
#[derive(Debug, Clone)]
pub struct PriceOverride {
    /// Provider name.
    pub provider: String,
    /// Model at the provider (may itself contain `/`, as OpenRouter's do).
    pub model: String,
    /// USD per 1M input (prompt) tokens.
    pub input: f64,
    /// USD per 1M output (completion) tokens.
    pub output: f64,
    /// Where it is written.
    pub loc: Loc,
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
    /// Last fallback for every rule: the cloud providers, tried in this order. A single
    /// mapping in the inventory is a list of one; empty when not set.
    pub cloud_fallback: Vec<CloudFallback>,
    /// Where `cloud_fallback:` is written, also when it could not be decoded (its errors are
    /// reported there; later checks must not add that it is not set).
    pub cloud_fallback_loc: Option<Loc>,
    /// Daily spend limits of the cloud fallback.
    pub cost: Option<CostLimits>,
    /// Cloud calls in flight at once, at most.
    pub max_concurrent_api: Option<u32>,
    /// Prices that override `data/prices.toml`.
    pub prices: Vec<PriceOverride>,
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
const ROUTING: &[&str] = &[
    "cloud_fallback",
    "cost",
    "max_concurrent_api",
    "prices",
    "rules",
];
const CLOUD: &[&str] = &[
    "provider",
    "model",
    "api_key_env",
    "api_key_file",
    "api_key",
    "base_url",
];
const COST: &[&str] = &["max_daily_spend", "warn_at"];
const PRICE: &[&str] = &["input", "output"];
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
            self.routing.cloud_fallback = decode_cloud_list(d, c);
        }
        if let Some(c) = f.get("cost") {
            self.routing.cost = decode_cost(d, c);
        }
        if let Some(m) = f.get("max_concurrent_api") {
            match d.uint(m, "`routing.max_concurrent_api`") {
                Some(0) => d.error_help(
                    &m.loc,
                    "`routing.max_concurrent_api`: expected at least 1, found 0",
                    "to never call the cloud, remove `cloud_fallback`; to cap spend, use `routing.cost`",
                ),
                Some(n) => self.routing.max_concurrent_api = Some(u32::try_from(n).unwrap_or(u32::MAX)),
                None => {}
            }
        }
        if let Some(p) = f.get("prices") {
            self.routing.prices = decode_prices(d, p);
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

/// `routing.cloud_fallback`: one provider (a mapping) or an ordered list of them.
fn decode_cloud_list(d: &mut Decoder, n: &Node) -> Vec<CloudFallback> {
    let crate::spec::yaml::Value::Seq(items) = &n.value else {
        return decode_cloud(d, n, "`routing.cloud_fallback`", "cloud_fallback")
            .into_iter()
            .collect();
    };
    if items.is_empty() {
        d.error_help(
            &n.loc,
            "`routing.cloud_fallback`: expected at least one provider, found an empty list",
            "list the providers to try in order, or remove `cloud_fallback` for no cloud fallback",
        );
        return Vec::new();
    }
    let mut out: Vec<CloudFallback> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let what = format!("`routing.cloud_fallback[{i}]`");
        let short = format!("cloud_fallback[{i}]");
        let Some(c) = decode_cloud(d, item, &what, &short) else {
            continue;
        };
        if let Some(prev) = out
            .iter()
            .find(|p| p.provider == c.provider && p.model == c.model)
        {
            d.push(
                Diagnostic::error(
                    c.loc.clone(),
                    format!(
                        "`routing.cloud_fallback` lists `{}` with model `{}` twice",
                        c.provider, c.model
                    ),
                )
                .with_help(format!("it is also listed at {}", prev.loc)),
            );
            continue;
        }
        out.push(c);
    }
    out
}

/// A provider name fleet can use in labels and price keys (`cloud:<provider>`,
/// `<provider>/<model>`): lower-case letters, digits, `-`, `_` and `.`.
fn is_provider_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// One provider entry; `what` names it in messages (`routing.cloud_fallback` or
/// `routing.cloud_fallback[1]`), `short` prefixes its keys (`cloud_fallback.model`).
fn decode_cloud(d: &mut Decoder, n: &Node, what: &str, short: &str) -> Option<CloudFallback> {
    let f = d.fields(n, what, CLOUD)?;
    let text = |key: &str| match f.get(key).and_then(Node::resolve) {
        Some(crate::spec::yaml::Resolved::Str(s)) => Some(s),
        _ => None,
    };
    let example_provider = text("provider")
        .filter(|p| PROVIDERS.contains(p))
        .unwrap_or("anthropic");
    let literal_key = f.key("api_key");
    let has_key_source = f.get("api_key_env").is_some() || f.get("api_key_file").is_some();
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
        } else if f.get("api_key_file").is_some() {
            "remove it and rotate the key (it has been written to a file); `api_key_file` already names the file that holds it".to_string()
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
    // write `api_key_env`; `api_key_file` stands for `api_key_env`).
    let missing: Vec<&str> = ["provider", "model", "api_key_env"]
        .into_iter()
        .filter(|k| {
            f.get(k).is_none()
                && !(*k == "api_key_env" && (literal_key.is_some() || has_key_source))
        })
        .collect();
    if !missing.is_empty() {
        let keys: Vec<String> = missing.iter().map(|k| format!("`{k}`")).collect();
        let msg = match keys.as_slice() {
            [one] => format!("{what} is missing the required key {one}"),
            [init @ .., last] => format!(
                "{what} is missing the required keys {} and {last}",
                init.join(", ")
            ),
            [] => String::new(),
        };
        let mut help = format!(
            "write e.g. `cloud_fallback: {{ provider: {example_provider}, model: {}, api_key_env: {} }}`",
            provider_example_model(example_provider),
            provider_key_env(example_provider)
        );
        if missing.contains(&"api_key_env") {
            help.push_str(" (or `api_key_file: PATH`, a file holding the key)");
        }
        d.error_help(&f.loc, msg, help);
    }
    if let (Some(e), Some(_)) = (f.key("api_key_env"), f.get("api_key_file")) {
        d.error_help(
            &e.loc,
            format!("{what} sets both `api_key_env` and `api_key_file`"),
            "keep exactly one: the environment variable or the file that holds the key",
        );
    }
    let base_url = f.get("base_url").and_then(|b| {
        let v = d.string(b, &format!("`{short}.base_url`"))?;
        check_base_url(d, &b.loc, &v, short).then_some(v)
    });
    let provider = f
        .get("provider")
        .and_then(|p| d.spanned_string(p, &format!("`{short}.provider`")));
    if let Some(p) = &provider
        && !PROVIDERS.contains(&p.value.as_str())
    {
        if !is_provider_name(&p.value) {
            d.error_help(
                &p.loc,
                format!("`{short}.provider`: `{}` is not a provider name fleet can use", p.value),
                "use lower-case letters, digits, `-`, `_` and `.` (the name labels its requests, spend and prices)",
            );
        } else if f.get("base_url").is_none() {
            let help = crate::error::did_you_mean(&p.value, PROVIDERS.iter().copied())
                .unwrap_or_else(|| {
                    format!(
                        "known providers: {}; another OpenAI-compatible provider needs its `base_url` (e.g. `https://api.example.com/v1`)",
                        PROVIDERS.join(", ")
                    )
                });
            d.error_help(
                &p.loc,
                format!("unknown cloud provider `{}`", p.value),
                help,
            );
        }
    }
    let model = f
        .get("model")
        .and_then(|m| d.spanned_string(m, &format!("`{short}.model`")));
    if let Some(m) = &model
        && m.value.trim().is_empty()
    {
        d.error(
            &m.loc,
            format!("`{short}.model`: expected a model name, found an empty string"),
        );
    }
    let key_env = f
        .get("api_key_env")
        .and_then(|k| d.spanned_string(k, &format!("`{short}.api_key_env`")));
    if let Some(k) = &key_env {
        check_env_name(d, k, "`api_key_env`");
    }
    let key_file = f
        .get("api_key_file")
        .and_then(|k| d.spanned_string(k, &format!("`{short}.api_key_file`")));
    if let Some(k) = &key_file
        && k.value.trim().is_empty()
    {
        d.error_help(
            &k.loc,
            format!("`{short}.api_key_file`: expected a path, found an empty string"),
            "write the path of a file that holds the key (mode 0600, outside git), e.g. `/etc/fleet/openai.key`",
        );
    }
    let key = match (key_env, key_file) {
        (Some(e), None) => ApiKeySource::Env(e.value),
        (None, Some(f)) => ApiKeySource::File(f.value),
        _ => return None,
    };
    Some(CloudFallback {
        provider: provider?.value,
        model: model?.value,
        key,
        base_url,
        loc: n.loc.clone(),
    })
}

/// A base URL must be http(s) with a host, and carry no credentials (the key has its own
/// place, and a URL is printed in messages). The URL is not echoed when it has credentials.
fn check_base_url(d: &mut Decoder, loc: &Loc, v: &str, short: &str) -> bool {
    let url = match reqwest::Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
        _ => {
            d.error_help(
                loc,
                format!("`{short}.base_url`: expected an http(s) URL, found {v:?}"),
                "write the API's base URL, e.g. `https://api.groq.com/openai/v1`",
            );
            return false;
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        d.error_help(
            loc,
            format!("`{short}.base_url` holds credentials (`user:password@`)"),
            "remove them and rotate them; the key goes in `api_key_env` or `api_key_file`",
        );
        return false;
    }
    if url.query().is_some() || url.fragment().is_some() {
        d.error_help(
            loc,
            format!("`{short}.base_url`: expected no query or fragment, found {v:?}"),
            "write only scheme, host, port and path; fleet appends the API's own path",
        );
        return false;
    }
    let host = url.host_str().unwrap_or("").trim_matches(['[', ']']);
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    if url.scheme() == "http" && !loopback {
        d.push(
            Diagnostic::warning(
                loc.clone(),
                format!("`{short}.base_url` is plain http off this machine: the API key would cross the network unencrypted"),
            )
            .with_help("use https"),
        );
    }
    true
}

/// `routing.cost: { max_daily_spend, warn_at }`, USD.
fn decode_cost(d: &mut Decoder, n: &Node) -> Option<CostLimits> {
    let f = d.fields(n, "`routing.cost`", COST)?;
    let max = f
        .get("max_daily_spend")
        .and_then(|v| d.number(v, "`routing.cost.max_daily_spend` (USD)"));
    let warn = f
        .get("warn_at")
        .and_then(|v| d.number(v, "`routing.cost.warn_at` (USD)"));
    if let (Some(m), Some(w), Some(wn)) = (max, warn, f.get("warn_at"))
        && w > m
    {
        d.error_help(
            &wn.loc,
            format!("`routing.cost.warn_at` ({w}) is above `max_daily_spend` ({m}): the warning would never come before the cap"),
            "set `warn_at` below the cap, e.g. 80% of it",
        );
    }
    if f.get("max_daily_spend").is_none() && f.get("warn_at").is_none() {
        d.error_help(
            &f.loc,
            "`routing.cost` sets neither `max_daily_spend` nor `warn_at`",
            "write e.g. `cost: { max_daily_spend: 5.00, warn_at: 4.00 }` (USD a day)",
        );
    }
    Some(CostLimits {
        max_daily_spend: max,
        warn_at: warn,
    })
}

/// `routing.prices: { "<provider>/<model>": { input, output } }`, USD per 1M tokens.
fn decode_prices(d: &mut Decoder, n: &Node) -> Vec<PriceOverride> {
    let mut out = Vec::new();
    let Some(entries) = d.map(n, "`routing.prices`") else {
        return out;
    };
    for (k, v) in entries {
        let name = k.key_text();
        let Some((provider, model)) = name
            .split_once('/')
            .filter(|(p, m)| !p.is_empty() && !m.is_empty())
        else {
            d.error_help(
                &k.loc,
                format!("`routing.prices`: expected a key `<provider>/<model>`, found `{name}`"),
                "write e.g. `\"openai/gpt-4o-mini\": { input: 0.15, output: 0.60 }` (USD per 1M tokens)",
            );
            continue;
        };
        let what = format!("`routing.prices.\"{name}\"`");
        let Some(pf) = d.fields(v, &what, PRICE) else {
            continue;
        };
        let input = d
            .require(&pf, "input", &what)
            .and_then(|x| d.number(x, &format!("{what} `input` (USD per 1M tokens)")));
        let output = d
            .require(&pf, "output", &what)
            .and_then(|x| d.number(x, &format!("{what} `output` (USD per 1M tokens)")));
        if let (Some(input), Some(output)) = (input, output) {
            out.push(PriceOverride {
                provider: provider.to_string(),
                model: model.to_string(),
                input,
                output,
                loc: k.loc.clone(),
            });
        }
    }
    out
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

    #[test]
    fn cloud_fallback_is_an_ordered_list_and_a_mapping_is_a_list_of_one() {
        let (i, e) = inv(
            "routing:\n  cloud_fallback: { provider: anthropic, model: claude-haiku, api_key_env: ANTHROPIC_API_KEY }\n",
        );
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(i.routing.cloud_fallback.len(), 1);
        assert_eq!(
            i.routing.cloud_fallback[0].api_key_env(),
            Some("ANTHROPIC_API_KEY")
        );
        let (i, e) = inv(
            "routing:\n  cloud_fallback:\n    - { provider: groq, model: llama-3.1-8b-instant, api_key_env: GROQ_API_KEY }\n    - { provider: gemini, model: gemini-2.0-flash, api_key_file: /etc/fleet/gemini.key }\n    - { provider: local-vllm, model: qwen, api_key_env: VLLM_KEY, base_url: \"http://127.0.0.1:8000/v1\" }\n  cost: { max_daily_spend: 5, warn_at: 4.5 }\n  max_concurrent_api: 8\n  prices:\n    \"together/meta-llama/Llama-3.3-70B-Instruct-Turbo\": { input: 0.88, output: 0.88 }\n",
        );
        assert!(e.is_empty(), "{e:?}");
        let names: Vec<&str> = i
            .routing
            .cloud_fallback
            .iter()
            .map(|c| c.provider.as_str())
            .collect();
        assert_eq!(names, ["groq", "gemini", "local-vllm"]);
        assert_eq!(
            i.routing.cloud_fallback[1].key,
            ApiKeySource::File("/etc/fleet/gemini.key".into())
        );
        assert_eq!(
            i.routing.cost,
            Some(CostLimits {
                max_daily_spend: Some(5.0),
                warn_at: Some(4.5)
            })
        );
        assert_eq!(i.routing.max_concurrent_api, Some(8));
        assert_eq!(i.routing.prices[0].provider, "together");
        assert_eq!(
            i.routing.prices[0].model,
            "meta-llama/Llama-3.3-70B-Instruct-Turbo"
        );
    }

    #[test]
    fn bad_cloud_values_are_located_errors() {
        let cases = [
            (
                "  cloud_fallback: []\n",
                "inv.yaml:2:19: error: `routing.cloud_fallback`: expected at least one provider",
            ),
            (
                "  cloud_fallback:\n    - { provider: mistral, model: m, api_key_env: K }\n",
                "inv.yaml:3:19: error: unknown cloud provider `mistral`",
            ),
            (
                "  cloud_fallback:\n    - { provider: openai, model: m, api_key_env: K, api_key_file: /k }\n",
                "inv.yaml:3:37: error: `routing.cloud_fallback[0]` sets both `api_key_env` and `api_key_file`",
            ),
            (
                "  cloud_fallback:\n    - { provider: openai, model: m }\n",
                "inv.yaml:3:7: error: `routing.cloud_fallback[0]` is missing the required key `api_key_env`",
            ),
            (
                "  cloud_fallback:\n    - { provider: openai, model: m, api_key_env: K }\n    - { provider: openai, model: m, api_key_env: J }\n",
                "inv.yaml:4:7: error: `routing.cloud_fallback` lists `openai` with model `m` twice",
            ),
            (
                "  cloud_fallback:\n    - { provider: openai, model: m, api_key_env: K, base_url: \"ftp://x\" }\n",
                "inv.yaml:3:63: error: `cloud_fallback[0].base_url`: expected an http(s) URL",
            ),
            (
                "  cloud_fallback:\n    - { provider: My_AI, model: m, api_key_env: K, base_url: \"https://x.example/v1\" }\n",
                "inv.yaml:3:19: error: `cloud_fallback[0].provider`: `My_AI` is not a provider name",
            ),
            (
                "  cost: { max_daily_spend: 1, warn_at: 2 }\n",
                "inv.yaml:2:40: error: `routing.cost.warn_at` (2) is above `max_daily_spend` (1)",
            ),
            (
                "  cost: { max_daily_spend: -1 }\n",
                "inv.yaml:2:28: error: `routing.cost.max_daily_spend` (USD): expected a number ≥ 0",
            ),
            (
                "  max_concurrent_api: 0\n",
                "inv.yaml:2:23: error: `routing.max_concurrent_api`: expected at least 1, found 0",
            ),
            (
                "  prices: { gpt-4o: { input: 1, output: 2 } }\n",
                "inv.yaml:2:13: error: `routing.prices`: expected a key `<provider>/<model>`, found `gpt-4o`",
            ),
            (
                "  prices: { \"openai/x\": { input: 1 } }\n",
                "inv.yaml:2:25: error: `routing.prices.\"openai/x\"` is missing the required key `output`",
            ),
        ];
        let mut failures = Vec::new();
        for (routing, expected) in cases {
            let (_, e) = inv(&format!("routing:\n{routing}"));
            if e.len() != 1 || !e[0].starts_with(expected) {
                failures.push(format!("{routing}expected: {expected}\nfound: {e:#?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn credentials_in_a_base_url_are_refused_without_echo() {
        let (_, e) = inv(
            "routing:\n  cloud_fallback: { provider: openai, model: m, api_key_env: K, base_url: \"https://u:sk-hidden99@api.example/v1\" }\n",
        );
        assert!(e.iter().any(|m| m.contains("holds credentials")), "{e:?}");
        assert!(e.iter().all(|m| !m.contains("sk-hidden99")), "{e:?}");
        let (_, e) = inv(
            "routing:\n  cloud_fallback: { provider: openai, model: m, api_key_env: K, base_url: \"http://api.example/v1\" }\n",
        );
        assert!(
            e.iter()
                .any(|m| m.contains("warning") && m.contains("unencrypted")),
            "{e:?}"
        );
    }
}
