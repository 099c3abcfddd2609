//! `fleet check`: the health sweep, as a dashboard, JSON, a watch, and alerts on change.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::cli::style;
use crate::error::{Error, Result};
use crate::health::alert::{self, Outcome};
use crate::health::sweep::{Options, Report, sweep};

/// Arguments of `fleet check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this node.
    #[arg(long, conflicts_with = "limit", add = crate::cli::candidates::nodes())]
    pub node: Option<String>,
    /// Only nodes matching this pattern (node, group, role, glob).
    #[arg(short, long, add = crate::cli::candidates::patterns())]
    pub limit: Option<String>,
    /// JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Sweep again every SECS seconds, redrawing, until Ctrl-C.
    #[arg(long, value_name = "SECS")]
    pub watch: Option<u64>,
    /// Post state changes to the webhook (`--webhook-url`, or the variable named by `fleet.alert_webhook_env`).
    #[arg(long)]
    pub alert: bool,
    /// Slack-compatible webhook URL.
    #[arg(
        long,
        value_name = "URL",
        env = "FLEET_WEBHOOK_URL",
        hide_env_values = true
    )]
    pub webhook_url: Option<String>,
    /// Read the webhook URL from this file (its first line; keep it mode 0600), e.g. for cron,
    /// whose environment holds no secrets; it wins over `--webhook-url`.
    #[arg(long, value_name = "PATH", requires = "alert")]
    pub webhook_url_file: Option<PathBuf>,
    /// Timeout of each probe.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Also check Docker over SSH (`docker info`) instead of trusting the last heartbeat.
    #[arg(long)]
    pub deep: bool,
    /// A node whose last heartbeat is older than this is offline.
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    pub heartbeat_max_age: Duration,
    /// Where alert states are remembered (default: `.fleet/hq.sqlite` in the repo).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

fn dashboard(report: &Report) -> String {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    t.set_header(["node", "state", "ssh", "ollama", "heartbeat", "why"]);
    for n in &report.nodes {
        let state = match n.state.as_str() {
            "online" => style::green("online"),
            "degraded" => style::yellow("degraded"),
            "draining" => style::yellow("draining"),
            _ => style::red("offline"),
        };
        let probe = |k: &str| {
            n.checks.get(k).map_or("-".to_string(), |p| {
                if p.ok {
                    format!("ok {}ms", p.ms)
                } else {
                    "fail".to_string()
                }
            })
        };
        let hb = n.heartbeat_age_secs.map_or("-".to_string(), |a| {
            format!("{} ago", crate::hq::status::human_secs(a))
        });
        t.add_row([
            n.node.clone(),
            state,
            probe("ssh"),
            probe("ollama"),
            hb,
            n.reasons.join("\n"),
        ]);
    }
    let s = &report.summary;
    format!(
        "{t}\n{} online, {} degraded, {} offline{} · HQ {} · swept in {} ms at {}\n",
        s.get("online").unwrap_or(&0),
        s.get("degraded").unwrap_or(&0),
        s.get("offline").unwrap_or(&0),
        match s.get("draining") {
            Some(n) if *n > 0 => format!(", {n} draining"),
            _ => String::new(),
        },
        if report.hq.ok {
            "answers".to_string()
        } else if report.hq.detail.starts_with("HQ refused the read") {
            report.hq.detail.trim_start_matches("HQ ").to_string()
        } else {
            format!("unreachable ({})", report.hq.detail)
        },
        report.duration_ms,
        report.checked_at
    )
}

/// The webhook URL in `path` (its first line), remembered as a secret so no output shows it.
fn webhook_from_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Usage(format!(
            "--webhook-url-file: cannot read {}: {e}",
            path.display()
        ))
    })?;
    let url = text.lines().next().unwrap_or_default().trim().to_string();
    if url.is_empty() {
        return Err(Error::Usage(format!(
            "--webhook-url-file: {} is empty; its first line must be the webhook URL",
            path.display()
        )));
    }
    crate::secret::remember(&url);
    Ok(url)
}

/// Runs `fleet check`.
pub fn run(repo_dir: Option<&Path>, args: &Args) -> Result<u8> {
    let repo = crate::cli::load_repo(repo_dir)?;
    let root = repo.root.clone();
    let role_names: Vec<&str> = repo.roles.keys().map(String::as_str).collect();
    let nodes: Vec<String> = match (&args.node, &args.limit) {
        (Some(n), _) if !repo.inventory.nodes.contains_key(n) => {
            let help = crate::validate::suggest(
                n,
                repo.inventory.nodes.keys().map(String::as_str),
                "nodes",
            );
            return Err(Error::Usage(format!(
                "no node `{n}` in the inventory\n  help: {help}"
            )));
        }
        (Some(n), _) => vec![n.clone()],
        (None, Some(l)) => crate::inventory::select::select(&repo.inventory, &role_names, l)
            .map_err(|e| Error::Usage(format!("--limit: {e}")))?,
        (None, None) => repo.inventory.nodes.keys().cloned().collect(),
    };
    let webhook = if args.alert {
        match (&args.webhook_url_file, &args.webhook_url) {
            (Some(f), _) => Some(webhook_from_file(f)?),
            (None, Some(u)) => Some(u.clone()),
            (None, None) => match &repo.inventory.fleet.alert_webhook_env {
                Some(var) => match std::env::var(var) {
                    Ok(u) if !u.trim().is_empty() => Some(u),
                    _ => return Err(Error::Usage(format!("--alert: the inventory names `{var}` for the webhook URL, but it is not set in the environment"))),
                },
                None => return Err(Error::Usage("--alert needs `--webhook-url URL`, FLEET_WEBHOOK_URL, or `fleet.alert_webhook_env` in the inventory".into())),
            },
        }
    } else {
        None
    };
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let opts = Options {
        timeout: args.timeout,
        deep: args.deep,
        offline_after: args.heartbeat_max_age,
        max_in_flight: 4096,
    };
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| crate::cli::serve::default_db(&root));
    let rt = crate::cli::runtime()?;
    let redraw = args.watch.is_some() && std::io::stdout().is_terminal() && !args.json;
    loop {
        let report = rt.block_on(sweep(&repo, &nodes, &opts));
        if args.json {
            crate::outln!("{}", serde_json::to_string(&report).unwrap_or_default());
        } else {
            if redraw {
                crate::out!("\x1b[H\x1b[2J");
            }
            crate::out!("{}", dashboard(&report));
        }
        if let Some(url) = &webhook {
            match rt.block_on(alert::run(
                &db,
                url,
                repo.inventory.fleet.name.as_deref(),
                &report,
            )) {
                Ok(Outcome::Quiet) => {}
                Ok(Outcome::Sent(ts)) => crate::noteln!(
                    "alert sent: {}",
                    ts.iter()
                        .map(|t| format!("{} {}→{}", t.node, t.from, t.to))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Ok(Outcome::Failed(ts, why)) => crate::errln!(
                    "{}: could not post the alert for {}: {why}; the next sweep retries",
                    style::yellow("warning"),
                    crate::util::count(ts.len() as u64, "change", "changes")
                ),
                Err(e) => crate::errln!("{}: alert state store: {e}", style::yellow("warning")),
            }
        }
        let code = if report.all_online() { 0 } else { 1 };
        match args.watch {
            None => return Ok(code),
            Some(secs) => {
                let stop = rt.block_on(async {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(secs.max(1))) => false,
                        _ = tokio::signal::ctrl_c() => true,
                    }
                });
                if stop {
                    return Ok(code);
                }
            }
        }
    }
}
