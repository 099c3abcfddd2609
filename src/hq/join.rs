//! Machines joining the fleet: `POST /api/join` with a one-time, expiring join token records a
//! new machine as *pending* (its facts and how to reach it over ssh); `GET /api/pending` lists
//! them for `fleet nodes --pending`, and `fleet adopt` turns one into an inventory node.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use crate::hq::server::{AppState, bearer, error};
use crate::hq::store::{Store, now_ms, rfc3339};
use crate::hq::wire::{JoinRequest, PendingNode, PendingResponse};

/// Largest join request accepted (facts of a machine are a few KiB).
pub const MAX_JOIN_BODY: usize = 16 * 1024;

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No join token has this secret.
    Unknown,
    /// The token was used already (when).
    Used(String),
    /// The token expired (when).
    Expired(String),
    /// The token was revoked.
    Revoked,
    /// A node of that name is in the inventory or pending.
    NameTaken(String),
}

impl Refused {
    /// The HTTP status and what to say.
    pub fn answer(&self) -> (StatusCode, String) {
        match self {
            Refused::Unknown => (
                StatusCode::UNAUTHORIZED,
                "not a valid join token; ask the fleet's operator for one (`fleet token issue --join`)"
                    .into(),
            ),
            Refused::Used(at) => (
                StatusCode::UNAUTHORIZED,
                format!("this join token was already used (at {at}); a join token works once: ask for a new one"),
            ),
            Refused::Expired(at) => (
                StatusCode::UNAUTHORIZED,
                format!("this join token expired at {at}; ask for a new one"),
            ),
            Refused::Revoked => (
                StatusCode::UNAUTHORIZED,
                "this join token was revoked; ask for a new one".into(),
            ),
            Refused::NameTaken(why) => (StatusCode::CONFLICT, why.clone()),
        }
    }
}

/// One pending machine as stored.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Its name.
    pub name: String,
    /// When it joined (ms).
    pub joined_at: i64,
    /// The join token it used, by name.
    pub token_name: String,
    /// What it sent.
    pub request: JoinRequest,
}

impl Pending {
    /// The API's shape.
    pub fn to_wire(&self) -> PendingNode {
        PendingNode {
            name: self.name.clone(),
            joined_at: rfc3339(self.joined_at),
            token: self.token_name.clone(),
            request: self.request.clone(),
        }
    }
}

impl Store {
    /// Uses the join token whose hash is `hash` to record `req` as pending, in one
    /// transaction: the token is checked (known, not revoked, not used, not expired), then the
    /// name (`in_inventory`: HQ's inventory has it; or a pending machine has it), and only then
    /// marked used, so two joins racing with one token cannot both succeed, and a refused name
    /// leaves the token usable.
    pub fn consume_join(
        &mut self,
        hash: &str,
        req: &JoinRequest,
        in_inventory: bool,
        now: i64,
    ) -> Result<Result<String, Refused>, String> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| e.to_string())?;
        let row = tx
            .query_row(
                "SELECT name, revoked_at, used_at, expires_at FROM tokens WHERE kind = 'join' AND hash = ?1",
                params![hash],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| e.to_string())?;
        let token_name = match row {
            None => return Ok(Err(Refused::Unknown)),
            Some((_, Some(_), _, _)) => return Ok(Err(Refused::Revoked)),
            Some((_, _, Some(used), _)) => return Ok(Err(Refused::Used(rfc3339(used)))),
            Some((_, _, _, Some(exp))) if exp <= now => {
                return Ok(Err(Refused::Expired(rfc3339(exp))));
            }
            Some((name, ..)) => name,
        };
        if in_inventory {
            return Ok(Err(Refused::NameTaken(format!(
                "a node called `{0}` is already in the inventory; join again with another name (`fleet join … --name NAME`)",
                req.name
            ))));
        }
        let pending: Option<i64> = tx
            .query_row(
                "SELECT joined_at FROM pending WHERE name = ?1",
                params![req.name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| e.to_string())?;
        if let Some(at) = pending {
            return Ok(Err(Refused::NameTaken(format!(
                "a machine called `{}` joined at {} and waits to be adopted; join again with another name (`fleet join … --name NAME`)",
                req.name,
                rfc3339(at)
            ))));
        }
        let body = serde_json::to_string(req).map_err(|e| e.to_string())?;
        tx.execute(
            "UPDATE tokens SET used_at = ?2, last_used_at = ?2 WHERE name = ?1",
            params![token_name, now],
        )
        .map_err(|e| e.to_string())?;
        tx.execute(
            "INSERT INTO pending (name, joined_at, token_name, body) VALUES (?1, ?2, ?3, ?4)",
            params![req.name, now, token_name, body],
        )
        .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        Ok(Ok(token_name))
    }

    /// Every pending machine, by name.
    pub fn pending(&self) -> Result<Vec<Pending>, String> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, joined_at, token_name, body FROM pending ORDER BY name")
            .map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for row in rows {
            let (name, joined_at, token_name, body) = row.map_err(|e| e.to_string())?;
            // Only bodies HQ checked are stored; one it cannot read again is skipped.
            if let Ok(request) = serde_json::from_str(&body) {
                out.push(Pending {
                    name,
                    joined_at,
                    token_name,
                    request,
                });
            }
        }
        Ok(out)
    }

    /// Removes a pending machine (adopted); false when there was none of that name.
    pub fn remove_pending(&self, name: &str) -> Result<bool, String> {
        self.conn
            .execute("DELETE FROM pending WHERE name = ?1", params![name])
            .map(|n| n > 0)
            .map_err(|e| e.to_string())
    }
}

