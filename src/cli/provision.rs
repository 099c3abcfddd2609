//! `fleet provision NODE [--role R] [--host ADDR]`: bring one node (new or known) to its role:
//! gather facts, refuse when the machine misses the role's requirements, run the role, check
//! that its services answer, add a new node to the inventory file (keeping its formatting),
//! and re-render the routing table and node registry.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::cli::style;
use crate::engine::{RunOptions, Shared, run_playbook};
use crate::error::{Error, Loc, Result};
use crate::inventory::vars::ExtraVars;
use crate::repo::Repo;
use crate::spec::decode::Spanned;
use crate::spec::inventory::NodeSpec;
use crate::spec::playbook::{Play, Playbook};
use crate::template::Library;

/// Arguments of `fleet provision`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node (new or in the inventory).
    #[arg(add = crate::cli::candidates::nodes())]
    pub node: String,
    /// Its role (required for a new node).
    #[arg(long, add = crate::cli::candidates::roles())]
    pub role: Option<String>,
    /// Its address or ssh alias (required for a new node).
    #[arg(long)]
    pub host: Option<String>,
    /// Predict what would change; change nothing (the inventory is not edited either).
    #[arg(long)]
    pub check: bool,
    /// Show unified diffs of files.
    #[arg(long)]
    pub diff: bool,
    /// JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
    /// Extra variables.
    #[arg(short = 'e', long = "extra-vars", value_name = "KEY=VALUE")]
    pub extra: Vec<String>,
    /// An ssh config file (`-F`).
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// Do not re-render the routing table and registry afterwards.
    #[arg(long)]
    pub no_render: bool,
    /// How long services may take to answer after the run.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub verify_timeout: Duration,
    /// HQ's state file, to issue the node's agent token when it has none (default:
    /// `.fleet/hq.sqlite` in the repo, when it exists, as on the HQ machine).
    #[arg(long, value_name = "PATH")]
    pub hq_db: Option<PathBuf>,
    /// The sudo password.
    #[command(flatten)]
    pub become_pass: crate::cli::become_pass::AskBecomePass,
}

fn synthetic_node(name: &str, host: &str, role: &str) -> NodeSpec {
    let loc = Loc::file_start(&"<fleet provision>".into());
    NodeSpec {
        name: name.to_string(),
        loc: loc.clone(),
        host: host.to_string(),
        address: None,
        role: Spanned::new(role.to_string(), loc.clone()),
        hardware: Default::default(),
        hardware_loc: loc,
        models: Vec::new(),
        priority: None,
        max_concurrent: 1,
        labels: Vec::new(),
        capabilities: Vec::new(),
        vars: Default::default(),
    }
}

/// What `fleet adopt` knows of a new node beyond its `host`: how to log in, and the hardware
/// it reported when it joined (the declared values that gathered facts override).
#[derive(Debug, Clone, Default)]
pub struct Joined {
    /// The ssh account (`ssh_user`).
    pub ssh_user: Option<String>,
    /// sshd's port (`ssh_port`).
    pub ssh_port: Option<u16>,
    /// Hardware from its facts.
    pub hardware: crate::spec::inventory::Hardware,
}

impl Joined {
    /// The node variables it sets.
    fn vars(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if let Some(u) = &self.ssh_user {
            v.push(("ssh_user", u.clone()));
        }
        if let Some(p) = self.ssh_port {
            v.push(("ssh_port", p.to_string()));
        }
        v
    }
}

/// Runs `fleet provision`.
pub fn run(repo_dir: Option<&Path>, args: &Args, verbose: bool) -> Result<u8> {
    provision(repo_dir, args, verbose, None)
}

