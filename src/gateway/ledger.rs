//! The spend ledger: what each cloud request cost, by UTC day, provider, model and client, in
//! HQ's SQLite file. A request's cost is committed (synchronously, to disk) before its answer
//! ends, so the day's total survives a restart or `kill -9`, and the daily cap holds across
//! them. The gateway owns these tables and creates them itself (`IF NOT EXISTS`).

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// A ledger error.
#[derive(Debug, thiserror::Error)]
#[error("spend ledger: {0}")]
pub struct LedgerError(String);

impl From<rusqlite::Error> for LedgerError {
    fn from(e: rusqlite::Error) -> Self {
        LedgerError(e.to_string())
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS spend (
    day TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    client TEXT NOT NULL,
    requests INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    usd REAL NOT NULL,
    PRIMARY KEY (day, provider, model, client)
);
CREATE TABLE IF NOT EXISTS spend_alerts (
    day TEXT NOT NULL,
    kind TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    PRIMARY KEY (day, kind)
);";

/// One row of a spend report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Row {
    /// UTC day (`YYYY-MM-DD`).
    pub day: String,
    /// Provider.
    pub provider: String,
    /// Model at the provider.
    pub model: String,
    /// The client token's name.
    pub client: String,
    /// Requests.
    pub requests: u64,
    /// Input (prompt) tokens.
    pub input_tokens: u64,
    /// Output (completion) tokens.
    pub output_tokens: u64,
    /// Cost in USD.
    pub usd: f64,
}

/// One request's cost.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// Provider.
    pub provider: &'a str,
    /// Model at the provider.
    pub model: &'a str,
    /// The client token's name.
    pub client: &'a str,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost in USD.
    pub usd: f64,
}

/// The open ledger.
#[derive(Debug)]
pub struct Ledger {
    conn: Mutex<Connection>,
}

/// Today's UTC day.
pub fn today() -> String {
    day_of(time::OffsetDateTime::now_utc())
}

/// The UTC day of a time.
pub fn day_of(t: time::OffsetDateTime) -> String {
    let d = t.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

impl Ledger {
    /// Opens the ledger in the store file at `path` (creating its tables).
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let conn = Connection::open(path)
            .map_err(|e| LedgerError(format!("cannot open `{}`: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Ledger {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let c = self
            .conn
            .lock()
            .map_err(|_| LedgerError("lock poisoned".into()))?;
        f(&c)
    }

    /// Adds one request's cost to `day`, durably.
    pub fn record(&self, day: &str, e: &Entry<'_>) -> Result<(), LedgerError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO spend (day, provider, model, client, requests, input_tokens, output_tokens, usd)
                 VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7)
                 ON CONFLICT(day, provider, model, client) DO UPDATE SET
                   requests = requests + 1,
                   input_tokens = input_tokens + excluded.input_tokens,
                   output_tokens = output_tokens + excluded.output_tokens,
                   usd = usd + excluded.usd",
                params![
                    day,
                    e.provider,
                    e.model,
                    e.client,
                    i64::try_from(e.input_tokens).unwrap_or(i64::MAX),
                    i64::try_from(e.output_tokens).unwrap_or(i64::MAX),
                    e.usd
                ],
            )?;
            Ok(())
        })
    }

    /// The total spent on `day`.
    pub fn spent_on(&self, day: &str) -> Result<f64, LedgerError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT COALESCE(SUM(usd), 0) FROM spend WHERE day = ?1",
                params![day],
                |r| r.get(0),
            )?)
        })
    }

    /// Every row from `from` to `to` (days, inclusive), by day, provider, model, client.
    pub fn rows(&self, from: &str, to: &str) -> Result<Vec<Row>, LedgerError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT day, provider, model, client, requests, input_tokens, output_tokens, usd
                 FROM spend WHERE day >= ?1 AND day <= ?2
                 ORDER BY day, provider, model, client",
            )?;
            let rows = st
                .query_map(params![from, to], |r| {
                    Ok(Row {
                        day: r.get(0)?,
                        provider: r.get(1)?,
                        model: r.get(2)?,
                        client: r.get(3)?,
                        requests: r.get::<_, i64>(4)?.try_into().unwrap_or(0),
                        input_tokens: r.get::<_, i64>(5)?.try_into().unwrap_or(0),
                        output_tokens: r.get::<_, i64>(6)?.try_into().unwrap_or(0),
                        usd: r.get(7)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Whether the `kind` alert was already sent on `day`.
    pub fn alert_sent(&self, day: &str, kind: &str) -> Result<bool, LedgerError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT 1 FROM spend_alerts WHERE day = ?1 AND kind = ?2",
                params![day, kind],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
        })
    }

    /// Records that the `kind` alert went out on `day`.
    pub fn mark_alert(&self, day: &str, kind: &str) -> Result<(), LedgerError> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO spend_alerts (day, kind, sent_at) VALUES (?1, ?2, ?3)",
                params![day, kind, crate::util::now_ms()],
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_add_up_per_key_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("hq.sqlite");
        let l = Ledger::open(&db).expect("open");
        let e = Entry {
            provider: "openai",
            model: "gpt-4o-mini",
            client: "ci",
            input_tokens: 10,
            output_tokens: 5,
            usd: 0.25,
        };
        l.record("2026-12-01", &e).expect("record");
        l.record("2026-12-01", &e).expect("record");
        l.record(
            "2026-12-02",
            &Entry {
                usd: 1.0,
                ..e.clone()
            },
        )
        .expect("record");
        drop(l);
        let l = Ledger::open(&db).expect("reopen");
        assert_eq!(l.spent_on("2026-12-01").expect("sum"), 0.5);
        let rows = l.rows("2026-12-01", "2026-12-31").expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].requests, rows[0].input_tokens), (2, 20));
        assert!(!l.alert_sent("2026-12-01", "warn").expect("q"));
        l.mark_alert("2026-12-01", "warn").expect("mark");
        l.mark_alert("2026-12-01", "warn").expect("mark twice");
        assert!(l.alert_sent("2026-12-01", "warn").expect("q"));
    }

    #[test]
    fn days_are_utc_dates() {
        let t = time::OffsetDateTime::from_unix_timestamp(1_764_633_599).expect("time");
        assert_eq!(day_of(t), "2025-12-01");
    }
}