/// Whether `name` is a valid name for a joining machine: what the inventory accepts, starting
/// with a letter (never `-`: the name ends up on command lines), at most 63 characters.
pub fn valid_node_name(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && crate::spec::decode::is_identifier(&name.replace('-', "_"))
}

/// A node name from a host name: its first label, lower-cased, anything but letters, digits,
/// `-` and `_` turned into `-`, starting with a letter (`Mac-Studio.local` → `mac-studio`,
/// `7th_box` → `n-7th_box`, `_x` → `n-_x`); `None` when nothing usable is left.
pub fn name_from_hostname(hostname: &str) -> Option<String> {
    let label = hostname.trim().split('.').next().unwrap_or("");
    let mut out = String::new();
    for c in label.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').to_string();
    if out.is_empty() {
        return None;
    }
    let out = if out.starts_with(|c: char| c.is_ascii_alphabetic()) {
        out
    } else {
        format!("n-{out}")
    };
    let out: String = out.chars().take(63).collect();
    let out = out.trim_end_matches('-').to_string();
    valid_node_name(&out).then_some(out)
}

/// Checks what a join request says beyond its shape.
pub fn check_request(req: &JoinRequest) -> Result<(), String> {
    if !valid_node_name(&req.name) {
        return Err(format!(
            "`{}` is not a valid node name (letters, digits, `-` and `_`, starting with a letter, at most 63)",
            req.name.chars().take(70).collect::<String>()
        ));
    }
    let a = &req.ssh.address;
    if a.is_empty()
        || a.len() > 253
        || a.starts_with('-')
        || a.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("`ssh.address` must be an address or host name".into());
    }
    let u = &req.ssh.user;
    let user_ok = !u.is_empty()
        && u.len() <= 32
        && !u.starts_with('-')
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if !user_ok {
        return Err("`ssh.user` must be an account name".into());
    }
    if req.ssh.port == 0 {
        return Err("`ssh.port` must be 1-65535".into());
    }
    // What a machine says of itself is shown in tables later: no control characters (a
    // terminal escape in a "host name" would rewrite the operator's screen).
    let facts = serde_json::to_value(&req.facts).unwrap_or_default();
    if let Some(bad) = control_chars(&facts, "facts") {
        return Err(format!("`{bad}` holds control characters"));
    }
    if req.fleet_version.chars().any(char::is_control) || req.fleet_version.len() > 64 {
        return Err("`fleet_version` must be a version".into());
    }
    Ok(())
}

