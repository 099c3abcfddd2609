//! The OpenAI chat shape both ways, for the dialects that translate it: a request read into
//! the parts every provider has (system text, turns, sampling parameters), and OpenAI's
//! answer objects (`chat.completion`, `chat.completion.chunk`) written from a provider's.

use serde_json::{Map, Value, json};

use super::{TranslateError, Usage};

/// Who speaks a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    User,
    Assistant,
}

/// One turn of the conversation, as text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Turn {
    pub role: Role,
    pub text: String,
}

/// An OpenAI chat request, read into what a translation carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ChatRequest {
    /// System (and developer) messages, joined by a blank line.
    pub system: Option<String>,
    /// User and assistant turns in order, consecutive turns of one speaker merged (Gemini
    /// and Anthropic want them alternating).
    pub turns: Vec<Turn>,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// `stop`: a string or a list.
    pub stop: Vec<String>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub seed: Option<i64>,
    /// `response_format: { type: json_object }`.
    pub json_object: bool,
    pub user: Option<String>,
}

fn bad(msg: impl Into<String>) -> TranslateError {
    TranslateError::BadRequest(msg.into())
}

/// The request's `messages`, checked: a non-empty list of objects with a `role`.
pub(crate) fn messages(request: &Value) -> Result<&Vec<Value>, TranslateError> {
    let obj = request
        .as_object()
        .ok_or_else(|| bad("expected a JSON object"))?;
    let messages = obj
        .get("messages")
        .ok_or_else(|| bad("`messages` is missing"))?
        .as_array()
        .ok_or_else(|| bad("`messages` must be a list"))?;
    if messages.is_empty() {
        return Err(bad("`messages` is empty"));
    }
    for (i, m) in messages.iter().enumerate() {
        if !m.get("role").is_some_and(Value::is_string) {
            return Err(bad(format!("`messages[{i}]` has no `role`")));
        }
    }
    Ok(messages)
}

/// Reads a request for a provider that is not OpenAI-compatible (`provider` names it in
/// what it cannot carry).
pub(crate) fn read(request: &Value, provider: &str) -> Result<ChatRequest, TranslateError> {
    let unsupported = |what: &str| TranslateError::Unsupported {
        provider: provider.to_string(),
        what: what.to_string(),
    };
    let msgs = messages(request)?;
    if request.get("tools").is_some_and(|t| !t.is_null())
        || request.get("functions").is_some_and(|t| !t.is_null())
    {
        return Err(unsupported("tool calling (`tools`) is not translated"));
    }
    if request
        .get("n")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return Err(unsupported("more than one choice (`n` > 1)"));
    }
    let mut out = ChatRequest::default();
    let mut system: Vec<String> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let text = content_text(m.get("content"), i, &unsupported)?;
        let role = match role {
            "system" | "developer" => {
                system.push(text);
                continue;
            }
            "user" => Role::User,
            "assistant" => {
                if m.get("tool_calls").is_some_and(|t| !t.is_null()) {
                    return Err(unsupported("assistant tool calls are not translated"));
                }
                Role::Assistant
            }
            "tool" | "function" => {
                return Err(unsupported("tool results are not translated"));
            }
            other => {
                return Err(bad(format!(
                    "`messages[{i}]` has an unknown role `{other}`"
                )));
            }
        };
        match out.turns.last_mut() {
            Some(last) if last.role == role => {
                last.text.push_str("\n\n");
                last.text.push_str(&text);
            }
            _ => out.turns.push(Turn { role, text }),
        }
    }
    if out.turns.is_empty() {
        return Err(bad("`messages` has no user or assistant message"));
    }
    if !system.is_empty() {
        out.system = Some(system.join("\n\n"));
    }
    let uint = |key: &str| -> Result<Option<u64>, TranslateError> {
        match request.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|n| *n > 0)
                .map(Some)
                .ok_or_else(|| bad(format!("`{key}` must be a whole number above 0"))),
        }
    };
    let number = |key: &str| -> Result<Option<f64>, TranslateError> {
        match request.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| bad(format!("`{key}` must be a number"))),
        }
    };
    out.max_tokens = match uint("max_completion_tokens")? {
        Some(n) => Some(n),
        None => uint("max_tokens")?,
    };
    out.temperature = number("temperature")?;
    out.top_p = number("top_p")?;
    out.presence_penalty = number("presence_penalty")?;
    out.frequency_penalty = number("frequency_penalty")?;
    out.seed = match request.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| bad("`seed` must be a whole number"))?,
        ),
    };
    out.stop = match request.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("`stop` must be a string or a list of strings"))?,
        Some(_) => return Err(bad("`stop` must be a string or a list of strings")),
    };
    out.json_object = request
        .pointer("/response_format/type")
        .and_then(Value::as_str)
        == Some("json_object");
    out.user = request
        .get("user")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(out)
}

