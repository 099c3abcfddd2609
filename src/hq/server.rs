//! `fleet serve`: the HQ registry API (axum). Heartbeats are checked and stored by one
//! writer thread that commits them in batches (group commit: one fsync for every heartbeat
//! waiting), and a heartbeat is answered 200 only after its batch is durable.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};

use crate::hq::listener::{Conn, Limits};
use crate::hq::status::{Expectation, status};
use crate::hq::store::{Store, TokenEntry, TokenKind, now_ms};
use crate::hq::tokens;
use crate::hq::wire::{ErrorBody, Heartbeat, NodeDetail, NodeStatus, NodesResponse};
use crate::repo::Repo;

/// Largest heartbeat body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// Settings of `fleet serve`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The SQLite file.
    pub db: PathBuf,
    /// The fleet repo (reloaded on SIGHUP).
    pub repo_root: PathBuf,
    /// A node is offline after this long without a heartbeat.
    pub offline_after: Duration,
    /// Heartbeats kept per node.
    pub history: u32,
    /// Heartbeats per second per node (burst: twice that).
    pub rate_per_node: f64,
    /// Requests per second per client address without a valid token (burst: twice that).
    pub unauth_rate_per_ip: f64,
    /// Timeouts and the connection cap.
    pub limits: Limits,
    /// HTTPS with this configuration (see `hq::tls`); `None` serves plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The gateway's settings.
    pub gateway: crate::gateway::Settings,
}

/// Why a heartbeat was refused.
#[derive(Debug)]
enum Refusal {
    Unauthorized(String),
    Forbidden(String),
    TooMany,
    Store(String),
}

struct Job {
    token_hash: String,
    /// Whether the node is in the inventory (a node removed from it is refused).
    in_inventory: bool,
    heartbeat: Heartbeat,
    body: String,
    reply: oneshot::Sender<Result<(), Refusal>>,
}

/// What the writer thread is asked to do.
enum Msg {
    /// Check and store a heartbeat (boxed: it is far larger than a token name).
    Heartbeat(Box<Job>),
    /// A token was accepted for a read: note when (batched, at most once a minute per token).
    Used(String),
}

/// How often a token's `last used` time is written at most.
const TOUCH_EVERY_MS: i64 = 60_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabel {
    route: String,
}

/// Metrics kept across requests.
#[derive(Debug)]
struct Metrics {
    requests: Family<RouteLabels, Counter>,
    latency: Family<PathLabel, Histogram>,
    heartbeats_stored: Counter,
    batches: Counter,
}

impl Metrics {
    fn new() -> Self {
        Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new([
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ])
            }),
            heartbeats_stored: Counter::default(),
            batches: Counter::default(),
        }
    }
}

/// Shared server state.
pub(crate) struct AppState {
    pub(crate) cfg: Config,
    pub(crate) repo: RwLock<Arc<Repo>>,
    pub(crate) reader: Mutex<Store>,
    writer: mpsc::Sender<Msg>,
    /// Per client address: token bucket for requests without a valid token.
    unauth: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    metrics: Metrics,
    /// Wakes the conductor publisher (after an inventory reload).
    pub(crate) conductor_wake: tokio::sync::Notify,
    /// The inventory files' modification times when it was last loaded.
    inventory_stamp: Mutex<Vec<Option<std::time::SystemTime>>>,
    /// Held while the inventory is reloaded on demand.
    reloading: tokio::sync::Mutex<()>,
    /// Gateway requests in flight per worker (draining waits for a node's to reach 0).
    pub(crate) inflight: Arc<crate::hq::inflight::InFlight>,
    /// The gateway (`/v1/…`), fed the live routing table.
    pub(crate) gateway: Arc<crate::gateway::Gateway>,
    /// The dashboard's login codes and browser sessions.
    pub(crate) sessions: crate::hq::dashboard::sessions::Sessions,
    /// The sha256 of the executable this HQ runs (for `/healthz`).
    binary: crate::hq::binary::RunningBinary,
}

