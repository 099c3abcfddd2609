//! SSH through the system `ssh` and the `openssh` crate: one ControlMaster per host, reused
//! by every command (native mux), so each task costs one round trip on an open connection.
//! Honours `~/.ssh/config`, agents, ProxyJump and an extra config file (`-F`).
//!
//! A master outlives nothing: fleet closes it when the host's run ends (and on SIGINT or
//! SIGTERM, see the engine); if fleet is killed outright, the master exits on its own after
//! [`persist`] of idleness (`ControlPersist`). While fleet runs, a keepalive touches each
//! master well within that time, so a host that waits for a slow play keeps its connection.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder};

use crate::connection::shell::Spawned;
use crate::connection::{ConnError, Connection};

/// How to reach one host.
#[derive(Debug, Clone, Default)]
pub struct SshTarget {
    /// Address or ssh alias.
    pub host: String,
    /// Login user.
    pub user: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// Identity file.
    pub key: Option<PathBuf>,
    /// Extra ssh config file (`-F`).
    pub config: Option<PathBuf>,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

/// An open, multiplexed connection.
#[derive(Debug)]
pub struct SshConnection {
    session: Arc<Session>,
    keepalive: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for SshConnection {
    fn drop(&mut self) {
        // The session's own drop asks the master to exit.
        if let Some(k) = &self.keepalive {
            k.abort();
        }
    }
}

/// How long an idle master outlives fleet: `FLEET_SSH_PERSIST` (a duration such as `10s`),
/// default 60 s.
pub fn persist() -> Duration {
    std::env::var("FLEET_SSH_PERSIST")
        .ok()
        .and_then(|v| humantime::parse_duration(v.trim()).ok())
        .filter(|d| d.as_secs() >= 1)
        .unwrap_or(Duration::from_secs(60))
}

/// A short directory for control sockets, one per user (by uid: `$USER` may be unset, as
/// under cron or in containers): macOS limits socket paths to 104 bytes.
pub fn control_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(pick_control_dir).clone()
}

fn pick_control_dir() -> PathBuf {
    let uid = rustix::process::geteuid().as_raw();
    let dir = std::env::temp_dir();
    let base = if dir.as_os_str().len() > 20 {
        PathBuf::from("/tmp")
    } else {
        dir
    };
    let d = base.join(format!("fleet-{uid}"));
    let _ = std::fs::create_dir(&d);
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // Someone else's directory (or a symlink) under a shared /tmp must not hold our sockets.
    let ours = std::fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir() && m.uid() == uid);
    if ours {
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700));
        return d;
    }
    tempfile::Builder::new()
        .prefix("fleet-")
        .tempdir_in(&base)
        .map(tempfile::TempDir::keep)
        .unwrap_or(d)
}

impl SshConnection {
    /// Connects (opening the master), retrying a few times on transient failures.
    pub async fn connect(t: &SshTarget) -> Result<SshConnection, ConnError> {
        let mut b = SessionBuilder::default();
        let persist = persist();
        let idle = std::num::NonZeroUsize::new(usize::try_from(persist.as_secs()).unwrap_or(60))
            .unwrap_or(std::num::NonZeroUsize::MIN);
        b.known_hosts_check(KnownHosts::Add)
            .connect_timeout(t.connect_timeout)
            .control_directory(control_dir())
            .control_persist(ControlPersist::IdleFor(idle))
            .server_alive_interval(Duration::from_secs(15));
        if let Some(c) = &t.config {
            b.config_file(c);
        }
        if let Some(u) = &t.user {
            b.user(u.clone());
        }
        if let Some(p) = t.port {
            b.port(p);
        }
        if let Some(k) = &t.key {
            b.keyfile(k);
        }
        let mut last = String::new();
        let started = std::time::Instant::now();
        for attempt in 0..3u32 {
            match b.connect_mux(&t.host).await {
                Ok(session) => {
                    tracing::debug!(
                        host = %t.host,
                        attempts = attempt + 1,
                        ms = started.elapsed().as_millis() as u64,
                        "ssh master up"
                    );
                    let session = Arc::new(session);
                    let keepalive = tokio::spawn(keep_alive(Arc::downgrade(&session), persist));
                    return Ok(SshConnection {
                        session,
                        keepalive: Some(keepalive),
                    });
                }
                Err(e) => {
                    last = describe(&e);
                    tracing::debug!(host = %t.host, attempt = attempt + 1, error = %last, "ssh connect failed");
                    // Authentication and host-key failures will not heal by retrying.
                    if last.contains("Permission denied")
                        || last.contains("Host key verification failed")
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt))).await;
                }
            }
        }
        Err(ConnError::Unreachable(last))
    }
}

