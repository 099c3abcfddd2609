//! Reads live node status from HQ (`GET /api/nodes`), with a short timeout so a command that
//! only wants live data when available never hangs on an unreachable HQ.

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

/// Fetches `GET {hq_url}/api/nodes`; the error says why in one line.
pub async fn fetch_nodes(hq_url: &str, timeout: Duration) -> Result<NodesResponse, String> {
    let client = http_client(timeout)?;
    let url = format!("{}/api/nodes", hq_url.trim_end_matches('/'));
    let resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", describe(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    resp.json::<NodesResponse>()
        .await
        .map_err(|e| format!("{url}: unexpected answer: {e}"))
}

/// A one-line reason for an HTTP failure.
pub fn describe(e: &reqwest::Error) -> String {
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

/// Runs a future on a small runtime (for synchronous commands).
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(f))
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}
