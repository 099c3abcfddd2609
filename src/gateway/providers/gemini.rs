//! Google's Gemini API: `POST {base}/models/{model}:generateContent`, or
//! `:streamGenerateContent?alt=sse` for a stream, the key in `x-goog-api-key` (never in the
//! URL). System messages become `systemInstruction`, turns `contents` (the assistant is
//! `model`), sampling parameters `generationConfig`. Gemini's stream has no final event: it
//! ends after the chunk with a `finishReason`, so the usage chunk and `data: [DONE]` are
//! written when the upstream ends.

use serde_json::{Map, Value, json};

use super::chat::{self, ChunkMeta, DONE, Role, count};
use super::sse;
use super::{CloudTarget, HeaderText, TranslateError, UpstreamRequest, Usage};

/// The request.
pub fn build(
    target: &CloudTarget,
    request: &Value,
    stream: bool,
) -> Result<UpstreamRequest, TranslateError> {
    let r = chat::read(request, &target.provider)?;
    let mut body = Map::new();
    let contents: Vec<Value> = r
        .turns
        .iter()
        .map(|t| {
            json!({
                "role": if t.role == Role::User { "user" } else { "model" },
                "parts": [{ "text": t.text }],
            })
        })
        .collect();
    body.insert("contents".into(), Value::Array(contents));
    if let Some(s) = &r.system {
        body.insert(
            "systemInstruction".into(),
            json!({ "parts": [{ "text": s }] }),
        );
    }
    let mut config = Map::new();
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            config.insert(k.into(), v);
        }
    };
    set("maxOutputTokens", r.max_tokens.map(|n| json!(n)));
    set("temperature", r.temperature.map(|n| json!(n)));
    set("topP", r.top_p.map(|n| json!(n)));
    set("stopSequences", (!r.stop.is_empty()).then(|| json!(r.stop)));
    set("presencePenalty", r.presence_penalty.map(|n| json!(n)));
    set("frequencyPenalty", r.frequency_penalty.map(|n| json!(n)));
    set("seed", r.seed.map(|n| json!(n)));
    set(
        "responseMimeType",
        r.json_object.then(|| json!("application/json")),
    );
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    // The model is one path segment (`models/` written in the inventory is the same model).
    let model = target
        .model
        .strip_prefix("models/")
        .unwrap_or(&target.model);
    let mut url = target.base_url.clone();
    let method = if stream {
        "streamGenerateContent"
    } else {
        "generateContent"
    };
    url.path_segments_mut()
        .map_err(|_| TranslateError::BadRequest("the base URL cannot take a path".into()))?
        .pop_if_empty()
        .push("models")
        .push(&format!("{model}:{method}"));
    if stream {
        url.set_query(Some("alt=sse"));
    }
    let headers = vec![
        (
            "x-goog-api-key",
            HeaderText::Secret(crate::secret::Secret::new(target.key.expose().clone())),
        ),
        ("content-type", HeaderText::Plain("application/json".into())),
    ];
    Ok(UpstreamRequest {
        url: url.to_string(),
        headers,
        body: serde_json::to_vec(&Value::Object(body)).unwrap_or_default(),
    })
}

/// OpenAI's `finish_reason` for Gemini's `finishReason`.
fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ => "stop",
    }
}

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usageMetadata")?;
    Some(Usage {
        prompt_tokens: count(u, "promptTokenCount"),
        // Thinking tokens are billed as output.
        completion_tokens: count(u, "candidatesTokenCount") + count(u, "thoughtsTokenCount"),
    })
}

/// The text of the first candidate (thought parts left out) and its finish reason; a
/// blocked prompt has no candidate and finishes as `content_filter`.
fn candidate(v: &Value) -> (String, Option<&'static str>) {
    let Some(c) = v.pointer("/candidates/0") else {
        let blocked = v.pointer("/promptFeedback/blockReason").is_some();
        return (String::new(), blocked.then_some("content_filter"));
    };
    let text: String = c
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("thought").and_then(Value::as_bool) != Some(true))
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect();
    let finish = c
        .get("finishReason")
        .and_then(Value::as_str)
        .map(finish_reason);
    (text, finish)
}

