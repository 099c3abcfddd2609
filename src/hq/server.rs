//! `fleet serve`: the HQ registry API (axum). Heartbeats are checked and stored by one
//! writer thread that commits them in batches (group commit: one fsync for every heartbeat
//! waiting), and a heartbeat is answered 200 only after its batch is durable.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};

use crate::hq::status::{Expectation, status};
use crate::hq::store::{Store, now_ms};
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
    /// HTTPS with this configuration (see `hq::tls`); `None` serves plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Why a heartbeat was refused.
#[derive(Debug)]
enum Refusal {
    Unauthorized(String),
    TooMany,
    Store(String),
}

struct Job {
    token_hash: String,
    heartbeat: Heartbeat,
    body: String,
    reply: oneshot::Sender<Result<(), Refusal>>,
}

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
    reader: Mutex<Store>,
    writer: mpsc::Sender<Job>,
    metrics: Metrics,
    /// Wakes the conductor publisher (after an inventory reload).
    conductor_wake: tokio::sync::Notify,
}

/// The writer thread: owns the write connection, the token cache and the rate limiter.
fn writer_loop(
    mut store: Store,
    mut rx: mpsc::Receiver<Job>,
    history: u32,
    rate: f64,
    stored: Counter,
    batches: Counter,
) {
    let mut tokens = store.token_hashes().unwrap_or_default();
    let mut seen_version = store.data_version();
    let mut buckets: HashMap<String, (f64, Instant)> = HashMap::new();
    let burst = (rate * 2.0).max(1.0);
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < 4096 {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        // `fleet token` writes through another connection; data_version tells us it did.
        let v = store.data_version();
        if v != seen_version {
            tokens = store.token_hashes().unwrap_or(tokens);
            seen_version = v;
        }
        let now = Instant::now();
        let mut accepted = Vec::new();
        for job in jobs {
            let ok = tokens
                .get(&job.heartbeat.node)
                .is_some_and(|h| tokens::hashes_equal(h, &job.token_hash));
            if !ok {
                let _ = job.reply.send(Err(Refusal::Unauthorized(format!(
                    "no valid token for node `{}`",
                    job.heartbeat.node
                ))));
                continue;
            }
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
        if accepted.is_empty() {
            continue;
        }
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
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(ErrorBody { error: msg.into() })).into_response()
}

async fn heartbeat(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <token>`",
        );
    };
    let hb: Heartbeat = match serde_json::from_slice(&body) {
        Ok(h) => h,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed heartbeat: {e}")),
    };
    let (tx, rx) = oneshot::channel();
    let job = Job {
        token_hash: tokens::hash(token),
        body: String::from_utf8_lossy(&body).into_owned(),
        heartbeat: hb,
        reply: tx,
    };
    if st.writer.send(job).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is shutting down",
        );
    }
    match rx.await {
        Ok(Ok(())) => (StatusCode::OK, Json(serde_json::json!({ "stored": true }))).into_response(),
        Ok(Err(Refusal::Unauthorized(m))) => error(StatusCode::UNAUTHORIZED, m),
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

/// Every node's status: the inventory's nodes, plus any node that reported without being in it.
fn statuses(st: &AppState) -> Result<Vec<NodeStatus>, String> {
    let last = st
        .reader
        .lock()
        .map_err(|_| "store lock poisoned".to_string())?
        .last_seen()?;
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
    let all = match statuses(&st) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let status_map: crate::render::routing::StatusMap =
        all.into_iter().map(|n| (n.name, n.status)).collect();
    let repo = match st.repo.read() {
        Ok(r) => r.clone(),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "repo lock poisoned"),
    };
    let facts = crate::facts::FactsCache::open(&repo.root);
    let (table, _) =
        crate::render::routing::build(&repo, &|n| facts.hardware(n).0, Some(&status_map));
    Json(table).into_response()
}

async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    match st.reader.lock().map(|s| s.schema_version()) {
        Ok(v) => Json(serde_json::json!({ "status": "ok", "schema_version": v })).into_response(),
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
    let by_status: Family<Vec<(String, String)>, Gauge> = Family::default();
    let age: Family<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>> =
        Family::default();
    if let Ok(all) = statuses(&st) {
        for s in ["online", "degraded", "offline"] {
            by_status
                .get_or_create(&vec![("status".into(), s.into())])
                .set(0);
        }
        for n in &all {
            by_status
                .get_or_create(&vec![("status".into(), n.status.clone())])
                .inc();
            if let Some(a) = n.heartbeat_age_secs {
                age.get_or_create(&vec![("node".into(), n.name.clone())])
                    .set(a);
            }
        }
    }
    reg.register("fleet_nodes", "Nodes by status", by_status);
    reg.register(
        "fleet_node_heartbeat_age_seconds",
        "Seconds since each node's last heartbeat",
        age,
    );
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

async fn track(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let start = Instant::now();
    let resp = next.run(req).await;
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
    let (tx, rx) = mpsc::channel::<Job>(65536);
    let metrics = Metrics::new();
    let (stored, batches) = (metrics.heartbeats_stored.clone(), metrics.batches.clone());
    let (history, rate) = (cfg.history, cfg.rate_per_node);
    std::thread::Builder::new()
        .name("hq-writer".into())
        .spawn(move || writer_loop(writer_store, rx, history, rate, stored, batches))
        .map_err(|e| format!("cannot start the writer thread: {e}"))?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let tls = cfg.tls.clone();
    let state = Arc::new(AppState {
        repo: RwLock::new(Arc::new(repo)),
        reader: Mutex::new(reader),
        writer: tx,
        metrics,
        cfg,
        conductor_wake: tokio::sync::Notify::new(),
    });
    // The conductor's table is written before the first request is answered, so whoever waits
    // for HQ to answer finds the file in place.
    let mut hysteresis = crate::hq::conductor::Hysteresis::new(Duration::ZERO);
    publish_for_conductor(&state, &mut hysteresis).await;
    spawn_conductor(state.clone(), hysteresis);
    spawn_reload(state.clone());
    let app = Router::new()
        .route("/api/heartbeat", post(heartbeat))
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/{name}", get(node))
        .route("/api/routing", get(routing))
        .route("/api/workers", get(crate::hq::workers::list))
        .route(
            "/api/workers/{id}/{platform}/{build}",
            get(crate::hq::workers::manifest),
        )
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state);
    let handle = match tls {
        Some(tls) => {
            let listener =
                crate::hq::tls::TlsListener::new(listener, tls).map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                    .map_err(|e| e.to_string())
            })
        }
        None => tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(|e| e.to_string())
        }),
    };
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
            let root = state.cfg.repo_root.clone();
            let repo = tokio::task::spawn_blocking(move || {
                let r = Repo::load(&root);
                let (diags, _) = crate::validate::validate(&r);
                (r, diags)
            })
            .await;
            match repo {
                Ok((r, diags)) if !diags.has_errors() => {
                    let n = r.inventory.nodes.len();
                    if let Ok(mut slot) = state.repo.write() {
                        *slot = Arc::new(r);
                    }
                    tracing::info!(
                        "inventory reloaded: {}",
                        crate::util::count(n as u64, "node", "nodes")
                    );
                    state.conductor_wake.notify_one();
                }
                Ok((_, diags)) => {
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
    });
}
