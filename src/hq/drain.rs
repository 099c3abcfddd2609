//! Draining: a node marked draining (by `fleet drain NODE` with an admin token, or by its own
//! agent token with `fleet leave`) shows `draining` in every status, leaves every routing pool
//! at once, and — only when no request is in flight to it any more — is told by HQ's heartbeat
//! answer to stop its agent. The mark lives in HQ's SQLite, so it survives a restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rusqlite::{OptionalExtension, params};

use crate::hq::inflight::InFlight;
use crate::hq::server::{AppState, bearer, error};
use crate::hq::store::{Store, TokenEntry, TokenKind, now_ms, rfc3339};
use crate::hq::wire::{HeartbeatAnswer, NodeStatus};

/// The status a draining node has.
pub const DRAINING: &str = "draining";

/// A node being drained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    /// Since when (ms).
    pub since: i64,
    /// Who asked: `admin:<token name>` or `leave` (the node itself).
    pub by: String,
    /// When HQ first told its agent to stop (ms).
    pub stop_sent_at: Option<i64>,
}

impl Store {
    /// Marks `node` draining; false when it already was (the first mark is kept).
    pub fn drain(&self, node: &str, by: &str) -> Result<bool, String> {
        self.conn
            .execute(
                "INSERT INTO drains (node, since, by) VALUES (?1, ?2, ?3) ON CONFLICT(node) DO NOTHING",
                params![node, now_ms(), by],
            )
            .map(|n| n > 0)
            .map_err(|e| e.to_string())
    }

    /// Ends `node`'s draining; its record when it was draining.
    pub fn undrain(&self, node: &str) -> Result<Option<Drain>, String> {
        let was = self.drain_of(node)?;
        self.conn
            .execute("DELETE FROM drains WHERE node = ?1", params![node])
            .map_err(|e| e.to_string())?;
        Ok(was)
    }

