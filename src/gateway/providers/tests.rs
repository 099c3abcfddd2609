//! Each dialect's request, answer and stream translation as insta snapshots (a change to what
//! fleet sends a provider, or gives a client, shows in review), streams split at every byte,
//! and the key kept out of every printed form.

use serde_json::{Value, json};

use super::*;
use crate::secret::Secret;

const CANARY: &str = "sk-canary-7d3f9a2b1c4e5f60";

fn target(provider: &str, model: &str, base: &str) -> CloudTarget {
    CloudTarget {
        provider: provider.into(),
        model: model.into(),
        base_url: reqwest::Url::parse(base).expect("url"),
        key: Secret::new(CANARY.into()),
        dialect: Dialect::of(provider),
    }
}

fn targets() -> [CloudTarget; 3] {
    [
        target(
            "groq",
            "llama-3.1-8b-instant",
            "https://api.groq.com/openai/v1",
        ),
        target(
            "anthropic",
            "claude-3-5-haiku-latest",
            "https://api.anthropic.com/v1/",
        ),
        target(
            "gemini",
            "models/gemini-2.0-flash",
            "https://generativelanguage.googleapis.com/v1beta",
        ),
    ]
}

fn request() -> Value {
    json!({
        "model": "task:summarize",
        "messages": [
            { "role": "system", "content": "You are terse." },
            { "role": "user", "content": "Summarize: the fleet is up." },
            { "role": "assistant", "content": "Fleet up." },
            { "role": "user", "content": [{ "type": "text", "text": "Shorter." }] },
        ],
        "temperature": 1.4,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "stream_options": { "include_usage": false },
    })
}

/// A request as a reviewer reads it: URL, headers (the key as printers show it), JSON body.
fn shown(r: &UpstreamRequest) -> Value {
    let headers: serde_json::Map<String, Value> = r
        .headers
        .iter()
        .map(|(k, v)| {
            let v = match v {
                HeaderText::Plain(s) => s.clone(),
                HeaderText::Secret(s) => format!("{s}"),
            };
            ((*k).to_string(), json!(v))
        })
        .collect();
    json!({
        "url": r.url,
        "headers": headers,
        "body": serde_json::from_slice::<Value>(&r.body).expect("json body"),
    })
}

#[test]
fn requests_per_dialect() {
    for t in targets() {
        for stream in [false, true] {
            let r = build(&t, &request(), stream).expect("builds");
            insta::assert_json_snapshot!(format!("request_{}_{stream}", t.provider), shown(&r));
        }
    }
}

#[test]
fn anthropic_requires_max_tokens_and_gets_the_clients_or_a_default() {
    let t = &targets()[1];
    let mut req = json!({ "messages": [{ "role": "user", "content": "hi" }] });
    let body = |req: &Value| -> Value {
        serde_json::from_slice(&build(t, req, false).expect("builds").body).expect("json")
    };
    assert_eq!(
        body(&req)["max_tokens"],
        json!(anthropic::DEFAULT_MAX_TOKENS)
    );
    req["max_tokens"] = json!(77);
    assert_eq!(body(&req)["max_tokens"], json!(77));
    req["max_completion_tokens"] = json!(88);
    assert_eq!(body(&req)["max_tokens"], json!(88));
}

#[test]
fn openai_requests_pass_through_with_model_and_stream_set() {
    let t = &targets()[0];
    let mut req = request();
    req["tools"] = json!([{ "type": "function", "function": { "name": "f" } }]);
    let body: Value =
        serde_json::from_slice(&build(t, &req, false).expect("builds").body).expect("json");
    assert_eq!(body["model"], "llama-3.1-8b-instant");
    assert_eq!(body["tools"], req["tools"]);
    assert_eq!(body["stream"], false);
    assert!(body.get("stream_options").is_none());
    // Translated dialects cannot carry tools: the gateway tries the next candidate.
    assert!(matches!(
        build(&targets()[1], &req, false),
        Err(TranslateError::Unsupported { .. })
    ));
}

