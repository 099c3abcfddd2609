//! The cloud candidates: a provider is tried only while the day's spend is under
//! `routing.cost.max_daily_spend` and its price is known (a cap that cannot count is not
//! enforced by guessing), with `routing.max_concurrent_api` bounding all cloud calls at once.
//! Its answer is translated to OpenAI's shape (streams included), its cost computed from the
//! usage the provider reports and committed to the ledger before the answer ends; crossing
//! `warn_at` posts one alert a day.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::gateway::Gateway;
use crate::gateway::errors::{error, tag};
use crate::gateway::ledger::{Entry, today};
use crate::gateway::metrics::{ProviderLabel, TokenLabels};
use crate::gateway::prices::{Price, cost_usd};
use crate::gateway::providers::{
    self, CloudTarget, StreamTranslator, UpstreamRequest, Usage, error_summary,
};
use crate::gateway::upstream::{self, Answer};

/// A cloud candidate ready to send.
#[derive(Debug)]
pub struct Prepared {
    /// `cloud:<provider>`.
    pub label: String,
    /// The provider.
    pub target: CloudTarget,
    /// Its price, when known.
    pub price: Option<Price>,
    /// The request.
    pub request: UpstreamRequest,
}

/// Why a cloud candidate was not tried.
#[derive(Debug)]
pub enum Skip {
    /// The day's spend reached the cap (the message names it).
    Capped(String),
    /// It cannot be called (no key, no price under a cap, a request it cannot carry).
    Unusable(String),
}

/// Prepares provider `index` for `body`, or says why it is skipped.
pub fn prepare(
    gw: &Gateway,
    index: usize,
    body: &serde_json::Value,
    stream: bool,
) -> Result<Prepared, Skip> {
    let policy = gw.policy();
    let target = match policy.targets.get(index) {
        Some(Ok(t)) => t.clone(),
        Some(Err(e)) => return Err(Skip::Unusable(e.to_string())),
        None => {
            return Err(Skip::Unusable(
                "not configured (the inventory changed)".into(),
            ));
        }
    };
    let label = target.worker_label();
    if let Some(max) = policy.cost.max_daily_spend {
        let spent = gw
            .ledger
            .spent_on(&today())
            .map_err(|e| Skip::Unusable(format!("{e}; the cap cannot be checked")))?;
        if spent >= max {
            return Err(Skip::Capped(format!(
                "the daily cloud spend cap is reached: ${spent:.4} spent today (UTC) of routing.cost.max_daily_spend ${max:.2}"
            )));
        }
    }
    let price = policy
        .prices
        .as_ref()
        .and_then(|p| p.price(&target.provider, &target.model));
    let limited = policy.cost.max_daily_spend.is_some() || policy.cost.warn_at.is_some();
    if price.is_none() && limited {
        return Err(Skip::Unusable(format!(
            "no price for `{}/{}`, so routing.cost cannot count its spend; add it under routing.prices",
            target.provider, target.model
        )));
    }
    let request = providers::build(&target, body, stream)
        .map_err(|e| Skip::Unusable(format!("cannot carry the request: {e}")))?;
    Ok(Prepared {
        label,
        target,
        price,
        request,
    })
}

/// Sends a prepared request: the answer once its first byte arrived.
pub async fn send(
    gw: &Gateway,
    p: &Prepared,
    timeout: Duration,
) -> Result<Answer, upstream::Failure> {
    let req = p
        .request
        .clone()
        .send_with(&gw.client)
        .map_err(|e| upstream::Failure::Connect(e.to_string()))?;
    upstream::send(req, timeout).await
}