    /// `node`'s drain, if it is draining.
    pub fn drain_of(&self, node: &str) -> Result<Option<Drain>, String> {
        self.conn
            .query_row(
                "SELECT since, by, stop_sent_at FROM drains WHERE node = ?1",
                params![node],
                |r| {
                    Ok(Drain {
                        since: r.get(0)?,
                        by: r.get(1)?,
                        stop_sent_at: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(|e| e.to_string())
    }

    /// Every draining node.
    pub fn drains(&self) -> Result<BTreeMap<String, Drain>, String> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT node, since, by, stop_sent_at FROM drains")
            .map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Drain {
                        since: r.get(1)?,
                        by: r.get(2)?,
                        stop_sent_at: r.get(3)?,
                    },
                ))
            })
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<BTreeMap<_, _>, _>>()
            .map_err(|e| e.to_string())
    }

    /// Records that `node`'s agent was told to stop (the first time only).
    pub fn note_stop_sent(&self, node: &str) -> Result<(), String> {
        self.conn
            .execute(
                "UPDATE drains SET stop_sent_at = ?2 WHERE node = ?1 AND stop_sent_at IS NULL",
                params![node, now_ms()],
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Whether a node's agent is told to stop: it is draining and nothing is in flight to it.
pub fn should_stop(draining: bool, inflight: &InFlight, node: &str) -> bool {
    draining && inflight.count(node) == 0
}

/// Marks the statuses of draining nodes: status `draining`, since when, and why first.
pub fn mark(statuses: &mut [NodeStatus], drains: &BTreeMap<String, Drain>, inflight: &InFlight) {
    for s in statuses {
        let Some(d) = drains.get(&s.name) else {
            continue;
        };
        let busy = inflight.count(&s.name);
        let what = match (busy, d.stop_sent_at) {
            (0, Some(at)) => format!("its agent was told to stop at {}", rfc3339(at)),
            (0, None) => "nothing in flight; its agent stops at its next heartbeat".to_string(),
            (n, _) => format!(
                "{} in flight; its agent stops once they finish",
                crate::util::count(n, "request", "requests")
            ),
        };
        s.reasons.insert(
            0,
            format!(
                "{} is draining since {} ({}): it takes no new work; {what}; `fleet drain --undo {}` brings it back",
                s.name,
                rfc3339(d.since),
                d.by,
                s.name
            ),
        );
        s.status = DRAINING.to_string();
        s.draining_since = Some(rfc3339(d.since));
    }
}

/// The answer to `node`'s stored heartbeat: `stop` once it is draining and idle.
pub(crate) fn heartbeat_answer(st: &AppState, node: &str) -> HeartbeatAnswer {
    let drain = match st.reader.lock() {
        Ok(s) => s.drain_of(node).unwrap_or_else(|e| {
            tracing::warn!("cannot read whether {node} is draining: {e}");
            None
        }),
        Err(_) => None,
    };
    let mut answer = HeartbeatAnswer {
        stored: true,
        ..Default::default()
    };
    if should_stop(drain.is_some(), &st.inflight, node) {
        if drain.as_ref().is_some_and(|d| d.stop_sent_at.is_none()) {
            tracing::info!("{node} is drained (nothing in flight): telling its agent to stop");
            if let Ok(s) = st.reader.lock()
                && let Err(e) = s.note_stop_sent(node)
            {
                tracing::warn!("cannot record that {node}'s agent was told to stop: {e}");
            }
        }
        answer.stop = true;
        answer.reason = Some(format!(
            "{node} is drained (`fleet drain --undo {node}` and `fleet provision {node}` bring it back)"
        ));
    }
    answer
}

/// A refusal: its status and why.
type Refusal = (StatusCode, String);

/// The valid token a request carries, or why it is refused.
fn token_of(st: &AppState, req: &Request) -> Result<TokenEntry, Refusal> {
    let Some(token) = bearer(req.headers()) else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <token>`".into(),
        ));
    };
    let hash = crate::hq::tokens::hash(token);
    let found = match st.reader.lock() {
        Ok(s) => s.token_by_hash(&hash, now_ms()),
        Err(_) => Err("store lock poisoned".to_string()),
    };
    match found {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err((StatusCode::UNAUTHORIZED, "invalid or revoked token".into())),
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, e)),
    }
}

/// What a drain or undrain did, as answered.
fn changed(st: &AppState, node: &str, draining: bool, newly: bool) -> Response {
    // The conductor's table is re-rendered now, not at its next tick.
    st.conductor_wake.notify_one();
    Json(serde_json::json!({
        "node": node,
        "draining": draining,
        "changed": newly,
        "inflight": st.inflight.count(node),
    }))
    .into_response()
}

fn set_draining(st: &AppState, node: &str, by: &str) -> Response {
    let in_inventory = st
        .repo
        .read()
        .map(|r| r.inventory.nodes.contains_key(node))
        .unwrap_or(false);
    if !in_inventory {
        return error(
            StatusCode::NOT_FOUND,
            format!("no node `{node}` in HQ's inventory"),
        );
    }
    let done = match st.reader.lock() {
        Ok(s) => s.drain(node, by),
        Err(_) => Err("store lock poisoned".to_string()),
    };
    match done {
        Ok(newly) => {
            if newly {
                tracing::info!("{node} is draining ({by})");
            }
            changed(st, node, true, newly)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn require_admin(st: &AppState, req: &Request) -> Result<TokenEntry, Refusal> {
    let t = token_of(st, req)?;
    if t.kind != TokenKind::Admin {
        return Err((
            StatusCode::FORBIDDEN,
            "draining a node needs an admin token (`fleet token issue --admin NAME`)".into(),
        ));
    }
    Ok(t)
}

/// `POST /api/nodes/{name}/drain` (admin token): mark a node draining.
pub(crate) async fn drain(
    State(st): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    req: Request,
) -> Response {
    let answer = match require_admin(&st, &req) {
        Ok(t) => set_draining(&st, &name, &format!("admin:{}", t.name)),
        Err((code, why)) => return error(code, why),
    };
    // The gateway stops choosing it now, not at its next refresh.
    crate::hq::server::refresh_gateway(&st).await;
    answer
}

/// `DELETE /api/nodes/{name}/drain` (admin token): the node takes work again.
pub(crate) async fn undrain(
    State(st): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    req: Request,
) -> Response {
    if let Err((code, why)) = require_admin(&st, &req) {
        return error(code, why);
    }
    let done = match st.reader.lock() {
        Ok(s) => s.undrain(&name),
        Err(_) => Err("store lock poisoned".to_string()),
    };
    match done {
        Ok(was) => {
            if was.is_some() {
                tracing::info!("{name} is no longer draining");
                crate::hq::server::refresh_gateway(&st).await;
            }
            let mut r = changed(&st, &name, false, was.is_some());
            // Whether its agent had been told to stop: then it must be started again.
            if let Some(stop) = was.and_then(|d| d.stop_sent_at) {
                r = Json(serde_json::json!({
                    "node": name,
                    "draining": false,
                    "changed": true,
                    "agent_stopped_at": rfc3339(stop),
                }))
                .into_response();
            }
            r
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `POST /api/leave` (a node token): the node drains itself; a node token drains only its own.
pub(crate) async fn leave(State(st): State<Arc<AppState>>, req: Request) -> Response {
    match token_of(&st, &req) {
        Ok(t) if t.kind == TokenKind::Node => {
            let answer = set_draining(&st, &t.name, "leave");
            crate::hq::server::refresh_gateway(&st).await;
            answer
        }
        Ok(_) => error(
            StatusCode::FORBIDDEN,
            "`leave` takes the node's own agent token (an admin drains with `fleet drain NODE`)",
        ),
        Err((code, why)) => error(code, why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hq::wire::NodeStatus;

    fn status(name: &str) -> NodeStatus {
        NodeStatus {
            name: name.into(),
            status: "online".into(),
            reasons: Vec::new(),
            last_heartbeat: None,
            heartbeat_age_secs: None,
            last: None,
            draining_since: None,
        }
    }

    #[test]
    fn the_agent_is_told_to_stop_only_when_nothing_is_in_flight() {
        let f = InFlight::new();
        assert!(!should_stop(false, &f, "w1"), "not draining: never");
        let a = f.try_take("w1", 2).expect("slot");
        let b = f.try_take("w1", 2).expect("slot");
        let other = f.try_take("w2", 1).expect("slot");
        assert!(!should_stop(true, &f, "w1"), "two in flight");
        drop(a);
        assert!(!should_stop(true, &f, "w1"), "one still in flight");
        drop(b);
        assert!(should_stop(true, &f, "w1"), "idle: stop");
        assert!(!should_stop(true, &f, "w2"), "another worker's slot");
        drop(other);
        assert!(should_stop(true, &f, "w2"));
    }

    #[test]
    fn drains_survive_reopening_and_mark_statuses() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("hq.sqlite");
        {
            let s = Store::open(&path).expect("open");
            assert!(s.drain("w1", "admin:ops").expect("drain"));
            assert!(!s.drain("w1", "leave").expect("again"), "first mark kept");
        }
        let s = Store::open(&path).expect("reopen");
        let drains = s.drains().expect("drains");
        assert_eq!(drains["w1"].by, "admin:ops");
        let f = InFlight::new();
        let slot = f.try_take("w1", 0);
        let mut all = vec![status("w1"), status("w2")];
        mark(&mut all, &drains, &f);
        assert_eq!(all[0].status, DRAINING);
        assert!(
            all[0].reasons[0].contains("1 request in flight"),
            "{:?}",
            all[0].reasons
        );
        assert_eq!(all[1].status, "online");
        drop(slot);
        s.note_stop_sent("w1").expect("note");
        let drains = s.drains().expect("drains");
        let mut all = vec![status("w1")];
        mark(&mut all, &drains, &f);
        assert!(
            all[0].reasons[0].contains("told to stop"),
            "{:?}",
            all[0].reasons
        );
        assert!(s.undrain("w1").expect("undrain").is_some());
        assert!(s.undrain("w1").expect("undrain twice").is_none());
        assert!(s.drains().expect("drains").is_empty());
    }
}
