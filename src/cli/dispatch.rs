//! `fleet dispatch tasks.jsonl --out results.jsonl`: a batch of chats through HQ's gateway, as
//! many at once as the fleet has free slots. Each result is appended to the output as one JSON
//! line the moment it arrives, so a killed run loses nothing finished and a rerun skips every
//! id already there (resumable). A busy fleet (503) is waited for; a spending cap (429) or a
//! failed request fails that task. Exit 1 if any task failed.

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::hq_api::{Hq, error_message};
use crate::error::{Error, Result};
use crate::gateway::api::GatewayView;

/// Arguments of `fleet dispatch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tasks, one JSON object a line: `id`, `task` or `model`, `messages` or `prompt`
    /// (optional: `system`, `max_tokens`, `temperature`).
    #[arg(value_name = "TASKS.jsonl")]
    pub tasks: PathBuf,
    /// Where results go, one JSON line each (appended; ids already there are skipped).
    #[arg(long, value_name = "RESULTS.jsonl")]
    pub out: PathBuf,
    /// Requests at once (default: the free slots of the workers online now, plus the cloud's).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: Option<u32>,
    /// How long a task waits, retrying, while every worker is busy.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub busy_wait: Duration,
    /// A JSON summary on stdout at the end.
    #[arg(long)]
    pub json: bool,
    /// HQ's URL (default: the inventory's `fleet.hq_url`).
    #[arg(long, value_name = "URL")]
    pub hq: Option<String>,
}

/// One task of the input.
#[derive(Debug, Clone)]
struct Task {
    id: String,
    body: serde_json::Value,
}

const KEYS: &[&str] = &[
    "id",
    "task",
    "model",
    "messages",
    "prompt",
    "system",
    "max_tokens",
    "temperature",
];

/// Reads and checks every task first: a bad line is an error with its line number, before
/// anything is sent.
fn read_tasks(path: &Path) -> Result<Vec<Task>> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let at = format!("{}:{}", path.display(), i + 1);
        let line = line.map_err(|e| Error::Usage(format!("{at}: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let task = parse_task(&line).map_err(|e| Error::Usage(format!("{at}: {e}")))?;
        if !ids.insert(task.id.clone()) {
            return Err(Error::Usage(format!(
                "{at}: id `{}` appears twice",
                task.id
            )));
        }
        out.push(task);
    }
    Ok(out)
}

fn parse_task(line: &str) -> std::result::Result<Task, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let serde_json::Value::Object(o) = v else {
        return Err("each line must be a JSON object".into());
    };
    if let Some(k) = o.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!("unknown key `{k}` (known: {})", KEYS.join(", ")));
    }
    let id = match o.get("id") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => return Err("`id` (a string or number) is missing".into()),
    };
    let model = match (o.get("task"), o.get("model")) {
        (Some(serde_json::Value::String(t)), None) => format!("task:{t}"),
        (None, Some(serde_json::Value::String(m))) => m.clone(),
        (Some(_), Some(_)) => return Err("give `task` or `model`, not both".into()),
        _ => return Err("`task` or `model` (a string) is missing".into()),
    };
    let mut messages = Vec::new();
    if let Some(s) = o.get("system") {
        let s = s.as_str().ok_or("`system` must be a string")?;
        messages.push(serde_json::json!({"role": "system", "content": s}));
    }
    match (o.get("messages"), o.get("prompt")) {
        (Some(serde_json::Value::Array(ms)), None) if !ms.is_empty() => {
            messages.extend(ms.iter().cloned());
        }
        (None, Some(serde_json::Value::String(p))) => {
            messages.push(serde_json::json!({"role": "user", "content": p}));
        }
        (Some(_), Some(_)) => return Err("give `messages` or `prompt`, not both".into()),
        _ => return Err("`messages` (a non-empty array) or `prompt` (a string) is missing".into()),
    }
    let mut body = serde_json::json!({ "model": model, "messages": messages });
    for k in ["max_tokens", "temperature"] {
        if let Some(v) = o.get(k) {
            if !v.is_number() {
                return Err(format!("`{k}` must be a number"));
            }
            body[k] = v.clone();
        }
    }
    Ok(Task { id, body })
}