/// The writer thread: owns the write connection, the token cache and the rate limiter.
fn writer_loop(
    mut store: Store,
    mut rx: mpsc::Receiver<Msg>,
    history: u32,
    rate: f64,
    stored: Counter,
    batches: Counter,
) {
    let mut tokens = store.tokens().unwrap_or_default();
    let mut seen_version = store.data_version();
    let mut buckets: HashMap<String, (f64, Instant)> = HashMap::new();
    // When each token's `last_used_at` was last written: written again a minute later at the
    // earliest, in the same transaction as heartbeats, so noting use costs them nothing.
    let mut touched: HashMap<String, i64> = HashMap::new();
    let burst = (rate * 2.0).max(1.0);
    while let Some(first) = rx.blocking_recv() {
        let mut msgs = vec![first];
        while msgs.len() < 4096 {
            match rx.try_recv() {
                Ok(m) => msgs.push(m),
                Err(_) => break,
            }
        }
        // `fleet token` writes through another connection; data_version tells us it did.
        let v = store.data_version();
        if v != seen_version {
            tokens = store.tokens().unwrap_or(tokens);
            seen_version = v;
        }
        let now = Instant::now();
        let wall = now_ms();
        let mut used = Vec::new();
        let mut note = |name: &str| {
            let due = touched
                .get(name)
                .is_none_or(|t| wall - *t >= TOUCH_EVERY_MS);
            if due {
                touched.insert(name.to_string(), wall);
                used.push((name.to_string(), wall));
            }
        };
        let mut accepted = Vec::new();
        for msg in msgs {
            let job = match msg {
                Msg::Used(name) => {
                    note(&name);
                    continue;
                }
                Msg::Heartbeat(job) => job,
            };
            let ok = tokens
                .get(&job.heartbeat.node)
                .filter(|t| t.kind == TokenKind::Node)
                .is_some_and(|t| t.accepts(&job.token_hash, wall));
            if !ok {
                let _ = job.reply.send(Err(Refusal::Unauthorized(format!(
                    "no valid token for node `{}`",
                    job.heartbeat.node
                ))));
                continue;
            }
            if !job.in_inventory {
                let _ = job.reply.send(Err(Refusal::Forbidden(format!(
                    "node `{0}` is not in the inventory; its heartbeats are refused (`fleet token revoke {0}` removes its token)",
                    job.heartbeat.node
                ))));
                continue;
            }
            note(&job.heartbeat.node);
            let (level, last) = buckets
                .entry(job.heartbeat.node.clone())
                .or_insert((burst, now));
            *level = (*level + now.duration_since(*last).as_secs_f64() * rate).min(burst);
            *last = now;
            if *level < 1.0 {
                let _ = job.reply.send(Err(Refusal::TooMany));
                continue;
            }
            *level -= 1.0;
            accepted.push(job);
        }
        if !accepted.is_empty() {
            let batch: Vec<(Heartbeat, String)> = accepted
                .iter()
                .map(|j| (j.heartbeat.clone(), j.body.clone()))
                .collect();
            let result = store.ingest(&batch, now_ms(), history);
            if result.is_ok() {
                stored.inc_by(batch.len() as u64);
                batches.inc();
            }
            for job in accepted {
                let _ = job.reply.send(result.clone().map_err(Refusal::Store));
            }
        }
        if !used.is_empty()
            && let Err(e) = store.touch_tokens(&used)
        {
            tracing::warn!("cannot record when tokens were last used: {e}");
        }
    }
}

pub(crate) fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    let msg = msg.into();
    let mut r = (code, Json(ErrorBody { error: msg.clone() })).into_response();
    r.extensions_mut().insert(Reason(msg));
    r
}

/// The bearer token of a request, if it has one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

const MISSING_TOKEN: &str = "missing `Authorization: Bearer <token>`";

/// Checks what a heartbeat says beyond its shape: `sent_at` must be an RFC 3339 time.
fn check_heartbeat(hb: &Heartbeat) -> Result<(), String> {
    if !crate::hq::wire::is_rfc3339(&hb.sent_at) {
        let shown: String = hb.sent_at.chars().take(40).collect();
        return Err(format!(
            "`sent_at` `{shown}` is not an RFC 3339 time (like 2026-11-23T10:00:00Z)"
        ));
    }
    Ok(())
}

