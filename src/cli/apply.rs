//! `fleet apply PLAYBOOK`: run a playbook on its hosts over SSH (`--check` predicts, changes nothing).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use tokio::sync::mpsc;

use crate::cli::style;
use crate::engine::events::{Event, HostRecap, Status};
use crate::engine::{RunOptions, Shared, run_playbook};
use crate::error::{Error, Result};
use crate::inventory::vars::ExtraVars;
use crate::template::Library;

/// Arguments of `fleet apply`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The playbook.
    #[arg(add = crate::cli::candidates::playbooks())]
    pub playbook: PathBuf,
    /// Only hosts matching this pattern.
    #[arg(short, long, add = crate::cli::candidates::patterns())]
    pub limit: Option<String>,
    /// Only tasks with these tags (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Skip tasks with these tags.
    #[arg(long, value_delimiter = ',')]
    pub skip_tags: Vec<String>,
    /// Predict what would change; change nothing.
    #[arg(long)]
    pub check: bool,
    /// Show unified diffs of files.
    #[arg(long)]
    pub diff: bool,
    /// Hosts at once.
    #[arg(long, default_value_t = 50)]
    pub forks: usize,
    /// Extra variables, highest precedence: `-e key=value`, `-e @vars.yaml`, `-e '{"key": 1}'`.
    #[arg(short = 'e', long = "extra-vars", value_name = "KEY=VALUE")]
    pub extra: Vec<String>,
    /// An ssh config file (`-F`), instead of the inventory's `ssh_config`.
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// JSON lines on stdout instead of the human output.
    #[arg(long)]
    pub json: bool,
    /// List each play's hosts (after --limit) and stop; nothing is contacted.
    #[arg(long)]
    pub list_hosts: bool,
    /// List each play's tasks (after --tags/--skip-tags) and stop.
    #[arg(long)]
    pub list_tasks: bool,
    /// List the tags the playbook's tasks carry and stop.
    #[arg(long)]
    pub list_tags: bool,
    /// Start at the first task with this name (every task before it is left out).
    #[arg(long, value_name = "NAME")]
    pub start_at_task: Option<String>,
    /// Ask on the terminal before each task: y (run it), n (skip it), c (run the rest).
    #[arg(long)]
    pub step: bool,
    /// The sudo password.
    #[command(flatten)]
    pub become_pass: crate::cli::become_pass::AskBecomePass,
    /// Use cached facts younger than this (`10m`, `1h`) instead of gathering them again.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub facts_max_age: Option<Duration>,
}

