//! `fleet agent`: every interval (with jitter) measure this node — resources, Ollama, Docker —
//! and send a heartbeat to HQ; back off exponentially while HQ does not answer; never exit
//! on a bad answer. It stops (exit 0, which its service manager does not restart) only when
//! HQ answers that its node is drained.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::hq::wire::{Heartbeat, HeartbeatAnswer, Resources, ServiceState};
use crate::util::{now_ms, rfc3339};

/// Settings of the agent.
#[derive(Debug, Clone)]
pub struct Config {
    /// HQ's base URL.
    pub hq: String,
    /// This node's name.
    pub node: String,
    /// File holding the token.
    pub token_file: PathBuf,
    /// Time between heartbeats.
    pub interval: Duration,
    /// The local Ollama API.
    pub ollama_url: String,
    /// Send one heartbeat and exit (its success is the exit code).
    pub once: bool,
    /// The fleet CA that HQ's certificate must be signed by (for an `https://` HQ): the agent
    /// trusts exactly this CA, not the system roots.
    pub ca: Option<PathBuf>,
}

/// Longest wait between attempts while HQ is down.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The delay before the next attempt after `failures` failures in a row (0: all well).
pub fn next_delay(interval: Duration, failures: u32, jitter: f64) -> Duration {
    let base = if failures == 0 {
        interval
    } else {
        let factor = 2u32.saturating_pow(failures.min(16));
        interval
            .saturating_mul(factor)
            .min(MAX_BACKOFF.max(interval))
    };
    base.mul_f64((1.0 + jitter).clamp(0.5, 1.5))
}

fn jitter() -> f64 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    (f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) - 0.5) * 0.2
}

/// Reads the token; warns when the file is readable by others.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token file `{}`: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path)
            && m.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                "token file {} is readable by others (mode {:o}); chmod 600 it",
                path.display(),
                m.permissions().mode() & 0o777
            );
        }
    }
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(format!("the token file `{}` is empty", path.display()));
    }
    Ok(token)
}

async fn ollama_state(client: &reqwest::Client, url: &str) -> ServiceState {
    let base = url.trim_end_matches('/');
    let tags = async {
        let r = client
            .get(format!("{base}/api/tags"))
            .send()
            .await
            .map_err(|e| crate::hq::client::describe(&e))?;
        if !r.status().is_success() {
            return Err(format!("/api/tags answered {}", r.status()));
        }
        let v: serde_json::Value = r.json().await.map_err(|e| format!("/api/tags: {e}"))?;
        Ok::<Vec<String>, String>(
            v["models"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        )
    };
    match tags.await {
        Ok(models) => {
            let version = match client.get(format!("{base}/api/version")).send().await {
                Ok(r) => r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["version"].as_str().map(str::to_string)),
                Err(_) => None,
            };
            ServiceState {
                up: true,
                version,
                models,
                error: None,
            }
        }
        Err(e) => ServiceState {
            up: false,
            error: Some(e),
            ..Default::default()
        },
    }
}

async fn docker_state() -> ServiceState {
    let out = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::process::Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .kill_on_drop(true)
            .output(),
    )
    .await;
    match out {
        Ok(Ok(o)) if o.status.success() => ServiceState {
            up: true,
            version: Some(String::from_utf8_lossy(&o.stdout).trim().to_string()),
            ..Default::default()
        },
        Ok(Ok(o)) => ServiceState {
            up: false,
            error: Some(
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("docker info failed")
                    .trim()
                    .to_string(),
            ),
            ..Default::default()
        },
        Ok(Err(_)) => ServiceState {
            up: false,
            error: Some("docker is not installed".into()),
            ..Default::default()
        },
        Err(_) => ServiceState {
            up: false,
            error: Some("docker info timed out".into()),
            ..Default::default()
        },
    }
}