/// `POST /api/heartbeat`: a refused heartbeat is logged as a warning with the reason (and its
/// sender's address); the access log names the node.
async fn heartbeat(state: State<Arc<AppState>>, req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let State(st) = state;
    let resp = heartbeat_inner(&st, req).await;
    let node = resp.extensions().get::<NodeName>().map(|n| n.0.clone());
    let status = resp.status();
    if !status.is_success() {
        let reason = match resp.extensions().get::<Reason>() {
            Some(r) => r.0.clone(),
            None => status.to_string(),
        };
        tracing::warn!(
            node = %node.as_deref().unwrap_or("?"),
            %peer,
            status = status.as_u16(),
            "heartbeat refused: {reason}"
        );
    }
    resp
}

/// Why an answer refused its request (for the log; the body says the same).
#[derive(Debug, Clone)]
struct Reason(String);

/// Checks and stores a heartbeat; the answer names the node (once known) in an extension.
async fn heartbeat_inner(st: &Arc<AppState>, req: Request) -> Response {
    let conn = req.extensions().get::<Arc<Conn>>().cloned();
    let Some(token) = bearer(req.headers()).map(str::to_string) else {
        return error(StatusCode::UNAUTHORIZED, MISSING_TOKEN);
    };
    let too_big = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_BODY);
    if too_big {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "heartbeat over 64 KiB");
    }
    // A body trickled byte by byte would hold the connection for ever: it must arrive in time.
    let read = axum::body::to_bytes(req.into_body(), MAX_BODY);
    let body = match tokio::time::timeout(st.cfg.limits.body_timeout, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return error(StatusCode::PAYLOAD_TOO_LARGE, "heartbeat over 64 KiB"),
        Err(_) => {
            let mut r = error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the heartbeat's body did not arrive within {}",
                    humantime::format_duration(st.cfg.limits.body_timeout)
                ),
            );
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return r;
        }
    };
    // serde_json stops at 128 levels of nesting, so a deeply nested body is a 400, not a
    // stack overflow; every wire struct denies unknown fields, so nothing else is kept.
    let hb: Heartbeat = match serde_json::from_slice(&body) {
        Ok(h) => h,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed heartbeat: {e}")),
    };
    let node = NodeName(hb.node.clone());
    let mut resp = if let Err(e) = check_heartbeat(&hb) {
        error(StatusCode::BAD_REQUEST, format!("malformed heartbeat: {e}"))
    } else {
        store_heartbeat(st, hb, token, &body, conn).await
    };
    resp.extensions_mut().insert(node);
    resp
}

/// Hands a checked heartbeat to the writer and answers once it is stored (or refused).
async fn store_heartbeat(
    st: &Arc<AppState>,
    hb: Heartbeat,
    token: String,
    body: &[u8],
    conn: Option<Arc<Conn>>,
) -> Response {
    let known = |st: &AppState| {
        st.repo
            .read()
            .map(|r| r.inventory.nodes.contains_key(&hb.node))
            .unwrap_or(false)
    };
    let node = hb.node.clone();
    let mut in_inventory = known(st);
    if !in_inventory {
        reload_if_changed(st).await;
        in_inventory = known(st);
    }
    let (tx, rx) = oneshot::channel();
    let job = Job {
        token_hash: tokens::hash(&token),
        in_inventory,
        body: String::from_utf8_lossy(body).into_owned(),
        heartbeat: hb,
        reply: tx,
    };
    if st.writer.send(Msg::Heartbeat(Box::new(job))).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is shutting down",
        );
    }
    let answer = rx.await;
    if let (Some(c), Ok(Ok(()) | Err(Refusal::TooMany))) = (&conn, &answer) {
        c.authenticated();
    }
    match answer {
        // A drained node's agent is told to stop once nothing is in flight to it.
        Ok(Ok(())) => (
            StatusCode::OK,
            Json(crate::hq::drain::heartbeat_answer(st, &node)),
        )
            .into_response(),
        Ok(Err(Refusal::Unauthorized(m))) => error(StatusCode::UNAUTHORIZED, m),
        Ok(Err(Refusal::Forbidden(m))) => error(StatusCode::FORBIDDEN, m),
        Ok(Err(Refusal::TooMany)) => error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many heartbeats from this node",
        ),
        Ok(Err(Refusal::Store(m))) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not store the heartbeat: {m}"),
        ),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is shutting down",
        ),
    }
}