/// A whole answer.
pub fn translate(
    v: &Value,
    model_shown: &str,
    created: u64,
) -> Result<(Value, Option<Usage>), TranslateError> {
    if v.get("candidates").is_none() && v.get("promptFeedback").is_none() {
        return Err(TranslateError::BadResponse(
            "an answer without `candidates`".into(),
        ));
    }
    let (text, finish) = candidate(v);
    let usage = usage_of(v);
    let meta = ChunkMeta::new(
        model_shown,
        created,
        v.get("responseId").and_then(Value::as_str),
    );
    Ok((
        chat::completion(&meta, &text, finish.unwrap_or("stop"), usage),
        usage,
    ))
}

/// A streamed answer being translated.
#[derive(Debug)]
pub struct Stream {
    meta: ChunkMeta,
    parser: sse::Parser,
    events: Vec<sse::Event>,
    started: bool,
    finished: bool,
    ended: bool,
    /// The usage the last chunk reported (each carries the totals so far).
    pub usage: Option<Usage>,
    /// The error the stream carried.
    pub error: Option<String>,
}

impl Stream {
    pub(crate) fn new(meta: ChunkMeta) -> Stream {
        Stream {
            meta,
            parser: sse::Parser::default(),
            events: Vec::new(),
            started: false,
            finished: false,
            ended: false,
            usage: None,
            error: None,
        }
    }

    /// Upstream bytes in, OpenAI SSE out.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<u8>, TranslateError> {
        self.parser.feed(bytes, &mut self.events)?;
        self.translate_events()
    }

    /// The end of the upstream: the usage chunk and `[DONE]` after a finished answer.
    pub fn finish(&mut self) -> Result<Vec<u8>, TranslateError> {
        self.parser.finish(&mut self.events)?;
        // An event the upstream had not finished writing does not parse: the stream was cut.
        let mut out = self
            .translate_events()
            .map_err(|_| TranslateError::Truncated)?;
        if self.ended {
            return Ok(out);
        }
        if !self.finished {
            return Err(TranslateError::Truncated);
        }
        if let Some(u) = self.usage {
            out.extend(self.meta.usage_chunk(u));
        }
        out.extend_from_slice(DONE);
        self.ended = true;
        Ok(out)
    }

    fn translate_events(&mut self) -> Result<Vec<u8>, TranslateError> {
        let mut out = Vec::new();
        for e in std::mem::take(&mut self.events) {
            if self.ended {
                break;
            }
            let v: Value = serde_json::from_str(&e.data)
                .map_err(|_| TranslateError::BadResponse("an event that is not JSON".into()))?;
            if let Some(err) = v.get("error") {
                let message = err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the provider reported an error");
                let kind = err
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream_error");
                let message = crate::secret::mask(message).into_owned();
                out.extend(chat::error_event(&message, kind));
                self.error = Some(message);
                self.ended = true;
                continue;
            }
            if !self.started
                && let Some(id) = v.get("responseId").and_then(Value::as_str)
            {
                self.meta.id = id.to_string();
            }
            if let Some(u) = usage_of(&v) {
                self.usage = Some(u);
            }
            let (text, finish) = candidate(&v);
            if !self.started {
                out.extend(
                    self.meta
                        .chunk(json!({ "role": "assistant", "content": text }), None),
                );
                self.started = true;
            } else if !text.is_empty() {
                out.extend(self.meta.chunk(json!({ "content": text }), None));
            }
            if let Some(f) = finish
                && !self.finished
            {
                out.extend(self.meta.chunk(json!({}), Some(f)));
                self.finished = true;
            }
        }
        Ok(out)
    }
}
