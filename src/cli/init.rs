//! `fleet init [DIR]`: scaffold a fleet repo with an HQ node, a cloud fallback, the four
//! roles and their building blocks, and a site playbook. Asks on a terminal; flags otherwise.
//! It never writes a secret: the inventory names the environment variable that holds the key.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::spec::inventory::PROVIDERS;
use crate::util::write_atomic;

/// The example roles and playbook, compiled into the binary so `init` works anywhere.
const SCAFFOLD: &[(&str, &str)] = &[
    (
        "roles/hq/role.yaml",
        include_str!("../../roles/hq/role.yaml"),
    ),
    (
        "roles/llm_worker/role.yaml",
        include_str!("../../roles/llm_worker/role.yaml"),
    ),
    (
        "roles/browser_node/role.yaml",
        include_str!("../../roles/browser_node/role.yaml"),
    ),
    (
        "roles/full_worker/role.yaml",
        include_str!("../../roles/full_worker/role.yaml"),
    ),
    (
        "roles/ollama/role.yaml",
        include_str!("../../roles/ollama/role.yaml"),
    ),
    (
        "roles/docker/role.yaml",
        include_str!("../../roles/docker/role.yaml"),
    ),
    (
        "roles/agent/role.yaml",
        include_str!("../../roles/agent/role.yaml"),
    ),
    (
        "roles/browser/role.yaml",
        include_str!("../../roles/browser/role.yaml"),
    ),
    (
        "playbooks/site.yaml",
        include_str!("../../playbooks/site.yaml"),
    ),
];

/// Arguments of `fleet init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to create the repo (default: the current directory).
    pub dir: Option<PathBuf>,
    /// The fleet's name.
    #[arg(long)]
    pub name: Option<String>,
    /// The HQ node's name.
    #[arg(long)]
    pub hq: Option<String>,
    /// The HQ node's address (default: `<hq>.local`).
    #[arg(long)]
    pub hq_host: Option<String>,
    /// The HQ node's IP on the fleet network, where its services listen (default: what its
    /// address resolves to, else 127.0.0.1 until you set it).
    #[arg(long)]
    pub hq_address: Option<String>,
    /// HQ's OS: `macos` or `linux`.
    #[arg(long, value_parser = ["macos", "linux"])]
    pub hq_os: Option<String>,
    /// HQ's memory in GB.
    #[arg(long)]
    pub hq_ram_gb: Option<u32>,
    /// Cloud fallback provider.
    #[arg(long, value_parser = PROVIDERS.to_vec())]
    pub provider: Option<String>,
    /// Model at the provider (default: a small one of that provider's).
    #[arg(long)]
    pub model: Option<String>,
    /// Name of the environment variable that will hold the API key (never the key itself).
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// Never ask, even on a terminal.
    #[arg(long)]
    pub non_interactive: bool,
    /// Write into a directory that already has an inventory.
    #[arg(long)]
    pub force: bool,
}

/// A provider's default model and key variable.
pub fn provider_defaults(p: &str) -> (&'static str, String) {
    (
        crate::spec::inventory::provider_example_model(p),
        crate::spec::inventory::provider_key_env(p),
    )
}

struct Asker {
    interactive: bool,
}