/// Touches the master every third of its persist time, while the connection lives.
async fn keep_alive(session: std::sync::Weak<Session>, persist: Duration) {
    let every = (persist / 3).max(Duration::from_millis(300));
    loop {
        tokio::time::sleep(every).await;
        let Some(s) = session.upgrade() else { return };
        let _ = s.check().await;
    }
}

impl SshConnection {
    /// Closes the master now.
    pub async fn close(mut self) {
        if let Some(k) = self.keepalive.take() {
            k.abort();
            let _ = k.await;
        }
        let session = Arc::clone(&self.session);
        drop(self);
        if let Ok(s) = Arc::try_unwrap(session) {
            let _ = s.close().await;
        }
    }
}

fn describe(e: &openssh::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s = format!("{s}: {t}");
        }
        src = inner.source();
    }
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

impl Connection for SshConnection {
    async fn spawn(&self, line: &str) -> Result<Spawned, ConnError> {
        let mut cmd = Arc::clone(&self.session).arc_raw_command(line);
        cmd.stdin(openssh::Stdio::piped())
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::piped());
        let mut child = cmd
            .spawn()
            .await
            .map_err(|e| ConnError::Unreachable(describe(&e)))?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (
            child.stdin().take(),
            child.stdout().take(),
            child.stderr().take(),
        ) else {
            return Err(ConnError::Unreachable("the session has no pipes".into()));
        };
        Ok(Spawned {
            stdin: Box::pin(stdin),
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            wait: Box::pin(async move {
                child
                    .wait()
                    .await
                    .map(|s| s.code().unwrap_or(-1))
                    .map_err(|e| ConnError::Unreachable(describe(&e)))
            }),
        })
    }
}

/// `ssh -G` for `t`: what ssh would use for it, after its config files.
fn resolve_command(t: &SshTarget) -> std::process::Command {
    let mut cmd = std::process::Command::new("ssh");
    if let Some(c) = &t.config {
        cmd.arg("-F").arg(c);
    }
    if let Some(p) = t.port {
        cmd.arg("-p").arg(p.to_string());
    }
    cmd.arg("-G").arg(&t.host);
    cmd
}

fn parse_resolved(
    t: &SshTarget,
    out: std::io::Result<std::process::Output>,
) -> (String, Option<u16>) {
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let get = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
            };
            (
                get("hostname ").unwrap_or_else(|| t.host.clone()),
                get("port ").and_then(|p| p.parse().ok()),
            )
        }
        _ => (t.host.clone(), t.port),
    }
}

/// The address and port ssh would connect to for `t` (an alias in an ssh config resolves to
/// its `HostName` and `Port`), from `ssh -G`.
pub fn resolve(t: &SshTarget) -> (String, Option<u16>) {
    parse_resolved(t, resolve_command(t).output())
}

/// [`resolve`] without blocking the runtime, so many nodes resolve at once.
pub async fn resolve_async(t: &SshTarget) -> (String, Option<u16>) {
    let out = tokio::process::Command::from(resolve_command(t))
        .output()
        .await;
    parse_resolved(t, out)
}

/// The address ssh would connect to for `t` (an alias in an ssh config resolves to its
/// `HostName`), for talking to the same machine over HTTP.
pub fn resolve_hostname(t: &SshTarget) -> String {
    resolve(t).0
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn control_sockets_live_in_a_private_directory_of_ours() {
        let d = super::control_dir();
        let m = std::fs::symlink_metadata(&d).expect("exists");
        assert!(m.is_dir());
        assert_eq!(m.uid(), rustix::process::geteuid().as_raw());
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
        // Room for openssh's own names within macOS' 104-byte socket paths.
        assert!(d.as_os_str().len() <= 30, "{}", d.display());
    }
}
