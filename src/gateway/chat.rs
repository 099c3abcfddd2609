//! `POST /v1/chat/completions`: authenticate, read and check the request, then try the
//! candidates in order — skipping busy workers (all `max_concurrent` slots taken) and cooling
//! ones (open breaker) — until one answers; a failure before an answer's first byte moves the
//! request on, a failure after it ends the answer. One access-log line per request, never
//! with prompt text or keys.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::gateway::breaker::Admit;
use crate::gateway::errors::{error, tag};
use crate::gateway::metrics::{Outcome, StatusLabel, TokenLabels, WorkerLabel};
use crate::gateway::select::{Candidate, SelectError, candidates};
use crate::gateway::upstream::{self, Answer, Outgoing};
use crate::gateway::{Gateway, cloud};
use crate::hq::inflight::Slot;

/// Largest non-streamed answer passed on.
const MAX_ANSWER: usize = 32 * 1024 * 1024;

/// A checked request.
#[derive(Debug)]
struct Chat {
    body: serde_json::Map<String, serde_json::Value>,
    model: String,
    stream: bool,
}

/// Checks the body's shape: a JSON object with a `model` string, a non-empty `messages` array
/// of objects with a `role`, and `stream` a boolean when present.
fn parse(bytes: &[u8]) -> Result<Chat, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the body is not JSON: {e}"))?;
    let serde_json::Value::Object(body) = v else {
        return Err("the body must be a JSON object".into());
    };
    let model = match body.get("model") {
        Some(serde_json::Value::String(m)) => m.clone(),
        Some(_) => return Err("`model` must be a string".into()),
        None => return Err("`model` is missing: write `task:<type>` or a model name".into()),
    };
    match body.get("messages") {
        Some(serde_json::Value::Array(ms)) if !ms.is_empty() => {
            for (i, m) in ms.iter().enumerate() {
                if !m.get("role").is_some_and(serde_json::Value::is_string) {
                    return Err(format!("`messages[{i}]` needs a `role` string"));
                }
            }
        }
        Some(serde_json::Value::Array(_)) => return Err("`messages` is empty".into()),
        Some(_) => return Err("`messages` must be an array".into()),
        None => return Err("`messages` is missing".into()),
    }
    let stream = match body.get("stream") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => return Err("`stream` must be true or false".into()),
    };
    Ok(Chat {
        body,
        model,
        stream,
    })
}

/// What one request did, for its access-log line and metrics (logged when dropped: for a
/// stream, when the stream ends or the client goes away).
struct Done {
    gw: Arc<Gateway>,
    client: String,
    started: Instant,
    status: u16,
    worker: String,
    attempts: u32,
    upstream_time: Duration,
    /// `ok`; `aborted` when the upstream broke off; `client_gone` when the client left first.
    outcome: &'static str,
    /// Held until the answer ends.
    slot: Option<Slot>,
    /// A cloud call's share of `max_concurrent_api`, held as long.
    api_slot: Option<Slot>,
}

impl Drop for Done {
    fn drop(&mut self) {
        let total = self.started.elapsed();
        self.slot.take();
        self.api_slot.take();
        tracing::info!(
            target: "fleet::access",
            method = %"POST",
            route = %"/v1/chat/completions",
            status = self.status,
            worker = %self.worker,
            attempts = self.attempts,
            latency_ms = (total.as_secs_f64() * 1000.0),
            client = %self.client,
            outcome = %self.outcome,
            "request"
        );
        if self.outcome != "ok" && !self.worker.is_empty() {
            self.gw
                .metrics
                .attempts
                .get_or_create(&Outcome {
                    worker: self.worker.clone(),
                    outcome: self.outcome.to_string(),
                })
                .inc();
        }
    }
}

/// The handler.
pub async fn completions(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let started = Instant::now();
    let conn = req
        .extensions()
        .get::<Arc<crate::hq::listener::Conn>>()
        .cloned();
    let client = match gw.authenticate(req.headers()) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if let Some(c) = conn {
        c.authenticated();
    }
    let mut done = Done {
        gw: gw.clone(),
        client,
        started,
        status: 0,
        worker: String::new(),
        attempts: 0,
        upstream_time: Duration::ZERO,
        outcome: "ok",
        slot: None,
        api_slot: None,
    };
    let (resp, streaming) = match answer(&gw, req, &mut done).await {
        Ok(r) => r,
        Err(r) => (r, false),
    };
    done.status = resp.status().as_u16();
    gw.metrics
        .requests
        .get_or_create(&StatusLabel {
            status: done.status.to_string(),
        })
        .inc();
    let upstream_time = done.upstream_time;
    gw.metrics.overhead.observe(
        started
            .elapsed()
            .saturating_sub(upstream_time)
            .as_secs_f64(),
    );
    if streaming { attach(resp, done) } else { resp }
}

