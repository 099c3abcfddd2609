//! The two halves of the gateway benchmark (`scripts/bench-gateway`, docs/benchmarks.md):
//!
//! - `upstream`: a fast stand-in for the workers' Ollama and for an OpenAI-compatible cloud
//!   provider. Each `--serve NAME=MODEL[,MODEL…]` is one listener on a free loopback port
//!   answering `POST /v1/chat/completions` (OpenAI shape, with a usage block) after a fixed
//!   latency, and `GET /api/tags` / `/api/version` so `fleet agent` reports the node online.
//!   Every answer says who served it and how long the upstream held it, measured in the
//!   upstream (`"<name> held <µs>us"`), so the client can subtract the upstream's real time
//!   (the timer rounds a 20 ms sleep up by up to a millisecond, as much as the target itself).
//! - `load`: an open-loop load generator. Requests leave at a fixed rate whatever the answers
//!   do, over at most `--connections` connections; a request that finds every connection busy
//!   waits for one and that wait counts in its latency (no coordinated omission). It prints one
//!   JSON object: sent, ok, errors by status, client latency and gateway overhead (client
//!   latency minus the upstream's held time) percentiles, offered and achieved rates, which
//!   upstream served the answers, and the CPU the named processes used during the run.
//!
//! ```text
//! gateway_bench upstream --serve a1=llama3.1:8b --serve cloud=gpt-4o-mini --latency 20ms --ports-file F
//! BENCH_TOKEN=… gateway_bench load --url http://127.0.0.1:8765/v1/chat/completions \
//!     --model task:chat --model task:reason --rate 2000 --duration 10s --cpu gateway=PID
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt as _;
use bytes::Bytes;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Upstream stand-in and open-loop load generator for scripts/bench-gateway")]
enum Cli {
    /// Serve OpenAI-shaped chats after a fixed latency, one loopback listener per `--serve`.
    Upstream(UpstreamArgs),
    /// Send chats at a fixed rate and print what happened as JSON.
    Load(LoadArgs),
}

#[derive(Debug, clap::Args)]
struct UpstreamArgs {
    /// `NAME=MODEL[,MODEL…]`: a listener on a free port of 127.0.0.1 holding these models.
    #[arg(long = "serve", required = true, value_name = "NAME=MODELS")]
    serve: Vec<String>,
    /// How long each chat is held before its answer.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// Written once every listener is bound: one `NAME PORT` line per listener.
    #[arg(long, value_name = "PATH")]
    ports_file: PathBuf,
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// The chat completions URL (`http://127.0.0.1:PORT/v1/chat/completions`).
    #[arg(long)]
    url: String,
    /// The bearer token, from the environment only (so it is not in the process list).
    #[arg(long, env = "BENCH_TOKEN", hide = true, hide_env_values = true)]
    token: Option<String>,
    /// Requests per second.
    #[arg(long)]
    rate: f64,
    /// How long the measured part sends.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Sent at the same rate before the measured part and not counted (connections open,
    /// caches fill); the measured part starts when every warm-up request has ended.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Connections at most (requests in flight at most).
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// The `model` of the requests, taken in turn (repeatable).
    #[arg(long = "model", required = true)]
    models: Vec<String>,
    /// The upstream's nominal latency: subtracted when an answer does not say its held time.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// A request not answered within this long after it was due is an error (`timeout`).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// `NAME=PID`: report the CPU that process and its descendants used (repeatable; `self`
    /// is the load generator).
    #[arg(long = "cpu", value_name = "NAME=PID")]
    cpu: Vec<String>,
    /// A label copied into the output.
    #[arg(long, default_value = "")]
    label: String,
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(&format!("cannot start the runtime: {e}")),
    };
    let result = match cli {
        Cli::Upstream(a) => rt.block_on(upstream(a)),
        Cli::Load(a) => rt.block_on(load(a)).map(|report| {
            let mut out = std::io::stdout().lock();
            let _ = serde_json::to_writer_pretty(&mut out, &report);
            let _ = writeln!(out);
        }),
    };
    if let Err(e) = result {
        fail(&e);
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("gateway_bench: {msg}");
    std::process::exit(2);
}

