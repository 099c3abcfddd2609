//! What the gateway keeps between requests: the live routing table (HQ refreshes it), the
//! in-flight slots, the breakers, the spend ledger, recent upstream errors, metrics, and the
//! HTTP client its upstream connections are pooled in.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::gateway::breaker::Breakers;
use crate::gateway::errors::error;
use crate::gateway::ledger::Ledger;
use crate::gateway::metrics::Metrics;
use crate::gateway::prices::PriceTable;
use crate::gateway::providers::{CloudTarget, TargetError};
use crate::hq::inflight::InFlight;
use crate::hq::store::{Store, TokenKind, now_ms};
use crate::hq::tokens;
use crate::render::routing::RoutingTable;
use crate::spec::inventory::CostLimits;

/// Settings of the gateway (from `fleet serve`'s flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long an upstream has for its first byte (and, streaming, between two chunks).
    pub upstream_timeout: Duration,
    /// How long a connection to an upstream may take.
    pub connect_timeout: Duration,
    /// Consecutive failures that open an upstream's breaker.
    pub breaker_failures: u32,
    /// How long an open breaker keeps requests away before one probes.
    pub breaker_cooldown: Duration,
    /// Largest request body.
    pub max_body: usize,
    /// A request body must arrive within this long.
    pub body_timeout: Duration,
    /// Where the spend warning is posted (`--webhook-url`, `FLEET_WEBHOOK_URL`); else the
    /// variable the inventory's `fleet.alert_webhook_env` names.
    pub webhook: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            upstream_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(3),
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(30),
            max_body: 4 * 1024 * 1024,
            body_timeout: Duration::from_secs(30),
            webhook: None,
        }
    }
}

/// One upstream error, as `fleet status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RecentError {
    /// When (RFC 3339).
    pub at: String,
    /// What happened.
    pub error: String,
}

/// What the gateway needs from the repo besides the routing table: the cloud providers made
/// callable (keys read), prices, cost limits, the cloud concurrency bound, the alert webhook.
#[derive(Debug, Default)]
pub struct Policy {
    /// One per `routing.cloud_fallback` entry, in order (the table's `cloud_providers`).
    pub targets: Vec<Result<CloudTarget, TargetError>>,
    /// Prices (built in, with the inventory's over them); `None` when the table is broken.
    pub prices: Option<PriceTable>,
    /// `routing.cost`.
    pub cost: CostLimits,
    /// `routing.max_concurrent_api`.
    pub max_concurrent_api: Option<u32>,
    /// Where the spend warning goes.
    pub webhook: Option<String>,
    /// The fleet's name (in the alert).
    pub fleet: Option<String>,
}

impl Policy {
    /// The policy of `repo` (reading each cloud provider's key now).
    pub fn of(repo: &crate::repo::Repo, webhook: Option<&str>) -> Policy {
        let routing = &repo.inventory.routing;
        let webhook = webhook.map(str::to_string).or_else(|| {
            repo.inventory
                .fleet
                .alert_webhook_env
                .as_ref()
                .and_then(|var| std::env::var(var).ok())
                .filter(|u| !u.trim().is_empty())
        });
        Policy {
            targets: crate::gateway::providers::targets(routing, &repo.root),
            prices: PriceTable::with_overrides(&routing.prices).ok(),
            cost: routing.cost.clone().unwrap_or_default(),
            max_concurrent_api: routing.max_concurrent_api,
            webhook,
            fleet: repo.inventory.fleet.name.clone(),
        }
    }
}

/// Errors kept per upstream.
const RECENT: usize = 10;