/// Measures this node now.
pub async fn gather(cfg: &Config, client: &reqwest::Client, seq: u64) -> Heartbeat {
    let (facts, load, used, uptime) = tokio::task::spawn_blocking(|| {
        let f = crate::resources::local();
        let mut sys = sysinfo::System::new().ok();
        let used = sys.as_mut().map(|s| {
            s.refresh_memory();
            (s.used_memory() as f64 / 1024.0 / 1024.0 / 1024.0 * 10.0).round() / 10.0
        });
        (
            f,
            sysinfo::System::load_average().ok().map(|l| l.one),
            used,
            sysinfo::System::uptime().unwrap_or(0),
        )
    })
    .await
    .unwrap_or_default();
    let (ollama, docker) = tokio::join!(ollama_state(client, &cfg.ollama_url), docker_state());
    let mut services = BTreeMap::new();
    services.insert("ollama".to_string(), ollama);
    services.insert("docker".to_string(), docker);
    Heartbeat {
        node: cfg.node.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        sent_at: rfc3339(now_ms()),
        seq,
        uptime_secs: uptime,
        resources: Resources {
            cpu_model: facts.apple_chip.or(facts.cpu_model),
            cores: facts.cores,
            load_1m: load,
            ram_gb: facts.ram_gb,
            ram_used_gb: used,
            disks: facts.disks,
            gpus: facts.gpus,
        },
        services,
    }
}

/// Why the agent stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// SIGTERM or Ctrl-C.
    Signal,
    /// `--once`: the one heartbeat was stored.
    Once,
    /// HQ said the node is drained (with its reason).
    Drained(String),
}

/// Sends one heartbeat and returns HQ's answer; the error says why in one line.
pub async fn send(
    client: &reqwest::Client,
    hq: &str,
    token: &str,
    hb: &Heartbeat,
) -> Result<HeartbeatAnswer, String> {
    let url = format!("{}/api/heartbeat", hq.trim_end_matches('/'));
    let r = client
        .post(&url)
        .bearer_auth(token)
        .json(hb)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", crate::hq::client::describe(&e)))?;
    let status = r.status();
    if status.is_success() {
        // An HQ that answers only `{"stored": true}` (or anything else) means: go on.
        let body = r.text().await.unwrap_or_default();
        return Ok(serde_json::from_str(&body).unwrap_or(HeartbeatAnswer {
            stored: true,
            ..Default::default()
        }));
    }
    let body = r.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<crate::hq::wire::ErrorBody>(&body)
        .map(|e| e.error)
        .unwrap_or(body);
    Err(format!(
        "HQ answered {status}: {}",
        msg.chars().take(200).collect::<String>()
    ))
}

/// Runs until `shutdown` resolves, HQ says the node is drained, or once.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Stopped, String> {
    let client = crate::hq::client::hq_client(&cfg.hq, Duration::from_secs(10), cfg.ca.as_deref())?;
    let ollama_client = crate::hq::client::http_client(Duration::from_secs(2))?;
    tokio::pin!(shutdown);
    let mut failures: u32 = 0;
    let mut seq: u64 = 0;
    tracing::info!(
        "agent for `{}` reporting to {} every {}",
        cfg.node,
        cfg.hq,
        humantime::format_duration(cfg.interval)
    );
    loop {
        seq += 1;
        // The token is read each time so a re-issued token takes effect without a restart.
        let result = match read_token(&cfg.token_file) {
            Ok(token) => {
                let hb = gather(&cfg, &ollama_client, seq).await;
                send(&client, &cfg.hq, &token, &hb).await
            }
            Err(e) => Err(e),
        };
        match &result {
            Ok(answer) if answer.stop => {
                let why = answer
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("{} is drained", cfg.node));
                tracing::info!("HQ says stop: {why}; the agent stops");
                return Ok(Stopped::Drained(why));
            }
            Ok(_) => {
                if failures > 0 {
                    tracing::info!(
                        "heartbeat {seq} delivered; HQ is back after {}",
                        crate::util::count(failures, "failed attempt", "failed attempts")
                    );
                } else {
                    tracing::debug!("heartbeat {seq} delivered");
                }
                failures = 0;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!("heartbeat {seq} failed ({failures} in a row): {e}");
            }
        }
        if cfg.once {
            return result.map(|_| Stopped::Once);
        }
        let delay = next_delay(cfg.interval, failures, jitter());
        tokio::select! {
            () = tokio::time::sleep(delay) => {},
            () = &mut shutdown => {
                tracing::info!("agent stopping");
                return Ok(Stopped::Signal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        let i = Duration::from_secs(60);
        assert_eq!(next_delay(i, 0, 0.0), i);
        assert_eq!(next_delay(i, 1, 0.0), Duration::from_secs(120));
        assert_eq!(next_delay(i, 3, 0.0), Duration::from_secs(300));
        assert_eq!(next_delay(i, 30, 0.0), Duration::from_secs(300));
        assert_eq!(
            next_delay(Duration::from_millis(100), 2, 0.0),
            Duration::from_millis(400)
        );
        assert!(next_delay(i, 0, 0.1) > i);
    }
}
