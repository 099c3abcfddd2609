//! `fleet serve`: run the HQ registry.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::hq::listener::Limits;
use crate::hq::server::{Config, start};
use crate::hq::tls::{self, CertFiles};
use crate::repo::Repo;

/// Arguments of `fleet serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (default: the host and port of the inventory's `hq_url`).
    /// `0.0.0.0:8765` listens on every interface, and only when written out like that.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The state file (default: `.fleet/hq.sqlite` in the repo).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// A node is offline after this long without a heartbeat.
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    pub offline_after: std::time::Duration,
    /// Heartbeats kept per node.
    #[arg(long, default_value_t = 100)]
    pub history: u32,
    /// Heartbeats accepted per second per node (bursts of twice that).
    #[arg(long, default_value_t = 5.0)]
    pub rate_limit: f64,
    /// Requests per second per client address without a valid token (bursts of twice that);
    /// more are answered 429.
    #[arg(long, default_value_t = 20.0)]
    pub unauth_rate_limit: f64,
    /// A connection must send its request's headers within this long (slowloris cut-off).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: std::time::Duration,
    /// A request's body must arrive within this long (408 otherwise).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub body_timeout: std::time::Duration,
    /// An idle keep-alive connection is closed after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub idle_timeout: std::time::Duration,
    /// Open connections at most (default: three quarters of the open-file limit, at most
    /// 16384); a quarter of them is kept for connections that showed a valid token.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// HQ's certificate (PEM); with `--tls-key`, HQ serves HTTPS. Default when `fleet.hq_url`
    /// is `https://`: `.fleet/tls/hq.pem` in the repo, else `/var/lib/fleet/tls/hq.pem`.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// HQ's private key (PEM), with `--tls-cert`.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Log to this file (appending; opened again when it was rotated away, see docs/logs.md);
    /// stderr gets the lines too only when it is a terminal or the journal.
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Gateway: how long a worker or provider has for its answer's first byte (and, streaming,
    /// between two chunks) before the request moves to the next candidate.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration, help_heading = "Gateway")]
    pub upstream_timeout: std::time::Duration,
    /// Gateway: consecutive failures after which a worker gets no requests for the cooldown.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Gateway")]
    pub breaker_failures: u32,
    /// Gateway: how long a failing worker is left alone before one request probes it.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, help_heading = "Gateway")]
    pub breaker_cooldown: std::time::Duration,
    /// Gateway: where the daily spend warning (`routing.cost.warn_at`) is posted (default:
    /// FLEET_WEBHOOK_URL, else the variable `fleet.alert_webhook_env` names).
    #[arg(
        long,
        value_name = "URL",
        env = "FLEET_WEBHOOK_URL",
        help_heading = "Gateway"
    )]
    pub webhook_url: Option<String>,
    /// Gateway: largest request body in bytes (413 over it).
    #[arg(long, default_value_t = 4 * 1024 * 1024, help_heading = "Gateway")]
    pub max_request_body: usize,
}

/// Where commands of this repo find a client token for HQ when `FLEET_HQ_TOKEN` is not set.
pub fn default_token_file(root: &Path) -> PathBuf {
    root.join(".fleet").join("hq.token")
}

/// The name of the client token `fleet serve` issues for commands run in its own repo.
pub const LOCAL_CLIENT: &str = "hq-local";

