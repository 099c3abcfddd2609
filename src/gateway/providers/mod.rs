//! Cloud providers as the gateway calls them: pure translation between the OpenAI chat shape
//! (what the gateway's clients send and receive) and each provider's own API. Nothing here
//! does I/O but reading a key when a target is built; the gateway sends the requests.
//!
//! The interface, in the order the gateway uses it:
//!
//! 1. [`targets`] / [`CloudTarget::from_config`]: each `routing.cloud_fallback` entry made
//!    callable, in order — its [`Dialect`], base URL and key ([`Secret`], read from
//!    `api_key_env` or `api_key_file`; a [`TargetError`] never shows the key).
//! 2. [`build`]`(target, openai_request, stream)` → [`UpstreamRequest`] (URL, headers with the
//!    key secret-typed, body bytes), or a [`TranslateError`] when the request cannot be
//!    carried to that provider (the gateway then tries the next candidate or answers 400).
//! 3. A whole answer: [`translate_response`]`(dialect, body, model_shown)` → an OpenAI
//!    `chat.completion` and its [`Usage`]. A streamed answer: [`StreamTranslator`], fed the
//!    upstream bytes as they come, gives OpenAI-shaped SSE bytes (`data: {chunk}\n\n` …
//!    `data: [DONE]\n\n`); `finish()` at the upstream's end; `usage()` after.
//! 4. A non-2xx answer: [`error_summary`]`(target, status, body)`: one short line, with the key
//!    scrubbed even when the provider echoes it.
//!
//! Dialects: [`openai`] (OpenAI, Groq, Together, OpenRouter, any OpenAI-compatible
//! `base_url`: passed through, streams byte for byte), [`anthropic`] (the Messages API) and
//! [`gemini`] (`generateContent`, `streamGenerateContent?alt=sse`). A base URL is everything
//! before the endpoint's own path, version included: `https://api.openai.com/v1` +
//! `/chat/completions`, `https://api.anthropic.com/v1` + `/messages`,
//! `https://generativelanguage.googleapis.com/v1beta` + `/models/{model}:generateContent`.

pub mod anthropic;
mod chat;
mod errors;
pub mod gemini;
pub mod openai;
mod sse;
mod target;
#[cfg(test)]
mod tests;

use serde_json::Value;

use crate::secret::Secret;

pub use errors::error_summary;
pub use target::{CloudTarget, TargetError, default_base_url, targets};

/// The API shape a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// OpenAI's chat completions (also Groq, Together, OpenRouter, any OpenAI-compatible API).
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini API (`generateContent`).
    Gemini,
}

impl Dialect {
    /// The dialect of a provider named in the inventory: its own for `anthropic` and
    /// `gemini`, OpenAI's for every other.
    pub fn of(provider: &str) -> Dialect {
        match provider {
            "anthropic" => Dialect::Anthropic,
            "gemini" => Dialect::Gemini,
            _ => Dialect::OpenAi,
        }
    }
}

/// Tokens one answer used, as the provider counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Input tokens (Anthropic's cache reads and writes included; priced as input).
    pub prompt_tokens: u64,
    /// Output tokens (Gemini's thinking tokens included: they are billed as output).
    pub completion_tokens: u64,
}

/// Why a request or an answer could not be translated. Never holds a key; holds no prompt
/// text either (messages name fields, not their values).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TranslateError {
    /// The client's request is not a chat request (the gateway answers 400).
    #[error("invalid chat request: {0}")]
    BadRequest(String),
    /// The request uses something this provider's translation does not carry (tools, images,
    /// `n` > 1): the gateway may try another candidate.
    #[error("{provider} cannot take this request: {what}")]
    Unsupported {
        /// The provider.
        provider: String,
        /// What it cannot take.
        what: String,
    },
    /// The provider's answer is not what its API documents.
    #[error("malformed answer from the provider: {0}")]
    BadResponse(String),
    /// The upstream stream ended before its last event: the answer is incomplete.
    #[error("the provider's stream ended before its last event")]
    Truncated,
}

/// A header value; the key's is secret, so every printer shows `***`.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderText {
    /// An ordinary value.
    Plain(String),
    /// A value holding the key.
    Secret(Secret<String>),
}

/// One request to a provider, ready to send.
#[derive(Clone)]
pub struct UpstreamRequest {
    /// Where to POST it (never holds the key).
    pub url: String,
    /// Its headers (lower-case names).
    pub headers: Vec<(&'static str, HeaderText)>,
    /// The JSON body.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for UpstreamRequest {
    // The body holds the prompt, which logs never show.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamRequest")
            .field("url", &self.url)
            .field("headers", &self.headers)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish()
    }
}

impl UpstreamRequest {
    /// Its headers for reqwest; the key's value is marked sensitive (hyper never logs it).
    pub fn header_map(&self) -> Result<reqwest::header::HeaderMap, TranslateError> {
        let mut map = reqwest::header::HeaderMap::new();
        for (name, value) in &self.headers {
            let mut v = match value {
                HeaderText::Plain(s) => reqwest::header::HeaderValue::from_str(s),
                HeaderText::Secret(s) => reqwest::header::HeaderValue::from_str(s.expose()),
            }
            // The key was checked when the target was built; the value is not shown.
            .map_err(|_| TranslateError::BadRequest(format!("header `{name}` is not valid")))?;
            v.set_sensitive(matches!(value, HeaderText::Secret(_)));
            map.insert(*name, v);
        }
        Ok(map)
    }

