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

/// Can we open a TCP connection?
pub async fn tcp(host: &str, port: u16, timeout: Duration) -> Probe {
    let target = format!("{host}:{port}");
    let start = Instant::now();
    let r = tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await;
    let (ok, detail) = match r {
        Ok(Ok(_)) => (true, "port open".to_string()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            (false, "connection refused".to_string())
        }
        Ok(Err(e)) => (false, e.to_string()),
        Err(_) => (
            false,
            format!("no answer within {}", humantime::format_duration(timeout)),
        ),
    };
    Probe {
        ok,
        target,
        detail,
        ms: elapsed_ms(start),
        models: None,
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
            detail: format!("{} models", models.len()),
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