// ---------------------------------------------------------------------------------------
// Upstream stand-in

/// One listener of the stand-in.
struct Upstream {
    name: String,
    models: Vec<String>,
    latency: Duration,
    served: AtomicU64,
}

/// `NAME=MODEL[,MODEL…]` → (name, models).
fn parse_serve(spec: &str) -> Result<(String, Vec<String>), String> {
    let (name, models) = spec
        .split_once('=')
        .ok_or_else(|| format!("`--serve {spec}`: expected NAME=MODEL[,MODEL…]"))?;
    let models: Vec<String> = models
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect();
    if name.trim().is_empty() || models.is_empty() {
        return Err(format!(
            "`--serve {spec}`: expected NAME=MODEL[,MODEL…] with a name and a model"
        ));
    }
    Ok((name.trim().to_string(), models))
}

async fn upstream(a: UpstreamArgs) -> Result<(), String> {
    let mut ports = String::new();
    let mut servers = Vec::new();
    for spec in &a.serve {
        let (name, models) = parse_serve(spec)?;
        // Loopback only: the benchmark never listens where other machines can reach it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot bind a loopback port for `{name}`: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        ports.push_str(&format!("{name} {port}\n"));
        let up = Arc::new(Upstream {
            name,
            models,
            latency: a.latency,
            served: AtomicU64::new(0),
        });
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(chat))
            .route("/api/tags", axum::routing::get(tags))
            .route(
                "/api/version",
                axum::routing::get(|| async {
                    axum::Json(serde_json::json!({"version": "0.5.7"}))
                }),
            )
            .route("/bench/served", axum::routing::get(served))
            .with_state(up);
        servers.push(tokio::spawn(async move {
            // Small answers go out at once, as a real server's would (no Nagle delay).
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app).await
        }));
    }
    // Written whole and renamed, so a reader never sees half the ports.
    let tmp = a.ports_file.with_extension("tmp");
    std::fs::write(&tmp, ports)
        .and_then(|_| std::fs::rename(&tmp, &a.ports_file))
        .map_err(|e| format!("cannot write {}: {e}", a.ports_file.display()))?;
    for s in servers {
        match s.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("a listener stopped: {e}")),
            Err(e) => return Err(format!("a listener panicked: {e}")),
        }
    }
    Ok(())
}

async fn tags(State(up): State<Arc<Upstream>>) -> Response {
    let models: Vec<serde_json::Value> = up
        .models
        .iter()
        .map(|m| serde_json::json!({"name": m, "model": m, "size": 4_000_000_000u64}))
        .collect();
    axum::Json(serde_json::json!({ "models": models })).into_response()
}

async fn served(State(up): State<Arc<Upstream>>) -> Response {
    axum::Json(serde_json::json!({"name": up.name, "served": up.served.load(Ordering::Relaxed)}))
        .into_response()
}

/// The part of a chat request the stand-in reads.
#[derive(serde::Deserialize)]
struct ChatRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    messages: Vec<serde_json::Value>,
}

async fn chat(State(up): State<Arc<Upstream>>, body: Bytes) -> Response {
    let t0 = Instant::now();
    let req: ChatRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let msg = serde_json::json!({"error": {"message": format!("not a chat request: {e}")}});
            return (StatusCode::BAD_REQUEST, axum::Json(msg)).into_response();
        }
    };
    tokio::time::sleep(up.latency).await;
    up.served.fetch_add(1, Ordering::Relaxed);
    // About four characters a token, as the usage block of a real answer would count them.
    let prompt_tokens = req
        .messages
        .iter()
        .map(|m| m["content"].as_str().map_or(0, str::len))
        .sum::<usize>()
        .div_ceil(4)
        .max(1);
    let held = t0.elapsed().as_micros();
    let content = format!("{} held {held}us", up.name);
    if req.stream {
        let chunk = serde_json::json!({
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": req.model,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 4, "total_tokens": prompt_tokens + 4}
        });
        let body = format!("data: {chunk}\n\ndata: [DONE]\n\n");
        return ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response();
    }
    axum::Json(serde_json::json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": req.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 4, "total_tokens": prompt_tokens + 4}
    }))
    .into_response()
}

