//! HQ's web dashboard (`GET /`): every node with its state, heartbeat age, resources, models
//! and requests in flight, the live routing table and today's spend — server-rendered HTML
//! that works without JavaScript (it then reloads itself every 10 s) and, with it, updates in
//! place from an event stream (`/dashboard/events`, every 2 s). Reading it needs a session
//! from `fleet dashboard` (a one-time link) or a client token.

pub mod sessions;
pub mod view;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};

use crate::hq::server::{AppState, statuses};

/// The session cookie's name.
pub const COOKIE: &str = "fleet_session";

fn cookie_session(st: &AppState, headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .find_map(|secret| st.sessions.session(secret))
}

/// Who is looking: a browser session, or a client/admin bearer token.
fn viewer(st: &AppState, headers: &HeaderMap) -> Option<String> {
    cookie_session(st, headers).or_else(|| st.gateway.authenticate(headers).ok())
}

fn refused() -> Response {
    let body = "<!doctype html><meta charset=utf-8><title>fleet</title>\
        <p>This dashboard needs a session. On the controller, run <code>fleet dashboard</code>: \
        it opens a one-time link that signs this browser in.</p>";
    (StatusCode::UNAUTHORIZED, Html(body)).into_response()
}

fn render(st: &AppState, whole: bool) -> Result<String, String> {
    let nodes = statuses(st)?;
    let repo = st
        .repo
        .read()
        .map_err(|_| "repo lock poisoned".to_string())?
        .clone();
    let table = st.gateway.table();
    let roles = |n: &str| {
        repo.inventory
            .nodes
            .get(n)
            .map(|s| s.role.value.clone())
            .unwrap_or_default()
    };
    let inputs = view::Inputs {
        fleet: repo.inventory.fleet.name.as_deref().unwrap_or(""),
        nodes: &nodes,
        roles: &roles,
        table: &table,
        gateway: &st.gateway,
    };
    let out = if whole {
        view::full(&inputs)
    } else {
        view::live(&inputs)
    };
    out.map_err(|e| format!("dashboard: {e}"))
}

fn no_store(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// `GET /`.
pub(crate) async fn page(State(st): State<Arc<AppState>>, req: Request) -> Response {
    if viewer(&st, req.headers()).is_none() {
        return refused();
    }
    let st2 = st.clone();
    match tokio::task::spawn_blocking(move || render(&st2, true)).await {
        Ok(Ok(html)) => no_store(Html(html).into_response()),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /dashboard/events`: the live part of the page every 2 s, as `update` events.
pub(crate) async fn events(State(st): State<Arc<AppState>>, req: Request) -> Response {
    if viewer(&st, req.headers()).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let stream = futures_util::stream::unfold((st, true), |(st, first)| async move {
        if !first {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let st2 = st.clone();
        let html = tokio::task::spawn_blocking(move || render(&st2, false))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let event = Event::default().event("update").data(html);
        Some((Ok::<Event, Infallible>(event), (st, false)))
    });
    no_store(
        Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response(),
    )
}

/// `GET /login?code=…`'s query.
#[derive(Debug, serde::Deserialize)]
pub struct Login {
    code: Option<String>,
}

/// `GET /login?code=…`: a valid one-time code becomes a session cookie and a redirect to `/`.
pub(crate) async fn login(State(st): State<Arc<AppState>>, Query(q): Query<Login>) -> Response {
    let Some((secret, who)) = q.code.as_deref().and_then(|c| st.sessions.redeem(c)) else {
        let body = "<!doctype html><meta charset=utf-8><title>fleet</title>\
            <p>This link is not valid (used, expired or mistyped). Run <code>fleet dashboard</code> again.</p>";
        return (StatusCode::UNAUTHORIZED, Html(body)).into_response();
    };
    tracing::info!("dashboard: a browser signed in as `{who}`");
    let secure = if st.cfg.tls.is_some() { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={secret}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        sessions::SESSION_TTL.as_secs()
    );
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    no_store(r)
}

/// `POST /api/dashboard/link` (client or admin token): a one-time login path for a browser.
pub(crate) async fn link(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let who = match st.gateway.authenticate(req.headers()) {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    match st.sessions.new_code(&who) {
        Ok(code) => Json(serde_json::json!({
            "path": format!("/login?code={code}"),
            "expires_in_secs": sessions::CODE_TTL.as_secs(),
        }))
        .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}