/// The ids already in the output; a last line cut short by a kill is removed first.
fn done_ids(out: &Path) -> Result<BTreeSet<String>> {
    let text = match std::fs::read(out) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(source) => {
            return Err(Error::Io {
                action: "read",
                path: out.to_path_buf(),
                source,
            });
        }
    };
    let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(out)
            .map_err(|source| Error::Io {
                action: "repair",
                path: out.to_path_buf(),
                source,
            })?;
        f.set_len(whole as u64).map_err(|source| Error::Io {
            action: "repair",
            path: out.to_path_buf(),
            source,
        })?;
    }
    let mut ids = BTreeSet::new();
    for (i, line) in String::from_utf8_lossy(&text[..whole]).lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            Error::Usage(format!(
                "{}:{}: not a result line ({e}); is it the right file?",
                out.display(),
                i + 1
            ))
        })?;
        match v.get("id").and_then(|i| i.as_str()) {
            Some(id) => ids.insert(id.to_string()),
            None => {
                return Err(Error::Usage(format!(
                    "{}:{}: a result line without `id`",
                    out.display(),
                    i + 1
                )));
            }
        };
    }
    Ok(ids)
}

/// What came of one task.
enum Outcome {
    Done { line: String, cost: f64 },
    Failed { id: String, why: String },
}

/// Free slots now: each online worker's free share of `max_concurrent` (a worker without a
/// limit counts 4), plus 4 when there is a cloud fallback.
fn free_slots(view: &GatewayView) -> u32 {
    let local: u32 = view
        .workers
        .iter()
        .filter(|w| w.status == "online" && w.breaker.state != "open")
        .map(|w| {
            let max = if w.max_concurrent == 0 {
                4
            } else {
                w.max_concurrent
            };
            max.saturating_sub(w.in_flight)
        })
        .sum();
    let cloud = if view.workers.iter().any(|w| w.status == "cloud") {
        4
    } else {
        0
    };
    (local + cloud).max(1)
}

async fn one(hq: &Hq, task: &Task, busy_wait: Duration) -> Outcome {
    let started = Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        let sent = hq
            .request(reqwest::Method::POST, "/v1/chat/completions")
            .json(&task.body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Failed {
                    id: task.id.clone(),
                    why: format!("HQ: {}", crate::hq::client::describe(&e)),
                };
            }
        };
        let status = resp.status();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let (worker, attempts, cost) = (
            header("x-fleet-worker"),
            header("x-fleet-attempts").parse::<u32>().unwrap_or(0),
            header("x-fleet-cost-usd").parse::<f64>().unwrap_or(0.0),
        );
        if status.as_u16() == 503 && started.elapsed() < busy_wait {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
            continue;
        }
        let body: serde_json::Value = match resp.json().await {
            Ok(b) => b,
            Err(e) => {
                return Outcome::Failed {
                    id: task.id.clone(),
                    why: format!("HQ answered {status} with a body that is not JSON: {e}"),
                };
            }
        };
        if !status.is_success() {
            return Outcome::Failed {
                id: task.id.clone(),
                why: format!("{status}: {}", error_message(&body)),
            };
        }
        let line = serde_json::json!({
            "id": task.id,
            "model": task.body["model"],
            "worker": worker,
            "attempts": attempts,
            "content": body["choices"][0]["message"]["content"],
            "usage": body["usage"],
            "cost_usd": cost,
            "latency_ms": (started.elapsed().as_secs_f64() * 1000.0).round(),
        });
        return Outcome::Done {
            line: line.to_string(),
            cost,
        };
    }
}

/// Runs `fleet dispatch`.
pub fn run(repo_dir: Option<&Path>, args: &Args) -> Result<u8> {
    let repo = crate::cli::load_repo(repo_dir)?;
    let tasks = read_tasks(&args.tasks)?;
    let already = done_ids(&args.out)?;
    let todo: Vec<Task> = tasks
        .into_iter()
        .filter(|t| !already.contains(&t.id))
        .collect();
    let skipped = already.len();
    let hq = Hq::for_repo(&repo, args.hq.as_deref(), None)?;
    crate::hq::client::block_on(dispatch(hq, todo, skipped, args)).map_err(Error::Failed)?
}