    /// The request as a reqwest builder on `client` (POST, headers, body).
    pub fn send_with(
        self,
        client: &reqwest::Client,
    ) -> Result<reqwest::RequestBuilder, TranslateError> {
        let headers = self.header_map()?;
        Ok(client.post(self.url).headers(headers).body(self.body))
    }
}

/// The provider's request for an OpenAI chat request (`stream`: whether to ask for SSE).
pub fn build(
    target: &CloudTarget,
    request: &Value,
    stream: bool,
) -> Result<UpstreamRequest, TranslateError> {
    match target.dialect {
        Dialect::OpenAi => openai::build(target, request, stream),
        Dialect::Anthropic => anthropic::build(target, request, stream),
        Dialect::Gemini => gemini::build(target, request, stream),
    }
}

/// A provider's whole (non-streamed) answer as an OpenAI `chat.completion`, and the tokens it
/// used. `model_shown` is the `model` the translated answer carries; an OpenAI-dialect answer
/// passes unchanged, as its streams do.
pub fn translate_response(
    dialect: Dialect,
    body: &[u8],
    model_shown: &str,
) -> Result<(Value, Option<Usage>), TranslateError> {
    translate_response_at(dialect, body, model_shown, chat::now_secs())
}

/// [`translate_response`] with the `created` time given (reproducible output).
pub fn translate_response_at(
    dialect: Dialect,
    body: &[u8],
    model_shown: &str,
    created: u64,
) -> Result<(Value, Option<Usage>), TranslateError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| TranslateError::BadResponse(format!("not JSON ({e})")))?;
    match dialect {
        Dialect::OpenAi => openai::translate(v),
        Dialect::Anthropic => anthropic::translate(&v, model_shown, created),
        Dialect::Gemini => gemini::translate(&v, model_shown, created),
    }
}

/// Turns a provider's streamed answer into OpenAI's `chat.completion.chunk` SSE, however the
/// upstream bytes are split.
#[derive(Debug)]
pub struct StreamTranslator {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    OpenAi(openai::Passthrough),
    Anthropic(anthropic::Stream),
    Gemini(gemini::Stream),
}

impl StreamTranslator {
    /// A translator for one answer; `model_shown` is the `model` its chunks carry (the
    /// OpenAI dialect passes the upstream's own).
    pub fn new(dialect: Dialect, model_shown: &str) -> StreamTranslator {
        StreamTranslator::new_at(dialect, model_shown, chat::now_secs(), None)
    }

    /// [`StreamTranslator::new`] with the `created` time and the fallback chunk id given
    /// (reproducible output; the upstream's own message id wins when it sends one).
    pub fn new_at(
        dialect: Dialect,
        model_shown: &str,
        created: u64,
        id: Option<&str>,
    ) -> StreamTranslator {
        let meta = chat::ChunkMeta::new(model_shown, created, id);
        let inner = match dialect {
            Dialect::OpenAi => Inner::OpenAi(openai::Passthrough::default()),
            Dialect::Anthropic => Inner::Anthropic(anthropic::Stream::new(meta)),
            Dialect::Gemini => Inner::Gemini(gemini::Stream::new(meta)),
        };
        StreamTranslator { inner }
    }

    /// Takes the next upstream bytes; returns the OpenAI SSE bytes they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<u8>, TranslateError> {
        match &mut self.inner {
            Inner::OpenAi(s) => s.feed(bytes),
            Inner::Anthropic(s) => s.feed(bytes),
            Inner::Gemini(s) => s.feed(bytes),
        }
    }

    /// The upstream ended: the last bytes (the usage chunk and `data: [DONE]` where the
    /// provider has no final event of its own), or [`TranslateError::Truncated`] when the
    /// answer is incomplete.
    pub fn finish(&mut self) -> Result<Vec<u8>, TranslateError> {
        match &mut self.inner {
            Inner::OpenAi(s) => s.finish(),
            Inner::Anthropic(s) => s.finish(),
            Inner::Gemini(s) => s.finish(),
        }
    }

    /// The tokens the answer used, once the provider said.
    pub fn usage(&self) -> Option<Usage> {
        match &self.inner {
            Inner::OpenAi(s) => s.usage,
            Inner::Anthropic(s) => s.usage(),
            Inner::Gemini(s) => s.usage,
        }
    }

    /// The error the provider reported inside the stream (passed on to the client as an
    /// OpenAI-shaped `data: {"error": …}` event), if any.
    pub fn upstream_error(&self) -> Option<&str> {
        match &self.inner {
            Inner::OpenAi(s) => s.error.as_deref(),
            Inner::Anthropic(s) => s.error.as_deref(),
            Inner::Gemini(s) => s.error.as_deref(),
        }
    }
}