/// Provisions a node; a new one may come with what it reported when it joined (`fleet adopt`).
pub fn provision(
    repo_dir: Option<&Path>,
    args: &Args,
    verbose: bool,
    joined: Option<&Joined>,
) -> Result<u8> {
    let mut repo = crate::cli::load_repo(repo_dir)?;
    let root = repo.root.clone();
    let known = repo.inventory.nodes.get(&args.node).cloned();
    let role = match (&args.role, &known) {
        (Some(r), Some(k)) if *r != k.role.value => {
            return Err(Error::Usage(format!(
                "`{}` has role `{}` in the inventory; change it there, or leave out --role",
                args.node, k.role.value
            )));
        }
        (Some(r), _) => r.clone(),
        (None, Some(k)) => k.role.value.clone(),
        (None, None) => {
            return Err(Error::Usage(format!(
                "`{}` is not in the inventory: a new node needs --role and --host",
                args.node
            )));
        }
    };
    if !repo.roles.contains_key(&role) {
        let help = crate::validate::suggest(&role, repo.roles.keys().map(String::as_str), "roles");
        return Err(Error::Usage(format!(
            "unknown role `{role}`\n  help: {help}"
        )));
    }
    let host = match (&args.host, &known) {
        (Some(h), _) => h.clone(),
        (None, Some(k)) => k.host.clone(),
        (None, None) => {
            return Err(Error::Usage(format!(
                "`{}` is not in the inventory: a new node needs --host ADDR",
                args.node
            )));
        }
    };
    let is_new = known.is_none();
    let mut node = known.unwrap_or_else(|| synthetic_node(&args.node, &host, &role));
    node.host = host.clone();
    let new_vars = joined.map(Joined::vars).unwrap_or_default();
    if is_new && let Some(j) = joined {
        node.hardware = j.hardware.clone();
        let loc = Loc::file_start(&"<fleet adopt>".into());
        for (k, v) in &new_vars {
            node.vars.insert(
                (*k).to_string(),
                crate::spec::yaml::Node {
                    value: crate::spec::yaml::Value::Scalar {
                        text: v.clone(),
                        plain: true,
                    },
                    loc: loc.clone(),
                },
            );
        }
    }
    repo.inventory.nodes.insert(args.node.clone(), node.clone());

    let extra = ExtraVars::parse(&args.extra).map_err(Error::Usage)?;
    let play = Play {
        name: format!("provision {} as {role}", args.node),
        loc: Loc::file_start(&"<fleet provision>".into()),
        hosts: Spanned::new(
            args.node.clone(),
            Loc::file_start(&"<fleet provision>".into()),
        ),
        vars: Default::default(),
        vars_files: Vec::new(),
        roles: vec![Spanned::new(
            role.clone(),
            Loc::file_start(&"<fleet provision>".into()),
        )],
        tasks: Vec::new(),
        body: Vec::new(),
        serial: Vec::new(),
        max_fail_percentage: None,
        handlers: Vec::new(),
        become_: false,
        become_user: None,
        gather_facts: true,
    };
    let pb = Playbook {
        file: "<fleet provision>".into(),
        plays: vec![play],
    };
    let library = Library::new(&repo.templates);
    let (mut plan, mut plan_diags) = crate::plan::plan_playbook(
        &repo,
        &library,
        &pb,
        &crate::plan::PlanOptions {
            limit: None,
            extra: extra.clone(),
            with_content: false,
        },
    );
    plan_diags.extend(crate::plan::missing_agent_binaries(&repo.root, &plan, true));
    if plan_diags.has_errors() {
        return Err(Error::Config(plan_diags));
    }
    let opts = RunOptions {
        check: args.check,
        diff: args.diff,
        extra,
        ssh_config: args.ssh_config.clone(),
        become_password: args.become_pass.read()?,
        ..RunOptions::default()
    };
    let shared = Arc::new(Shared {
        repo,
        library,
        opts,
        nodes: Default::default(),
        steps: Default::default(),
    });
    let rt = crate::cli::runtime()?;

    // Facts first: a machine that cannot carry the role is refused before anything changes.
    let facts = rt.block_on(crate::facts::probe::gather_over_ssh(
        &crate::engine::host::ssh_target(&shared, &node),
    ));
    let facts = facts.map_err(|e| Error::Failed(format!("{} is unreachable: {e}", args.node)))?;
    // Now that the machine is known: its agent binary too, before anything changes on it.
    if let (Some(os), Some(arch)) = (&facts.os, &facts.arch) {
        for host in plan.plays.iter_mut().flat_map(|p| p.targets.iter_mut()) {
            host.platform = format!("{os}/{arch}");
        }
        let missing = crate::plan::missing_agent_binaries(&shared.repo.root, &plan, true);
        if missing.has_errors() {
            return Err(Error::Config(missing));
        }
    }
    let hw = facts.overlay(&node.hardware);
    let spanned_role = Spanned::new(role.clone(), node.role.loc.clone());
    let closure = crate::play::role_order(&shared.repo.roles, std::slice::from_ref(&spanned_role))
        .map_err(Error::config)?;
    let misses = crate::validate::requirement_misses(
        &role,
        &args.node,
        &crate::validate::combined_requires(&closure),
        &hw,
    );
    if !misses.is_empty() {
        return Err(Error::Failed(format!(
            "refusing to provision: {}\n  help: choose a role this machine can carry, e.g. `--role browser_node`",
            misses.join("; ")
        )));
    }

    // The agent needs a token: issue one when HQ's store is at hand and the node has none.
    let token_path = root
        .join(".fleet/tokens")
        .join(format!("{}.token", args.node));
    let hq_db = args
        .hq_db
        .clone()
        .or_else(|| Some(crate::cli::serve::default_db(&root)).filter(|p| p.exists()));
    let uses_agent = closure
        .iter()
        .any(|r| r.tasks.iter().any(|t| t.module.name == "fleet_agent"));
    if uses_agent
        && !args.check
        && !token_path.exists()
        && let Some(db) = &hq_db
    {
        let token = crate::hq::tokens::generate().map_err(Error::Failed)?;
        crate::hq::store::Store::open(db)
            .map_err(Error::Failed)?
            .set_token(&args.node, &crate::hq::tokens::hash(&token))
            .map_err(Error::Failed)?;
        crate::cli::token::write_secret(&token_path, format!("{token}\n").as_bytes())?;
        crate::noteln!(
            "{} an agent token for `{}` (HQ keeps its hash; the node gets the token, mode 0600)",
            style::green("issued"),
            args.node
        );
    }

    let recap = rt.block_on(async {
        let (tx, rx) = mpsc::unbounded_channel();
        let reporter = tokio::spawn(crate::cli::apply::report(
            rx, args.json, verbose, args.check, false,
        ));
        run_playbook(shared.clone(), Arc::new(pb), tx).await;
        reporter.await.unwrap_or_default()
    });
    if !args.json {
        crate::outln!("\n{}", crate::cli::apply::recap_table(&recap));
    }
    if recap.iter().any(|(_, r)| r.failed > 0 || r.unreachable > 0) {
        return Err(Error::Failed(format!("provisioning {} failed", args.node)));
    }
    if args.check {
        return Ok(0);
    }

    // The services the role promises must answer.
    let caps: std::collections::BTreeSet<String> = closure
        .iter()
        .flat_map(|r| r.capabilities.iter().cloned())
        .collect();
    let lookup = crate::repo::lookup::VarLookup::new(&shared.repo);
    // Where the services listen and other machines reach them: the node's `address` (on a
    // Tailscale fleet its tailnet address), else what ssh resolves `host` to.
    let address = if node.address.is_some() || shared.repo.inventory.fleet.tailscale() {
        crate::render::routing::url_host(&crate::inventory::vars::fleet_address(
            &shared.repo.inventory,
            &node,
            None,
        ))
    } else {
        crate::connection::ssh::resolve_hostname(&crate::engine::host::ssh_target(&shared, &node))
    };
    let port_of = |name: &str, default: u16| -> u16 {
        shared
            .opts
            .extra
            .0
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_u64().and_then(|p| u16::try_from(p).ok()))
            .unwrap_or_else(|| lookup.port(&node, name, default))
    };
    let mut problems = Vec::new();
    rt.block_on(async {
        let client = crate::hq::client::http_client(Duration::from_secs(5)).unwrap_or_default();
        if caps.contains("ollama") {
            let url = format!("http://{address}:{}", port_of("ollama_port", 11434));
            // A service just (re)started takes a moment to listen: probe for a while (no event
            // tells us when it is ready).
            let deadline = std::time::Instant::now() + args.verify_timeout;
            let p = loop {
                let p = crate::health::probe::ollama(&client, &url, Duration::from_secs(5)).await;
                if p.ok || std::time::Instant::now() >= deadline {
                    break p;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            if p.ok {
                crate::noteln!(
                    "{} ollama answers at {url} ({})",
                    style::green("verified:"),
                    p.detail
                );
            } else {
                problems.push(format!("ollama does not answer at {url}: {}", p.detail));
            }
        }
        if caps.contains("hq")
            && let Some(u) = &shared.repo.inventory.fleet.hq_url
        {
            let url = format!("{}/healthz", u.value.trim_end_matches('/'));
            let ca = crate::hq::client::repo_ca(&shared.repo.root);
            let hq = crate::hq::client::hq_client(&u.value, Duration::from_secs(5), Some(&ca));
            let answer = match hq {
                Ok(hq) => hq.get(&url).send().await,
                Err(e) => {
                    problems.push(format!("the HQ registry at {url}: {e}"));
                    return;
                }
            };
            match answer {
                Ok(r) if r.status().is_success() => crate::noteln!(
                    "{} the HQ registry answers at {url}",
                    style::green("verified:")
                ),
                Ok(r) => problems.push(format!("the HQ registry answered {} at {url}", r.status())),
                Err(e) => problems.push(format!(
                    "the HQ registry does not answer at {url}: {}",
                    crate::hq::client::describe(&e)
                )),
            }
        }
    });

    if is_new {
        let file = shared
            .repo
            .inventory_files
            .first()
            .cloned()
            .unwrap_or_else(|| root.join("inventory/fleet.yaml"));
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io("read", &file, e))?;
        let declared = crate::spec::inventory::Hardware {
            disk_gb: None,
            ..hw.clone()
        };
        let edited =
            crate::inventory::edit::add_node(&text, &args.node, &host, &role, &declared, &new_vars)
                .map_err(Error::Failed)?;
        crate::util::write_atomic(&file, edited.as_bytes())?;
        crate::noteln!(
            "{} `{}` to {}",
            style::green("added"),
            args.node,
            crate::repo::shown(&file)
        );
    }
    if !args.no_render {
        let repo = Repo::load(&root);
        if !repo.diags.has_errors() {
            let (out, _) =
                crate::cli::render::build(&repo, crate::cli::render::What::Routing, None, None);
            let (reg, _) =
                crate::cli::render::build(&repo, crate::cli::render::What::Registry, None, None);
            let out_dir = root.join("generated");
            for o in [out, reg] {
                for w in o.write(&out_dir)? {
                    if let crate::render::output::Written::Changed(p) = w {
                        crate::noteln!(
                            "{} {}",
                            style::yellow("rendered"),
                            crate::repo::shown(&out_dir.join(p))
                        );
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(0)
    } else {
        Err(Error::Failed(format!(
            "{} was provisioned but does not answer: {}",
            args.node,
            problems.join("; ")
        )))
    }
}
