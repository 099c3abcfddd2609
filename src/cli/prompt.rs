//! `fleet prompt "TEXT"`: one chat through the fleet — HQ's gateway picks the worker (or the
//! cloud) — with the answer on stdout and who answered on stderr. `--direct` skips HQ: the
//! routing table is built from the repo and the workers are asked in order, for when HQ is
//! down.

use std::io::Read;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::cli::hq_api::{Hq, error_message};
use crate::error::{Error, Result};
use crate::gateway::select::{Candidate, candidates};
use crate::gateway::upstream::{self, Outgoing};
use crate::repo::Repo;

/// Arguments of `fleet prompt`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The prompt (`-` reads it from stdin).
    pub text: String,
    /// The task type whose routing rule serves it (default: the first rule with a model).
    #[arg(long, conflicts_with = "model", value_name = "TYPE")]
    pub task: Option<String>,
    /// A model name instead: the workers holding it, then the cloud.
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// A system message before the prompt.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// The most tokens to generate.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u32>,
    /// Print the answer as it is generated.
    #[arg(long)]
    pub stream: bool,
    /// The whole answer as JSON (with `--stream`: each chunk, one JSON object a line).
    #[arg(long)]
    pub json: bool,
    /// Do not go through HQ: route with the repo's own table and ask the workers directly.
    #[arg(long)]
    pub direct: bool,
    /// HQ's URL (default: the inventory's `fleet.hq_url`).
    #[arg(long, value_name = "URL", conflicts_with = "direct")]
    pub hq: Option<String>,
}

/// What was asked for: `task:<type>` or a model name.
pub fn wanted(repo: &Repo, task: Option<&str>, model: Option<&str>) -> Result<String> {
    if let Some(m) = model {
        return Ok(m.to_string());
    }
    if let Some(t) = task {
        return Ok(format!("task:{t}"));
    }
    repo.inventory
        .routing
        .rules
        .iter()
        .find(|r| r.model.is_some())
        .map(|r| format!("task:{}", r.task.value))
        .ok_or_else(|| {
            Error::Usage(
                "the inventory has no routing rule with a model; pass `--task TYPE` or `--model NAME`"
                    .into(),
            )
        })
}

/// Runs `fleet prompt`.
pub fn run(repo_dir: Option<&std::path::Path>, args: &Args) -> Result<u8> {
    let repo = crate::cli::load_repo(repo_dir)?;
    let text = if args.text == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Error::Usage(format!("cannot read the prompt from stdin: {e}")))?;
        s
    } else {
        args.text.clone()
    };
    let model = wanted(&repo, args.task.as_deref(), args.model.as_deref())?;
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(serde_json::json!({"role": "system", "content": s}));
    }
    messages.push(serde_json::json!({"role": "user", "content": text}));
    let mut body =
        serde_json::json!({ "model": model, "messages": messages, "stream": args.stream });
    if let Some(n) = args.max_tokens {
        body["max_tokens"] = n.into();
    }
    crate::hq::client::block_on(async {
        if args.direct {
            direct(&repo, &model, body, args).await
        } else {
            let hq = Hq::for_repo(&repo, args.hq.as_deref(), None)?;
            through_hq(&hq, body, args).await
        }
    })
    .map_err(Error::Failed)?
}

/// Who answered, for the note on stderr.
struct Answered {
    worker: String,
    attempts: String,
    cost: Option<String>,
    started: Instant,
}

impl Answered {
    fn note(&self) {
        let cost = self
            .cost
            .as_deref()
            .map(|c| format!(", ${c}"))
            .unwrap_or_default();
        crate::noteln!(
            "— {} ({} attempt{}, {:.2} s{cost})",
            self.worker,
            self.attempts,
            if self.attempts == "1" { "" } else { "s" },
            self.started.elapsed().as_secs_f64()
        );
    }
}

async fn through_hq(hq: &Hq, body: serde_json::Value, args: &Args) -> Result<u8> {
    let started = Instant::now();
    let resp = hq
        .request(reqwest::Method::POST, "/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .map_err(|e| {
            Error::Failed(format!(
                "HQ at {}: {} (`--direct` asks the workers without HQ)",
                hq.url,
                crate::hq::client::describe(&e)
            ))
        })?;
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let answered = Answered {
        worker: header("x-fleet-worker"),
        attempts: header("x-fleet-attempts"),
        cost: Some(header("x-fleet-cost-usd")).filter(|c| !c.is_empty()),
        started,
    };
    let status = resp.status();
    if !status.is_success() {
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let msg = format!("HQ answered {status}: {}", error_message(&body));
        return Err(match status.as_u16() {
            400 | 401 | 403 | 404 | 413 => Error::Usage(msg),
            _ => Error::Failed(msg),
        });
    }
    show(resp, args, answered).await
}