/// Ties `done` to the answer's body, so the slot is held and the log line written when the
/// body has been sent (or dropped).
fn attach(resp: Response, mut done: Done) -> Response {
    let (parts, body) = resp.into_parts();
    // Until the stream ends, a drop means the client went away.
    done.outcome = "client_gone";
    let stream = futures_util::stream::unfold(
        (body.into_data_stream(), Some(done)),
        |(mut s, mut held)| async move {
            use futures_util::StreamExt;
            match s.next().await {
                Some(Ok(b)) => Some((Ok::<Bytes, axum::Error>(b), (s, held))),
                Some(Err(e)) => {
                    if let Some(d) = held.as_mut() {
                        d.outcome = "aborted";
                    }
                    Some((Err(e), (s, held)))
                }
                None => {
                    if let Some(d) = held.as_mut()
                        && d.outcome == "client_gone"
                    {
                        d.outcome = "ok";
                    }
                    None
                }
            }
        },
    );
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Answers the request: `Ok((answer, true))` for a stream still being sent; `Err` for an
/// error answer.
async fn answer(
    gw: &Arc<Gateway>,
    req: Request,
    done: &mut Done,
) -> Result<(Response, bool), Response> {
    let too_big = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > gw.settings.max_body);
    let limit_msg = format!("request body over {} bytes", gw.settings.max_body);
    if too_big {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "body_too_large",
            limit_msg,
        ));
    }
    let read = axum::body::to_bytes(req.into_body(), gw.settings.max_body);
    let bytes = match tokio::time::timeout(gw.settings.body_timeout, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "body_too_large",
                limit_msg,
            ));
        }
        Err(_) => {
            return Err(error(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                "body_timeout",
                "the request body did not arrive in time",
            ));
        }
    };
    let chat = match parse(&bytes) {
        Ok(c) => c,
        Err(m) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "malformed",
                m,
            ));
        }
    };
    let table = gw.table();
    let list = match candidates(&table, &chat.model) {
        Ok(l) => l,
        Err(e @ (SelectError::UnknownTask { .. } | SelectError::UnknownModel(_))) => {
            return Err(error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                e.to_string(),
            ));
        }
        Err(e) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "not_a_chat_model",
                e.to_string(),
            ));
        }
    };
    let mut busy = Vec::new();
    let mut cooling = Vec::new();
    let mut failed = Vec::new();
    let mut capped = None;
    let mut request_json: Option<serde_json::Value> = None;
    for cand in &list {
        let (label, max, send) = match cand {
            Candidate::Node {
                name,
                base,
                model,
                max_concurrent,
            } => {
                let mut body = chat.body.clone();
                body.insert("model".into(), serde_json::Value::String(model.clone()));
                let out = Outgoing {
                    url: format!("{base}/v1/chat/completions"),
                    headers: Vec::new(),
                    body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
                };
                (name.clone(), *max_concurrent, Send::Node(out))
            }
            Candidate::Cloud(i) => {
                let body = request_json
                    .get_or_insert_with(|| serde_json::Value::Object(chat.body.clone()));
                match cloud::prepare(gw, *i, body, chat.stream) {
                    Ok(p) => (p.label.clone(), 0, Send::Cloud(Box::new(p))),
                    Err(cloud::Skip::Capped(m)) => {
                        capped = Some(m);
                        continue;
                    }
                    Err(cloud::Skip::Unusable(m)) => {
                        let label = crate::gateway::select::clouds(&gw.table())
                            .get(*i)
                            .map_or_else(
                                || "cloud".to_string(),
                                |c| format!("cloud:{}", c.provider),
                            );
                        gw.note_error(&label, m.clone());
                        failed.push(format!("{label}: {m}"));
                        continue;
                    }
                }
            }
        };
        let Some(slot) = gw.inflight.try_take(&label, max) else {
            busy.push(label);
            continue;
        };
        // All cloud calls together stay under `routing.max_concurrent_api`.
        let api_slot = match &send {
            Send::Cloud(_) => {
                let max_api = gw.policy().max_concurrent_api.unwrap_or(0);
                match gw.inflight.try_take(CLOUD_SLOTS, max_api) {
                    Some(s) => Some(s),
                    None => {
                        busy.push(label);
                        continue;
                    }
                }
            }
            Send::Node(_) => None,
        };
        let admit = gw.breakers.admit(&label, Instant::now());
        if admit == Admit::No {
            cooling.push(label);
            continue;
        }
        done.attempts += 1;
        let t0 = Instant::now();
        let timeout = gw.settings.upstream_timeout;
        let sent = match &send {
            Send::Node(out) => upstream::start(&gw.client, out.clone(), timeout).await,
            Send::Cloud(p) => cloud::send(gw, p, timeout).await,
        };
        match sent {
            Ok(answer) => {
                gw.breakers.success(&label);
                gw.metrics
                    .upstream
                    .get_or_create(&WorkerLabel {
                        worker: label.clone(),
                    })
                    .observe(answer.first_byte.as_secs_f64());
                done.upstream_time += answer.first_byte;
                done.worker = label.clone();
                done.slot = Some(slot);
                done.api_slot = api_slot;
                let outcome = if answer.status.is_success() {
                    "ok"
                } else {
                    "client_error"
                };
                gw.metrics
                    .attempts
                    .get_or_create(&Outcome {
                        worker: label.clone(),
                        outcome: outcome.into(),
                    })
                    .inc();
                return Ok(match send {
                    Send::Node(_) => pass_on(gw, answer, chat.stream, done, &label).await,
                    Send::Cloud(p) => {
                        let client = done.client.clone();
                        cloud::pass_on(gw, answer, chat.stream, *p, client, done.attempts).await
                    }
                });
            }
            Err(f) => {
                done.upstream_time += t0.elapsed();
                if f.counts() {
                    if gw.breakers.failure(&label, Instant::now()) {
                        tracing::warn!(
                            "gateway: `{label}` failed {} times in a row ({}); no requests for {}",
                            gw.settings.breaker_failures,
                            crate::secret::mask(&f.to_string()),
                            humantime::format_duration(gw.settings.breaker_cooldown)
                        );
                    }
                } else if admit == Admit::Probe {
                    gw.breakers.abandon_probe(&label);
                }
                gw.metrics
                    .attempts
                    .get_or_create(&Outcome {
                        worker: label.clone(),
                        outcome: f.kind().into(),
                    })
                    .inc();
                gw.note_error(&label, f.to_string());
                failed.push(format!("{label}: {}", crate::secret::mask(&f.to_string())));
            }
        }
    }
    Err(nobody(
        &chat.model,
        done.attempts,
        &busy,
        &cooling,
        &failed,
        capped.as_deref(),
    ))
}