/// Makes sure `<repo>/.fleet/hq.token` holds a valid client token, so `fleet check` (the hq
/// role's cron sweep), `fleet route` and `fleet render --live` run on HQ's machine read it
/// without setup: a missing or no longer valid file gets a new client token `hq-local`
/// (mode 0600); a valid one is kept.
fn ensure_local_token(root: &Path, db: &Path) -> Result<PathBuf> {
    use crate::hq::store::{Store, TokenKind};
    let path = default_token_file(root);
    let store = Store::open(db).map_err(Error::Failed)?;
    if let Ok(text) = std::fs::read_to_string(&path) {
        let valid = store
            .token_by_hash(
                &crate::hq::tokens::hash(text.trim()),
                crate::hq::store::now_ms(),
            )
            .map_err(Error::Failed)?
            .is_some();
        if valid {
            return Ok(path);
        }
    }
    if store
        .token_kind(LOCAL_CLIENT)
        .map_err(Error::Failed)?
        .is_some_and(|k| k != TokenKind::Client)
    {
        return Err(Error::Failed(format!(
            "a token called `{LOCAL_CLIENT}` exists and is not a client token; revoke it (`fleet token revoke {LOCAL_CLIENT}`)"
        )));
    }
    let token = crate::hq::tokens::generate().map_err(Error::Failed)?;
    crate::cli::token::write_secret(&path, format!("{token}\n").as_bytes())?;
    store
        .issue_token(
            LOCAL_CLIENT,
            TokenKind::Client,
            &crate::hq::tokens::hash(&token),
        )
        .map_err(Error::Failed)?;
    Ok(path)
}

/// The default store path of a repo.
pub fn default_db(root: &Path) -> PathBuf {
    root.join(".fleet").join("hq.sqlite")
}

/// `host:port` of an http(s) URL.
pub fn url_host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let default = if scheme == "https" { 443 } else { 80 };
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after
            .strip_prefix(':')
            .map_or(Some(default), |p| p.parse().ok())?;
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((authority.to_string(), default)),
    }
}

async fn resolve_listen(repo: &Repo, listen: Option<&str>) -> Result<SocketAddr> {
    let target = match listen {
        Some(l) => l.to_string(),
        None => {
            let Some(url) = &repo.inventory.fleet.hq_url else {
                return Err(Error::Usage("no `--listen` and no `fleet.hq_url` in the inventory\n  help: pass `--listen 127.0.0.1:8765` or set `fleet: { hq_url: http://HOST:8765 }`".into()));
            };
            let (h, p) = url_host_port(&url.value).ok_or_else(|| {
                Error::Usage(format!("`fleet.hq_url` `{}` has no host", url.value))
            })?;
            format!("{h}:{p}")
        }
    };
    let mut addrs = tokio::net::lookup_host(&target)
        .await
        .map_err(|e| Error::Usage(format!("cannot resolve `{target}` to listen on: {e}\n  help: pass `--listen ADDR:PORT` with an address of this machine")))?;
    addrs
        .next()
        .ok_or_else(|| Error::Usage(format!("`{target}` resolves to no address")))
}