async fn direct(repo: &Repo, model: &str, body: serde_json::Value, args: &Args) -> Result<u8> {
    let started = Instant::now();
    let facts = crate::facts::FactsCache::open(&repo.root);
    let (table, _) = crate::render::routing::build(repo, &|n| facts.hardware(n).0, None);
    let list = candidates(&table, model).map_err(|e| Error::Usage(e.to_string()))?;
    crate::hq::client::init_tls();
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| Error::Failed(format!("cannot build an HTTP client: {e}")))?;
    let mut failed = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let Candidate::Node {
            name,
            base,
            model: m,
            ..
        } = c
        else {
            continue;
        };
        let mut b = body.clone();
        b["model"] = m.clone().into();
        let out = Outgoing {
            url: format!("{base}/v1/chat/completions"),
            headers: Vec::new(),
            body: Bytes::from(serde_json::to_vec(&b).unwrap_or_default()),
        };
        match upstream::start(&client, out, Duration::from_secs(120)).await {
            Ok(a) if a.status.is_success() => {
                let answered = Answered {
                    worker: name.clone(),
                    attempts: (i + 1).to_string(),
                    cost: None,
                    started,
                };
                return show_direct(a, args, answered).await;
            }
            Ok(a) => failed.push(format!("{name}: answered {}", a.status)),
            Err(f) => failed.push(format!("{name}: {f}")),
        }
    }
    Err(Error::Failed(if failed.is_empty() {
        format!("no worker serves `{model}` (direct mode asks only the fleet's workers)")
    } else {
        format!("no worker answered `{model}`: {}", failed.join("; "))
    }))
}

/// Prints an answer that came through HQ.
async fn show(mut resp: reqwest::Response, args: &Args, who: Answered) -> Result<u8> {
    if args.stream {
        let mut sse = Sse::default();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Error::Failed(format!("the answer broke off: {e}")))?
        {
            sse.feed(&chunk, args.json);
        }
        sse.end(args.json)?;
        who.note();
        return Ok(0);
    }
    let v: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| Error::Failed(format!("unexpected answer: {e}")))?;
    print_whole(&v, args, &who);
    Ok(0)
}

/// Prints an answer a worker gave directly.
async fn show_direct(mut a: upstream::Answer, args: &Args, who: Answered) -> Result<u8> {
    if args.stream {
        let mut sse = Sse::default();
        sse.feed(&a.first, args.json);
        while let Some(chunk) = a
            .rest
            .chunk()
            .await
            .map_err(|e| Error::Failed(format!("the answer broke off: {e}")))?
        {
            sse.feed(&chunk, args.json);
        }
        sse.end(args.json)?;
        who.note();
        return Ok(0);
    }
    let body = upstream::read_rest(&mut a, Duration::from_secs(120), 32 * 1024 * 1024)
        .await
        .map_err(|e| Error::Failed(format!("the answer broke off: {e}")))?;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Error::Failed(format!("unexpected answer: {e}")))?;
    print_whole(&v, args, &who);
    Ok(0)
}

fn print_whole(v: &serde_json::Value, args: &Args, who: &Answered) {
    if args.json {
        let out = serde_json::json!({
            "worker": who.worker,
            "attempts": who.attempts.parse::<u32>().unwrap_or(0),
            "cost_usd": who.cost.as_deref().and_then(|c| c.parse::<f64>().ok()),
            "latency_ms": (who.started.elapsed().as_secs_f64() * 1000.0).round(),
            "response": v,
        });
        crate::outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        crate::outln!(
            "{}",
            v["choices"][0]["message"]["content"].as_str().unwrap_or("")
        );
        who.note();
    }
}

/// Server-sent events as they arrive: each `data:` payload printed (its text, or the chunk as
/// a JSON line); `[DONE]` ends it.
#[derive(Default)]
struct Sse {
    buf: Vec<u8>,
    done: bool,
    printed: bool,
}

impl Sse {
    fn feed(&mut self, bytes: &[u8], json: bool) {
        self.buf.extend_from_slice(bytes);
        while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.buf.drain(..end + 2).collect();
            for line in String::from_utf8_lossy(&event).lines() {
                let Some(data) = line.strip_prefix("data:").map(str::trim) else {
                    continue;
                };
                if data == "[DONE]" {
                    self.done = true;
                    continue;
                }
                let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
                    continue;
                };
                if json {
                    crate::outln!("{v}");
                } else if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                    crate::out!("{t}");
                    self.printed = true;
                }
            }
        }
    }

    fn end(&self, json: bool) -> Result<()> {
        if self.printed && !json {
            crate::outln!();
        }
        if self.done {
            Ok(())
        } else {
            Err(Error::Failed(
                "the stream ended without `[DONE]`: the worker broke off".into(),
            ))
        }
    }
}