/// The path of the first string in `v` that holds a control character.
fn control_chars(v: &serde_json::Value, at: &str) -> Option<String> {
    match v {
        serde_json::Value::String(s) => s.chars().any(char::is_control).then(|| at.to_string()),
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| control_chars(x, &format!("{at}[{i}]"))),
        serde_json::Value::Object(o) => o
            .iter()
            .find_map(|(k, x)| control_chars(x, &format!("{at}.{k}"))),
        _ => None,
    }
}

/// `POST /api/join`: a new machine registers as pending with a join token.
pub(crate) async fn join(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let Some(token) = bearer(req.headers()).map(str::to_string) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <join token>`",
        );
    };
    let too_big = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_JOIN_BODY);
    if too_big {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "join request over 16 KiB");
    }
    let read = axum::body::to_bytes(req.into_body(), MAX_JOIN_BODY);
    let body = match tokio::time::timeout(st.cfg.limits.body_timeout, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return error(StatusCode::PAYLOAD_TOO_LARGE, "join request over 16 KiB"),
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "the join request's body did not arrive in time",
            );
        }
    };
    let jr: JoinRequest = match serde_json::from_slice(&body) {
        Ok(j) => j,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("malformed join request: {e}"),
            );
        }
    };
    if let Err(e) = check_request(&jr) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("malformed join request: {e}"),
        );
    }
    let known = |st: &AppState| {
        st.repo
            .read()
            .map(|r| r.inventory.nodes.contains_key(&jr.name))
            .unwrap_or(false)
    };
    // A node `fleet adopt` or `fleet provision` just wrote is in the files before HQ reloads.
    crate::hq::server::reload_if_changed(&st).await;
    let in_inventory = known(&st);
    let hash = crate::hq::tokens::hash(&token);
    let done = match st.reader.lock() {
        Ok(mut s) => s.consume_join(&hash, &jr, in_inventory, now_ms()),
        Err(_) => Err("store lock poisoned".to_string()),
    };
    match done {
        Ok(Ok(token_name)) => {
            tracing::info!(
                "`{}` joined (join token `{token_name}`); pending until `fleet adopt {}`",
                jr.name,
                jr.name
            );
            (
                StatusCode::OK,
                Json(serde_json::json!({ "pending": jr.name })),
            )
                .into_response()
        }
        Ok(Err(r)) => {
            let (code, msg) = r.answer();
            error(code, msg)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `GET /api/ca` (no token: it is public, committed in the repo): the fleet CA's certificate,
/// which `fleet join` checks against the fingerprint in its join token.
pub(crate) async fn ca(State(st): State<Arc<AppState>>) -> Response {
    let path = crate::hq::client::repo_ca(&st.cfg.repo_root);
    match tokio::fs::read(&path).await {
        Ok(pem) => ([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response(),
        Err(_) => error(StatusCode::NOT_FOUND, "this HQ's repo has no fleet CA"),
    }
}

/// `GET /api/pending`: machines that joined and wait to be adopted.
pub(crate) async fn list(State(st): State<Arc<AppState>>) -> Response {
    let found = match st.reader.lock() {
        Ok(s) => s.pending(),
        Err(_) => Err("store lock poisoned".to_string()),
    };
    match found {
        Ok(p) => Json(PendingResponse {
            pending: p.iter().map(Pending::to_wire).collect(),
        })
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hq::store::TokenKind;
    use crate::hq::wire::{JoinFacts, SshEndpoint};

    fn req(name: &str) -> JoinRequest {
        JoinRequest {
            name: name.into(),
            ssh: SshEndpoint {
                address: "10.0.0.9".into(),
                user: "root".into(),
                port: 22,
            },
            facts: JoinFacts::default(),
            fleet_version: "t".into(),
        }
    }

    #[test]
    fn a_join_token_works_once_before_it_expires_and_not_after_revocation() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = Store::open(&dir.path().join("hq.sqlite")).expect("open");
        let now = now_ms();
        s.issue_expiring("join-a", TokenKind::Join, "ha", Some(now + 60_000))
            .expect("issue");
        s.issue_expiring("join-b", TokenKind::Join, "hb", Some(now - 1))
            .expect("issue");
        s.issue_expiring("join-c", TokenKind::Join, "hc", Some(now + 60_000))
            .expect("issue");
        assert!(s.revoke_token("join-c").expect("revoke"));
        // A join token opens no read.
        assert!(s.token_by_hash("ha", now).expect("lookup").is_none());
        assert!(!s.tokens().expect("tokens").contains_key("join-a"));

        assert_eq!(
            s.consume_join("nope", &req("n1"), false, now).expect("db"),
            Err(Refused::Unknown)
        );
        assert!(matches!(
            s.consume_join("hb", &req("n1"), false, now).expect("db"),
            Err(Refused::Expired(_))
        ));
        assert_eq!(
            s.consume_join("hc", &req("n1"), false, now).expect("db"),
            Err(Refused::Revoked)
        );
        // A name in the inventory is refused and the token stays usable.
        assert!(matches!(
            s.consume_join("ha", &req("bob"), true, now).expect("db"),
            Err(Refused::NameTaken(_))
        ));
        assert_eq!(
            s.consume_join("ha", &req("n1"), false, now).expect("db"),
            Ok("join-a".to_string())
        );
        assert!(matches!(
            s.consume_join("ha", &req("n2"), false, now).expect("db"),
            Err(Refused::Used(_))
        ));
        let list = s.token_list().expect("list");
        let a = list.iter().find(|t| t.name == "join-a").expect("listed");
        assert!(a.used.is_some() && a.expires.is_some());
        let p = s.pending().expect("pending");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].request, req("n1"));
        // A second machine with a pending name is refused.
        s.issue_expiring("join-d", TokenKind::Join, "hd", None)
            .expect("issue");
        assert!(matches!(
            s.consume_join("hd", &req("n1"), false, now).expect("db"),
            Err(Refused::NameTaken(m)) if m.contains("waits to be adopted")
        ));
        assert!(s.remove_pending("n1").expect("remove"));
        assert!(!s.remove_pending("n1").expect("remove twice"));
    }

    #[test]
    fn names_from_host_names() {
        assert_eq!(
            name_from_hostname("Mac-Studio.local").as_deref(),
            Some("mac-studio")
        );
        assert_eq!(name_from_hostname("host2").as_deref(), Some("host2"));
        assert_eq!(name_from_hostname("7th box").as_deref(), Some("n-7th-box"));
        assert_eq!(
            name_from_hostname("gpu_box_01").as_deref(),
            Some("gpu_box_01")
        );
        assert_eq!(name_from_hostname("..."), None);
        assert_eq!(name_from_hostname("ü"), None);
        let long = "a".repeat(100);
        assert_eq!(name_from_hostname(&long).map(|n| n.len()), Some(63));
    }

    #[test]
    fn requests_are_checked() {
        assert!(check_request(&req("n1")).is_ok());
        assert!(check_request(&req("1n")).is_err());
        assert!(check_request(&req("a b")).is_err());
        assert!(check_request(&req("-rf")).is_err());
        assert!(check_request(&req("_x")).is_err());
        let mut r = req("n1");
        r.ssh.address = "-oProxyCommand=x".into();
        assert!(check_request(&r).is_err());
        let mut r = req("n1");
        r.ssh.user = "root; rm".into();
        assert!(check_request(&r).is_err());
        let mut r = req("n1");
        r.ssh.port = 0;
        assert!(check_request(&r).is_err());
        let mut r = req("n1");
        r.facts.hostname = Some("box\u{1b}[2J".into());
        assert_eq!(
            check_request(&r),
            Err("`facts.hostname` holds control characters".to_string())
        );
        let mut r = req("n1");
        r.facts.disks.push(crate::facts::Disk {
            mount: "/\n".into(),
            total_gb: 1.0,
            free_gb: 1.0,
        });
        assert!(
            check_request(&r)
                .expect_err("a newline in a mount")
                .contains("facts.disks[0].mount")
        );
    }
}