/// A message's `content` as text: a string, a list of text parts, or null (empty).
fn content_text(
    content: Option<&Value>,
    i: usize,
    unsupported: &dyn Fn(&str) -> TranslateError,
) -> Result<String, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        texts.push(p.get("text").and_then(Value::as_str).ok_or_else(|| {
                            bad(format!("`messages[{i}]` has a text part without `text`"))
                        })?)
                    }
                    Some(other) => {
                        return Err(unsupported(&format!(
                            "`{other}` content parts are not translated"
                        )));
                    }
                    None => {
                        return Err(bad(format!(
                            "`messages[{i}]` has a content part without `type`"
                        )));
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        Some(_) => Err(bad(format!(
            "`messages[{i}].content` must be a string or a list of parts"
        ))),
    }
}

/// Seconds since the epoch, for `created`.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh `chatcmpl-…` id.
pub(crate) fn fresh_id() -> String {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("chatcmpl-{hex}")
}

/// `id`, `created` and `model` every chunk of one answer carries.
#[derive(Debug, Clone)]
pub(crate) struct ChunkMeta {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl ChunkMeta {
    pub fn new(model: &str, created: u64, id: Option<&str>) -> ChunkMeta {
        ChunkMeta {
            id: id.map_or_else(fresh_id, str::to_string),
            created,
            model: model.to_string(),
        }
    }

    /// One `data: {chat.completion.chunk}` event.
    pub fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Vec<u8> {
        self.event(json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish_reason }],
        }))
    }

    /// The usage chunk OpenAI sends last with `stream_options.include_usage` (no choices).
    pub fn usage_chunk(&self, usage: Usage) -> Vec<u8> {
        self.event(json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage_json(usage),
        }))
    }

    fn event(&self, v: Value) -> Vec<u8> {
        let mut out = b"data: ".to_vec();
        out.extend(serde_json::to_vec(&v).unwrap_or_default());
        out.extend_from_slice(b"\n\n");
        out
    }
}

/// The end of an OpenAI stream.
pub(crate) const DONE: &[u8] = b"data: [DONE]\n\n";

/// An error inside a stream, as OpenAI sends one: `data: {"error": {…}}`.
pub(crate) fn error_event(message: &str, kind: &str) -> Vec<u8> {
    let mut out = b"data: ".to_vec();
    out.extend(
        serde_json::to_vec(&json!({ "error": { "message": message, "type": kind } }))
            .unwrap_or_default(),
    );
    out.extend_from_slice(b"\n\n");
    out
}

/// OpenAI's `usage` object.
pub(crate) fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

/// A whole `chat.completion` with one choice.
pub(crate) fn completion(
    meta: &ChunkMeta,
    text: &str,
    finish_reason: &str,
    usage: Option<Usage>,
) -> Value {
    let mut v = Map::new();
    v.insert("id".into(), json!(meta.id));
    v.insert("object".into(), json!("chat.completion"));
    v.insert("created".into(), json!(meta.created));
    v.insert("model".into(), json!(meta.model));
    v.insert(
        "choices".into(),
        json!([{
            "index": 0,
            "message": { "role": "assistant", "content": text },
            "finish_reason": finish_reason,
        }]),
    );
    if let Some(u) = usage {
        v.insert("usage".into(), usage_json(u));
    }
    Value::Object(v)
}

/// A count in a provider's usage object (absent: 0).
pub(crate) fn count(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_read_into_turns_and_parameters() {
        let r = read(
            &json!({
                "model": "x",
                "messages": [
                    { "role": "system", "content": "Be brief." },
                    { "role": "developer", "content": "No lists." },
                    { "role": "user", "content": [{ "type": "text", "text": "a" }, { "type": "text", "text": "b" }] },
                    { "role": "user", "content": "c" },
                    { "role": "assistant", "content": "d" },
                ],
                "max_tokens": 10, "max_completion_tokens": 20, "stop": "END", "temperature": 0.5,
            }),
            "p",
        )
        .expect("reads");
        assert_eq!(r.system.as_deref(), Some("Be brief.\n\nNo lists."));
        assert_eq!(
            r.turns,
            [
                Turn {
                    role: Role::User,
                    text: "a\nb\n\nc".into()
                },
                Turn {
                    role: Role::Assistant,
                    text: "d".into()
                },
            ]
        );
        assert_eq!(
            (r.max_tokens, r.stop.clone(), r.temperature),
            (Some(20), vec!["END".to_string()], Some(0.5))
        );
    }

    #[test]
    fn what_cannot_be_carried_is_said() {
        let cases = [
            (json!([]), "expected a JSON object"),
            (json!({}), "`messages` is missing"),
            (json!({"messages": []}), "`messages` is empty"),
            (json!({"messages": [{"content": "x"}]}), "has no `role`"),
            (
                json!({"messages": [{"role": "wizard", "content": "x"}]}),
                "unknown role `wizard`",
            ),
            (
                json!({"messages": [{"role": "system", "content": "x"}]}),
                "no user or assistant message",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
                "`max_tokens` must be",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "stop": 3}),
                "`stop` must be",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                "`image_url` content parts",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "tools": [{}]}),
                "tool calling",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                "tool results",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "n": 2}),
                "`n` > 1",
            ),
        ];
        for (req, expected) in cases {
            let e = read(&req, "p").expect_err("refused").to_string();
            assert!(e.contains(expected), "{req}: {e}");
        }
    }
}
