//! `fleet route TASK`: which worker takes this task type now, and the fallback chain.

use std::path::Path;
use std::time::Duration;

use crate::cli::style;
use crate::error::{Diagnostic, Error, Result, did_you_mean};
use crate::render::routing;

/// Arguments of `fleet route`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The task type (a routing rule's `task`).
    #[arg(add = crate::cli::candidates::tasks())]
    pub task: String,
    /// JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Do not ask HQ for live status; route on the inventory alone.
    #[arg(long)]
    pub offline: bool,
}

/// Runs `fleet route`.
pub fn run(repo_dir: Option<&Path>, args: &Args) -> Result<u8> {
    let repo = crate::cli::load_repo(repo_dir)?;
    if !repo
        .inventory
        .routing
        .rules
        .iter()
        .any(|r| r.task.value == args.task)
    {
        let known: Vec<&str> = repo
            .inventory
            .routing
            .rules
            .iter()
            .map(|r| r.task.value.as_str())
            .collect();
        let help = did_you_mean(&args.task, known.iter().copied())
            .unwrap_or_else(|| format!("task types: {}", known.join(", ")));
        return Err(Error::config(
            Diagnostic::error(None, format!("no routing rule for task `{}`", args.task))
                .with_help(help),
        ));
    }
    let (live, source) = if args.offline {
        (None, "inventory (--offline)".to_string())
    } else {
        match crate::cli::render::live_status(&repo, Duration::from_secs(2)) {
            Ok(l) => (Some(l), "live status from HQ".to_string()),
            Err(why) if why.contains("HQ refused the read") => {
                (None, format!("inventory only: {why}"))
            }
            Err(why) => (None, format!("inventory only: HQ not reachable ({why})")),
        }
    };
    let status: Option<routing::StatusMap> = live.as_ref().map(|l| {
        l.iter()
            .map(|(k, v)| (k.clone(), v.status.clone()))
            .collect()
    });
    let (table, _) = routing::build(
        &repo,
        &|n| crate::facts::effective_hardware(&repo.root, n).0,
        status.as_ref(),
    );
    let Some(route) = routing::route(&table, &args.task) else {
        return Err(Error::Usage(format!(
            "no routing rule for task `{}`",
            args.task
        )));
    };
    if args.json {
        let v = serde_json::json!({ "route": route, "source": source });
        crate::outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(if route.target.is_some() { 0 } else { 1 });
    }
    let worker = |name: &str| table.workers.iter().find(|w| w.name == name);
    // A worker as one task's pool sees it: its endpoint for that task's service, its priority
    // in that pool (capped where it serves the model CPU-only).
    let describe = |name: &str, task: &str| -> String {
        if name == crate::spec::inventory::CLOUD_FALLBACK {
            if table.cloud_providers.is_empty() {
                return name.to_string();
            }
            let providers: Vec<String> = table
                .cloud_providers
                .iter()
                .map(|c| {
                    let key = match (&c.api_key_env, &c.api_key_file) {
                        (Some(e), _) => format!("${e}"),
                        (None, Some(f)) => f.clone(),
                        (None, None) => "?".into(),
                    };
                    format!("{} {}, key from {key}", c.provider, c.model)
                })
                .collect();
            return format!("{name} ({})", providers.join("; then "));
        }
        let rule = table.rules.iter().find(|r| r.task == task);
        match worker(name) {
            Some(w) => format!(
                "{name} (priority {}, {}{})",
                rule.and_then(|r| r.priorities.get(name).copied())
                    .unwrap_or(w.priority),
                rule.and_then(|r| w.endpoints.get(routing::rule_service(r)))
                    .unwrap_or(&w.endpoint),
                w.status
                    .as_ref()
                    .map(|s| format!(", {s}"))
                    .unwrap_or_default()
            ),
            None => name.to_string(),
        }
    };
    // The target is the pool's first worker, or the first of the chain that serves.
    let target_task = if route.pool.is_empty() {
        route
            .chain
            .iter()
            .find(|c| !c.workers.is_empty() || c.via == crate::spec::inventory::CLOUD_FALLBACK)
            .map_or(args.task.as_str(), |c| c.via.as_str())
    } else {
        args.task.as_str()
    };
    match &route.target {
        Some(t) => crate::outln!(
            "{} → {}",
            style::bold(&args.task),
            style::green(&describe(t, target_task))
        ),
        None => crate::outln!(
            "{} → {}",
            style::bold(&args.task),
            style::red("nobody: no worker and no fallback")
        ),
    }
    if !route.pool.is_empty() {
        crate::outln!(
            "  pool: {}",
            route
                .pool
                .iter()
                .map(|p| describe(p, &args.task))
                .collect::<Vec<_>>()
                .join(", ")
        );
    } else {
        crate::outln!("  pool: {}", style::yellow("empty"));
    }
    for step in &route.chain {
        if step.workers.is_empty() {
            crate::outln!("  then: {}", describe(&step.via, &step.via));
        } else {
            crate::outln!(
                "  then: {} → {}",
                step.via,
                step.workers
                    .iter()
                    .map(|w| describe(w, &step.via))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    crate::outln!("  {}", style::dim(&format!("({source})")));
    Ok(if route.target.is_some() { 0 } else { 1 })
}