const OPENAI_ANSWER: &str = r#"{"id":"chatcmpl-abc","object":"chat.completion","created":1764590000,"model":"llama-3.1-8b-instant","choices":[{"index":0,"message":{"role":"assistant","content":"Fleet up."},"finish_reason":"stop"}],"usage":{"prompt_tokens":21,"completion_tokens":3,"total_tokens":24}}"#;
const ANTHROPIC_ANSWER: &str = r#"{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-3-5-haiku-20241022","content":[{"type":"text","text":"Fleet "},{"type":"text","text":"up."}],"stop_reason":"max_tokens","stop_sequence":null,"usage":{"input_tokens":18,"cache_read_input_tokens":2,"output_tokens":3}}"#;
const GEMINI_ANSWER: &str = r#"{"candidates":[{"content":{"parts":[{"text":"thinking…","thought":true},{"text":"Fleet up."}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":20,"candidatesTokenCount":3,"thoughtsTokenCount":4,"totalTokenCount":27},"modelVersion":"gemini-2.0-flash","responseId":"gem-resp-1"}"#;

#[test]
fn answers_per_dialect() {
    for (dialect, body, usage) in [
        (Dialect::OpenAi, OPENAI_ANSWER, (21, 3)),
        (Dialect::Anthropic, ANTHROPIC_ANSWER, (20, 3)),
        (Dialect::Gemini, GEMINI_ANSWER, (20, 7)),
    ] {
        let (v, u) =
            translate_response_at(dialect, body.as_bytes(), "task:summarize", 1_764_590_000)
                .expect("translates");
        assert_eq!(
            u,
            Some(Usage {
                prompt_tokens: usage.0,
                completion_tokens: usage.1
            })
        );
        insta::assert_json_snapshot!(format!("answer_{dialect:?}"), v);
    }
    // The OpenAI dialect's answer is the upstream's own.
    let (v, _) =
        translate_response(Dialect::OpenAi, OPENAI_ANSWER.as_bytes(), "x").expect("passes");
    assert_eq!(
        v,
        serde_json::from_str::<Value>(OPENAI_ANSWER).expect("json")
    );
    for d in [Dialect::OpenAi, Dialect::Anthropic, Dialect::Gemini] {
        assert!(matches!(
            translate_response(d, b"{}", "x"),
            Err(TranslateError::BadResponse(_))
        ));
        assert!(matches!(
            translate_response(d, b"<html>", "x"),
            Err(TranslateError::BadResponse(_))
        ));
    }
}

const OPENAI_STREAM: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\ndata: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Fl\u{e9}et up.\"},\"finish_reason\":null}]}\n\ndata: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\ndata: [DONE]\n\n";

const ANTHROPIC_STREAM: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-3-5-haiku-20241022\",\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Fl\u{e9}et\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" up.\"}}\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

const GEMINI_STREAM: &str = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Fl\u{e9}et\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 8,\"candidatesTokenCount\": 1,\"totalTokenCount\": 9},\"modelVersion\": \"gemini-2.0-flash\"}\r\n\r\ndata: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" up.\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 8,\"candidatesTokenCount\": 3,\"totalTokenCount\": 11},\"modelVersion\": \"gemini-2.0-flash\"}\r\n\r\n";

fn run_stream(dialect: Dialect, chunks: &[&[u8]]) -> (String, Option<Usage>) {
    let mut t = StreamTranslator::new_at(
        dialect,
        "task:summarize",
        1_764_590_000,
        Some("chatcmpl-fixed"),
    );
    let mut out = Vec::new();
    for c in chunks {
        out.extend(t.feed(c).expect("feeds"));
    }
    out.extend(t.finish().expect("finishes"));
    (String::from_utf8(out).expect("utf-8"), t.usage())
}

