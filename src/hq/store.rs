//! HQ's state in one SQLite file (WAL, `synchronous=FULL`): agent tokens (hashes only), every
//! node's last heartbeat and a bounded history, and the alert state of `fleet check`.
//! The schema is versioned with `PRAGMA user_version` and migrated on open.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::hq::wire::{Heartbeat, HistoryEntry};

/// Schema migrations, in order; entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE tokens (
        node TEXT PRIMARY KEY,
        hash TEXT NOT NULL,
        issued_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE TABLE heartbeats (
        id INTEGER PRIMARY KEY,
        node TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX heartbeats_by_node ON heartbeats (node, id);
    CREATE TABLE last_seen (
        node TEXT PRIMARY KEY,
        heartbeat_id INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        body TEXT NOT NULL
    );",
    "CREATE TABLE alert_state (
        node TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        changed_at INTEGER NOT NULL
    );",
    // Token kinds (scopes) and rotation: the tokens of version 2 were all agent tokens and
    // stay valid as kind `node`; a rotated token's old hash stays valid until `prev_until`.
    "ALTER TABLE tokens RENAME COLUMN node TO name;
    ALTER TABLE tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'node';
    ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;
    ALTER TABLE tokens ADD COLUMN prev_hash TEXT;
    ALTER TABLE tokens ADD COLUMN prev_until INTEGER;
    CREATE INDEX tokens_by_hash ON tokens (hash);
    CREATE INDEX tokens_by_prev_hash ON tokens (prev_hash);",
    // Join tokens (one use, expiring), machines that joined and wait to be adopted, and
    // nodes being drained (see `hq::join` and `hq::drain`).
    "ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
    ALTER TABLE tokens ADD COLUMN used_at INTEGER;
    CREATE TABLE pending (
        name TEXT PRIMARY KEY,
        joined_at INTEGER NOT NULL,
        token_name TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE drains (
        node TEXT PRIMARY KEY,
        since INTEGER NOT NULL,
        by TEXT NOT NULL,
        stop_sent_at INTEGER
    );",
];

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// An agent's: posts its node's heartbeats, reads its own record and the routing table.
    Node,
    /// A client's (`fleet check`, `fleet route`, …): reads everything but `/metrics`.
    Client,
    /// An administrator's: reads everything.
    Admin,
    /// A metrics scraper's: reads `/metrics` only.
    Scrape,
    /// A join token's: registers one new machine as pending (`POST /api/join`), once, before
    /// it expires; it reads nothing.
    Join,
}

impl TokenKind {
    /// Its name in the store and in `fleet token list`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Node => "node",
            TokenKind::Client => "client",
            TokenKind::Admin => "admin",
            TokenKind::Scrape => "scrape",
            TokenKind::Join => "join",
        }
    }

    fn parse(s: &str) -> Option<TokenKind> {
        Some(match s {
            "node" => TokenKind::Node,
            "client" => TokenKind::Client,
            "admin" => TokenKind::Admin,
            "scrape" => TokenKind::Scrape,
            "join" => TokenKind::Join,
            _ => return None,
        })
    }
}

/// A valid token as the server checks it: its name, kind and the hashes that open it.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    /// Its name (the node's, for a node token).
    pub name: String,
    /// What it may do.
    pub kind: TokenKind,
    /// The current secret's hash.
    pub hash: String,
    /// The secret it replaced and until when (ms) that one still works.
    pub prev: Option<(String, i64)>,
}

impl TokenEntry {
    /// Whether `hash` opens this token at `now` (ms), compared in constant time.
    pub fn accepts(&self, hash: &str, now: i64) -> bool {
        let current = crate::hq::tokens::hashes_equal(&self.hash, hash);
        let previous = self
            .prev
            .as_ref()
            .is_some_and(|(h, until)| now < *until && crate::hq::tokens::hashes_equal(h, hash));
        current | previous
    }
}

/// One token as `fleet token list` shows it (never its secret nor its hash).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenInfo {
    /// Its name.
    pub name: String,
    /// What it may do.
    pub kind: TokenKind,
    /// When it was issued or last rotated (RFC 3339).
    pub created: String,
    /// When HQ last accepted it (RFC 3339), to within a minute.
    pub last_used: Option<String>,
    /// Until when the secret it replaced still works (RFC 3339), during a rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_valid_until: Option<String>,
    /// When it expires (RFC 3339): join tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// When it was used (RFC 3339): a join token works once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<String>,
}

pub use crate::util::{now_ms, rfc3339};

/// An open store.
#[derive(Debug)]
pub struct Store {
    /// The connection (`hq::join` and `hq::drain` keep their tables through it too).
    pub(super) conn: Connection,
}