/// Who served an answer and how long it was held, from its content (`"<name> held <µs>us"`).
fn served_by(body: &[u8]) -> Option<(String, Duration)> {
    #[derive(serde::Deserialize)]
    struct Message {
        content: String,
    }
    #[derive(serde::Deserialize)]
    struct Choice {
        message: Message,
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        choices: Vec<Choice>,
    }
    let a: Answer = serde_json::from_slice(body).ok()?;
    let content = &a.choices.first()?.message.content;
    let (name, rest) = content.split_once(" held ")?;
    let us: u64 = rest.strip_suffix("us")?.parse().ok()?;
    Some((name.to_string(), Duration::from_micros(us)))
}

// ---------------------------------------------------------------------------------------
// Load generator

/// What happened to one request.
#[derive(Debug, Clone)]
enum Outcome {
    /// Answered 2xx: client latency, the upstream's held time, who served it.
    Ok {
        latency: Duration,
        held: Duration,
        upstream: String,
    },
    /// Anything else: a status code, or `timeout`, `connect`, `io`, `bad_body`.
    Err(String),
}

/// Percentiles of a sample, in milliseconds (nearest rank).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

/// Nearest-rank percentiles of `values` (sorted here); zeros for an empty sample.
fn percentiles(values: &mut [Duration]) -> Percentiles {
    values.sort_unstable();
    let at = |q: f64| -> f64 {
        if values.is_empty() {
            return 0.0;
        }
        // Nearest rank: the smallest value with at least q of the sample at or below it.
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        round3(values[rank - 1].as_secs_f64() * 1000.0)
    };
    Percentiles {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: at(1.0),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// CPU a process tree used over the run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct CpuUse {
    pid: u32,
    /// utime + stime of the process and its descendants, seconds.
    seconds: f64,
    /// `seconds` over the run's wall time, in percent of one core.
    percent_of_core: f64,
    /// CPU milliseconds per 1,000 requests sent.
    ms_per_1k_requests: f64,
}

/// The JSON report of one load run.
#[derive(Debug, serde::Serialize)]
struct Report {
    label: String,
    url: String,
    rate: f64,
    duration_s: f64,
    connections: usize,
    models: Vec<String>,
    sent: usize,
    ok: usize,
    errors: BTreeMap<String, usize>,
    error_rate: f64,
    /// Requests sent per second of sending.
    offered_rps: f64,
    /// Answers (2xx) per second, from the first send to the last answer.
    achieved_rps: f64,
    /// How far the sender fell behind its schedule at worst (a sign the load generator
    /// itself could not keep up).
    schedule_lag_max_ms: f64,
    latency_ms: Percentiles,
    /// Client latency minus the upstream's held time.
    overhead_ms: Percentiles,
    /// 2xx answers by the upstream that served them.
    served_by: BTreeMap<String, usize>,
    cpu: BTreeMap<String, CpuUse>,
}

/// utime + stime, in clock ticks, of a process (fields 14 and 15 of `/proc/PID/stat`,
/// counted after the command name, which may hold spaces and parentheses).
fn ticks_of(stat: &str) -> Option<(u32, u64)> {
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// Clock ticks used so far by `root` and every live descendant.
fn tree_ticks(root: u32) -> u64 {
    let mut procs: Vec<(u32, u32, u64)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                && let Some((ppid, ticks)) = ticks_of(&stat)
            {
                procs.push((pid, ppid, ticks));
            }
        }
    }
    let mut tree = vec![root];
    let mut total = 0;
    // Parents may be listed after their children: grow the tree until it stops growing.
    loop {
        let before = tree.len();
        for (pid, ppid, _) in &procs {
            if tree.contains(ppid) && !tree.contains(pid) {
                tree.push(*pid);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    for (pid, _, ticks) in &procs {
        if tree.contains(pid) {
            total += ticks;
        }
    }
    total
}

/// Linux reports `/proc` CPU times in USER_HZ ticks, 100 a second on every architecture
/// this benchmark runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// `NAME=PID`.
fn parse_cpu(spec: &str) -> Result<(String, u32), String> {
    let (name, pid) = spec
        .split_once('=')
        .ok_or_else(|| format!("`--cpu {spec}`: expected NAME=PID"))?;
    let pid = match pid.trim() {
        "self" => std::process::id(),
        p => p
            .parse()
            .map_err(|_| format!("`--cpu {spec}`: `{pid}` is not a process id"))?,
    };
    Ok((name.trim().to_string(), pid))
}

/// What one phase of sending gave.
struct Phase {
    outcomes: Vec<Outcome>,
    /// From the first send to the last.
    sending: Duration,
    /// From the first send to the last answer.
    window: Duration,
    /// How far the sender fell behind its schedule at worst.
    lag: Duration,
}

/// One phase of sending: `count` requests at `rate`, each given up after `timeout`.
async fn send_phase(
    client: &reqwest::Client,
    a: &LoadArgs,
    bodies: &[Bytes],
    connections: &Arc<tokio::sync::Semaphore>,
    count: usize,
) -> Phase {
    let start = tokio::time::Instant::now();
    let interval = Duration::from_secs_f64(1.0 / a.rate);
    let mut lag = Duration::ZERO;
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let due = start + interval.mul_f64(i as f64);
        let now = tokio::time::Instant::now();
        if now < due {
            tokio::time::sleep_until(due).await;
        } else {
            lag = lag.max(now - due);
        }
        let (client, sem) = (client.clone(), connections.clone());
        let (url, token) = (a.url.clone(), a.token.clone());
        let body = bodies[i % bodies.len()].clone();
        let timeout = a.timeout;
        tasks.push(tokio::spawn(async move {
            // Latency counts from the moment the request is released, waiting for a free
            // connection included: an open-loop client does not slow down for a slow server.
            let t0 = Instant::now();
            let attempt = async {
                let _permit = sem.acquire().await.map_err(|_| "closed".to_string())?;
                let mut req = client
                    .post(&url)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body);
                if let Some(t) = &token {
                    req = req.bearer_auth(t);
                }
                let resp = req.send().await.map_err(|e| classify(&e))?;
                let status = resp.status();
                let body = resp.bytes().await.map_err(|e| classify(&e))?;
                Ok::<_, String>((status, body))
            };
            match tokio::time::timeout(timeout, attempt).await {
                Err(_) => Outcome::Err("timeout".into()),
                Ok(Err(e)) => Outcome::Err(e),
                Ok(Ok((status, _))) if !status.is_success() => {
                    Outcome::Err(status.as_u16().to_string())
                }
                Ok(Ok((_, body))) => {
                    let latency = t0.elapsed();
                    match served_by(&body) {
                        Some((upstream, held)) => Outcome::Ok {
                            latency,
                            held,
                            upstream,
                        },
                        None => Outcome::Err("bad_body".into()),
                    }
                }
            }
        }));
    }
    let sending = start.elapsed();
    let mut outcomes = Vec::with_capacity(count);
    for t in tasks {
        outcomes.push(t.await.unwrap_or_else(|_| Outcome::Err("panic".into())));
    }
    Phase {
        outcomes,
        sending,
        // The measured window ends with the last answer.
        window: start.elapsed().max(sending),
        lag,
    }
}

fn classify(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "io".into()
    }
}