/// Whether a token of `t` may read `route` (the matched route) at `path`.
fn may_read(t: &TokenEntry, route: &str, path: &str) -> bool {
    match t.kind {
        TokenKind::Admin => true,
        TokenKind::Client => route != "/metrics",
        TokenKind::Scrape => route == "/metrics",
        // A join token only registers a machine (`POST /api/join`).
        TokenKind::Join => false,
        // An agent (and the gateway on its node) reads its own record and the routing table.
        TokenKind::Node => {
            route == "/api/routing"
                || (route == "/api/nodes/{name}"
                    && path.strip_prefix("/api/nodes/") == Some(t.name.as_str()))
        }
    }
}

/// Every read needs a token whose kind may read it: 401 without a valid one, 403 for the
/// wrong kind; the body says only why.
async fn authorize(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(token) = bearer(req.headers()) else {
        return error(
            StatusCode::UNAUTHORIZED,
            format!("{MISSING_TOKEN}: every HQ endpoint but /healthz needs a token"),
        );
    };
    let hash = tokens::hash(token);
    let found = match st.reader.lock() {
        Ok(s) => s.token_by_hash(&hash, now_ms()),
        Err(_) => Err("store lock poisoned".to_string()),
    };
    let entry = match found {
        Ok(Some(t)) => t,
        Ok(None) => return error(StatusCode::UNAUTHORIZED, "invalid or revoked token"),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("", |p| p.as_str());
    if !may_read(&entry, route, req.uri().path()) {
        let what = match entry.kind {
            TokenKind::Node => "a node token reads only its own node and /api/routing",
            TokenKind::Scrape => "a scrape token reads only /metrics",
            TokenKind::Client => {
                "a client token does not read /metrics (use a scrape or admin token)"
            }
            TokenKind::Admin | TokenKind::Join => "refused",
        };
        return error(StatusCode::FORBIDDEN, what);
    }
    if let Some(c) = req.extensions().get::<Arc<Conn>>() {
        c.authenticated();
    }
    // Best effort: a full queue only delays the `last used` time.
    let _ = st.writer.try_send(Msg::Used(entry.name));
    next.run(req).await
}

/// Requests without a valid token are limited per client address (429 over the limit):
/// those without a token are counted before they run, those refused 401 after.
async fn limit_unauthenticated(
    State(st): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let Some(ip) = ip else {
        return next.run(req).await;
    };
    let has_token = bearer(req.headers()).is_some();
    if !has_token && !take_unauth(&st, ip) {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests without a valid token from this address",
        );
    }
    let resp = next.run(req).await;
    if has_token && resp.status() == StatusCode::UNAUTHORIZED {
        take_unauth(&st, ip);
    }
    resp
}

/// Takes one request from `ip`'s bucket; false when it is empty.
fn take_unauth(st: &AppState, ip: IpAddr) -> bool {
    let rate = st.cfg.unauth_rate_per_ip;
    let burst = (rate * 2.0).max(1.0);
    let now = Instant::now();
    let Ok(mut buckets) = st.unauth.lock() else {
        return true;
    };
    // Bounded: when many addresses were seen, the full (idle) buckets are forgotten.
    if buckets.len() > 10_000 {
        buckets.retain(|_, (level, last)| {
            *level + now.duration_since(*last).as_secs_f64() * rate < burst
        });
    }
    let (level, last) = buckets.entry(ip).or_insert((burst, now));
    *level = (*level + now.duration_since(*last).as_secs_f64() * rate).min(burst);
    *last = now;
    if *level < 1.0 {
        return false;
    }
    *level -= 1.0;
    true
}

