//! The routing table where the conductor reads it. The conductor (OpenClaw in the
//! node-infrastructure document) reads `openclaw_workers.json` at start and again on SIGHUP;
//! HQ keeps that file equal to the live table (`fleet render --live`'s bytes) and signals the
//! conductor when the content changes.
//!
//! Node states pass through a hysteresis first: a node's new state reaches the file only after
//! it has held for `routing_hysteresis`, so a node flapping between online and offline does
//! not reload the conductor every minute.
//!
//! Settings are variables of the HQ node (the hq role's defaults): `conductor_routing_file`,
//! `conductor_pidfile`, `conductor_reload_command`, `routing_hysteresis`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value as J;

use crate::render::routing::StatusMap;
use crate::repo::Repo;
use crate::repo::lookup::VarLookup;

/// How long a reload command may run before it is killed.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// The default hysteresis, when the inventory sets none.
pub const DEFAULT_HYSTERESIS: Duration = Duration::from_secs(120);

/// Why the conductor's settings or its file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConductorError {
    /// A variable has the wrong shape.
    #[error("variable `{name}` of the HQ node `{node}`: {what}")]
    Setting {
        /// The variable.
        name: &'static str,
        /// The HQ node.
        node: String,
        /// What was expected.
        what: String,
    },
    /// The table could not be rendered.
    #[error("rendering the routing table: {0}")]
    Render(String),
    /// The file could not be written.
    #[error("{0}")]
    Write(String),
}

/// How to make the conductor read the file again.
#[derive(Debug, Clone, PartialEq)]
pub enum Reload {
    /// SIGHUP to the process whose pid this file holds.
    Pidfile(PathBuf),
    /// A program and its arguments.
    Argv(Vec<String>),
    /// A command line for `sh -c`.
    Shell(String),
}

/// Where the table goes and how the conductor learns of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The file the conductor reads.
    pub file: PathBuf,
    /// How to reload it; `None`: the conductor reads the file when it starts.
    pub reload: Option<Reload>,
    /// How long a node's new state must hold before the file shows it.
    pub hysteresis: Duration,
}

fn home_path(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(h)) => PathBuf::from(h).join(rest),
        _ => PathBuf::from(p),
    }
}

/// The settings from the HQ node's variables; `None` when the fleet names no HQ node or the
/// node sets no `conductor_routing_file` (or sets it to `""`/`false`).
pub fn settings(repo: &Repo) -> Result<Option<Settings>, ConductorError> {
    let Some(hq) = repo.inventory.fleet.hq.as_ref() else {
        return Ok(None);
    };
    let Some(node) = repo.inventory.nodes.get(&hq.value) else {
        return Ok(None);
    };
    let lookup = VarLookup::new(repo);
    let bad = |name: &'static str, what: &str| ConductorError::Setting {
        name,
        node: node.name.clone(),
        what: what.to_string(),
    };
    let text = |name: &'static str| -> Result<Option<String>, ConductorError> {
        match lookup.get(node, name) {
            None | Some(J::Null) | Some(J::Bool(false)) => Ok(None),
            Some(J::String(s)) if s.trim().is_empty() => Ok(None),
            Some(J::String(s)) if s.contains('\0') => Err(bad(name, "contains a NUL byte")),
            Some(J::String(s)) => Ok(Some(s)),
            Some(_) => Err(bad(name, "expected a path (a string)")),
        }
    };
    let Some(file) = text("conductor_routing_file")? else {
        return Ok(None);
    };
    let file = home_path(&file);
    if file.file_name().is_none() || file.as_os_str().to_string_lossy().ends_with('/') {
        return Err(bad(
            "conductor_routing_file",
            "expected a file's path, found a directory's",
        ));
    }
    let command = match lookup.get(node, "conductor_reload_command") {
        None | Some(J::Null) | Some(J::Bool(false)) => None,
        Some(J::String(s)) if s.trim().is_empty() => None,
        Some(J::String(s)) => Some(Reload::Shell(s)),
        Some(J::Array(items)) => {
            let argv: Option<Vec<String>> = items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect();
            match argv {
                Some(a) if !a.is_empty() && !a[0].is_empty() => Some(Reload::Argv(a)),
                Some(a) if a.is_empty() => None,
                _ => {
                    return Err(bad(
                        "conductor_reload_command",
                        "expected a command line or a list of strings (program, then arguments)",
                    ));
                }
            }
        }
        Some(_) => {
            return Err(bad(
                "conductor_reload_command",
                "expected a command line or a list of strings (program, then arguments)",
            ));
        }
    };
    let reload = match command {
        Some(c) => Some(c),
        None => text("conductor_pidfile")?.map(|p| Reload::Pidfile(home_path(&p))),
    };
    let hysteresis = match lookup.get(node, "routing_hysteresis") {
        None | Some(J::Null) => DEFAULT_HYSTERESIS,
        Some(J::Number(n)) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| bad("routing_hysteresis", "expected seconds (0 or more)"))?,
        Some(J::String(s)) => humantime::parse_duration(s.trim()).map_err(|e| {
            bad(
                "routing_hysteresis",
                &format!("expected a duration such as `2m` or `90s`: {e}"),
            )
        })?,
        Some(_) => {
            return Err(bad(
                "routing_hysteresis",
                "expected a duration such as `2m` or `90s`",
            ));
        }
    };
    Ok(Some(Settings {
        file,
        reload,
        hysteresis,
    }))
}