/// Sums a phase's outcomes into the report's figures.
fn summarize(
    outcomes: &[Outcome],
    nominal: Duration,
) -> (
    usize,
    BTreeMap<String, usize>,
    Percentiles,
    Percentiles,
    BTreeMap<String, usize>,
) {
    let mut errors = BTreeMap::new();
    let mut served = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut overheads = Vec::new();
    for o in outcomes {
        match o {
            Outcome::Ok {
                latency,
                held,
                upstream,
            } => {
                latencies.push(*latency);
                let held = if held.is_zero() { nominal } else { *held };
                overheads.push(latency.saturating_sub(held));
                *served.entry(upstream.clone()).or_default() += 1;
            }
            Outcome::Err(e) => *errors.entry(e.clone()).or_default() += 1,
        }
    }
    (
        latencies.len(),
        errors,
        percentiles(&mut latencies),
        percentiles(&mut overheads),
        served,
    )
}

async fn load(a: LoadArgs) -> Result<Report, String> {
    if !(a.rate.is_finite() && a.rate > 0.0) {
        return Err(format!(
            "`--rate {}`: expected requests per second above 0",
            a.rate
        ));
    }
    if a.connections == 0 {
        return Err("`--connections 0`: expected at least 1".into());
    }
    let cpu: Vec<(String, u32)> = a
        .cpu
        .iter()
        .map(|s| parse_cpu(s))
        .collect::<Result<_, _>>()?;
    // reqwest is built without a default TLS provider here; fleet installs its own.
    fleet::hq::client::init_tls();
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(a.connections)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let bodies: Vec<Bytes> = a
        .models
        .iter()
        .map(|m| {
            Bytes::from(
                serde_json::json!({
                    "model": m,
                    "messages": [{"role": "user", "content": "Say hello in five words."}],
                    "max_tokens": 16
                })
                .to_string(),
            )
        })
        .collect();
    let connections = Arc::new(tokio::sync::Semaphore::new(a.connections));
    let count = |d: Duration| ((a.rate * d.as_secs_f64()).round() as usize).max(1);
    if !a.warmup.is_zero() {
        send_phase(&client, &a, &bodies, &connections, count(a.warmup)).await;
    }
    let before: HashMap<String, u64> = cpu
        .iter()
        .map(|(n, p)| (n.clone(), tree_ticks(*p)))
        .collect();
    let Phase {
        outcomes,
        sending,
        window,
        lag,
    } = send_phase(&client, &a, &bodies, &connections, count(a.duration)).await;
    let sent = outcomes.len();
    let cpu_use: BTreeMap<String, CpuUse> = cpu
        .iter()
        .map(|(name, pid)| {
            let seconds = tree_ticks(*pid).saturating_sub(before[name]) as f64 / TICKS_PER_SECOND;
            (
                name.clone(),
                CpuUse {
                    pid: *pid,
                    seconds: round3(seconds),
                    percent_of_core: round3(100.0 * seconds / window.as_secs_f64()),
                    ms_per_1k_requests: round3(1000.0 * seconds * 1000.0 / sent as f64),
                },
            )
        })
        .collect();
    let (ok, errors, latency_ms, overhead_ms, served_by) = summarize(&outcomes, a.latency);
    Ok(Report {
        label: a.label.clone(),
        url: a.url.clone(),
        rate: a.rate,
        duration_s: a.duration.as_secs_f64(),
        connections: a.connections,
        models: a.models.clone(),
        sent,
        ok,
        error_rate: round3((sent - ok) as f64 / sent as f64),
        errors,
        offered_rps: round3(sent as f64 / sending.as_secs_f64().max(1e-9)),
        achieved_rps: round3(ok as f64 / window.as_secs_f64()),
        schedule_lag_max_ms: round3(lag.as_secs_f64() * 1000.0),
        latency_ms,
        overhead_ms,
        served_by,
        cpu: cpu_use,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v = ms(&(1..=100).rev().collect::<Vec<_>>());
        assert_eq!(
            percentiles(&mut v),
            Percentiles {
                p50: 50.0,
                p90: 90.0,
                p99: 99.0,
                max: 100.0
            }
        );
        let mut one = ms(&[7]);
        assert_eq!(percentiles(&mut one).p99, 7.0);
        let mut none = Vec::new();
        assert_eq!(percentiles(&mut none).max, 0.0);
    }

    #[test]
    fn the_served_by_line_is_read_back() {
        let body = br#"{"choices":[{"message":{"role":"assistant","content":"a1 held 20345us"}}]}"#;
        assert_eq!(
            served_by(body),
            Some(("a1".to_string(), Duration::from_micros(20345)))
        );
        assert_eq!(served_by(br#"{"choices":[]}"#), None);
        assert_eq!(
            served_by(br#"{"choices":[{"message":{"content":"hello"}}]}"#),
            None
        );
    }

    #[test]
    fn proc_stat_is_read_after_the_command_name() {
        // A command name with spaces and a parenthesis, as Python workers can have.
        let stat =
            "4242 (python3 (x) y) S 4000 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(ticks_of(stat), Some((4000, 325)));
        assert_eq!(ticks_of("garbage"), None);
    }

    #[test]
    fn bad_specs_are_clear_errors() {
        assert_eq!(
            parse_serve("a1=llama3.1:8b,qwen2.5:7b").expect("ok"),
            (
                "a1".to_string(),
                vec!["llama3.1:8b".to_string(), "qwen2.5:7b".to_string()]
            )
        );
        assert!(
            parse_serve("a1")
                .expect_err("no models")
                .contains("NAME=MODEL")
        );
        assert!(parse_serve("=m").is_err());
        assert_eq!(parse_cpu("gw=12").expect("ok"), ("gw".to_string(), 12));
        assert_eq!(parse_cpu("me=self").expect("ok").1, std::process::id());
        assert!(
            parse_cpu("gw=x")
                .expect_err("pid")
                .contains("not a process id")
        );
    }

    #[test]
    fn overhead_subtracts_the_held_time_and_errors_are_counted_by_kind() {
        let outcomes = vec![
            Outcome::Ok {
                latency: Duration::from_micros(20_500),
                held: Duration::from_micros(20_100),
                upstream: "a1".into(),
            },
            Outcome::Ok {
                latency: Duration::from_micros(21_000),
                held: Duration::ZERO,
                upstream: "a2".into(),
            },
            Outcome::Err("503".into()),
            Outcome::Err("timeout".into()),
            Outcome::Err("503".into()),
        ];
        let (ok, errors, _, overhead, served) = summarize(&outcomes, Duration::from_millis(20));
        assert_eq!(ok, 2);
        assert_eq!(
            errors,
            BTreeMap::from([("503".into(), 2), ("timeout".into(), 1)])
        );
        // 0.4 ms (held time known) and 1.0 ms (nominal 20 ms subtracted).
        assert_eq!((overhead.p50, overhead.max), (0.4, 1.0));
        assert_eq!(served, BTreeMap::from([("a1".into(), 1), ("a2".into(), 1)]));
    }

    /// The stand-in and the load generator together, over real loopback HTTP: every request
    /// at the rate is answered by the named upstream, and the overhead left after the held
    /// time is small; a URL that answers 404 shows up under errors.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_load_generator_measures_a_real_upstream() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports_file = dir.path().join("ports");
        let up = UpstreamArgs {
            serve: vec!["u1=m:1b".into()],
            latency: Duration::from_millis(5),
            ports_file: ports_file.clone(),
        };
        tokio::spawn(upstream(up));
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            if let Ok(s) = std::fs::read_to_string(&ports_file) {
                break s.split_whitespace().nth(1).expect("port").to_string();
            }
            assert!(
                Instant::now() < deadline,
                "the upstream never wrote its ports"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let args = |path: &str| LoadArgs {
            url: format!("http://127.0.0.1:{port}{path}"),
            token: Some("t".into()),
            rate: 200.0,
            duration: Duration::from_millis(500),
            warmup: Duration::from_millis(100),
            connections: 8,
            models: vec!["m:1b".into()],
            latency: Duration::from_millis(5),
            timeout: Duration::from_secs(5),
            cpu: vec![format!("self={}", std::process::id())],
            label: "test".into(),
        };
        let r = load(args("/v1/chat/completions")).await.expect("load");
        assert_eq!((r.sent, r.ok), (100, 100), "{r:?}");
        assert_eq!(r.served_by, BTreeMap::from([("u1".into(), 100)]));
        assert!(r.latency_ms.p50 >= 5.0, "{r:?}");
        assert!(r.overhead_ms.p50 < 5.0, "{r:?}");
        assert!(r.cpu.contains_key("self"));
        let r = load(args("/nope")).await.expect("load");
        assert_eq!(r.ok, 0);
        assert_eq!(r.errors, BTreeMap::from([("404".into(), 100)]));
    }
}
