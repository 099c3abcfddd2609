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
];

pub use crate::util::{now_ms, rfc3339};

/// An open store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
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

    /// Stores a token's hash for a node (replacing any earlier token).
    pub fn set_token(&self, node: &str, hash: &str) -> Result<(), String> {
        self.conn
            .execute(
                "INSERT INTO tokens (node, hash, issued_at, revoked_at) VALUES (?1, ?2, ?3, NULL)
                 ON CONFLICT(node) DO UPDATE SET hash = excluded.hash, issued_at = excluded.issued_at, revoked_at = NULL",
                params![node, hash, now_ms()],
            )
            .map(|_| ())
            .map_err(db_err)
    }

    /// Revokes a node's token; false when it had none.
    pub fn revoke_token(&self, node: &str) -> Result<bool, String> {
        self.conn
            .execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE node = ?1 AND revoked_at IS NULL",
                params![node, now_ms()],
            )
            .map(|n| n > 0)
            .map_err(db_err)
    }

    /// Every valid token hash by node.
    pub fn token_hashes(&self) -> Result<std::collections::HashMap<String, String>, String> {
        let mut stmt = self
            .conn
            .prepare("SELECT node, hash FROM tokens WHERE revoked_at IS NULL")
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)
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
            s.token_hashes()
                .expect("hashes")
                .get("a")
                .map(String::as_str),
            Some("h1")
        );
        assert!(s.revoke_token("a").expect("revoke"));
        assert!(!s.revoke_token("a").expect("revoke twice"));
        assert!(s.token_hashes().expect("hashes").is_empty());
    }
}