/// Every node's status: the inventory's nodes, plus any node that reported without being in it.
pub(crate) fn statuses(st: &AppState) -> Result<Vec<NodeStatus>, String> {
    let last = st
        .reader
        .lock()
        .map_err(|_| "store lock poisoned".to_string())?
        .last_seen()?;
    let drains = st
        .reader
        .lock()
        .map_err(|_| "store lock poisoned".to_string())?
        .drains()?;
    let repo = st
        .repo
        .read()
        .map_err(|_| "repo lock poisoned".to_string())?
        .clone();
    let caps = crate::repo::lookup::role_capabilities(&repo);
    let by_node: BTreeMap<&str, &crate::hq::store::LastSeen> =
        last.iter().map(|l| (l.node.as_str(), l)).collect();
    let now = now_ms();
    let offline = st.cfg.offline_after.as_secs_f64();
    let mut out: Vec<NodeStatus> = repo
        .inventory
        .nodes
        .values()
        .map(|n| {
            let (hw, _) = crate::facts::effective_hardware(&repo.root, n);
            let exp = Expectation::of(n, &hw, caps.get(&n.role.value).cloned().unwrap_or_default());
            status(
                &exp,
                by_node
                    .get(n.name.as_str())
                    .map(|l| (l.received_at, &l.heartbeat)),
                now,
                offline,
            )
        })
        .collect();
    for l in &last {
        if !repo.inventory.nodes.contains_key(&l.node) {
            let exp = Expectation {
                name: l.node.clone(),
                ..Default::default()
            };
            let mut s = status(&exp, Some((l.received_at, &l.heartbeat)), now, offline);
            s.reasons
                .push(format!("`{}` is not in the inventory", l.node));
            out.push(s);
        }
    }
    crate::hq::drain::mark(&mut out, &drains, &st.inflight);
    Ok(out)
}