async fn dispatch(hq: Hq, todo: Vec<Task>, skipped: usize, args: &Args) -> Result<u8> {
    let concurrency = match args.concurrency {
        Some(n) => n,
        None => free_slots(&hq.get_json::<GatewayView>("/api/gateway").await?),
    };
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .map_err(|source| Error::Io {
            action: "open",
            path: args.out.clone(),
            source,
        })?;
    let total = todo.len() as u64;
    let bar = (!crate::cli::style::quiet() && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {msg} ({elapsed}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency as usize));
    let hq = Arc::new(hq);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Outcome>(1024);
    for task in todo {
        let (sem, hq, tx, wait) = (sem.clone(), hq.clone(), tx.clone(), args.busy_wait);
        tokio::spawn(async move {
            let Ok(_permit) = sem.acquire_owned().await else {
                return;
            };
            let _ = tx.send(one(&hq, &task, wait).await).await;
        });
    }
    drop(tx);
    let (mut done, mut failed, mut spend) = (0u64, Vec::new(), 0.0f64);
    while let Some(o) = rx.recv().await {
        match o {
            Outcome::Done { line, cost } => {
                // One write per line, flushed: a kill leaves whole lines (and at most one cut
                // short, which the next run removes).
                out.write_all(format!("{line}\n").as_bytes())
                    .and_then(|_| out.flush())
                    .map_err(|source| Error::Io {
                        action: "write",
                        path: args.out.clone(),
                        source,
                    })?;
                done += 1;
                spend += cost;
            }
            Outcome::Failed { id, why } => {
                if let Some(b) = &bar {
                    b.println(format!("task `{id}` failed: {why}"));
                } else {
                    crate::errln!("task `{id}` failed: {why}");
                }
                failed.push((id, why));
            }
        }
        if let Some(b) = &bar {
            b.inc(1);
            b.set_message(format!("done {done} failed {} ${spend:.4}", failed.len()));
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if args.json {
        let out = serde_json::json!({
            "done": done, "failed": failed.iter().map(|(id, why)| serde_json::json!({"id": id, "error": why})).collect::<Vec<_>>(),
            "skipped": skipped, "spend_usd": spend, "concurrency": concurrency,
        });
        crate::outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    crate::noteln!(
        "{done} done, {} failed, {skipped} skipped (already in {}); {concurrency} at once; cloud spend ${spend:.4}",
        failed.len(),
        args.out.display()
    );
    Ok(u8::from(!failed.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_checked_line_by_line() {
        let t = parse_task(r#"{"id": 7, "task": "chat", "prompt": "hi", "max_tokens": 5}"#)
            .expect("valid");
        assert_eq!(t.id, "7");
        assert_eq!(t.body["model"], "task:chat");
        assert_eq!(t.body["messages"][0]["content"], "hi");
        assert_eq!(t.body["max_tokens"], 5);
        for (line, want) in [
            ("[]", "JSON object"),
            (r#"{"task":"chat","prompt":"x"}"#, "`id`"),
            (r#"{"id":"a","prompt":"x"}"#, "`task` or `model`"),
            (
                r#"{"id":"a","task":"c","model":"m","prompt":"x"}"#,
                "not both",
            ),
            (r#"{"id":"a","task":"c"}"#, "`messages`"),
            (
                r#"{"id":"a","task":"c","prompt":"x","stream":true}"#,
                "unknown key `stream`",
            ),
            (
                r#"{"id":"a","task":"c","prompt":"x","max_tokens":"5"}"#,
                "must be a number",
            ),
        ] {
            let e = parse_task(line).expect_err("invalid");
            assert!(e.contains(want), "{line}: {e}");
        }
    }

    #[test]
    fn a_cut_line_is_removed_and_ids_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("r.jsonl");
        std::fs::write(&out, "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"c").expect("write");
        let ids = done_ids(&out).expect("ids");
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(
            std::fs::read_to_string(&out).expect("read"),
            "{\"id\":\"a\"}\n{\"id\":\"b\"}\n"
        );
    }
}