/// The in-flight key every cloud call holds a slot of (bounded by `max_concurrent_api`).
const CLOUD_SLOTS: &str = "cloud";

/// How a candidate's request is sent.
enum Send {
    Node(Outgoing),
    Cloud(Box<cloud::Prepared>),
}

/// The answer when no candidate took the request.
fn nobody(
    model: &str,
    attempts: u32,
    busy: &[String],
    cooling: &[String],
    failed: &[String],
    capped: Option<&str>,
) -> Response {
    let mut why = Vec::new();
    if let Some(c) = capped {
        why.push(c.to_string());
    }
    if !failed.is_empty() {
        why.push(format!("failed: {}", failed.join("; ")));
    }
    if !busy.is_empty() {
        why.push(format!("busy: {}", busy.join(", ")));
    }
    if !cooling.is_empty() {
        why.push(format!(
            "cooling down after failures: {}",
            cooling.join(", ")
        ));
    }
    if why.is_empty() {
        why.push("no worker that serves it is online".into());
    }
    let msg = format!("no worker could take `{model}` ({})", why.join("; "));
    let (status, code) = if capped.is_some() {
        (StatusCode::TOO_MANY_REQUESTS, "spend_cap_reached")
    } else if !busy.is_empty() || !cooling.is_empty() || failed.is_empty() {
        // Someone may take it in a moment: worth retrying.
        (StatusCode::SERVICE_UNAVAILABLE, "no_capacity")
    } else {
        (StatusCode::BAD_GATEWAY, "upstream_failed")
    };
    let mut r = tag(error(status, "server_error", code, msg), "", attempts);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r.headers_mut().remove("x-fleet-worker");
    r
}

