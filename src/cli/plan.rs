//! `fleet plan PLAYBOOK`: the offline dry-run (no SSH, no network).

use std::path::{Path, PathBuf};

use crate::cli::style;
use crate::error::{Error, Result};
use crate::inventory::vars::ExtraVars;
use crate::plan::{Decision, Plan, PlanOptions, plan_playbook};
use crate::template::Library;

/// Arguments of `fleet plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The playbook (path relative to here or to the repo).
    #[arg(add = crate::cli::candidates::playbooks())]
    pub playbook: PathBuf,
    /// Only hosts matching this pattern (node, group, role, glob; `!x` excludes).
    #[arg(short, long, add = crate::cli::candidates::patterns())]
    pub limit: Option<String>,
    /// Extra variables, highest precedence: `-e ollama_port=11500`, `-e @vars.yaml`, `-e '{"key": 1}'`.
    #[arg(short = 'e', long = "extra-vars", value_name = "KEY=VALUE")]
    pub extra: Vec<String>,
    /// Show the contents of every file a task would place.
    #[arg(long)]
    pub diff: bool,
    /// The plan as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `fleet plan`.
pub fn run(repo_dir: Option<&Path>, args: &Args) -> Result<u8> {
    let repo = crate::cli::load_repo(repo_dir)?;
    let extra = ExtraVars::parse(&args.extra).map_err(Error::Usage)?;
    let (pb, mut diags) = repo.load_playbook(&args.playbook)?;
    if diags.has_errors() {
        return Err(Error::Config(diags));
    }
    let library = Library::new(&repo.templates);
    let opts = PlanOptions {
        limit: args.limit.clone(),
        extra,
        with_content: args.diff,
    };
    let (plan, plan_diags) = plan_playbook(&repo, &library, &pb, &opts);
    diags.extend(plan_diags);
    // A warning: the plan describes the repo; the controller that applies it may differ (CI
    // plans a Mac fleet on Linux). apply and provision, which run from here, refuse.
    diags.extend(crate::plan::missing_agent_binaries(
        &repo.root, &plan, false,
    ));
    if diags.has_errors() {
        return Err(Error::Config(diags));
    }
    for w in diags.take_warnings() {
        crate::noteln!("{}", crate::cli::style::diagnostic(&w));
    }
    if args.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&plan).unwrap_or_default()
        );
    } else {
        crate::out!("{}", human(&plan, args.diff));
    }
    Ok(0)
}

fn compact(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) if !s.contains(['\n', ' ']) => format!("{k}={s}"),
                serde_json::Value::String(s) if !s.contains('\n') => format!("{k}={s:?}"),
                serde_json::Value::String(s) => format!(
                    "{k}=<{}>",
                    crate::util::count(s.lines().count() as u64, "line", "lines")
                ),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The human rendering of a plan.
pub fn human(plan: &Plan, diff: bool) -> String {
    let mut out = String::new();
    let mut totals = (0usize, 0usize, 0usize, 0usize);
    for play in &plan.plays {
        out.push_str(&format!(
            "{} {} {}\n",
            style::bold("PLAY"),
            style::bold(&play.name),
            style::dim(&format!(
                "(hosts: {}, {} selected)",
                play.hosts,
                play.targets.len()
            ))
        ));
        for host in &play.targets {
            totals.0 += 1;
            out.push_str(&format!(
                "\n  {} {}\n",
                style::cyan(&host.node),
                style::dim(&format!(
                    "{} · role {} · {}",
                    host.host, host.role, host.platform
                ))
            ));
            let mut n = 0;
            for t in &host.tasks {
                let origin = t.role.as_deref().unwrap_or("play");
                let item = t
                    .item
                    .as_ref()
                    .map(|i| format!(" [{}]", compact(i)))
                    .unwrap_or_default();
                match &t.decision {
                    Decision::Skip { when } => {
                        totals.2 += 1;
                        out.push_str(&style::dim(&format!(
                            "     -  {origin}: {}{item}  (skipped: `{when}` is false)\n",
                            t.name
                        )));
                        continue;
                    }
                    Decision::AtRunTime { when } => {
                        totals.3 += 1;
                        n += 1;
                        out.push_str(&format!(
                            "   {n:>3}. {origin}: {}{item}  {}\n",
                            t.name,
                            style::yellow(&format!("(if {when}, decided on the host)"))
                        ));
                    }
                    Decision::Run => {
                        totals.1 += 1;
                        n += 1;
                        out.push_str(&format!("   {n:>3}. {origin}: {}{item}\n", t.name));
                    }
                }
                let mut become_ = match (&t.become_user, t.become_) {
                    (Some(u), _) => format!(" (sudo -u {u})"),
                    (None, true) => " (sudo)".to_string(),
                    (None, false) => String::new(),
                };
                // Where and how often it runs, when not simply here.
                if let Some(d) = &t.delegate_to {
                    become_.push_str(&format!(" (on {d})"));
                }
                if t.run_once {
                    become_.push_str(" (once per batch)");
                }
                if let Some(n) = t.throttle {
                    become_.push_str(&format!(" (at most {n} at once)"));
                }
                out.push_str(&format!(
                    "        {}{become_} {}\n",
                    style::green(t.module),
                    compact(&t.args)
                ));
                if let Some(f) = &t.file {
                    out.push_str(&format!(
                        "        → {}  sha256:{}  {}{}\n",
                        f.dest,
                        f.sha256.get(..16).unwrap_or(&f.sha256),
                        crate::util::count(f.bytes as u64, "byte", "bytes"),
                        if f.secret {
                            "  (reads a secret: not shown)"
                        } else {
                            ""
                        }
                    ));
                    if diff && let Some(c) = &f.content {
                        for line in c.lines() {
                            out.push_str(&format!("        {} {line}\n", style::green("+")));
                        }
                    }
                }
                if !t.notify.is_empty() {
                    out.push_str(&style::dim(&format!(
                        "        notifies: {}\n",
                        t.notify.join(", ")
                    )));
                }
            }
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "plan: {}, {} to run, {} decided on the host, {} skipped; nothing was contacted\n",
        crate::util::count(totals.0 as u64, "host-play", "host-plays"),
        crate::util::count(totals.1 as u64, "task", "tasks"),
        totals.3,
        totals.2
    ));
    out
}
