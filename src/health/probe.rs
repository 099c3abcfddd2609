//! The individual probes: TCP reachability, Ollama's `/api/tags`, Docker over SSH. Each one
//! answers with what it found, never an error that stops the sweep.

use std::time::{Duration, Instant};

use serde::Serialize;

/// The result of one probe.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Probe {
    /// Whether the thing answered as it should.
    pub ok: bool,
    /// What was probed (`maestro.local:22`, a URL, …).
    pub target: String,
    /// What it found, in words.
    pub detail: String,
    /// How long it took, in ms.
    pub ms: u64,
    /// Models Ollama reported (Ollama probes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
}

fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Most bytes read while waiting for the server's identification line; RFC 4253 lets a server
/// send other lines first, not an unbounded stream.
const MAX_PRE_BANNER: usize = 8192;

/// Why no SSH server identified itself on a port that accepted the connection.
#[derive(Debug)]
enum NotSsh {
    /// The connection was closed first.
    Closed,
    /// More than [`MAX_PRE_BANNER`] bytes and no identification line.
    TooMuch,
    /// An identification line of a protocol version fleet cannot use.
    Version(String),
    /// A read failed.
    Io(std::io::Error),
}

/// Is an SSH server there? A TCP connection, then the server's identification line
/// (`SSH-2.0-…`, or `SSH-1.99-…` from a server that also speaks 2.0; RFC 4253 §4.2 allows other
/// lines before it), all within `timeout`. A port that accepts and never identifies itself as
/// SSH is not an SSH server fleet can use. Nothing is sent: the server speaks first.
pub async fn ssh(host: &str, port: u16, timeout: Duration) -> Probe {
    let target = format!("{host}:{port}");
    let start = Instant::now();
    let mut connected = false;
    let mut seen: Vec<u8> = Vec::new();
    let r = tokio::time::timeout(timeout, async {
        let mut s = tokio::net::TcpStream::connect((host, port)).await?;
        connected = true;
        Ok::<_, std::io::Error>(read_identification(&mut s, &mut seen).await)
    })
    .await;
    let within = humantime::format_duration(timeout);
    let sent = || match sample(&seen) {
        Some(s) => format!(" (it sent `{s}`)"),
        None => String::new(),
    };
    let (ok, detail) = match r {
        Ok(Ok(Ok(banner))) => (true, banner),
        Ok(Ok(Err(NotSsh::Closed))) => (
            false,
            format!(
                "the port accepted the connection and closed it without identifying itself as SSH{}",
                sent()
            ),
        ),
        Ok(Ok(Err(NotSsh::TooMuch))) => (
            false,
            format!(
                "the port answers, but not as SSH: no `SSH-2.0-` identification in its first {MAX_PRE_BANNER} bytes{}",
                sent()
            ),
        ),
        Ok(Ok(Err(NotSsh::Version(v)))) => (
            false,
            format!(
                "the server speaks only an SSH protocol fleet cannot use (`{v}`; fleet needs SSH 2.0)"
            ),
        ),
        Ok(Ok(Err(NotSsh::Io(e)))) => (
            false,
            format!("the connection failed before the server identified itself as SSH: {e}"),
        ),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            (false, "connection refused".to_string())
        }
        Ok(Err(e)) => (false, connect_error(host, &e)),
        Err(_) if connected => (
            false,
            format!(
                "the port accepted the connection but never identified itself as SSH within {within}{}",
                sent()
            ),
        ),
        Err(_) => (false, format!("no answer within {within}")),
    };
    Probe {
        ok,
        target,
        detail,
        ms: elapsed_ms(start),
        models: None,
    }
}

/// Reads lines until the server's identification line; what was read stays in `seen`.
async fn read_identification(
    s: &mut tokio::net::TcpStream,
    seen: &mut Vec<u8>,
) -> Result<String, NotSsh> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let mut from = 0;
    loop {
        while let Some(i) = seen[from..].iter().position(|b| *b == b'\n') {
            let line = &seen[from..from + i];
            from += i + 1;
            let line = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line));
            if line.starts_with("SSH-2.0-") || line.starts_with("SSH-1.99-") {
                return Ok(printable(&line, 120));
            }
            if line.starts_with("SSH-") {
                return Err(NotSsh::Version(printable(&line, 60)));
            }
        }
        if seen.len() >= MAX_PRE_BANNER {
            return Err(NotSsh::TooMuch);
        }
        match s.read(&mut buf).await {
            Ok(0) => return Err(NotSsh::Closed),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => return Err(NotSsh::Io(e)),
        }
    }
}