/// Sends an answer on: a stream chunk by chunk as it comes (no retry once begun), a whole
/// answer once read.
async fn pass_on(
    gw: &Arc<Gateway>,
    mut answer: Answer,
    stream: bool,
    done: &mut Done,
    worker: &str,
) -> (Response, bool) {
    let content_type = answer
        .headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("application/json"));
    let idle = gw.settings.upstream_timeout;
    if stream && answer.status.is_success() {
        let first = std::mem::take(&mut answer.first);
        let body = futures_util::stream::unfold(
            (Some(first), Some(answer.rest)),
            move |(first, rest)| async move {
                if let Some(b) = first.filter(|b| !b.is_empty()) {
                    return Some((Ok::<Bytes, std::io::Error>(b), (None, rest)));
                }
                let mut rest = rest?;
                match tokio::time::timeout(idle, rest.chunk()).await {
                    Ok(Ok(Some(b))) => Some((Ok(b), (None, Some(rest)))),
                    Ok(Ok(None)) => None,
                    Ok(Err(e)) => Some((
                        Err(std::io::Error::other(format!(
                            "upstream broke off: {}",
                            e.without_url()
                        ))),
                        (None, None),
                    )),
                    Err(_) => Some((
                        Err(std::io::Error::other("upstream stalled mid-stream")),
                        (None, None),
                    )),
                }
            },
        );
        let mut r = Response::new(Body::from_stream(body));
        *r.status_mut() = answer.status;
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, content_type);
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return (tag(r, worker, done.attempts), true);
    }
    match upstream::read_rest(&mut answer, idle, MAX_ANSWER).await {
        Ok(body) => {
            count_tokens(gw, worker, &body);
            let mut r = (answer.status, Bytes::from(body)).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, content_type);
            (tag(r, worker, done.attempts), false)
        }
        Err(f) => {
            gw.note_error(worker, format!("after the first byte: {f}"));
            done.outcome = "aborted";
            let r = error(
                StatusCode::BAD_GATEWAY,
                "server_error",
                "upstream_broke_off",
                format!("`{worker}` broke off its answer ({f}); not retried: it had begun"),
            );
            (tag(r, worker, done.attempts), false)
        }
    }
}

/// Counts the tokens an OpenAI-shaped answer reports.
fn count_tokens(gw: &Gateway, worker: &str, body: &[u8]) {
    #[derive(serde::Deserialize)]
    struct Usage {
        #[serde(default)]
        prompt_tokens: u64,
        #[serde(default)]
        completion_tokens: u64,
    }
    #[derive(serde::Deserialize)]
    struct WithUsage {
        usage: Option<Usage>,
    }
    let Ok(WithUsage { usage: Some(u) }) = serde_json::from_slice::<WithUsage>(body) else {
        return;
    };
    for (direction, n) in [("input", u.prompt_tokens), ("output", u.completion_tokens)] {
        gw.metrics
            .tokens
            .get_or_create(&TokenLabels {
                worker: worker.to_string(),
                direction: direction.into(),
            })
            .inc_by(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_checks_the_shape() {
        let ok = parse(br#"{"model":"task:chat","messages":[{"role":"user","content":"hi"}],"stream":true,"x":1}"#)
            .expect("valid");
        assert_eq!((ok.model.as_str(), ok.stream), ("task:chat", true));
        assert!(ok.body.contains_key("x"), "unknown fields are passed on");
        for (body, want) in [
            (&b"nope"[..], "not JSON"),
            (b"[]", "JSON object"),
            (br#"{"messages":[{"role":"user"}]}"#, "`model` is missing"),
            (
                br#"{"model":1,"messages":[{"role":"user"}]}"#,
                "`model` must be a string",
            ),
            (br#"{"model":"m","messages":[]}"#, "`messages` is empty"),
            (
                br#"{"model":"m","messages":[{}]}"#,
                "`messages[0]` needs a `role`",
            ),
            (
                br#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#,
                "`stream` must be",
            ),
        ] {
            let e = parse(body).expect_err("invalid");
            assert!(e.contains(want), "{e} should say {want}");
        }
    }
}
