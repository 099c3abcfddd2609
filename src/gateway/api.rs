//! The gateway's read endpoints: `GET /v1/models` (what the fleet can serve now, for OpenAI
//! clients), `GET /api/gateway` (workers with in-flight counts, breakers and recent errors:
//! `fleet peers`/`fleet status`) and `GET /api/spend` (the ledger: `fleet spend`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::gateway::Gateway;
use crate::gateway::breaker::View;
use crate::gateway::errors::error;
use crate::gateway::ledger::{Row, today};
use crate::gateway::select::{candidates, clouds, takes_work};
use crate::gateway::state::RecentError;

/// `GET /v1/models`: `task:<type>` for every chat rule some upstream can take now, and every
/// model an online worker holds.
pub async fn models(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    if let Err(e) = gw.authenticate(req.headers()) {
        return e.into_response();
    }
    let table = gw.table();
    let mut ids = Vec::new();
    for r in &table.rules {
        let task = format!("task:{}", r.task);
        if r.capability.is_none() && candidates(&table, &task).is_ok_and(|c| !c.is_empty()) {
            ids.push(task);
        }
    }
    let held: BTreeSet<&str> = table
        .workers
        .iter()
        .filter(|w| w.kind == "ollama" && takes_work(w))
        .flat_map(|w| w.models.iter().map(String::as_str))
        .collect();
    ids.extend(held.into_iter().map(str::to_string));
    let data: Vec<serde_json::Value> = ids
        .into_iter()
        .map(|id| serde_json::json!({ "id": id, "object": "model", "created": 0, "owned_by": "fleet" }))
        .collect();
    Json(serde_json::json!({ "object": "list", "data": data })).into_response()
}

/// One worker as the gateway sees it.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerView {
    /// Node name, or `cloud:<provider>`.
    pub name: String,
    /// Live state (`online`, `degraded`, `offline`, …); `cloud` for a provider.
    pub status: String,
    /// Models it serves.
    pub models: Vec<String>,
    /// Requests in flight now.
    pub in_flight: u32,
    /// Requests it takes at once (0: no limit).
    pub max_concurrent: u32,
    /// Its routing priority.
    pub priority: u32,
    /// Its breaker.
    pub breaker: BreakerView,
    /// Its last upstream errors, oldest first.
    pub recent_errors: Vec<ErrorView>,
}

/// A breaker, as JSON.
#[derive(Debug, Serialize, Deserialize)]
pub struct BreakerView {
    /// `closed`, `open` or `half-open`.
    pub state: String,
    /// Consecutive failures while closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// Seconds until a probe (open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_left_secs: Option<f64>,
}

impl From<View> for BreakerView {
    fn from(v: View) -> Self {
        BreakerView {
            state: v.state.to_string(),
            consecutive_failures: v.consecutive_failures,
            cooldown_left_secs: v.cooldown_left_secs,
        }
    }
}

/// An upstream error, as JSON.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorView {
    /// When (RFC 3339).
    pub at: String,
    /// What happened.
    pub error: String,
}

impl From<RecentError> for ErrorView {
    fn from(e: RecentError) -> Self {
        ErrorView {
            at: e.at,
            error: e.error,
        }
    }
}

/// `GET /api/gateway`'s answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct GatewayView {
    /// Every worker and cloud provider.
    pub workers: Vec<WorkerView>,
    /// Spent today (UTC), USD.
    pub spend_today_usd: f64,
}

/// `GET /api/gateway`.
pub async fn status(State(gw): State<Arc<Gateway>>) -> Response {
    let table = gw.table();
    let now = Instant::now();
    let mut errors = gw.recent_errors();
    let mut take_errors = |name: &str| -> Vec<ErrorView> {
        errors
            .remove(name)
            .unwrap_or_default()
            .into_iter()
            .map(ErrorView::from)
            .collect()
    };
    let mut workers: Vec<WorkerView> = table
        .workers
        .iter()
        .filter(|w| w.kind == "ollama")
        .map(|w| WorkerView {
            name: w.name.clone(),
            status: w.status.clone().unwrap_or_else(|| "unknown".into()),
            models: w.models.clone(),
            in_flight: gw.inflight.count(&w.name),
            max_concurrent: w.max_concurrent,
            priority: w.priority,
            breaker: gw.breakers.view(&w.name, now).into(),
            recent_errors: take_errors(&w.name),
        })
        .collect();
    for c in clouds(&table) {
        let name = format!("cloud:{}", c.provider);
        workers.push(WorkerView {
            status: "cloud".into(),
            models: vec![c.model.clone()],
            in_flight: gw.inflight.count(&name),
            max_concurrent: 0,
            priority: 0,
            breaker: gw.breakers.view(&name, now).into(),
            recent_errors: take_errors(&name),
            name,
        });
    }
    let spend_today_usd = match gw.ledger.spent_on(&today()) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "ledger",
                e.to_string(),
            );
        }
    };
    Json(GatewayView {
        workers,
        spend_today_usd,
    })
    .into_response()
}

/// `GET /api/spend`'s query.
#[derive(Debug, Deserialize)]
pub struct SpendQuery {
    /// First day (default: the first of this month, UTC).
    pub from: Option<String>,
    /// Last day (default: today, UTC).
    pub to: Option<String>,
}

/// `GET /api/spend`'s answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct SpendView {
    /// Today (UTC).
    pub today: String,
    /// First day covered.
    pub from: String,
    /// Last day covered.
    pub to: String,
    /// Rows by day, provider, model and client.
    pub rows: Vec<Row>,
}

fn is_day(s: &str) -> bool {
    time::Date::parse(
        s,
        &time::macros::format_description!("[year]-[month]-[day]"),
    )
    .is_ok()
}

/// `GET /api/spend`.
pub async fn spend(State(gw): State<Arc<Gateway>>, Query(q): Query<SpendQuery>) -> Response {
    let today = today();
    let from = q.from.unwrap_or_else(|| format!("{}-01", &today[..7]));
    let to = q.to.unwrap_or_else(|| today.clone());
    for d in [&from, &to] {
        if !is_day(d) {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "bad_day",
                format!("`{d}` is not a day like 2026-12-01"),
            );
        }
    }
    match gw.ledger.rows(&from, &to) {
        Ok(rows) => Json(SpendView {
            today,
            from,
            to,
            rows,
        })
        .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "ledger",
            e.to_string(),
        ),
    }
}