/// Node states as the file shows them: a change is applied once it has held for `hold`.
#[derive(Debug)]
pub struct Hysteresis {
    hold: Duration,
    applied: BTreeMap<String, String>,
    pending: BTreeMap<String, (String, Instant)>,
}

impl Hysteresis {
    /// Nothing applied yet: the first states seen are taken as they are.
    pub fn new(hold: Duration) -> Self {
        Hysteresis {
            hold,
            applied: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// Changes how long a change must hold (after a reload of the inventory).
    pub fn set_hold(&mut self, hold: Duration) {
        self.hold = hold;
    }

    /// Feeds the states seen at `now`; returns the states to show.
    pub fn update(&mut self, now: Instant, seen: &StatusMap) -> StatusMap {
        self.applied.retain(|n, _| seen.contains_key(n));
        self.pending.retain(|n, _| seen.contains_key(n));
        for (node, state) in seen {
            match self.applied.get(node) {
                None => {
                    self.applied.insert(node.clone(), state.clone());
                }
                Some(a) if a == state => {
                    self.pending.remove(node);
                }
                // Draining is an operator's decision, not a flapping node: it reaches the
                // table at once, and so does its end.
                Some(a)
                    if a == crate::hq::drain::DRAINING || state == crate::hq::drain::DRAINING =>
                {
                    self.applied.insert(node.clone(), state.clone());
                    self.pending.remove(node);
                }
                Some(_) => {
                    let since = match self.pending.get(node) {
                        Some((p, since)) if p == state => *since,
                        _ => {
                            self.pending.insert(node.clone(), (state.clone(), now));
                            now
                        }
                    };
                    if now.saturating_duration_since(since) >= self.hold {
                        self.applied.insert(node.clone(), state.clone());
                        self.pending.remove(node);
                    }
                }
            }
        }
        self.applied.clone()
    }
}

/// What one publication did.
#[derive(Debug, Clone, PartialEq)]
pub enum Published {
    /// The file already held this table.
    Unchanged,
    /// The file was replaced; the conductor was told as `reload` says.
    Written {
        /// How the conductor was told, or why it was not.
        reload: String,
    },
}

/// Renders the table for `states` and puts it in the file when its content differs.
pub fn publish(
    repo: &Repo,
    settings: &Settings,
    states: &StatusMap,
) -> Result<Published, ConductorError> {
    let facts = crate::facts::FactsCache::open(&repo.root);
    let (table, _) = crate::render::routing::build(repo, &|n| facts.hardware(n).0, Some(states));
    let library = crate::template::Library::new(&repo.templates);
    let env = library.environment();
    let text = crate::render::routing::render_file(&env, &table)
        .map_err(|e| ConductorError::Render(e.to_string()))?;
    if std::fs::read(&settings.file).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(Published::Unchanged);
    }
    crate::util::write_atomic_mode(&settings.file, text.as_bytes(), 0o644)
        .map_err(|e| ConductorError::Write(e.to_string()))?;
    let reload = match &settings.reload {
        None => "no reload configured: the conductor reads it when it starts".to_string(),
        Some(r) => reload(r),
    };
    Ok(Published::Written { reload })
}

/// Tells the conductor; the answer says what happened, for the log.
fn reload(how: &Reload) -> String {
    match how {
        Reload::Pidfile(p) => signal_pidfile(p),
        Reload::Argv(argv) => {
            let mut cmd = std::process::Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            run_reload(cmd, &argv.join(" "))
        }
        Reload::Shell(line) => {
            let mut cmd = std::process::Command::new("/bin/sh");
            cmd.arg("-c").arg(line);
            run_reload(cmd, line)
        }
    }
}

fn signal_pidfile(p: &Path) -> String {
    let text = match std::fs::read_to_string(p) {
        Ok(t) => t,
        Err(e) => {
            return format!(
                "conductor not reloaded: cannot read its pidfile {}: {e} (it reads the table when it starts)",
                p.display()
            );
        }
    };
    let pid = text
        .split_whitespace()
        .next()
        .and_then(|t| t.parse::<i32>().ok())
        .filter(|p| *p > 1)
        .and_then(rustix::process::Pid::from_raw);
    let Some(pid) = pid else {
        return format!(
            "conductor not reloaded: pidfile {} holds no process id",
            p.display()
        );
    };
    match rustix::process::kill_process(pid, rustix::process::Signal::HUP) {
        Ok(()) => format!(
            "conductor reloaded (SIGHUP to pid {} from {})",
            pid.as_raw_nonzero(),
            p.display()
        ),
        Err(e) => format!(
            "conductor not reloaded: SIGHUP to pid {} (from {}) failed: {e}",
            pid.as_raw_nonzero(),
            p.display()
        ),
    }
}

fn run_reload(mut cmd: std::process::Command, shown: &str) -> String {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return format!("conductor not reloaded: cannot run `{shown}`: {e}"),
    };
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => {
                return format!("conductor reloaded (`{shown}`)");
            }
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.by_ref().take(2048).read_to_string(&mut err);
                }
                return format!(
                    "conductor reload `{shown}` failed ({status}){}",
                    if err.trim().is_empty() {
                        String::new()
                    } else {
                        format!(": {}", err.trim())
                    }
                );
            }
            Ok(None) if started.elapsed() > RELOAD_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return format!(
                    "conductor reload `{shown}` killed after {}s",
                    RELOAD_TIMEOUT.as_secs()
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return format!("conductor reload `{shown}`: {e}"),
        }
    }
}

