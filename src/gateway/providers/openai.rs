//! OpenAI's chat completions, and every provider that speaks them (Groq, Together, OpenRouter,
//! any `base_url`): the client's request goes on with the provider's model and the stream
//! flag set, and the answer comes back unchanged — streams byte for byte — with its usage
//! read on the way.

use serde_json::{Value, json};

use super::chat::{self, count};
use super::sse;
use super::{CloudTarget, HeaderText, TranslateError, UpstreamRequest, Usage};

/// The request: the client's, with `model` the provider's and `stream` as asked; a stream
/// asks for usage (`stream_options.include_usage`), since spend is counted from it.
pub fn build(
    target: &CloudTarget,
    request: &Value,
    stream: bool,
) -> Result<UpstreamRequest, TranslateError> {
    chat::messages(request)?;
    let mut body = request.clone();
    let Some(obj) = body.as_object_mut() else {
        return Err(TranslateError::BadRequest("expected a JSON object".into()));
    };
    obj.insert("model".into(), json!(target.model));
    obj.insert("stream".into(), json!(stream));
    if stream {
        let options = obj.entry("stream_options").or_insert_with(|| json!({}));
        if !options.is_object() {
            *options = json!({});
        }
        if let Some(o) = options.as_object_mut() {
            o.insert("include_usage".into(), json!(true));
        }
    } else {
        // OpenAI refuses `stream_options` without `stream`.
        obj.remove("stream_options");
    }
    let mut headers = vec![
        (
            "authorization",
            HeaderText::Secret(crate::secret::Secret::new(format!(
                "Bearer {}",
                target.key.expose()
            ))),
        ),
        ("content-type", HeaderText::Plain("application/json".into())),
    ];
    if stream {
        headers.push(("accept", HeaderText::Plain("text/event-stream".into())));
    }
    Ok(UpstreamRequest {
        url: target.endpoint("/chat/completions"),
        headers,
        body: serde_json::to_vec(&body).unwrap_or_default(),
    })
}

/// The usage of an answer or chunk: `usage`, or Groq's `x_groq.usage`.
fn usage_of(v: &Value) -> Option<Usage> {
    let u = v
        .get("usage")
        .filter(|u| u.is_object())
        .or_else(|| v.pointer("/x_groq/usage").filter(|u| u.is_object()))?;
    Some(Usage {
        prompt_tokens: count(u, "prompt_tokens"),
        completion_tokens: count(u, "completion_tokens"),
    })
}

/// A whole answer: unchanged, with its usage.
pub fn translate(v: Value) -> Result<(Value, Option<Usage>), TranslateError> {
    if !v.get("choices").is_some_and(Value::is_array) {
        return Err(TranslateError::BadResponse(
            "a chat completion without `choices`".into(),
        ));
    }
    let usage = usage_of(&v);
    Ok((v, usage))
}

/// A stream passed through byte for byte, read on the side for its usage, its end
/// (`data: [DONE]`) and an error event.
#[derive(Debug, Default)]
pub struct Passthrough {
    parser: sse::Parser,
    events: Vec<sse::Event>,
    done: bool,
    /// The usage the stream reported.
    pub usage: Option<Usage>,
    /// An error the stream reported.
    pub error: Option<String>,
}

impl Passthrough {
    /// Passes `bytes` on, reading the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<u8>, TranslateError> {
        self.parser.feed(bytes, &mut self.events)?;
        self.read_events();
        Ok(bytes.to_vec())
    }

    /// Nothing more to pass on; an error when the stream ended without `[DONE]`.
    pub fn finish(&mut self) -> Result<Vec<u8>, TranslateError> {
        self.parser.finish(&mut self.events)?;
        self.read_events();
        if self.done || self.error.is_some() {
            Ok(Vec::new())
        } else {
            Err(TranslateError::Truncated)
        }
    }

    fn read_events(&mut self) {
        for e in self.events.drain(..) {
            if e.data == "[DONE]" {
                self.done = true;
                continue;
            }
            // What the client gets is the upstream's bytes; an event fleet cannot read is
            // still passed on, only not counted.
            let Ok(v) = serde_json::from_str::<Value>(&e.data) else {
                continue;
            };
            if let Some(u) = usage_of(&v) {
                self.usage = Some(u);
            }
            if let Some(err) = v.get("error") {
                self.error = Some(
                    err.get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("an error event")
                        .to_string(),
                );
            }
        }
    }
}
