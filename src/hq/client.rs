//! Reads live node status from HQ (`GET /api/nodes`), with a short timeout so a command that
//! only wants live data when available never hangs on an unreachable HQ. Reads carry a client
//! token: `FLEET_HQ_TOKEN`, else the file `.fleet/hq.token` of the repo.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::hq::wire::NodesResponse;

/// Installs the TLS crypto provider once (reqwest is built without one, to avoid aws-lc).
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client with fleet's defaults.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    init_tls();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("fleet/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// The environment variable that holds a client token for reading HQ.
pub const TOKEN_ENV: &str = "FLEET_HQ_TOKEN";

/// The client token for reading HQ: `FLEET_HQ_TOKEN`, else `<repo>/.fleet/hq.token`
/// (what `fleet serve` writes for its own repo, or `fleet token issue --client NAME --out`).
pub fn client_token(repo_root: &Path) -> Option<String> {
    if let Ok(t) = std::env::var(TOKEN_ENV)
        && !t.trim().is_empty()
    {
        return Some(t.trim().to_string());
    }
    std::fs::read_to_string(crate::cli::serve::default_token_file(repo_root))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// What to say when HQ refuses a read (401 or 403), given whether a token was sent and HQ's
/// reason.
pub fn refused(status: reqwest::StatusCode, had_token: bool, reason: &str) -> String {
    let why = if !had_token {
        "no token".to_string()
    } else if reason.is_empty() {
        format!("{status}")
    } else {
        format!("{} ({reason})", status.as_u16())
    };
    format!(
        "HQ refused the read: {why}; set {TOKEN_ENV} or put a client token in .fleet/hq.token (fleet token issue --client NAME)"
    )
}

/// Sends a GET with the client token when there is one; a 401 or 403 becomes the
/// [`refused`] message.
pub async fn get(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> Result<reqwest::Response, String> {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| describe(&e))?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        let reason = resp
            .json::<crate::hq::wire::ErrorBody>()
            .await
            .map(|b| b.error)
            .unwrap_or_default();
        return Err(refused(status, token.is_some(), &reason));
    }
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    Ok(resp)
}

/// The fleet CA of the repo at `root` (`tls/ca.pem`), which CLI commands pin for HQ.
pub fn repo_ca(root: &Path) -> PathBuf {
    root.join(crate::hq::tls::CA_CERT)
}

/// A client for HQ at `hq_url`. For an `https://` URL it trusts exactly the fleet CA at `ca`
/// (no system roots), and a URL without a CA file is an error; `http://` needs none.
pub fn hq_client(
    hq_url: &str,
    timeout: Duration,
    ca: Option<&Path>,
) -> Result<reqwest::Client, String> {
    if !hq_url.starts_with("https://") {
        return http_client(timeout);
    }
    let Some(ca) = ca else {
        return Err(format!(
            "`{hq_url}` is HTTPS but no fleet CA was given to check HQ's certificate with\n  help: pass `--ca FILE` (the fleet's `{}`)",
            crate::hq::tls::CA_CERT
        ));
    };
    if !ca.is_file() {
        return Err(format!(
            "no fleet CA at `{}` to check HQ's certificate with (`{hq_url}` is HTTPS)\n  help: `fleet tls init` on the controller makes it; nodes get it from the agent role",
            ca.display()
        ));
    }
    init_tls();
    let tls = crate::hq::tls::client_config(ca).map_err(|e| e.to_string())?;
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("fleet/", env!("CARGO_PKG_VERSION")))
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// Fetches `GET {hq_url}/api/nodes` with `token`, pinning the fleet CA at `ca` for
/// `https://`; the error says why in one line.
pub async fn fetch_nodes(
    hq_url: &str,
    token: Option<&str>,
    timeout: Duration,
    ca: Option<&Path>,
) -> Result<NodesResponse, String> {
    let client = hq_client(hq_url, timeout, ca)?;
    let url = format!("{}/api/nodes", hq_url.trim_end_matches('/'));
    let resp = get(&client, &url, token)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    resp.json::<NodesResponse>()
        .await
        .map_err(|e| format!("{url}: unexpected answer: {e}"))
}

/// A one-line reason for an HTTP failure. A host name that does not resolve is named as such
/// (cannot resolve host `hq.lan`), not as a failed connection.
pub fn describe(e: &reqwest::Error) -> String {
    if let Some(why) = crate::hq::tls::describe_failure(e) {
        return why;
    }
    if let Some(cause) = dns_failure(e) {
        let host = e.url().and_then(|u| u.host_str()).unwrap_or("(unknown)");
        return format!("cannot resolve host `{host}`: {cause}");
    }
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused or unreachable".into()
    } else {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(inner) = src {
            s = format!("{s}: {inner}");
            src = inner.source();
        }
        s
    }
}

/// The resolver's reason when `msg` is the system resolver's (`getaddrinfo`) failure, as the
/// standard library words it (`failed to lookup address information: Name or service not known`).
pub fn dns_reason(msg: &str) -> Option<String> {
    let why = msg
        .strip_prefix("failed to lookup address information")?
        .trim_start_matches(':')
        .trim();
    Some(if why.is_empty() {
        "the name does not resolve".to_string()
    } else {
        why.to_string()
    })
}

/// The resolver's words when `e` failed because a host name did not resolve. The cause sits
/// down the error's source chain: hyper-util's `ConnectError("dns error")` holding the
/// `std::io::Error` from `getaddrinfo`.
fn dns_failure(e: &reqwest::Error) -> Option<String> {
    let mut src = std::error::Error::source(e);
    let mut dns = false;
    while let Some(inner) = src {
        let text = inner.to_string();
        if inner.is::<std::io::Error>()
            && let Some(why) = dns_reason(&text)
        {
            return Some(why);
        }
        dns |= text == "dns error";
        src = inner.source();
    }
    dns.then(|| "the name does not resolve".to_string())
}

/// Runs a future on a small runtime (for synchronous commands).
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(f))
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}