impl Asker {
    fn ask(&self, question: &str, given: Option<String>, default: &str) -> Result<String> {
        if let Some(g) = given {
            return Ok(g);
        }
        if !self.interactive {
            return Ok(default.to_string());
        }
        eprint!("{question} [{default}]: ");
        std::io::stderr().flush().ok();
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::io("read", Path::new("<stdin>"), e))?;
        let line = line.trim();
        Ok(if line.is_empty() {
            default.to_string()
        } else {
            line.to_string()
        })
    }
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Runs `fleet init`.
pub fn run(args: &Args) -> Result<u8> {
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let inv = dir.join("inventory/fleet.yaml");
    if (inv.exists() || dir.join("inventory").is_dir()) && !args.force {
        return Err(Error::Usage(format!(
            "`{}` already has an inventory; nothing was written\n  help: pass --force to overwrite the scaffold files, or choose another directory",
            dir.display()
        )));
    }
    let asker = Asker {
        interactive: !args.non_interactive
            && std::io::stdin().is_terminal()
            && std::io::stderr().is_terminal(),
    };
    let default_name = std::path::absolute(&dir)
        .ok()
        .and_then(|p| {
            p.components()
                .next_back()
                .map(|c| c.as_os_str().to_string_lossy().to_string())
        })
        .filter(|n| n != "." && n != "/" && !n.is_empty())
        .unwrap_or_else(|| "fleet".into());
    let name = asker.ask("fleet name", args.name.clone(), &default_name)?;
    let hq = asker.ask("HQ node name", args.hq.clone(), "hq")?;
    if !crate::spec::decode::is_identifier(&hq.replace('-', "_")) {
        return Err(Error::Usage(format!(
            "`{hq}` cannot be a node name: use letters, digits, `-` and `_`"
        )));
    }
    let hq_host = asker.ask("HQ address", args.hq_host.clone(), &format!("{hq}.local"))?;
    // Services listen on the node's fleet IP, and a name is nothing a server can bind to.
    let resolved = {
        use std::net::ToSocketAddrs;
        (hq_host.as_str(), 0)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.find(|a| !a.ip().is_loopback() && a.is_ipv4()))
            .map(|a| a.ip().to_string())
    };
    let hq_address = asker.ask(
        "HQ's IP on the fleet network (its services listen there)",
        args.hq_address.clone(),
        resolved.as_deref().unwrap_or("127.0.0.1"),
    )?;
    if hq_address.parse::<std::net::IpAddr>().is_err() {
        return Err(Error::Usage(format!(
            "HQ's fleet address must be an IP address (services bind to it), not `{hq_address}`"
        )));
    }
    let hq_os = asker.ask(
        "HQ operating system (macos/linux)",
        args.hq_os.clone(),
        "macos",
    )?;
    if !matches!(hq_os.as_str(), "macos" | "linux") {
        return Err(Error::Usage(format!(
            "HQ operating system must be `macos` or `linux`, not `{hq_os}`"
        )));
    }
    let ram = asker.ask(
        "HQ memory in GB",
        args.hq_ram_gb.map(|r| r.to_string()),
        "16",
    )?;
    let ram: u32 = ram.parse().map_err(|_| {
        Error::Usage(format!(
            "HQ memory must be a whole number of GB, not `{ram}`"
        ))
    })?;
    let provider = asker.ask(
        &format!("cloud fallback provider ({})", PROVIDERS.join("/")),
        args.provider.clone(),
        "anthropic",
    )?;
    if !PROVIDERS.contains(&provider.as_str()) {
        return Err(Error::Usage(format!(
            "unknown provider `{provider}`; choose one of {}",
            PROVIDERS.join(", ")
        )));
    }
    let (default_model, default_env) = provider_defaults(&provider);
    let model = asker.ask("cloud model", args.model.clone(), default_model)?;
    let key_env = asker.ask(
        "environment variable holding the API key",
        args.api_key_env.clone(),
        &default_env,
    )?;
    if !is_env_name(&key_env) {
        // Whatever was typed may be the key itself: never echo it back.
        return Err(Error::Usage(
            "the API key setting must be the NAME of an environment variable (like ANTHROPIC_API_KEY), not a key; nothing was written".into(),
        ));
    }
    let arch = if hq_os == "macos" {
        "aarch64"
    } else {
        "x86_64"
    };
    let inventory = format!(
        "# The fleet `{name}`. Add nodes under `nodes:`; `fleet validate` checks this file.\n\
fleet:\n  name: {n}\n  hq: {hq}\n  hq_url: https://{hq_host}:8765   # HTTPS with the fleet's own CA (tls/ca.pem; `fleet tls`)\n\n\
vars:\n  ssh_user: fleet\n  fleet_user: fleet\n  ollama_port: 11434\n\n\
nodes:\n  {hq}:\n    host: {h}\n    address: {hq_address}   # its IP on the fleet network: its services listen here{unset}\n    role: hq\n    hardware: {{ os: {hq_os}, arch: {arch}, ram_gb: {ram} }}\n    models: [llama3.2:3b]\n\n\
routing:\n  cloud_fallback:\n    provider: {provider}\n    model: {m}\n    api_key_env: {key_env}   # export {key_env}=... where fleet runs; never write the key here\n  rules:\n    - task: classify\n      model: llama3.2:3b\n      fallback: [cloud_api]\n",
        n = yaml_str(&name),
        h = yaml_str(&hq_host),
        m = yaml_str(&model),
        unset = if hq_address == "127.0.0.1" {
            " (127.0.0.1: this machine only, until you set it)"
        } else {
            ""
        },
    );
    write_atomic(&inv, inventory.as_bytes())?;
    let mut written = vec![inv.display().to_string()];
    for (rel, text) in SCAFFOLD {
        let p = dir.join(rel);
        if p.exists() && !args.force {
            continue;
        }
        write_atomic(&p, text.as_bytes())?;
        written.push(p.display().to_string());
    }
    let gitignore = dir.join(".gitignore");
    if !gitignore.exists() {
        write_atomic(
            &gitignore,
            b"# fleet's local state (facts cache, HQ database, tokens, the CA key and HQ's key)\n.fleet/\n*.sqlite\n",
        )?;
    }
    // The fleet CA and HQ's certificate: agents and CLI commands reach HQ over HTTPS.
    let repo = crate::repo::Repo::load(&dir);
    let made_ca = crate::cli::tls::init(
        &dir,
        &repo,
        &crate::cli::tls::IssueArgs {
            days: crate::hq::tls::HQ_DAYS,
            renew_within: crate::hq::tls::RENEW_WITHIN_DAYS,
            force: false,
        },
    )?;
    if made_ca {
        written.push(dir.join(crate::hq::tls::CA_CERT).display().to_string());
    }
    crate::noteln!(
        "created fleet `{name}` in {} ({})",
        dir.display(),
        crate::util::count(written.len() as u64, "file", "files")
    );
    crate::noteln!(
        "next: export {key_env}=…; edit inventory/fleet.yaml; run `fleet validate` and `fleet plan playbooks/site.yaml`"
    );
    Ok(0)
}
