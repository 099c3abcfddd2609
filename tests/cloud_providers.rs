//! The cloud providers' translation against a real HTTP server: the stand-in
//! (`tests/standins/cloud`) speaking OpenAI's, Anthropic's and Gemini's shapes. Each dialect
//! is driven the way the gateway drives it — build, send with reqwest, translate the answer or
//! feed the stream as it arrives — and what the stand-in received is checked; so are its
//! failures, and a canary key that must never show.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use fleet::gateway::prices::{PriceTable, cost_usd};
use fleet::gateway::providers::{
    CloudTarget, Dialect, StreamTranslator, TranslateError, Usage, build, error_summary,
    translate_response,
};
use fleet::spec::inventory::{ApiKeySource, CloudFallback};
use serde_json::{Value, json};
use support::cloud::CloudStandin;

const CANARY: &str = "sk-canary-cloud-3b9e71d04a";

/// Each dialect's provider as an inventory names it, pointed at the stand-in.
const PROVIDERS: [(&str, &str, &str); 3] = [
    ("openai", "gpt-4o-mini", "openai"),
    ("anthropic", "claude-3-5-haiku-latest", "anthropic"),
    ("gemini", "gemini-2.0-flash", "gemini"),
];

fn target(s: &CloudStandin, provider: &str, model: &str, dialect: &str, key: &str) -> CloudTarget {
    let entry = CloudFallback {
        provider: provider.into(),
        model: model.into(),
        key: ApiKeySource::Env("TEST_KEY".into()),
        base_url: Some(s.base_url(dialect)),
        loc: fleet::error::Loc::file_start(&std::sync::Arc::from("inventory/fleet.yaml")),
    };
    let key = key.to_string();
    CloudTarget::resolve(&entry, Path::new("/"), &move |n| {
        (n == "TEST_KEY").then(|| key.clone())
    })
    .expect("target")
}

fn client() -> reqwest::Client {
    fleet::hq::client::http_client(Duration::from_secs(10)).expect("client")
}

fn chat(text: &str) -> Value {
    json!({
        "model": "task:summarize",
        "messages": [
            { "role": "system", "content": "Be terse." },
            { "role": "user", "content": text },
        ],
        "temperature": 0.2,
    })
}

/// Sends `request` to `t` streamed, feeding the translator chunk by chunk as they arrive;
/// returns the OpenAI SSE, the usage, and when the first translated bytes came.
async fn stream(
    t: &CloudTarget,
    request: &Value,
) -> Result<(String, Option<Usage>, Duration), String> {
    let started = Instant::now();
    let up = build(t, request, true).map_err(|e| e.to_string())?;
    let mut resp = up
        .send_with(&client())
        .map_err(|e| e.to_string())?
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        return Err(error_summary(t, status, &body));
    }
    let mut tr = StreamTranslator::new(t.dialect, "task:summarize");
    let mut out = Vec::new();
    let mut first = None;
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        let bytes = tr.feed(&chunk).map_err(|e| e.to_string())?;
        if !bytes.is_empty() && first.is_none() {
            first = Some(started.elapsed());
        }
        out.extend(bytes);
    }
    out.extend(tr.finish().map_err(|e| e.to_string())?);
    Ok((
        String::from_utf8(out).map_err(|e| e.to_string())?,
        tr.usage(),
        first.unwrap_or_default(),
    ))
}