/// Commits one answer's cost and counts its tokens; warns once a day at `warn_at`. Returns
/// the cost.
fn account(gw: &Arc<Gateway>, p: &Prepared, client: &str, usage: Option<Usage>) -> f64 {
    let usage = usage.unwrap_or_default();
    let usd = p.price.map_or(0.0, |price| cost_usd(usage, price));
    let day = today();
    let entry = Entry {
        provider: &p.target.provider,
        model: &p.target.model,
        client,
        input_tokens: usage.prompt_tokens,
        output_tokens: usage.completion_tokens,
        usd,
    };
    if let Err(e) = gw.ledger.record(&day, &entry) {
        tracing::error!(
            "gateway: {e}: a {} call of ${usd:.6} is not in the ledger",
            p.label
        );
    }
    for (direction, n) in [
        ("input", usage.prompt_tokens),
        ("output", usage.completion_tokens),
    ] {
        gw.metrics
            .tokens
            .get_or_create(&TokenLabels {
                worker: p.label.clone(),
                direction: direction.into(),
            })
            .inc_by(n);
    }
    gw.metrics
        .spend_microusd
        .get_or_create(&ProviderLabel {
            provider: p.target.provider.clone(),
        })
        .inc_by((usd * 1_000_000.0).round() as u64);
    warn_if_due(gw, &day);
    usd
}

/// Posts the day's spend warning once, when the spend reached `warn_at`.
fn warn_if_due(gw: &Arc<Gateway>, day: &str) {
    use std::sync::atomic::Ordering;
    let policy = gw.policy();
    let Some(warn_at) = policy.cost.warn_at else {
        return;
    };
    let spent = gw.ledger.spent_on(day).unwrap_or(0.0);
    if spent < warn_at || gw.ledger.alert_sent(day, "warn").unwrap_or(true) {
        return;
    }
    if gw.alerting.swap(true, Ordering::AcqRel) {
        return;
    }
    let cap = policy
        .cost
        .max_daily_spend
        .map(|m| format!(" (cap ${m:.2})"))
        .unwrap_or_default();
    let fleet = policy.fleet.clone();
    let text = format!(
        "*fleet {}*: cloud spend today ${spent:.4} reached warn_at ${warn_at:.2}{cap}",
        fleet.as_deref().unwrap_or("")
    );
    tracing::warn!("{}", text.replace('*', ""));
    let payload = serde_json::json!({
        "text": text,
        "fleet": fleet,
        "spend": {
            "day": day, "spent_usd": spent, "warn_at": warn_at,
            "max_daily_spend": policy.cost.max_daily_spend,
        },
    });
    let (gw, day, webhook) = (gw.clone(), day.to_string(), policy.webhook.clone());
    tokio::spawn(async move {
        let sent = match &webhook {
            Some(url) => crate::health::alert::post(url, &payload).await,
            // Without a webhook the log line above is the alert.
            None => Ok(()),
        };
        match sent {
            Ok(()) => {
                if let Err(e) = gw.ledger.mark_alert(&day, "warn") {
                    tracing::error!("gateway: {e}");
                }
            }
            Err(e) => tracing::error!(
                "gateway: could not post the spend warning: {e}; the next cloud answer retries"
            ),
        }
        gw.alerting.store(false, Ordering::Release);
    });
}