/// The start of what a non-SSH peer sent, printable, or `None` when it sent nothing.
fn sample(seen: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&seen[..seen.len().min(200)]);
    let first = text.trim_start().lines().next().unwrap_or("").trim_end();
    if seen.is_empty() {
        None
    } else if first.is_empty() {
        Some(format!(
            "{} of blank lines",
            crate::util::count(seen.len() as u64, "byte", "bytes")
        ))
    } else {
        Some(printable(first, 60))
    }
}

/// `s` with control characters escaped, cut to `max` characters.
fn printable(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars().take(max) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// A failed connection, in words; a name that does not resolve says so.
pub fn connect_error(host: &str, e: &std::io::Error) -> String {
    match crate::hq::client::dns_reason(&e.to_string()) {
        Some(why) => format!("cannot resolve host `{host}`: {why}"),
        None => e.to_string(),
    }
}

/// Does Ollama answer `GET /api/tags`, and with which models?
pub async fn ollama(client: &reqwest::Client, base: &str, timeout: Duration) -> Probe {
    let url = format!("{}/api/tags", base.trim_end_matches('/'));
    let start = Instant::now();
    let fetch = async {
        let r = client
            .get(&url)
            .send()
            .await
            .map_err(|e| crate::hq::client::describe(&e))?;
        if !r.status().is_success() {
            return Err(format!("answered {}", r.status()));
        }
        let v: serde_json::Value = r
            .json()
            .await
            .map_err(|e| format!("not Ollama's answer: {e}"))?;
        let models = v["models"].as_array().ok_or("no `models` in the answer")?;
        Ok(models
            .iter()
            .filter_map(|m| m["name"].as_str().map(str::to_string))
            .collect::<Vec<_>>())
    };
    // The client's timeout covers the request; this one also bounds a peer that accepts and
    // then never sends a byte.
    match tokio::time::timeout(timeout, fetch).await {
        Ok(Ok(models)) => Probe {
            ok: true,
            target: url,
            detail: crate::util::count(models.len() as u64, "model", "models"),
            ms: elapsed_ms(start),
            models: Some(models),
        },
        Ok(Err(e)) => Probe {
            ok: false,
            target: url,
            detail: e,
            ms: elapsed_ms(start),
            models: None,
        },
        Err(_) => Probe {
            ok: false,
            target: url,
            detail: format!("no answer within {}", humantime::format_duration(timeout)),
            ms: elapsed_ms(start),
            models: None,
        },
    }
}

/// How to reach a node with the system's ssh.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// Address or alias.
    pub host: String,
    /// Login user, when set.
    pub user: Option<String>,
    /// Port, when set.
    pub port: Option<u16>,
    /// Identity file, when set.
    pub key: Option<String>,
    /// An ssh config file (`-F`).
    pub config: Option<String>,
}

/// `ssh … HOST REMOTE` for a target.
fn ssh_command(t: &SshTarget, timeout: Duration, remote: &str) -> tokio::process::Command {
    let secs = timeout.as_secs().max(1).to_string();
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args([
        "-o",
        "BatchMode=yes",
        "-o",
        &format!("ConnectTimeout={secs}"),
    ]);
    if let Some(c) = &t.config {
        cmd.args(["-F", c]);
    }
    if let Some(p) = t.port {
        cmd.args(["-p", &p.to_string()]);
    }
    if let Some(u) = &t.user {
        cmd.args(["-l", u]);
    }
    if let Some(k) = &t.key {
        cmd.args(["-i", k]);
    }
    cmd.arg(&t.host)
        .arg(remote)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    cmd
}

