//! Running a module's steps on a host: each step framed under a fresh nonce, its output read
//! back; a real run's follow-up step when the first asked for one.

use std::time::Duration;

use crate::connection::{AnyConnection, RunAs};
use crate::engine::outcome::TaskError;
use crate::facts::Facts;
use crate::modules::{Action, Reported, Step};
use crate::script::frame::{self, HostKind, Mode, Nonce, Unit, UnitOutput};

/// The host kind facts describe.
pub fn host_kind(facts: &Facts) -> HostKind {
    HostKind {
        bsd_stat: facts.os.as_deref().is_some_and(|os| os != "linux"),
    }
}

/// Runs one step; `Ok(Err(msg))` when its script failed with a message.
pub async fn step(
    conn: &AnyConnection,
    step: &Step,
    mode: Mode,
    host: HostKind,
    who: RunAs<'_>,
    timeout: Option<Duration>,
) -> Result<Result<Reported, String>, TaskError> {
    let nonce = Nonce::new();
    let unit = Unit {
        script: &step.script,
        stat_path: step.stat_path.as_deref(),
        ignore_errors: false,
        own_path: step.own_path,
    };
    let framed = frame::compose(&[unit], mode, host, &nonce, step.stdin.is_some());
    let out = conn
        .exec(framed.text(), step.stdin.as_deref(), who, timeout)
        .await?;
    let parts = frame::split(&out.stdout, &out.stderr, &nonce);
    Ok(match parts.first() {
        Some(p) => frame::report(p, &nonce),
        None => Err(ended_early(out.status, &out.stderr)),
    })
}

/// Why a unit has no result: the script ended before reporting it.
pub fn ended_early(status: i32, stderr: &str) -> String {
    // The last few lines the host said (sudo, say, explains in more than one).
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("__FLEET_"))
        .collect();
    let tail = lines[lines.len().saturating_sub(3)..].join("; ");
    let how = match status {
        -1 => "was killed".to_string(),
        126 | 127 => format!("could not start (exit {status})"),
        s => format!("ended before it reported a result (exit {s})"),
    };
    if tail.is_empty() {
        format!("the task's script {how}")
    } else {
        format!("the task's script {how}: {tail}")
    }
}

/// Runs an action: its step, and in a real run its follow-up when the step asked for one.
pub async fn action(
    conn: &AnyConnection,
    action: &dyn Action,
    facts: &Facts,
    mode: Mode,
    who: RunAs<'_>,
    timeout: Option<Duration>,
) -> Result<Result<Reported, String>, TaskError> {
    let host = host_kind(facts);
    let first = action
        .script(facts)
        .map_err(|e| TaskError::Failed(e.message))?;
    let r = match step(conn, &first, mode, host, who, timeout).await? {
        Ok(r) => r,
        Err(m) => return Ok(Err(m)),
    };
    if mode.check || !r.more {
        return Ok(Ok(r));
    }
    let Some(next) = action
        .followup(facts, &r)
        .map_err(|e| TaskError::Failed(e.message))?
    else {
        return Ok(Err(
            "the task asked for a second step it does not have".into()
        ));
    };
    Ok(match step(conn, &next, mode, host, who, timeout).await? {
        Ok(r2) => Ok(Reported {
            changed: r.changed || r2.changed,
            rc: r2.rc,
            stdout: [r.stdout, r2.stdout]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("\n"),
            stderr: r.stderr + &r2.stderr,
            missing: false,
            more: false,
            before: r.before,
            after: r2.after.or(r.after),
        }),
        Err(m) => Err(m),
    })
}

/// One unit's result in a batch.
pub fn unit_report(out: &UnitOutput, nonce: &Nonce) -> Result<Reported, String> {
    frame::report(out, nonce)
}