/// `--start-at-task NAME` must name a task of the playbook (its roles' included).
fn check_start_at(
    repo: &crate::repo::Repo,
    pb: &crate::spec::playbook::Playbook,
    name: &str,
) -> Result<()> {
    let names: Vec<String> = pb
        .plays
        .iter()
        .filter_map(|p| crate::play::expand(&repo.roles, p).ok())
        .flat_map(|e| {
            e.tasks
                .iter()
                .map(|(_, t)| t.name.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    if names.iter().any(|n| n == name) {
        return Ok(());
    }
    let mut close: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| strsim::jaro_winkler(n, name) > 0.8 || n.contains(name))
        .collect();
    close.dedup();
    let help = if close.is_empty() {
        "`fleet apply PLAYBOOK --list-tasks` lists the task names".to_string()
    } else {
        format!(
            "close names: {}",
            close
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(Error::Usage(format!(
        "--start-at-task: no task of this playbook is named `{name}`\n  help: {help}"
    )))
}

/// Every tag the playbook's tasks (its roles' included) carry, and where each play's tasks
/// come from.
fn playbook_tags(
    repo: &crate::repo::Repo,
    pb: &crate::spec::playbook::Playbook,
) -> std::collections::BTreeSet<String> {
    pb.plays
        .iter()
        .filter_map(|p| crate::play::expand(&repo.roles, p).ok())
        .flat_map(|e| {
            e.tasks
                .iter()
                .chain(e.handlers.iter())
                .flat_map(|(_, t)| t.tags.clone())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether `--tags`/`--skip-tags` select a task (as the engine decides).
fn selected(tags: &[String], skip: &[String], task: &crate::spec::task::Task) -> bool {
    if task.tags.iter().any(|t| skip.contains(t)) {
        return false;
    }
    tags.is_empty() || task.tags.iter().any(|t| tags.contains(t) || t == "always")
}

/// `--list-hosts`, `--list-tasks`, `--list-tags`: what a run would touch, from the repo alone.
fn list(
    repo: &crate::repo::Repo,
    pb: &crate::spec::playbook::Playbook,
    args: &Args,
    extra: &ExtraVars,
) -> Result<u8> {
    if args.list_tags {
        let tags = playbook_tags(repo, pb);
        crate::outln!(
            "{}",
            if tags.is_empty() {
                "(no tags)".to_string()
            } else {
                tags.into_iter().collect::<Vec<_>>().join(", ")
            }
        );
    }
    if args.list_hosts {
        let library = Library::new(&repo.templates);
        let (plan, diags) = crate::plan::plan_playbook(
            repo,
            &library,
            pb,
            &crate::plan::PlanOptions {
                limit: args.limit.clone(),
                extra: extra.clone(),
                with_content: false,
            },
        );
        if diags.has_errors() {
            return Err(Error::Config(diags));
        }
        for (play, spec) in plan.plays.iter().zip(&pb.plays) {
            let names: Vec<&str> = play.targets.iter().map(|t| t.node.as_str()).collect();
            // A rolling play shows its batches: `h1 | h2, h3`.
            let hosts = crate::spec::playbook::batches(&names, &spec.serial)
                .iter()
                .map(|b| b.join(", "))
                .collect::<Vec<_>>()
                .join(" | ");
            crate::outln!(
                "play {} ({}): {hosts}",
                play.name,
                crate::util::count(play.targets.len() as u64, "host", "hosts"),
            );
        }
    }
    if args.list_tasks {
        for play in &pb.plays {
            let expanded = crate::play::expand(&repo.roles, play).map_err(Error::config)?;
            crate::outln!("play {}:", play.name);
            for (role, t) in &expanded.tasks {
                if !selected(&args.tags, &args.skip_tags, t) {
                    continue;
                }
                let tags = if t.tags.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", t.tags.join(", "))
                };
                match role {
                    Some(r) => crate::outln!("  {r}: {}{tags}", t.name),
                    None => crate::outln!("  {}{tags}", t.name),
                }
            }
        }
    }
    Ok(0)
}

/// `--tags`/`--skip-tags` that no task carries are typos, not a request to run nothing.
fn check_tags(
    repo: &crate::repo::Repo,
    pb: &crate::spec::playbook::Playbook,
    args: &Args,
) -> Result<()> {
    let known = playbook_tags(repo, pb);
    for t in args.tags.iter().chain(args.skip_tags.iter()) {
        if t == "always" || known.contains(t) {
            continue;
        }
        let help =
            crate::error::did_you_mean(t, known.iter().map(String::as_str)).unwrap_or_else(|| {
                if known.is_empty() {
                    "this playbook's tasks carry no tags".to_string()
                } else {
                    format!(
                        "tags in this playbook: {}",
                        known.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                }
            });
        return Err(Error::Usage(format!(
            "no task of this playbook has the tag `{t}`\n  help: {help}"
        )));
    }
    Ok(())
}

/// Prints events as they come: human lines or JSON lines. Returns the recap. `asking`: the
/// run asks questions on the terminal (`--step`), so no progress line is drawn over them.
pub async fn report(
    mut rx: mpsc::UnboundedReceiver<Event>,
    json: bool,
    verbose: bool,
    check: bool,
    asking: bool,
) -> Vec<(String, HostRecap)> {
    let mut recap = Vec::new();
    // A progress line per play on a terminal; output lines go above it.
    let bars = !json && !asking && !style::quiet() && std::io::stdout().is_terminal();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let (mut done, mut changed, mut failed) = (0u32, 0u32, 0u32);
    let say = |bar: &Option<indicatif::ProgressBar>, text: String| match bar {
        Some(b) => b.println(text),
        None => crate::outln!("{text}"),
    };
    while let Some(e) = rx.recv().await {
        if json {
            crate::outln!("{}", serde_json::to_string(&e).unwrap_or_default());
            if e.event == "recap" {
                recap.push((e.host.clone(), e.counts.unwrap_or_default()));
            }
            continue;
        }
        match (e.event, e.status) {
            ("play", _) => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                (done, changed, failed) = (0, 0, 0);
                crate::outln!(
                    "{} {} {}",
                    style::bold("PLAY"),
                    style::bold(&e.task),
                    style::dim(&format!(
                        "({}{})",
                        crate::util::count(e.hosts.unwrap_or(0) as u64, "host", "hosts"),
                        if check { ", check mode" } else { "" }
                    ))
                );
                if bars {
                    let b = indicatif::ProgressBar::new_spinner();
                    b.set_style(
                        indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                    );
                    b.enable_steady_tick(std::time::Duration::from_millis(120));
                    b.set_message(format!("{}: starting", e.task));
                    bar = Some(b);
                }
            }
            ("recap", _) => recap.push((e.host.clone(), e.counts.unwrap_or_default())),
            ("batch", _) if !style::quiet() => {
                say(
                    &bar,
                    style::dim(&format!("  {}", e.msg.as_deref().unwrap_or(""))),
                );
            }
            ("stop", _) => {
                let text = format!(
                    "  {} {}",
                    style::red("stopped"),
                    e.msg.as_deref().unwrap_or("")
                );
                if style::quiet() {
                    crate::errln!("{text}");
                } else {
                    say(&bar, text);
                }
            }
            (_, Some(s)) => {
                done += 1;
                changed += u32::from(s == Status::Changed);
                failed += u32::from(matches!(s, Status::Failed | Status::Unreachable));
                if let Some(b) = &bar {
                    b.set_message(format!(
                        "{} done, {changed} changed, {failed} failed",
                        crate::util::count(done, "task", "tasks")
                    ));
                }
                let item = e
                    .item
                    .as_ref()
                    .map(|i| {
                        format!(
                            " [{}]",
                            i.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| i.to_string())
                        )
                    })
                    .unwrap_or_default();
                let label = match s {
                    Status::Changed if check => style::yellow("would change"),
                    Status::Changed => style::yellow("changed"),
                    Status::Failed => style::red("failed"),
                    Status::Unreachable => style::red("unreachable"),
                    Status::Ok => style::green("ok"),
                    Status::Skipped => style::dim("skipped"),
                };
                let bad = matches!(s, Status::Failed | Status::Unreachable);
                let show = bad
                    || s == Status::Changed
                    || verbose
                    || e.stdout.is_some()
                    || (e.module.as_deref() == Some("debug") && s == Status::Ok);
                if style::quiet() {
                    // Errors only: what failed, on stderr (stdout is silent under -q).
                    if bad {
                        let handler = if e.event == "handler" { "handler " } else { "" };
                        crate::errln!(
                            "{} {}: {handler}{}{item}{}",
                            label,
                            e.host,
                            e.task,
                            e.msg
                                .as_ref()
                                .map(|m| format!(" — {m}"))
                                .unwrap_or_default()
                        );
                    }
                } else if show {
                    let handler = if e.event == "handler" { "handler " } else { "" };
                    say(
                        &bar,
                        format!(
                            "  {label:<12} {}: {handler}{}{item}{}",
                            e.host,
                            e.task,
                            e.msg
                                .as_ref()
                                .map(|m| format!(" — {m}"))
                                .unwrap_or_default()
                        ),
                    );
                    // A command's output (ad-hoc runs), under its host's line.
                    let said = |t: &Option<String>| t.as_deref().is_some_and(|t| !t.is_empty());
                    if said(&e.stdout) || said(&e.stderr) || e.rc.is_some_and(|rc| rc != 0) {
                        say(&bar, style::dim(&format!("    rc={}", e.rc.unwrap_or(-1))));
                    }
                    for (text, err) in [(&e.stdout, false), (&e.stderr, true)] {
                        for line in text.as_deref().unwrap_or("").lines() {
                            say(
                                &bar,
                                if err {
                                    format!("    {} {}", style::red("!"), line)
                                } else {
                                    format!("    {} {line}", style::dim("|"))
                                },
                            );
                        }
                    }
                    if let Some(d) = &e.diff {
                        for line in d.lines() {
                            let l = match line.chars().next() {
                                Some('+') if !line.starts_with("+++") => style::green(line),
                                Some('-') if !line.starts_with("---") => style::red(line),
                                _ => style::dim(line),
                            };
                            say(&bar, format!("      {l}"));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    recap
}

/// The recap table.
pub fn recap_table(recap: &[(String, HostRecap)]) -> String {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    // `rescued` and `not reached` only when a host has one.
    let rescued = recap.iter().any(|(_, r)| r.rescued > 0);
    let not_reached = recap.iter().any(|(_, r)| r.not_reached > 0);
    let mut header = vec!["host", "ok", "changed", "failed", "unreachable", "skipped"];
    if rescued {
        header.push("rescued");
    }
    if not_reached {
        header.push("not reached");
    }
    t.set_header(header);
    for (h, r) in recap {
        let mut row = vec![
            h.clone(),
            r.ok.to_string(),
            r.changed.to_string(),
            r.failed.to_string(),
            r.unreachable.to_string(),
            r.skipped.to_string(),
        ];
        if rescued {
            row.push(r.rescued.to_string());
        }
        if not_reached {
            row.push(if r.not_reached > 0 { "yes" } else { "" }.to_string());
        }
        t.add_row(row);
    }
    t.to_string()
}

/// Runs `fleet apply`.
pub fn run(repo_dir: Option<&Path>, args: &Args, verbose: bool) -> Result<u8> {
    let repo = crate::cli::load_repo(repo_dir)?;
    let extra = ExtraVars::parse(&args.extra).map_err(Error::Usage)?;
    let (pb, diags) = repo.load_playbook(&args.playbook)?;
    if diags.has_errors() {
        return Err(Error::Config(diags));
    }
    check_tags(&repo, &pb, args)?;
    if let Some(name) = &args.start_at_task {
        check_start_at(&repo, &pb, name)?;
    }
    if args.step && !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(Error::Usage(
            "--step asks before each task on the terminal, and there is none here (stdin or stderr is not a terminal)\n  help: run it from a terminal, or use --start-at-task/--tags to choose tasks without asking".into(),
        ));
    }
    if args.step && args.json {
        return Err(Error::Usage(
            "--step asks on the terminal; --json output is for programs: use one of them".into(),
        ));
    }
    if args.list_hosts || args.list_tasks || args.list_tags {
        return list(&repo, &pb, args, &extra);
    }
    let opts = RunOptions {
        check: args.check,
        diff: args.diff,
        forks: args.forks.max(1),
        limit: args.limit.clone(),
        tags: args.tags.clone(),
        skip_tags: args.skip_tags.clone(),
        extra,
        ssh_config: args.ssh_config.clone(),
        connect_timeout: Duration::from_secs(10),
        show_output: false,
        start_at_task: args.start_at_task.clone(),
        step: args.step,
        become_password: args.become_pass.read()?,
        facts_max_age: args.facts_max_age,
    };
    execute(repo, pb, opts, args.json, verbose)
}

/// Plans `pb` (nothing runs unless it renders for every host: exit 2, nothing touched), runs
/// it, reports as it goes, prints the recap; exit 1 when a host failed or was unreachable.
/// `fleet apply` and the ad-hoc commands share it.
pub fn execute(
    repo: crate::repo::Repo,
    pb: crate::spec::playbook::Playbook,
    opts: RunOptions,
    json: bool,
    verbose: bool,
) -> Result<u8> {
    let library = Library::new(&repo.templates);
    let (mut plan, mut plan_diags) = crate::plan::plan_playbook(
        &repo,
        &library,
        &pb,
        &crate::plan::PlanOptions {
            limit: opts.limit.clone(),
            extra: opts.extra.clone(),
            with_content: false,
        },
    );
    if plan_diags.has_errors() {
        return Err(Error::Config(plan_diags));
    }
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let (check, asking) = (opts.check, opts.step);
    let shared = Arc::new(Shared {
        repo,
        library,
        opts,
        nodes: Default::default(),
        steps: Default::default(),
    });
    let rt = crate::cli::runtime()?;
    // Every node's agent binary is known before any task runs anywhere.
    rt.block_on(crate::cli::agent_platforms::learn_agent_platforms(
        &shared, &mut plan,
    ));
    plan_diags.extend(crate::plan::missing_agent_binaries(
        &shared.repo.root,
        &plan,
        true,
    ));
    if plan_diags.has_errors() {
        return Err(Error::Config(plan_diags));
    }
    let recap = rt.block_on(async {
        let (tx, rx) = mpsc::unbounded_channel();
        let reporter = tokio::spawn(report(rx, json, verbose, check, asking));
        let pb = Arc::new(pb);
        run_playbook(shared, pb, tx).await;
        reporter.await.unwrap_or_default()
    });
    if !json {
        crate::outln!("\n{}", recap_table(&recap));
    }
    let bad: Vec<&str> = recap
        .iter()
        .filter(|(_, r)| r.failed > 0 || r.unreachable > 0)
        .map(|(h, _)| h.as_str())
        .collect();
    let unreached: Vec<&str> = recap
        .iter()
        .filter(|(_, r)| r.not_reached > 0 && r.failed == 0 && r.unreachable == 0)
        .map(|(h, _)| h.as_str())
        .collect();
    if bad.is_empty() && unreached.is_empty() {
        Ok(0)
    } else {
        let mut msg = format!(
            "{} host{} failed or unreachable: {}",
            bad.len(),
            if bad.len() == 1 { "" } else { "s" },
            bad.join(", ")
        );
        if !unreached.is_empty() {
            msg.push_str(&format!(
                "; the run stopped before {}: {}",
                crate::util::count(unreached.len() as u64, "host", "hosts"),
                unreached.join(", ")
            ));
        }
        Err(Error::Failed(msg))
    }
}