/// How often HQ looks at node states for the conductor: often enough that a change shows
/// soon after its hysteresis, rarely enough to cost nothing.
pub fn tick(settings: &Settings) -> Duration {
    (settings.hysteresis / 4).clamp(Duration::from_millis(250), Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(pairs: &[(&str, &str)]) -> StatusMap {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn a_change_shows_after_it_held() {
        let t0 = Instant::now();
        let mut h = Hysteresis::new(Duration::from_secs(60));
        let s = h.update(t0, &states(&[("a", "online")]));
        assert_eq!(s["a"], "online", "first sight is taken as it is");
        let off = states(&[("a", "offline")]);
        assert_eq!(h.update(t0 + Duration::from_secs(10), &off)["a"], "online");
        assert_eq!(h.update(t0 + Duration::from_secs(69), &off)["a"], "online");
        assert_eq!(h.update(t0 + Duration::from_secs(70), &off)["a"], "offline");
    }

    #[test]
    fn a_flapping_node_never_moves() {
        let t0 = Instant::now();
        let mut h = Hysteresis::new(Duration::from_secs(60));
        h.update(t0, &states(&[("a", "online")]));
        for k in 1..100u64 {
            let st = if k % 2 == 0 { "online" } else { "offline" };
            let s = h.update(t0 + Duration::from_secs(k * 30), &states(&[("a", st)]));
            assert_eq!(s["a"], "online", "step {k}");
        }
    }

    #[test]
    fn the_pending_clock_restarts_on_a_different_state() {
        let t0 = Instant::now();
        let mut h = Hysteresis::new(Duration::from_secs(60));
        h.update(t0, &states(&[("a", "online")]));
        h.update(t0 + Duration::from_secs(1), &states(&[("a", "degraded")]));
        h.update(t0 + Duration::from_secs(50), &states(&[("a", "offline")]));
        let s = h.update(t0 + Duration::from_secs(70), &states(&[("a", "offline")]));
        assert_eq!(s["a"], "online", "offline has held 20 s only");
        let s = h.update(t0 + Duration::from_secs(110), &states(&[("a", "offline")]));
        assert_eq!(s["a"], "offline");
    }

    #[test]
    fn zero_hold_applies_at_once() {
        let mut h = Hysteresis::new(Duration::ZERO);
        let t0 = Instant::now();
        h.update(t0, &states(&[("a", "online")]));
        assert_eq!(h.update(t0, &states(&[("a", "offline")]))["a"], "offline");
    }

    #[test]
    fn draining_and_its_end_apply_at_once() {
        let t0 = Instant::now();
        let mut h = Hysteresis::new(Duration::from_secs(120));
        h.update(t0, &states(&[("a", "online")]));
        let s = h.update(t0 + Duration::from_secs(1), &states(&[("a", "draining")]));
        assert_eq!(s["a"], "draining");
        let s = h.update(t0 + Duration::from_secs(2), &states(&[("a", "online")]));
        assert_eq!(s["a"], "online");
    }
}