async fn nodes(State(st): State<Arc<AppState>>) -> Response {
    match statuses(&st) {
        Ok(nodes) => Json(NodesResponse { nodes }).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn node(State(st): State<Arc<AppState>>, UrlPath(name): UrlPath<String>) -> Response {
    let all = match statuses(&st) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let Some(node) = all.into_iter().find(|n| n.name == name) else {
        return error(StatusCode::NOT_FOUND, format!("no node `{name}`"));
    };
    let history = match st.reader.lock() {
        Ok(s) => s.history(&name, st.cfg.history).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    Json(NodeDetail { node, history }).into_response()
}

async fn routing(State(st): State<Arc<AppState>>) -> Response {
    match live_table(&st) {
        Ok(table) => Json(table).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    match st.reader.lock().map(|s| s.schema_version()) {
        Ok(v) => Json(crate::hq::binary::healthz_body(v, &st.binary)).into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "store lock poisoned"),
    }
}

async fn metrics_text(State(st): State<Arc<AppState>>) -> Response {
    let mut reg = Registry::default();
    reg.register(
        "fleet_hq_requests",
        "HTTP requests by route and status",
        st.metrics.requests.clone(),
    );
    reg.register(
        "fleet_hq_request_duration_seconds",
        "HTTP request latency by route",
        st.metrics.latency.clone(),
    );
    reg.register(
        "fleet_hq_heartbeats_stored",
        "Heartbeats stored",
        st.metrics.heartbeats_stored.clone(),
    );
    reg.register(
        "fleet_hq_commit_batches",
        "Store commits (each holds one or more heartbeats)",
        st.metrics.batches.clone(),
    );
    if let Ok(all) = statuses(&st) {
        crate::hq::node_metrics::register(&mut reg, &all);
    }
    crate::hq::node_metrics::register_process(&mut reg);
    st.gateway.metrics.register(&mut reg, &st.inflight);
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &reg).is_err() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics");
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The node a request was about (a heartbeat's sender), for the access log.
#[derive(Debug, Clone)]
struct NodeName(String);

async fn track(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let start = Instant::now();
    let method = req.method().clone();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let resp = next.run(req).await;
    // The gateway writes its own line when an answer (a stream, maybe) has been sent.
    if route != "/v1/chat/completions" {
        let node = resp
            .extensions()
            .get::<NodeName>()
            .map_or("", |n| n.0.as_str());
        tracing::info!(
            target: "fleet::access",
            method = %method,
            route = %route,
            status = resp.status().as_u16(),
            latency_ms = start.elapsed().as_secs_f64() * 1000.0,
            node = %node,
            peer = %peer.map(|p| p.to_string()).unwrap_or_default(),
            "request"
        );
    }
    st.metrics
        .latency
        .get_or_create(&PathLabel {
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    st.metrics
        .requests
        .get_or_create(&RouteLabels {
            route,
            status: resp.status().as_u16().to_string(),
        })
        .inc();
    resp
}

/// A running server.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    handle: tokio::task::JoinHandle<Result<(), String>>,
}

impl Running {
    /// Waits for the server to stop.
    pub async fn wait(self) -> Result<(), String> {
        self.handle.await.map_err(|e| e.to_string())?
    }
}

/// Starts the server; it stops on `shutdown` (or SIGTERM/Ctrl-C when run from the CLI).
pub async fn start(
    cfg: Config,
    repo: Repo,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Running, String> {
    let writer_store = Store::open(&cfg.db)?;
    let reader = Store::open(&cfg.db)?;
    let (tx, rx) = mpsc::channel::<Msg>(65536);
    let metrics = Metrics::new();
    let (stored, batches) = (metrics.heartbeats_stored.clone(), metrics.batches.clone());
    let (history, rate) = (cfg.history, cfg.rate_per_node);
    std::thread::Builder::new()
        .name("hq-writer".into())
        .spawn(move || writer_loop(writer_store, rx, history, rate, stored, batches))
        .map_err(|e| format!("cannot start the writer thread: {e}"))?;
    let listener = crate::hq::listener::bind(cfg.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let stamp = inventory_stamp(&repo);
    let tls = cfg.tls.clone();
    let inflight = Arc::new(crate::hq::inflight::InFlight::new());
    let gateway = Arc::new(
        crate::gateway::Gateway::new(
            cfg.gateway.clone(),
            &cfg.db,
            inflight.clone(),
            crate::render::routing::RoutingTable::empty(),
        )
        .map_err(|e| format!("gateway: {e}"))?,
    );
    let state = Arc::new(AppState {
        inventory_stamp: Mutex::new(stamp),
        reloading: tokio::sync::Mutex::new(()),
        repo: RwLock::new(Arc::new(repo)),
        reader: Mutex::new(reader),
        writer: tx,
        unauth: Mutex::new(HashMap::new()),
        metrics,
        cfg,
        conductor_wake: tokio::sync::Notify::new(),
        inflight,
        gateway: gateway.clone(),
        sessions: crate::hq::dashboard::sessions::Sessions::default(),
        binary: crate::hq::binary::RunningBinary::start(),
    });
    // The conductor's table is written before the first request is answered, so whoever waits
    // for HQ to answer finds the file in place.
    let mut hysteresis = crate::hq::conductor::Hysteresis::new(Duration::ZERO);
    publish_for_conductor(&state, &mut hysteresis).await;
    spawn_conductor(state.clone(), hysteresis);
    spawn_reload(state.clone());
    refresh_gateway(&state).await;
    spawn_gateway_refresh(state.clone());
    let reads = Router::new()
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/{name}", get(node))
        .route("/api/routing", get(routing))
        .route("/api/workers", get(crate::hq::workers::list))
        .route(
            "/api/workers/{id}/{platform}/{build}",
            get(crate::hq::workers::manifest),
        )
        .route("/api/pending", get(crate::hq::join::list))
        .route("/metrics", get(metrics_text))
        .route(
            "/api/gateway",
            get(crate::gateway::api::status).with_state(gateway.clone()),
        )
        .route(
            "/api/spend",
            get(crate::gateway::api::spend).with_state(gateway.clone()),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    let limits = state.cfg.limits.clone();
    let app = Router::new()
        .route("/api/heartbeat", post(heartbeat))
        // Join, drain and leave check their own tokens (a join token; admin; the node's own).
        .route("/api/join", post(crate::hq::join::join))
        .route("/api/ca", get(crate::hq::join::ca))
        .route(
            "/api/nodes/{name}/drain",
            post(crate::hq::drain::drain).delete(crate::hq::drain::undrain),
        )
        .route("/api/leave", post(crate::hq::drain::leave))
        .route("/healthz", get(healthz))
        .route("/", get(crate::hq::dashboard::page))
        .route("/dashboard/events", get(crate::hq::dashboard::events))
        .route("/login", get(crate::hq::dashboard::login))
        .route("/api/dashboard/link", post(crate::hq::dashboard::link))
        .route(
            "/v1/chat/completions",
            post(crate::gateway::chat::completions).with_state(gateway.clone()),
        )
        .route(
            "/v1/models",
            get(crate::gateway::api::models).with_state(gateway.clone()),
        )
        .merge(reads)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limit_unauthenticated,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let handle = tokio::spawn(async move {
        crate::hq::listener::serve(listener, app, limits, acceptor, shutdown).await
    });
    Ok(Running { addr, handle })
}

/// One look at node states for the conductor; returns how long to wait until the next.
async fn publish_for_conductor(
    state: &Arc<AppState>,
    hysteresis: &mut crate::hq::conductor::Hysteresis,
) -> Duration {
    use crate::hq::conductor::{Published, publish, settings, tick};
    const IDLE: Duration = Duration::from_secs(5);
    let Ok(repo) = state.repo.read().map(|r| r.clone()) else {
        return IDLE;
    };
    let settings = match settings(&repo) {
        Ok(Some(s)) => s,
        Ok(None) => return IDLE,
        Err(e) => {
            tracing::error!("routing table for the conductor: {e}");
            return IDLE;
        }
    };
    let seen: crate::render::routing::StatusMap = match statuses(state) {
        Ok(all) => all.into_iter().map(|n| (n.name, n.status)).collect(),
        Err(e) => {
            tracing::error!("routing table for the conductor: {e}");
            return tick(&settings);
        }
    };
    // The first look (hold 0) takes the states as they are; later ones wait out the hold.
    let shown = hysteresis.update(Instant::now(), &seen);
    hysteresis.set_hold(settings.hysteresis);
    let next = tick(&settings);
    let file = settings.file.clone();
    let done = tokio::task::spawn_blocking(move || publish(&repo, &settings, &shown)).await;
    match done {
        Ok(Ok(Published::Unchanged)) => {}
        Ok(Ok(Published::Written { reload })) => {
            tracing::info!("routing table written to {}; {reload}", file.display());
        }
        Ok(Err(e)) => tracing::error!("routing table for the conductor ({}): {e}", file.display()),
        Err(e) => tracing::error!("routing table for the conductor: {e}"),
    }
    next
}

/// Gives the gateway the live routing table as it is now.
pub(crate) async fn refresh_gateway(state: &Arc<AppState>) {
    let st = state.clone();
    let table = tokio::task::spawn_blocking(move || {
        let policy = st.repo.read().ok().map(|repo| {
            crate::gateway::state::Policy::of(&repo, st.cfg.gateway.webhook.as_deref())
        });
        live_table(&st).map(|t| (t, policy))
    })
    .await;
    match table {
        Ok(Ok((t, policy))) => {
            // Policy first: a table naming a provider finds it callable.
            if let Some(p) = policy {
                state.gateway.set_policy(p);
            }
            state.gateway.set_table(t);
        }
        Ok(Err(e)) => tracing::error!("gateway routing table: {e}"),
        Err(e) => tracing::error!("gateway routing table: {e}"),
    }
}

/// Keeps the gateway's table live: rebuilt every second from the node states.
fn spawn_gateway_refresh(state: Arc<AppState>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            refresh_gateway(&state).await;
        }
    });
}

/// The routing table with every node's live state (what `/api/routing` answers).
fn live_table(st: &AppState) -> Result<crate::render::routing::RoutingTable, String> {
    let status_map: crate::render::routing::StatusMap = statuses(st)?
        .into_iter()
        .map(|n| (n.name, n.status))
        .collect();
    let repo = st
        .repo
        .read()
        .map_err(|_| "repo lock poisoned".to_string())?
        .clone();
    let facts = crate::facts::FactsCache::open(&repo.root);
    Ok(crate::render::routing::build(&repo, &|n| facts.hardware(n).0, Some(&status_map)).0)
}

/// Keeps the conductor's table live for as long as the server runs.
fn spawn_conductor(state: Arc<AppState>, mut hysteresis: crate::hq::conductor::Hysteresis) {
    tokio::spawn(async move {
        let mut wait = Duration::from_secs(1);
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {},
                () = state.conductor_wake.notified() => {},
            }
            wait = publish_for_conductor(&state, &mut hysteresis).await;
        }
    });
}

/// Reloads the inventory on SIGHUP with every check `fleet validate` runs; a repo with errors
/// is refused (each error logged) and the old one kept.
fn spawn_reload(state: Arc<AppState>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            reload(&state).await;
        }
    });
}