/// A node's last heartbeat.
#[derive(Debug, Clone)]
pub struct LastSeen {
    /// Node name.
    pub node: String,
    /// When HQ received it (ms).
    pub received_at: i64,
    /// What it said.
    pub heartbeat: Heartbeat,
}

fn db_err(e: rusqlite::Error) -> String {
    e.to_string()
}

/// A token row (name, kind, hash, prev_hash, prev_until); None for a kind this fleet does not know.
fn token_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<TokenEntry>> {
    let kind: String = r.get(1)?;
    let prev = match (r.get::<_, Option<String>>(3)?, r.get::<_, Option<i64>>(4)?) {
        (Some(h), Some(u)) => Some((h, u)),
        _ => None,
    };
    let (name, hash): (String, String) = (r.get(0)?, r.get(2)?);
    Ok(TokenKind::parse(&kind).map(|kind| TokenEntry {
        name,
        kind,
        hash,
        prev,
    }))
}

impl Store {
    /// Opens (creating when needed) and migrates the store.
    pub fn open(path: &Path) -> Result<Store, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
        }
        let conn =
            Connection::open(path).map_err(|e| format!("cannot open `{}`: {e}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db_err)?;
        // WAL + FULL: a commit is on disk before it returns, so an answered heartbeat survives
        // a crash; readers never block the writer.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .map_err(|e| format!("cannot configure `{}`: {e}", path.display()))?;
        let store = Store { conn };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), String> {
        let version: usize = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
            .map_err(db_err)?
            .try_into()
            .unwrap_or(0);
        if version > MIGRATIONS.len() {
            return Err(format!(
                "the store has schema version {version}, newer than this fleet knows ({}); upgrade fleet",
                MIGRATIONS.len()
            ));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = self.conn.unchecked_transaction().map_err(db_err)?;
            tx.execute_batch(sql)
                .map_err(|e| format!("migration {} failed: {e}", i + 1))?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
        }
        Ok(())
    }

    /// The schema version.
    pub fn schema_version(&self) -> i64 {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap_or(0)
    }

    /// Counter that changes when another connection (e.g. `fleet token`) commits.
    pub fn data_version(&self) -> i64 {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .unwrap_or(0)
    }

    /// Stores a node token's hash (replacing any earlier token of that node).
    pub fn set_token(&self, node: &str, hash: &str) -> Result<(), String> {
        self.issue_token(node, TokenKind::Node, hash)
    }

    /// Stores a token's hash under `name` with its kind, replacing an earlier token of that
    /// name (and ending any rotation overlap).
    pub fn issue_token(&self, name: &str, kind: TokenKind, hash: &str) -> Result<(), String> {
        self.issue_expiring(name, kind, hash, None)
    }

    /// Stores a token's hash as [`Store::issue_token`] does, valid until `expires_at` (ms)
    /// when given (join tokens).
    pub fn issue_expiring(
        &self,
        name: &str,
        kind: TokenKind,
        hash: &str,
        expires_at: Option<i64>,
    ) -> Result<(), String> {
        self.conn
            .execute(
                "INSERT INTO tokens (name, kind, hash, issued_at, revoked_at, last_used_at, prev_hash, prev_until, expires_at, used_at)
                 VALUES (?1, ?2, ?3, ?4, NULL, NULL, NULL, NULL, ?5, NULL)
                 ON CONFLICT(name) DO UPDATE SET kind = excluded.kind, hash = excluded.hash,
                   issued_at = excluded.issued_at, revoked_at = NULL, last_used_at = NULL,
                   prev_hash = NULL, prev_until = NULL, expires_at = excluded.expires_at, used_at = NULL",
                params![name, kind.as_str(), hash, now_ms(), expires_at],
            )
            .map(|_| ())
            .map_err(db_err)
    }

    /// The kind of the active token called `name`, if there is one.
    pub fn token_kind(&self, name: &str) -> Result<Option<TokenKind>, String> {
        self.conn
            .query_row(
                "SELECT kind FROM tokens WHERE name = ?1 AND revoked_at IS NULL",
                params![name],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map(|k| k.and_then(|k| TokenKind::parse(&k)))
            .map_err(db_err)
    }

    /// Gives the active token `name` a new secret; the old one keeps working until
    /// `prev_until` (ms). False when there is no such token.
    pub fn rotate_token(&self, name: &str, hash: &str, prev_until: i64) -> Result<bool, String> {
        self.conn
            .execute(
                "UPDATE tokens SET prev_hash = hash, prev_until = ?3, hash = ?2, issued_at = ?4
                 WHERE name = ?1 AND revoked_at IS NULL",
                params![name, hash, prev_until, now_ms()],
            )
            .map(|n| n > 0)
            .map_err(db_err)
    }

    /// Revokes the token called `name` (its old secret too); false when it had none.
    pub fn revoke_token(&self, name: &str) -> Result<bool, String> {
        self.conn
            .execute(
                "UPDATE tokens SET revoked_at = ?2, prev_hash = NULL, prev_until = NULL
                 WHERE name = ?1 AND revoked_at IS NULL",
                params![name, now_ms()],
            )
            .map(|n| n > 0)
            .map_err(db_err)
    }

    /// Every active token by name.
    pub fn tokens(&self) -> Result<std::collections::HashMap<String, TokenEntry>, String> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT name, kind, hash, prev_hash, prev_until FROM tokens
                 WHERE revoked_at IS NULL AND kind != 'join'",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], token_entry)
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)?;
        Ok(rows
            .into_iter()
            .flatten()
            .map(|t| (t.name.clone(), t))
            .collect())
    }

    /// The active token `hash` opens at `now` (ms), if any.
    pub fn token_by_hash(&self, hash: &str, now: i64) -> Result<Option<TokenEntry>, String> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT name, kind, hash, prev_hash, prev_until FROM tokens
                 WHERE revoked_at IS NULL AND kind != 'join'
                   AND (hash = ?1 OR (prev_hash = ?1 AND prev_until > ?2))",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![hash, now], token_entry)
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)?;
        Ok(rows.into_iter().flatten().find(|t| t.accepts(hash, now)))
    }

    /// Records when tokens were last accepted (ms), in one transaction.
    pub fn touch_tokens(&mut self, used: &[(String, i64)]) -> Result<(), String> {
        let tx = self.conn.transaction().map_err(db_err)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE tokens SET last_used_at = MAX(COALESCE(last_used_at, 0), ?2) WHERE name = ?1",
                )
                .map_err(db_err)?;
            for (name, at) in used {
                stmt.execute(params![name, at]).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    /// Every active token, for `fleet token list`, by name.
    pub fn token_list(&self) -> Result<Vec<TokenInfo>, String> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, kind, issued_at, last_used_at, prev_until, expires_at, used_at FROM tokens
                 WHERE revoked_at IS NULL ORDER BY name",
            )
            .map_err(db_err)?;
        let now = now_ms();
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                ))
            })
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (name, kind, issued, used, prev_until, expires_at, used_at) =
                row.map_err(db_err)?;
            let Some(kind) = TokenKind::parse(&kind) else {
                continue;
            };
            out.push(TokenInfo {
                name,
                kind,
                created: rfc3339(issued),
                last_used: used.map(rfc3339),
                previous_valid_until: prev_until.filter(|u| *u > now).map(rfc3339),
                expires: expires_at.map(rfc3339),
                used: used_at.map(rfc3339),
            });
        }
        Ok(out)
    }

    /// Stores a batch of heartbeats in one transaction (one fsync), keeping at most `history`
    /// per node. Returns only after the commit is durable.
    pub fn ingest(
        &mut self,
        batch: &[(Heartbeat, String)],
        received_at: i64,
        history: u32,
    ) -> Result<(), String> {
        let tx = self.conn.transaction().map_err(db_err)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO heartbeats (node, received_at, body) VALUES (?1, ?2, ?3)",
                )
                .map_err(db_err)?;
            let mut last = tx
                .prepare_cached(
                    "INSERT INTO last_seen (node, heartbeat_id, received_at, body) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(node) DO UPDATE SET heartbeat_id = excluded.heartbeat_id, received_at = excluded.received_at, body = excluded.body",
                )
                .map_err(db_err)?;
            let mut prune = tx
                .prepare_cached("DELETE FROM heartbeats WHERE node = ?1 AND id <= ?2 - ?3")
                .map_err(db_err)?;
            for (hb, body) in batch {
                insert
                    .execute(params![hb.node, received_at, body])
                    .map_err(db_err)?;
                let id = tx.last_insert_rowid();
                last.execute(params![hb.node, id, received_at, body])
                    .map_err(db_err)?;
                // Ids grow by one per insert across all nodes, so this keeps at least
                // `history` of this node's newest (more when other nodes interleave); the
                // exact cap is applied below, cheaply, once per batch.
                prune
                    .execute(params![hb.node, id, i64::from(history) * 64])
                    .map_err(db_err)?;
            }
            let mut exact = tx
                .prepare_cached(
                    "DELETE FROM heartbeats WHERE node = ?1 AND id < COALESCE(
                        (SELECT id FROM heartbeats WHERE node = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2), -1)",
                )
                .map_err(db_err)?;
            let mut nodes: Vec<&str> = batch.iter().map(|(h, _)| h.node.as_str()).collect();
            nodes.sort_unstable();
            nodes.dedup();
            for n in nodes {
                exact
                    .execute(params![n, i64::from(history) - 1])
                    .map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    /// Every node's last heartbeat.
    pub fn last_seen(&self) -> Result<Vec<LastSeen>, String> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT node, received_at, body FROM last_seen ORDER BY node")
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (node, received_at, body) = row.map_err(db_err)?;
            if let Ok(heartbeat) = serde_json::from_str(&body) {
                out.push(LastSeen {
                    node,
                    received_at,
                    heartbeat,
                });
            }
        }
        Ok(out)
    }

    /// A node's stored heartbeats, newest first.
    pub fn history(&self, node: &str, limit: u32) -> Result<Vec<HistoryEntry>, String> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT received_at, body FROM heartbeats WHERE node = ?1 ORDER BY id DESC LIMIT ?2")
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![node, limit], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (at, body) = row.map_err(db_err)?;
            if let Ok(heartbeat) = serde_json::from_str(&body) {
                out.push(HistoryEntry {
                    received_at: rfc3339(at),
                    heartbeat,
                });
            }
        }
        Ok(out)
    }

    /// The alert state `fleet check --alert` last recorded for a node.
    pub fn alert_state(&self, node: &str) -> Result<Option<String>, String> {
        self.conn
            .query_row(
                "SELECT state FROM alert_state WHERE node = ?1",
                params![node],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)
    }

    /// Records a node's alert state.
    pub fn set_alert_state(&self, node: &str, state: &str) -> Result<(), String> {
        self.conn
            .execute(
                "INSERT INTO alert_state (node, state, changed_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(node) DO UPDATE SET state = excluded.state, changed_at = excluded.changed_at",
                params![node, state, now_ms()],
            )
            .map(|_| ())
            .map_err(db_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(node: &str, seq: u64) -> (Heartbeat, String) {
        let h = Heartbeat {
            node: node.into(),
            agent_version: "t".into(),
            sent_at: rfc3339(now_ms()),
            seq,
            uptime_secs: 1,
            resources: Default::default(),
            services: Default::default(),
        };
        let body = serde_json::to_string(&h).expect("json");
        (h, body)
    }

    #[test]
    fn migrates_ingests_and_bounds_history() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("hq.sqlite");
        let mut s = Store::open(&path).expect("open");
        assert_eq!(s.schema_version(), MIGRATIONS.len() as i64);
        for i in 0..30 {
            s.ingest(&[hb("a", i), hb("b", i)], now_ms(), 10)
                .expect("ingest");
        }
        let h = s.history("a", 100).expect("history");
        assert_eq!(h.len(), 10);
        assert_eq!(h[0].heartbeat.seq, 29);
        drop(s);
        let s = Store::open(&path).expect("reopen");
        let last = s.last_seen().expect("last");
        assert_eq!(last.len(), 2);
        assert_eq!(last[0].heartbeat.seq, 29);
    }

    #[test]
    fn tokens_issue_and_revoke() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Store::open(&dir.path().join("hq.sqlite")).expect("open");
        s.set_token("a", "h1").expect("set");
        assert_eq!(
            s.tokens()
                .expect("tokens")
                .get("a")
                .map(|t| t.hash.as_str()),
            Some("h1")
        );
        let now = now_ms();
        assert!(s.rotate_token("a", "h2", now + 60_000).expect("rotate"));
        let t = s
            .token_by_hash("h1", now)
            .expect("lookup")
            .expect("old works");
        assert_eq!((t.name.as_str(), t.kind), ("a", TokenKind::Node));
        assert!(s.token_by_hash("h2", now).expect("lookup").is_some());
        assert!(
            s.token_by_hash("h1", now + 61_000)
                .expect("lookup")
                .is_none(),
            "the old secret ends with the overlap"
        );
        assert!(s.revoke_token("a").expect("revoke"));
        assert!(!s.revoke_token("a").expect("revoke twice"));
        assert!(s.tokens().expect("tokens").is_empty());
        assert!(s.token_by_hash("h2", now).expect("lookup").is_none());
    }

    #[test]
    fn version_2_tokens_stay_valid_as_node_tokens() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("hq.sqlite");
        {
            let conn = Connection::open(&path).expect("open");
            for sql in &MIGRATIONS[..2] {
                conn.execute_batch(sql).expect("old schema");
            }
            conn.execute_batch(
                "PRAGMA user_version = 2; INSERT INTO tokens (node, hash, issued_at) VALUES ('n1', 'h', 1);",
            )
            .expect("old token");
        }
        let s = Store::open(&path).expect("migrates");
        let t = s
            .token_by_hash("h", now_ms())
            .expect("lookup")
            .expect("kept");
        assert_eq!((t.name.as_str(), t.kind), ("n1", TokenKind::Node));
        assert_eq!(s.token_list().expect("list")[0].kind, TokenKind::Node);
    }
}