/// The gateway's state.
pub struct Gateway {
    /// Its settings.
    pub settings: Settings,
    table: RwLock<Arc<RoutingTable>>,
    policy: RwLock<Arc<Policy>>,
    /// Set while the spend warning is being posted (so it goes out once).
    pub alerting: std::sync::atomic::AtomicBool,
    /// Requests in flight per worker (shared with HQ: draining reads it).
    pub inflight: Arc<InFlight>,
    /// Breakers per upstream.
    pub breakers: Breakers,
    /// Metrics.
    pub metrics: Metrics,
    /// The spend ledger.
    pub ledger: Ledger,
    tokens: Mutex<Store>,
    /// The pooled HTTP client for upstreams.
    pub client: reqwest::Client,
    recent: Mutex<HashMap<String, VecDeque<RecentError>>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Why a request was not let in.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No bearer token.
    #[error("missing `Authorization: Bearer <client token>` (fleet token issue --client NAME)")]
    Missing,
    /// Not an active client or admin token.
    #[error("not a valid client token (a node's agent token is not one)")]
    Invalid,
    /// The token store failed.
    #[error("cannot check the token: {0}")]
    Store(String),
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (status, kind, code) = match self {
            AuthError::Missing => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "missing_token",
            ),
            AuthError::Invalid => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_token",
            ),
            AuthError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", "store"),
        };
        error(status, kind, code, self.to_string())
    }
}

/// The gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store or ledger.
    #[error("{0}")]
    Store(String),
    /// The HTTP client.
    #[error("cannot build the upstream HTTP client: {0}")]
    Client(String),
}

impl Gateway {
    /// A gateway over the store at `db`, sharing HQ's in-flight table.
    pub fn new(
        settings: Settings,
        db: &Path,
        inflight: Arc<InFlight>,
        table: RoutingTable,
    ) -> Result<Gateway, StartError> {
        crate::hq::client::init_tls();
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .user_agent(concat!("fleet-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StartError::Client(e.to_string()))?;
        Ok(Gateway {
            breakers: Breakers::new(settings.breaker_failures, settings.breaker_cooldown),
            settings,
            table: RwLock::new(Arc::new(table)),
            policy: RwLock::new(Arc::new(Policy::default())),
            alerting: std::sync::atomic::AtomicBool::new(false),
            inflight,
            metrics: Metrics::new(),
            ledger: Ledger::open(db).map_err(|e| StartError::Store(e.to_string()))?,
            tokens: Mutex::new(Store::open(db).map_err(StartError::Store)?),
            client,
            recent: Mutex::new(HashMap::new()),
        })
    }

    /// The live routing table now.
    pub fn table(&self) -> Arc<RoutingTable> {
        match self.table.read() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the live routing table (HQ calls this as node states change).
    pub fn set_table(&self, table: RoutingTable) {
        let table = Arc::new(table);
        match self.table.write() {
            Ok(mut t) => *t = table,
            Err(p) => *p.into_inner() = table,
        }
    }

    /// The cloud policy now.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the cloud policy (HQ calls this with each table).
    pub fn set_policy(&self, policy: Policy) {
        let policy = Arc::new(policy);
        match self.policy.write() {
            Ok(mut p) => *p = policy,
            Err(p) => *p.into_inner() = policy,
        }
    }

    /// Notes an upstream error for `fleet status`.
    pub fn note_error(&self, upstream: &str, what: String) {
        let Ok(mut m) = self.recent.lock() else {
            return;
        };
        let q = m.entry(upstream.to_string()).or_default();
        if q.len() == RECENT {
            q.pop_front();
        }
        q.push_back(RecentError {
            at: crate::util::rfc3339(now_ms()),
            // A provider may quote the key it was sent: never kept as said.
            error: crate::secret::mask(&what).into_owned(),
        });
    }

    /// The recent errors of every upstream.
    pub fn recent_errors(&self) -> HashMap<String, Vec<RecentError>> {
        self.recent
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The client a request comes from: the name of its client (or admin) token. Anything
    /// else — no token, an unknown or revoked one, a node's agent token, a scrape token — is
    /// refused, with nothing about the fleet in the answer.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<String, AuthError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let found = self
            .tokens
            .lock()
            .map_err(|_| "store lock poisoned".to_string())
            .and_then(|s| s.token_by_hash(&tokens::hash(token), now_ms()))
            .map_err(AuthError::Store)?;
        match found {
            Some(t) if matches!(t.kind, TokenKind::Client | TokenKind::Admin) => Ok(t.name),
            _ => Err(AuthError::Invalid),
        }
    }
}
