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

/// Runs `docker info` on the node over SSH (`--deep`).
pub async fn docker_over_ssh(t: &SshTarget, timeout: Duration) -> Probe {
    let start = Instant::now();
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
        .arg("docker info --format '{{.ServerVersion}}'")
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let target = format!("ssh {} docker info", t.host);
    match tokio::time::timeout(timeout, cmd.output()).await {
        Ok(Ok(o)) if o.status.success() => Probe {
            ok: true,
            target,
            detail: format!("docker {}", String::from_utf8_lossy(&o.stdout).trim()),
            ms: elapsed_ms(start),
            models: None,
        },
        Ok(Ok(o)) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let detail = match o.status.code() {
                Some(255) => format!("ssh failed: {}", err.lines().last().unwrap_or("").trim()),
                Some(127) => "docker is not installed".to_string(),
                _ => err
                    .lines()
                    .last()
                    .unwrap_or("docker info failed")
                    .trim()
                    .to_string(),
            };
            Probe {
                ok: false,
                target,
                detail,
                ms: elapsed_ms(start),
                models: None,
            }
        }
        Ok(Err(e)) => Probe {
            ok: false,
            target,
            detail: format!("cannot run ssh: {e}"),
            ms: elapsed_ms(start),
            models: None,
        },
        Err(_) => Probe {
            ok: false,
            target,
            detail: format!("no answer within {}", humantime::format_duration(timeout)),
            ms: elapsed_ms(start),
            models: None,
        },
    }
}