/// The text an OpenAI SSE stream carries, and whether it ended with `[DONE]`.
fn stream_text(sse: &str) -> (String, bool) {
    let mut text = String::new();
    let mut done = false;
    for data in sse.split("\n\n").filter_map(|e| e.strip_prefix("data: ")) {
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).expect("each chunk is JSON");
        assert!(
            v["object"] == "chat.completion.chunk" || v.get("error").is_some(),
            "{v}"
        );
        if let Some(t) = v
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            text.push_str(t);
        }
    }
    (text, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_dialect_answers_whole_and_streamed_through_the_stand_in() {
    let s = CloudStandin::start(&["--key", CANARY]);
    let prices = PriceTable::builtin().expect("prices");
    for (provider, model, dialect) in PROVIDERS {
        let t = target(&s, provider, model, dialect, CANARY);
        // Whole.
        let up = build(&t, &chat("Summarize: the fleet is up."), false).expect("builds");
        let resp = up
            .send_with(&client())
            .expect("request")
            .send()
            .await
            .expect("sends");
        assert_eq!(resp.status(), 200, "{provider}");
        let body = resp.bytes().await.expect("body");
        let (v, usage) =
            translate_response(t.dialect, &body, "task:summarize").expect("translates");
        assert_eq!(v["object"], "chat.completion", "{provider}: {v}");
        assert_eq!(
            v["choices"][0]["message"]["content"], "Hello from the stand-in.",
            "{provider}"
        );
        // "Be terse." + "Summarize: the fleet is up." is 7 words; the reply 4.
        assert_eq!(
            usage,
            Some(Usage {
                prompt_tokens: 7,
                completion_tokens: 4
            }),
            "{provider}"
        );
        let cost = cost_usd(
            usage.expect("usage"),
            prices.price(provider, model).expect("priced"),
        );
        assert!(cost > 0.0, "{provider}");
        // Streamed.
        let (sse, usage, _) = stream(&t, &chat("Stream it please."))
            .await
            .expect("streams");
        assert_eq!(
            stream_text(&sse),
            ("Hello from the stand-in.".to_string(), true),
            "{provider}: {sse}"
        );
        assert_eq!(
            usage,
            Some(Usage {
                prompt_tokens: 5,
                completion_tokens: 4
            }),
            "{provider}"
        );
    }
    // What the stand-in received: each dialect's path, key header and body shape.
    let reqs = s.requests();
    assert_eq!(reqs.len(), 6, "{reqs:#?}");
    let h = |r: &Value, k: &str| r["headers"][k].as_str().unwrap_or_default().to_string();
    let (oa, an, ge) = (&reqs[0], &reqs[2], &reqs[4]);
    assert_eq!(oa["path"], "/v1/chat/completions");
    assert_eq!(h(oa, "authorization"), format!("Bearer {CANARY}"));
    assert_eq!(oa["body"]["model"], "gpt-4o-mini");
    assert_eq!(reqs[1]["body"]["stream_options"]["include_usage"], true);
    assert_eq!(an["path"], "/v1/messages");
    assert_eq!(h(an, "x-api-key"), CANARY);
    assert_eq!(h(an, "anthropic-version"), "2023-06-01");
    assert_eq!(an["body"]["system"], "Be terse.");
    assert_eq!(an["body"]["max_tokens"], 4096);
    assert_eq!(reqs[3]["body"]["stream"], true);
    assert_eq!(
        ge["path"],
        "/v1beta/models/gemini-2.0-flash:generateContent"
    );
    assert_eq!(
        reqs[5]["path"],
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(h(ge, "x-goog-api-key"), CANARY);
    assert_eq!(
        ge["body"]["systemInstruction"]["parts"][0]["text"],
        "Be terse."
    );
    assert_eq!(ge["body"]["generationConfig"]["temperature"], 0.2);
    // The key travels in its header only.
    for r in &reqs {
        assert!(!r["path"].as_str().unwrap_or_default().contains(CANARY));
        assert!(!r["body"].to_string().contains(CANARY));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stream_is_translated_as_it_arrives() {
    // Four pieces 300 ms apart: the first translated bytes come long before the end.
    let s = CloudStandin::start(&["--chunk-delay", "0.3"]);
    for (provider, model, dialect) in PROVIDERS {
        let t = target(&s, provider, model, dialect, "k");
        let started = Instant::now();
        let (sse, _, first) = stream(&t, &chat("hi")).await.expect("streams");
        let total = started.elapsed();
        assert!(total >= Duration::from_millis(900), "{provider}: {total:?}");
        assert!(
            first < Duration::from_millis(500),
            "{provider}: first bytes after {first:?}"
        );
        assert!(stream_text(&sse).1, "{provider}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_short_errors_without_the_key() {
    let s = CloudStandin::start(&["--key", CANARY]);
    for (provider, model, dialect) in PROVIDERS {
        // A wrong key: the stand-in quotes the key it was sent, and fleet must not.
        let wrong = format!("{CANARY}-wrong");
        let t = target(&s, provider, model, dialect, &wrong);
        let e = stream(&t, &chat("hi")).await.expect_err("refused");
        assert!(e.starts_with(&format!("{provider} answered 40")), "{e}");
        assert!(!e.contains("canary"), "{e}");
        let t = target(&s, provider, model, dialect, CANARY);
        // A 503, asked for in the prompt as a client's request would carry it.
        let e = stream(&t, &chat("hi [standin:status:503]"))
            .await
            .expect_err("fails");
        assert!(e.starts_with(&format!("{provider} answered 503")), "{e}");
        assert!(e.contains("stand-in failure"), "{e}");
        // A reset before the first byte, queued on the stand-in.
        s.control(json!({ "mode": "reset", "count": 1 }));
        let e = stream(&t, &chat("hi")).await.expect_err("reset");
        assert!(!e.contains(CANARY), "{e}");
        // A reset in the middle of the stream: the answer is incomplete, and said so.
        let e = stream(&t, &chat("hi [standin:reset-mid-stream]"))
            .await
            .expect_err("cut");
        assert!(!e.contains(CANARY), "{e}");
    }
    // A provider that does not answer at all, given a timeout.
    s.control(json!({ "mode": "hang", "count": 1 }));
    let t = target(&s, "openai", "gpt-4o-mini", "openai", CANARY);
    let up = build(&t, &chat("hi"), false).expect("builds");
    let quick = fleet::hq::client::http_client(Duration::from_millis(300)).expect("client");
    let started = Instant::now();
    let e = up
        .send_with(&quick)
        .expect("request")
        .send()
        .await
        .expect_err("times out");
    assert!(e.is_timeout(), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_request_a_dialect_cannot_carry_is_refused_before_sending() {
    let s = CloudStandin::start(&[]);
    let t = target(&s, "anthropic", "claude-3-5-haiku-latest", "anthropic", "k");
    let mut req = chat("hi");
    req["messages"][1]["content"] =
        json!([{ "type": "image_url", "image_url": { "url": "data:," } }]);
    assert!(matches!(
        build(&t, &req, false),
        Err(TranslateError::Unsupported { .. })
    ));
    assert_eq!(t.dialect, Dialect::Anthropic);
    assert!(s.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_serves_many_connections_at_once() {
    // 200 requests, each held 300 ms by the stand-in: served together, not one by one.
    let s = CloudStandin::start(&["--latency", "0.3"]);
    let t = target(&s, "openai", "gpt-4o-mini", "openai", "k");
    let c = client();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let up = build(&t, &chat("hi"), false).expect("builds");
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let resp = up.send_with(&c).expect("request").send().await?;
            Ok::<u16, reqwest::Error>(resp.status().as_u16())
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("joins").expect("answers"), 200);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}");
    let (_, stats) = support::http("GET", &format!("{}/_stats", s.url), None, None).expect("stats");
    let stats: Value = serde_json::from_str(&stats).expect("json");
    assert_eq!(stats["requests"], 200);
    assert!(
        stats["max_in_flight"].as_u64().unwrap_or(0) >= 50,
        "{stats}"
    );
}
