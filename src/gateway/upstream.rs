//! One attempt at one upstream: send the request and wait for the answer's first byte. A
//! failure before that byte (refused, reset, timeout, 5xx) lets the gateway try the next
//! candidate; once a byte has arrived the answer is the client's, whatever happens after.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::Bytes;

use crate::secret::Secret;

/// A request ready to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Full URL.
    pub url: String,
    /// Extra headers; values that carry keys are secret (never shown by `Debug`).
    pub headers: Vec<(HeaderName, Secret<String>)>,
    /// The JSON body.
    pub body: Bytes,
}

/// Why an attempt failed before its first byte.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    /// No connection (refused, unreachable, DNS).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// No answer (or no first byte) in time.
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The upstream answered with an error status.
    #[error("answered {status}{}", if .detail.is_empty() { String::new() } else { format!(": {}", .detail) })]
    Status {
        /// The status.
        status: u16,
        /// The start of its error body (one line, short).
        detail: String,
    },
    /// The connection broke before the first byte (reset, closed).
    #[error("connection broken: {0}")]
    Broken(String),
}

impl Failure {
    /// Whether this counts against the upstream's circuit breaker (a 429 says "busy", not
    /// "broken").
    pub fn counts(&self) -> bool {
        !matches!(self, Failure::Status { status: 429, .. })
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "connect",
            Failure::Timeout(_) => "timeout",
            Failure::Status { .. } => "status",
            Failure::Broken(_) => "broken",
        }
    }
}

/// An answer whose first byte has arrived.
#[derive(Debug)]
pub struct Answer {
    /// Its status (2xx, or a 4xx the client must see).
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// The first chunk of its body (empty for an empty body).
    pub first: Bytes,
    /// The rest of the body.
    pub rest: reqwest::Response,
    /// How long until the first byte.
    pub first_byte: Duration,
}

/// Statuses after which the next candidate is tried: the upstream is broken (5xx), lacks the
/// model (404), timed out (408) or is busy (429). Other 4xx say the request itself is wrong,
/// which another upstream would say too: the client gets them.
fn try_next(status: StatusCode) -> bool {
    status.is_server_error() || matches!(status.as_u16(), 404 | 408 | 429)
}

/// The text of a reqwest error, without the URL (it may carry a key in its query).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}

/// Sends `out` and waits up to `timeout` for the answer's first byte.
pub async fn start(
    client: &reqwest::Client,
    out: Outgoing,
    timeout: Duration,
) -> Result<Answer, Failure> {
    let mut req = client
        .post(&out.url)
        .header("content-type", "application/json")
        .body(out.body);
    for (name, value) in &out.headers {
        let Ok(mut v) = HeaderValue::from_str(value.expose()) else {
            return Err(Failure::Connect(format!(
                "header `{name}` holds characters a header cannot"
            )));
        };
        v.set_sensitive(true);
        req = req.header(name.clone(), v);
    }
    send(req, timeout).await
}

/// Sends a prepared request and waits up to `timeout` for the answer's first byte.
pub async fn send(req: reqwest::RequestBuilder, timeout: Duration) -> Result<Answer, Failure> {
    let t0 = Instant::now();
    let sent = tokio::time::timeout(timeout, req.send()).await;
    let mut resp = match sent {
        Err(_) => return Err(Failure::Timeout(timeout)),
        Ok(Err(e)) if e.is_connect() => return Err(Failure::Connect(describe(e))),
        Ok(Err(e)) if e.is_timeout() => return Err(Failure::Timeout(timeout)),
        Ok(Err(e)) => return Err(Failure::Broken(describe(e))),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    if try_next(status) {
        let left = timeout
            .saturating_sub(t0.elapsed())
            .min(Duration::from_secs(2));
        let detail = match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(b))) => short(&b),
            _ => String::new(),
        };
        return Err(Failure::Status {
            status: status.as_u16(),
            detail,
        });
    }
    let left = timeout.saturating_sub(t0.elapsed());
    let first = match tokio::time::timeout(left, resp.chunk()).await {
        Err(_) => return Err(Failure::Timeout(timeout)),
        Ok(Err(e)) => return Err(Failure::Broken(describe(e))),
        Ok(Ok(b)) => b.unwrap_or_default(),
    };
    Ok(Answer {
        status,
        headers: resp.headers().clone(),
        first,
        rest: resp,
        first_byte: t0.elapsed(),
    })
}

/// The start of an error body, on one line.
fn short(b: &[u8]) -> String {
    let text = String::from_utf8_lossy(&b[..b.len().min(200)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads the rest of a body, each chunk within `idle`, at most `limit` bytes in all.
pub async fn read_rest(
    answer: &mut Answer,
    idle: Duration,
    limit: usize,
) -> Result<Vec<u8>, Failure> {
    let mut body = answer.first.to_vec();
    loop {
        match tokio::time::timeout(idle, answer.rest.chunk()).await {
            Err(_) => return Err(Failure::Timeout(idle)),
            Ok(Err(e)) => return Err(Failure::Broken(describe(e))),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(b))) => {
                if body.len() + b.len() > limit {
                    return Err(Failure::Broken(format!("answer over {limit} bytes")));
                }
                body.extend_from_slice(&b);
            }
        }
    }
}