/// Runs `remote` on the node; its exit code and output, or why it did not run.
async fn run_over_ssh(
    t: &SshTarget,
    timeout: Duration,
    remote: &str,
) -> Result<std::process::Output, String> {
    match tokio::time::timeout(timeout, ssh_command(t, timeout, remote).output()).await {
        Ok(Ok(o)) if o.status.code() == Some(255) => Err(format!(
            "ssh failed: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
                .trim()
        )),
        Ok(Ok(o)) => Ok(o),
        Ok(Err(e)) => Err(format!("cannot run ssh: {e}")),
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// Runs `docker info` on the node over SSH (`--deep`).
pub async fn docker_over_ssh(t: &SshTarget, timeout: Duration) -> Probe {
    let start = Instant::now();
    let target = format!("ssh {} docker info", t.host);
    let fail = |detail: String| Probe {
        ok: false,
        target: target.clone(),
        detail,
        ms: elapsed_ms(start),
        models: None,
    };
    match run_over_ssh(t, timeout, "docker info --format '{{.ServerVersion}}'").await {
        Ok(o) if o.status.success() => Probe {
            ok: true,
            target: target.clone(),
            detail: format!("docker {}", String::from_utf8_lossy(&o.stdout).trim()),
            ms: elapsed_ms(start),
            models: None,
        },
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            fail(match o.status.code() {
                Some(127) => "docker is not installed".to_string(),
                _ => err
                    .lines()
                    .last()
                    .unwrap_or("docker info failed")
                    .trim()
                    .to_string(),
            })
        }
        Err(e) => fail(e),
    }
}

/// The node's listening TCP sockets over SSH (`--deep`): the probe, and what it found.
pub async fn listeners_over_ssh(
    t: &SshTarget,
    timeout: Duration,
) -> (Probe, Option<Vec<crate::health::listen::Listener>>) {
    let start = Instant::now();
    let target = format!("ssh {} listening sockets", t.host);
    let probe = |ok: bool, detail: String| Probe {
        ok,
        target: target.clone(),
        detail,
        ms: elapsed_ms(start),
        models: None,
    };
    match run_over_ssh(t, timeout, crate::health::listen::COMMAND).await {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            match crate::health::listen::parse(&text) {
                Some((tool, l)) if o.status.success() => (
                    probe(
                        true,
                        format!(
                            "{} ({tool})",
                            crate::util::count(
                                l.len() as u64,
                                "listening socket",
                                "listening sockets"
                            )
                        ),
                    ),
                    Some(l),
                ),
                _ => {
                    let err = String::from_utf8_lossy(&o.stderr);
                    (
                        probe(
                            false,
                            format!(
                                "cannot list listening sockets: {}",
                                err.lines().last().unwrap_or("no ss or lsof").trim()
                            ),
                        ),
                        None,
                    )
                }
            }
        }
        Err(e) => (probe(false, e), None),
    }
}

/// `tailscale status --json` on the node over SSH (`--deep` on a Tailscale fleet): ok when
/// the node is logged in and connected (`BackendState` `Running`).
pub async fn tailscale_over_ssh(t: &SshTarget, timeout: Duration) -> Probe {
    let start = Instant::now();
    let target = format!("ssh {} tailscale status", t.host);
    let remote = "for T in tailscale /opt/homebrew/bin/tailscale /usr/local/bin/tailscale /Applications/Tailscale.app/Contents/MacOS/Tailscale; do command -v \"$T\" >/dev/null 2>&1 && exec \"$T\" status --json; done; exit 127";
    let probe = |ok: bool, detail: String| Probe {
        ok,
        target: target.clone(),
        detail,
        ms: elapsed_ms(start),
        models: None,
    };
    match run_over_ssh(t, timeout, remote).await {
        Ok(o) if o.status.code() == Some(127) => probe(false, "tailscale is not installed".into()),
        Ok(o) => {
            let v: Option<serde_json::Value> = serde_json::from_slice(&o.stdout).ok();
            match v {
                Some(v) => {
                    let (ok, detail) = tailscale_state(&v);
                    probe(ok, detail)
                }
                None => {
                    let err = String::from_utf8_lossy(&o.stderr);
                    probe(
                        false,
                        format!(
                            "tailscaled does not answer: {}",
                            err.lines().last().unwrap_or("no status").trim()
                        ),
                    )
                }
            }
        }
        Err(e) => probe(false, e),
    }
}

/// What `tailscale status --json` says, in words: `(connected, detail)`.
pub fn tailscale_state(v: &serde_json::Value) -> (bool, String) {
    let state = v["BackendState"].as_str().unwrap_or("unknown");
    let ip = v["Self"]["TailscaleIPs"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|a| a.as_str());
    match state {
        "Running" => (
            true,
            format!(
                "on the tailnet as {}{}",
                v["Self"]["DNSName"]
                    .as_str()
                    .unwrap_or("?")
                    .trim_end_matches('.'),
                ip.map(|i| format!(" ({i})")).unwrap_or_default()
            ),
        ),
        "NeedsLogin" => (false, "tailscale is logged out (NeedsLogin)".into()),
        "NeedsMachineAuth" => (
            false,
            "tailscale waits for an admin to approve the machine (NeedsMachineAuth)".into(),
        ),
        "Stopped" => (false, "tailscale is stopped (`tailscale down`)".into()),
        other => (false, format!("tailscale is not running ({other})")),
    }
}

#[cfg(test)]
mod tailscale_tests {
    use super::tailscale_state;

    #[test]
    fn states() {
        let up = serde_json::json!({"BackendState": "Running", "Self": {"DNSName": "w1.tail1234.ts.net.", "TailscaleIPs": ["100.64.0.7", "fd7a:115c:a1e0::7"]}});
        assert_eq!(
            tailscale_state(&up),
            (
                true,
                "on the tailnet as w1.tail1234.ts.net (100.64.0.7)".into()
            )
        );
        assert!(!tailscale_state(&serde_json::json!({"BackendState": "NeedsLogin"})).0);
        assert!(
            tailscale_state(&serde_json::json!({"BackendState": "Stopped"}))
                .1
                .contains("stopped")
        );
    }
}