/// Passes a provider's answer on: translated to OpenAI's shape, its cost committed first.
pub async fn pass_on(
    gw: &Arc<Gateway>,
    mut answer: Answer,
    stream: bool,
    p: Prepared,
    client: String,
    attempts: u32,
) -> (Response, bool) {
    let idle = gw.settings.upstream_timeout;
    if !answer.status.is_success() {
        let body = upstream::read_rest(&mut answer, idle, 64 * 1024)
            .await
            .unwrap_or_default();
        let msg = error_summary(&p.target, answer.status.as_u16(), &body);
        gw.note_error(&p.label, msg.clone());
        let r = error(answer.status, "upstream_error", "provider_refused", msg);
        return (tag(r, &p.label, attempts), false);
    }
    if stream {
        return (
            stream_on(gw.clone(), answer, p, client, attempts, idle),
            true,
        );
    }
    let body = match upstream::read_rest(&mut answer, idle, 32 * 1024 * 1024).await {
        Ok(b) => b,
        Err(f) => {
            gw.note_error(&p.label, format!("after the first byte: {f}"));
            let r = error(
                StatusCode::BAD_GATEWAY,
                "server_error",
                "upstream_broke_off",
                format!(
                    "`{}` broke off its answer ({f}); not retried: it had begun",
                    p.label
                ),
            );
            return (tag(r, &p.label, attempts), false);
        }
    };
    match providers::translate_response(p.target.dialect, &body, &p.target.model) {
        Ok((json, usage)) => {
            let usd = account(gw, &p, &client, usage);
            let mut r = (StatusCode::OK, axum::Json(json)).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("{usd:.6}")) {
                r.headers_mut().insert("x-fleet-cost-usd", v);
            }
            (tag(r, &p.label, attempts), false)
        }
        Err(e) => {
            // The provider did the work: what it used is still counted.
            account(gw, &p, &client, None);
            gw.note_error(&p.label, format!("untranslatable answer: {e}"));
            let r = error(
                StatusCode::BAD_GATEWAY,
                "server_error",
                "bad_upstream_answer",
                format!(
                    "`{}` gave an answer that could not be translated: {e}",
                    p.label
                ),
            );
            (tag(r, &p.label, attempts), false)
        }
    }
}

/// A translated stream; its cost is committed when the provider's stream ends, before the
/// last bytes go to the client.
fn stream_on(
    gw: Arc<Gateway>,
    mut answer: Answer,
    p: Prepared,
    client: String,
    attempts: u32,
    idle: Duration,
) -> Response {
    let translator = StreamTranslator::new(p.target.dialect, &p.target.model);
    let first = std::mem::take(&mut answer.first);
    let label = p.label.clone();
    struct St {
        gw: Arc<Gateway>,
        p: Prepared,
        client: String,
        t: StreamTranslator,
        first: Option<Bytes>,
        rest: Option<reqwest::Response>,
        accounted: bool,
    }
    impl St {
        fn account(&mut self) {
            if !std::mem::replace(&mut self.accounted, true) {
                account(&self.gw, &self.p, &self.client, self.t.usage());
            }
        }
    }
    // A client that hangs up mid-stream: what the provider reported so far is still counted.
    impl Drop for St {
        fn drop(&mut self) {
            self.account();
        }
    }
    let st = St {
        accounted: false,
        gw,
        p,
        client,
        t: translator,
        first: Some(first),
        rest: Some(answer.rest),
    };
    let body = futures_util::stream::unfold(st, move |mut st| async move {
        loop {
            let chunk = if let Some(b) = st.first.take() {
                Some(b)
            } else {
                let rest = st.rest.as_mut()?;
                match tokio::time::timeout(idle, rest.chunk()).await {
                    Ok(Ok(Some(b))) => Some(b),
                    Ok(Ok(None)) => None,
                    Ok(Err(e)) => {
                        st.rest = None;
                        st.account();
                        let msg = format!("upstream broke off: {}", e.without_url());
                        return Some((Err(std::io::Error::other(msg)), st));
                    }
                    Err(_) => {
                        st.rest = None;
                        st.account();
                        return Some((
                            Err(std::io::Error::other("upstream stalled mid-stream")),
                            st,
                        ));
                    }
                }
            };
            match chunk {
                Some(b) => match st.t.feed(&b) {
                    Ok(out) if out.is_empty() => continue,
                    Ok(out) => return Some((Ok::<Bytes, std::io::Error>(Bytes::from(out)), st)),
                    Err(e) => {
                        st.rest = None;
                        st.account();
                        return Some((Err(std::io::Error::other(e.to_string())), st));
                    }
                },
                None => {
                    st.rest = None;
                    let last = st.t.finish();
                    st.account();
                    return match last {
                        Ok(out) if out.is_empty() => None,
                        Ok(out) => Some((Ok(Bytes::from(out)), st)),
                        Err(e) => Some((Err(std::io::Error::other(e.to_string())), st)),
                    };
                }
            }
        }
    });
    let mut r = Response::new(axum::body::Body::from_stream(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    tag(r, &label, attempts)
}
