//! Anthropic's Messages API (`POST {base}/messages`, `anthropic-version: 2023-06-01`):
//! system messages become `system`, turns `messages`; `max_tokens`, which Anthropic requires,
//! defaults to [`DEFAULT_MAX_TOKENS`]; `temperature` is clamped to Anthropic's 0–1. Answers
//! and streams (`message_start` … `message_stop`) come back as OpenAI's.

use serde_json::{Map, Value, json};

use super::chat::{self, ChunkMeta, DONE, Role, count};
use super::sse;
use super::{CloudTarget, HeaderText, TranslateError, UpstreamRequest, Usage};

/// The API version fleet speaks.
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` when the client gives none (Anthropic requires it; OpenAI has no default
/// limit, so this is generous).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The request.
pub fn build(
    target: &CloudTarget,
    request: &Value,
    stream: bool,
) -> Result<UpstreamRequest, TranslateError> {
    let r = chat::read(request, &target.provider)?;
    let mut body = Map::new();
    body.insert("model".into(), json!(target.model));
    body.insert(
        "max_tokens".into(),
        json!(r.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    if let Some(s) = &r.system {
        body.insert("system".into(), json!(s));
    }
    let messages: Vec<Value> = r
        .turns
        .iter()
        .map(|t| {
            json!({
                "role": if t.role == Role::User { "user" } else { "assistant" },
                "content": t.text,
            })
        })
        .collect();
    body.insert("messages".into(), Value::Array(messages));
    if let Some(t) = r.temperature {
        body.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = r.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if !r.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(r.stop));
    }
    if let Some(u) = &r.user {
        body.insert("metadata".into(), json!({ "user_id": u }));
    }
    if stream {
        body.insert("stream".into(), json!(true));
    }
    let mut headers = vec![
        (
            "x-api-key",
            HeaderText::Secret(crate::secret::Secret::new(target.key.expose().clone())),
        ),
        ("anthropic-version", HeaderText::Plain(API_VERSION.into())),
        ("content-type", HeaderText::Plain("application/json".into())),
    ];
    if stream {
        headers.push(("accept", HeaderText::Plain("text/event-stream".into())));
    }
    Ok(UpstreamRequest {
        url: target.endpoint("/messages"),
        headers,
        body: serde_json::to_vec(&Value::Object(body)).unwrap_or_default(),
    })
}

/// OpenAI's `finish_reason` for Anthropic's `stop_reason`.
fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// Input tokens: the uncached ones plus cache writes and reads (all priced as input).
fn input_tokens(u: &Value) -> u64 {
    count(u, "input_tokens")
        + count(u, "cache_creation_input_tokens")
        + count(u, "cache_read_input_tokens")
}

/// A whole answer.
pub fn translate(
    v: &Value,
    model_shown: &str,
    created: u64,
) -> Result<(Value, Option<Usage>), TranslateError> {
    let content = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::BadResponse("a message without `content`".into()))?;
    let text: String = content
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    let usage = v.get("usage").map(|u| Usage {
        prompt_tokens: input_tokens(u),
        completion_tokens: count(u, "output_tokens"),
    });
    let meta = ChunkMeta::new(model_shown, created, v.get("id").and_then(Value::as_str));
    let finish = finish_reason(
        v.get("stop_reason")
            .and_then(Value::as_str)
            .unwrap_or("end_turn"),
    );
    Ok((chat::completion(&meta, &text, finish, usage), usage))
}

/// A streamed answer being translated.
#[derive(Debug)]
pub struct Stream {
    meta: ChunkMeta,
    parser: sse::Parser,
    events: Vec<sse::Event>,
    input: Option<u64>,
    output: Option<u64>,
    done: bool,
    /// The error event the stream carried.
    pub error: Option<String>,
}

impl Stream {
    /// A translator whose chunks carry `meta` (the id becomes the message's own).
    pub(crate) fn new(meta: ChunkMeta) -> Stream {
        Stream {
            meta,
            parser: sse::Parser::default(),
            events: Vec::new(),
            input: None,
            output: None,
            done: false,
            error: None,
        }
    }

    /// The usage so far, once `message_start` said the input.
    pub fn usage(&self) -> Option<Usage> {
        Some(Usage {
            prompt_tokens: self.input?,
            completion_tokens: self.output.unwrap_or(0),
        })
    }

    /// Upstream bytes in, OpenAI SSE out.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<u8>, TranslateError> {
        self.parser.feed(bytes, &mut self.events)?;
        self.translate_events()
    }

    /// The end of the upstream.
    pub fn finish(&mut self) -> Result<Vec<u8>, TranslateError> {
        self.parser.finish(&mut self.events)?;
        // An event the upstream had not finished writing does not parse: the stream was cut.
        let out = self
            .translate_events()
            .map_err(|_| TranslateError::Truncated)?;
        if self.done {
            Ok(out)
        } else {
            Err(TranslateError::Truncated)
        }
    }

    fn translate_events(&mut self) -> Result<Vec<u8>, TranslateError> {
        let mut out = Vec::new();
        for e in std::mem::take(&mut self.events) {
            if self.done {
                break;
            }
            let v: Value = serde_json::from_str(&e.data).map_err(|_| {
                TranslateError::BadResponse(format!("a `{}` event that is not JSON", e.event))
            })?;
            match v.get("type").and_then(Value::as_str).unwrap_or(&e.event) {
                "message_start" => {
                    let m = v.get("message").unwrap_or(&Value::Null);
                    if let Some(id) = m.get("id").and_then(Value::as_str) {
                        self.meta.id = id.to_string();
                    }
                    if let Some(u) = m.get("usage") {
                        self.input = Some(input_tokens(u));
                        self.output = Some(count(u, "output_tokens"));
                    }
                    out.extend(
                        self.meta
                            .chunk(json!({ "role": "assistant", "content": "" }), None),
                    );
                }
                "content_block_start" => {
                    if let Some(t) = v
                        .pointer("/content_block/text")
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                    {
                        out.extend(self.meta.chunk(json!({ "content": t }), None));
                    }
                }
                "content_block_delta" => {
                    if v.pointer("/delta/type").and_then(Value::as_str) == Some("text_delta")
                        && let Some(t) = v.pointer("/delta/text").and_then(Value::as_str)
                    {
                        out.extend(self.meta.chunk(json!({ "content": t }), None));
                    }
                }
                "message_delta" => {
                    if let Some(u) = v.get("usage") {
                        // Counts here are cumulative.
                        if u.get("output_tokens").is_some() {
                            self.output = Some(count(u, "output_tokens"));
                        }
                        if u.get("input_tokens").is_some() {
                            self.input = Some(input_tokens(u));
                        }
                    }
                    if let Some(stop) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                        out.extend(self.meta.chunk(json!({}), Some(finish_reason(stop))));
                    }
                }
                "message_stop" => {
                    if let Some(u) = self.usage() {
                        out.extend(self.meta.usage_chunk(u));
                    }
                    out.extend_from_slice(DONE);
                    self.done = true;
                }
                "error" => {
                    let message = v
                        .pointer("/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or("the provider reported an error");
                    let kind = v
                        .pointer("/error/type")
                        .and_then(Value::as_str)
                        .unwrap_or("upstream_error");
                    let message = crate::secret::mask(message).into_owned();
                    out.extend(chat::error_event(&message, kind));
                    self.error = Some(message);
                    self.done = true;
                }
                // `ping`, `content_block_stop`, and event types newer than this code.
                _ => {}
            }
        }
        Ok(out)
    }
}