/// When the inventory's files (and its directory) were last modified: a new node written by
/// `fleet provision` changes it.
fn inventory_stamp(repo: &Repo) -> Vec<Option<std::time::SystemTime>> {
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut stamp: Vec<_> = repo.inventory_files.iter().map(|f| modified(f)).collect();
    stamp.push(modified(&repo.root.join("inventory")));
    stamp
}

/// Reloads the inventory when its files changed since it was loaded (at most one reload at a
/// time). A heartbeat from a node HQ does not know calls this before refusing it, so a node
/// `fleet provision` just added is accepted without a SIGHUP, while one removed stays out.
pub(crate) async fn reload_if_changed(state: &Arc<AppState>) {
    let _one = state.reloading.lock().await;
    let Ok(repo) = state.repo.read().map(|r| r.clone()) else {
        return;
    };
    let loaded = state
        .inventory_stamp
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    let now = {
        let repo = repo.clone();
        tokio::task::spawn_blocking(move || inventory_stamp(&repo))
            .await
            .unwrap_or_default()
    };
    if now != loaded {
        reload(state).await;
    }
}

/// Reloads the inventory with every check `fleet validate` runs; a repo with errors is refused
/// (each error logged) and the old one kept.
async fn reload(state: &Arc<AppState>) {
    let root = state.cfg.repo_root.clone();
    let repo = tokio::task::spawn_blocking(move || {
        let r = Repo::load(&root);
        let (diags, _) = crate::validate::validate(&r);
        let stamp = inventory_stamp(&r);
        (r, diags, stamp)
    })
    .await;
    match repo {
        Ok((r, diags, stamp)) if !diags.has_errors() => {
            let n = r.inventory.nodes.len();
            if let Ok(mut slot) = state.repo.write() {
                *slot = Arc::new(r);
            }
            if let Ok(mut s) = state.inventory_stamp.lock() {
                *s = stamp;
            }
            tracing::info!(
                "inventory reloaded: {}",
                crate::util::count(n as u64, "node", "nodes")
            );
            state.conductor_wake.notify_one();
        }
        Ok((_, diags, stamp)) => {
            // The same files are not tried again until they change.
            if let Ok(mut s) = state.inventory_stamp.lock() {
                *s = stamp;
            }
            let errors = diags
                .sorted()
                .into_iter()
                .filter(|d| d.severity == crate::error::Severity::Error);
            for d in errors {
                tracing::error!("{d}");
            }
            tracing::error!(
                "inventory not reloaded: {} (`fleet validate` shows them); keeping the previous one",
                crate::util::count(diags.error_count() as u64, "error", "errors")
            );
        }
        Err(e) => tracing::error!("inventory not reloaded: {e}"),
    }
}