/// HQ's certificate and key: the flags, else (for an `https://` hq_url) the repo's
/// `.fleet/tls/`, else `/var/lib/fleet/tls/` (where the hq role places them).
fn tls_files(repo: &Repo, args: &Args) -> Option<CertFiles> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        return Some(CertFiles {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    let https = repo
        .inventory
        .fleet
        .hq_url
        .as_ref()
        .is_some_and(|u| u.value.starts_with("https://"));
    if !https {
        return None;
    }
    [
        (repo.root.join(tls::HQ_CERT), repo.root.join(tls::HQ_KEY)),
        (
            PathBuf::from(tls::NODE_HQ_CERT),
            PathBuf::from(tls::NODE_HQ_KEY),
        ),
    ]
    .into_iter()
    .find(|(c, k)| c.is_file() && k.is_file())
    .map(|(cert, key)| CertFiles { cert, key })
}

/// The TLS configuration HQ serves with, or `None` for plain HTTP where that is allowed: on a
/// loopback address, or with `fleet.insecure_http: true`.
fn tls_config(
    repo: &Repo,
    args: &Args,
    listen: SocketAddr,
) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>> {
    if let Some(files) = tls_files(repo, args) {
        return Ok(Some(tls::server_config(&files)?));
    }
    let https = repo
        .inventory
        .fleet
        .hq_url
        .as_ref()
        .filter(|u| u.value.starts_with("https://"));
    if let Some(url) = https {
        return Err(Error::Usage(format!(
            "`fleet.hq_url` is `{}` but HQ has no certificate (looked for {} and {})\n  help: run `fleet tls issue-hq` on the controller (it writes {}), apply the hq role to place it on HQ, or pass `--tls-cert` and `--tls-key`",
            url.value,
            repo.root.join(tls::HQ_CERT).display(),
            tls::NODE_HQ_CERT,
            tls::HQ_CERT
        )));
    }
    if tls::is_loopback(&listen) || repo.inventory.fleet.insecure_http {
        return Ok(None);
    }
    Err(Error::Usage(format!(
        "refusing to serve plain HTTP on {listen}, which is not a loopback address: agent tokens would cross the network in clear\n  help: serve HTTPS: `fleet tls init` makes the fleet CA and HQ's certificate; set `fleet.hq_url` to `https://…` (or pass `--tls-cert` and `--tls-key`). To accept plain HTTP anyway, set `fleet: {{ insecure_http: true }}` in the inventory"
    )))
}

/// Runs `fleet serve` until SIGTERM or Ctrl-C.
pub fn run(repo_dir: Option<&Path>, args: &Args) -> Result<u8> {
    // Every check `fleet validate` runs: HQ serves only a repo it would accept on a reload.
    let root = crate::repo::find_root(repo_dir)?;
    let repo = Repo::load(&root);
    let (mut diags, _) = crate::validate::validate(&repo);
    for w in diags.take_warnings() {
        crate::noteln!("{}", crate::cli::style::diagnostic(&w));
    }
    if diags.has_errors() {
        return Err(Error::Config(diags));
    }
    let root = repo.root.clone();
    crate::cli::init_logging(args.log_file.as_deref(), true);
    let db = args.db.clone().unwrap_or_else(|| default_db(&root));
    let token_file = ensure_local_token(&root, &db)?;
    // Connections are files: take the hard limit, then keep the cap well under it.
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let (auto_cap, _) = Limits::for_fd_limit(fd_limit);
    let max_connections = match args.max_connections {
        Some(0) => return Err(Error::Usage("--max-connections must be at least 1".into())),
        Some(n) if n > auto_cap => {
            crate::noteln!(
                "note: --max-connections {n} lowered to {auto_cap} (the open-file limit is {fd_limit})"
            );
            auto_cap
        }
        Some(n) => n,
        None => auto_cap,
    };
    let limits = Limits {
        header_timeout: args.header_timeout,
        body_timeout: args.body_timeout,
        idle_timeout: args.idle_timeout,
        max_connections,
        reserved_authenticated: max_connections / 4,
    };
    let rt = crate::cli::runtime()?;
    rt.block_on(async {
        let listen = resolve_listen(&repo, args.listen.as_deref()).await?;
        let tls = tls_config(&repo, args, listen)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let cfg = Config {
            listen,
            db,
            repo_root: root.clone(),
            offline_after: args.offline_after,
            history: args.history.max(1),
            rate_per_node: args.rate_limit,
            unauth_rate_per_ip: args.unauth_rate_limit.max(0.001),
            limits,
            tls,
            gateway: crate::gateway::Settings {
                upstream_timeout: args.upstream_timeout,
                breaker_failures: args.breaker_failures,
                breaker_cooldown: args.breaker_cooldown,
                max_body: args.max_request_body,
                webhook: args.webhook_url.clone(),
                body_timeout: args.body_timeout.max(std::time::Duration::from_secs(30)),
                ..crate::gateway::Settings::default()
            },
        };
        let db = cfg.db.clone();
        let running = start(cfg, repo, shutdown_signal())
            .await
            .map_err(Error::Failed)?;
        tracing::info!(
            "fleet HQ listening on {scheme}://{} (store {}; at most {max_connections} connections; client token for this repo in {})",
            running.addr,
            db.display(),
            token_file.display()
        );
        running.wait().await.map_err(Error::Failed)?;
        tracing::info!("fleet HQ stopped");
        Ok(0)
    })
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_of_urls() {
        assert_eq!(
            url_host_port("http://bob.local:8765"),
            Some(("bob.local".into(), 8765))
        );
        assert_eq!(
            url_host_port("http://bob.local/"),
            Some(("bob.local".into(), 80))
        );
        assert_eq!(
            url_host_port("https://[::1]:9000/x"),
            Some(("::1".into(), 9000))
        );
        assert_eq!(url_host_port("bob:1"), None);
    }
}