#[test]
fn streams_per_dialect_whole_and_split_at_every_byte() {
    for (dialect, upstream, usage) in [
        (Dialect::OpenAi, OPENAI_STREAM, (9, 4)),
        (Dialect::Anthropic, ANTHROPIC_STREAM, (25, 15)),
        (Dialect::Gemini, GEMINI_STREAM, (8, 3)),
    ] {
        let bytes = upstream.as_bytes();
        let (whole, u) = run_stream(dialect, &[bytes]);
        assert_eq!(
            u,
            Some(Usage {
                prompt_tokens: usage.0,
                completion_tokens: usage.1
            }),
            "{dialect:?}"
        );
        assert!(whole.ends_with("data: [DONE]\n\n"), "{whole}");
        if dialect == Dialect::OpenAi {
            assert_eq!(whole, upstream, "passed through byte for byte");
        } else {
            insta::assert_snapshot!(format!("stream_{dialect:?}"), whole);
        }
        for i in 0..=bytes.len() {
            assert_eq!(
                run_stream(dialect, &[&bytes[..i], &bytes[i..]]),
                (whole.clone(), u),
                "{dialect:?} split at {i}"
            );
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run_stream(dialect, &singles).0, whole);
    }
}

#[test]
fn a_stream_cut_short_is_truncated_and_an_error_event_is_passed_on() {
    for (dialect, upstream) in [
        (Dialect::OpenAi, OPENAI_STREAM),
        (Dialect::Anthropic, ANTHROPIC_STREAM),
        (Dialect::Gemini, GEMINI_STREAM),
    ] {
        let cut = &upstream.as_bytes()[..upstream.len() / 2];
        let mut t = StreamTranslator::new(dialect, "m");
        t.feed(cut).expect("feeds");
        assert_eq!(t.finish(), Err(TranslateError::Truncated), "{dialect:?}");
    }
    let mut t = StreamTranslator::new_at(Dialect::Anthropic, "m", 1, Some("x"));
    let out = t
        .feed(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n")
        .expect("feeds");
    assert_eq!(
        String::from_utf8(out).expect("utf-8"),
        "data: {\"error\":{\"message\":\"Overloaded\",\"type\":\"overloaded_error\"}}\n\n"
    );
    assert_eq!(t.upstream_error(), Some("Overloaded"));
    assert_eq!(t.finish(), Ok(Vec::new()));
    let mut t = StreamTranslator::new(Dialect::Gemini, "m");
    t.feed(
        b"data: {\"error\":{\"code\":500,\"message\":\"Internal\",\"status\":\"INTERNAL\"}}\n\n",
    )
    .expect("feeds");
    assert_eq!(t.upstream_error(), Some("Internal"));
    let mut t = StreamTranslator::new(Dialect::Anthropic, "m");
    assert!(matches!(
        t.feed(b"data: {not json\n\n"),
        Err(TranslateError::BadResponse(_))
    ));
}

#[test]
fn the_key_is_in_its_header_and_in_no_printed_form() {
    for t in targets() {
        let r = build(&t, &request(), true).expect("builds");
        let headers = r.header_map().expect("headers");
        let in_header = headers
            .iter()
            .any(|(_, v)| v.to_str().is_ok_and(|v| v.contains(CANARY)) && v.is_sensitive());
        assert!(
            in_header,
            "{}: the key goes in a sensitive header",
            t.provider
        );
        assert!(!r.url.contains(CANARY));
        assert!(!String::from_utf8_lossy(&r.body).contains(CANARY));
        for printed in [
            format!("{t:?}"),
            format!("{r:?}"),
            format!("{headers:?}"),
            format!("{:?}", r.clone().send_with(&client()).expect("builds")),
            error_summary(
                &t,
                401,
                format!("{{\"error\":{{\"message\":\"bad key {CANARY}\"}}}}").as_bytes(),
            ),
        ] {
            assert!(!printed.contains(CANARY), "{printed}");
            assert!(!printed.contains(&CANARY[3..15]), "{printed}");
        }
    }
}

fn client() -> reqwest::Client {
    crate::hq::client::http_client(std::time::Duration::from_secs(1)).expect("client")
}
