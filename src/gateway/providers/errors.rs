//! A provider's error answer as one short line for logs, metrics and the client: the
//! provider, the status, the error's type and message. Some providers quote the key they
//! were sent (whole, or its first and last characters) in a 401's message; every word that
//! shares a run of characters with the key is scrubbed, whatever the provider wrote.

use serde_json::Value;

use super::CloudTarget;

/// Longest message kept.
const MAX_CHARS: usize = 300;

/// Shortest run of the key's characters that marks a word as quoting it.
const KEY_RUN: usize = 8;

/// `openai answered 401 (invalid_request_error): Incorrect API key provided: ***.`
pub fn error_summary(target: &CloudTarget, status: u16, body: &[u8]) -> String {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    // Gemini wraps some errors in a list.
    let v = v.map(|v| match v {
        Value::Array(mut a) if !a.is_empty() => a.swap_remove(0),
        v => v,
    });
    let err = v.as_ref().and_then(|v| v.get("error"));
    let message = match err {
        Some(Value::String(s)) => s.clone(),
        Some(e) => e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        None => String::from_utf8_lossy(body).into_owned(),
    };
    let kind = err
        .and_then(|e| {
            e.get("type")
                .or_else(|| e.get("status"))
                .or_else(|| e.get("code"))
        })
        .and_then(|k| match k {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    let mut line = format!("{} answered {status}", target.provider);
    if let Some(k) = kind {
        line.push_str(&format!(" ({k})"));
    }
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if !message.is_empty() {
        line.push_str(": ");
        line.push_str(&message);
    }
    let line = scrub(&line, target.key.expose());
    let line: String = line
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_CHARS)
        .collect();
    crate::secret::mask(&line).into_owned()
}

/// `text` with every word that contains [`KEY_RUN`] consecutive characters of `key` replaced
/// by `***` (the whole key included, however it is cut).
fn scrub(text: &str, key: &str) -> String {
    let text = text.replace(key, crate::secret::MASK);
    let runs: Vec<&str> = if key.len() >= KEY_RUN {
        (0..=key.len() - KEY_RUN)
            .filter_map(|i| key.get(i..i + KEY_RUN))
            .collect()
    } else {
        Vec::new()
    };
    text.split(' ')
        .map(|w| {
            if runs.iter().any(|r| w.contains(r)) {
                crate::secret::MASK
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::providers::Dialect;
    use crate::secret::Secret;

    fn target(provider: &str, key: &str) -> CloudTarget {
        CloudTarget {
            provider: provider.into(),
            model: "m".into(),
            base_url: reqwest::Url::parse("https://api.example/v1").expect("url"),
            key: Secret::new(key.into()),
            dialect: Dialect::of(provider),
        }
    }

    #[test]
    fn each_providers_error_shape_is_one_line() {
        let t = target("openai", "sk-none");
        let cases = [
            (
                r#"{"error":{"message":"Rate limit\nreached","type":"requests","code":"rate_limit_exceeded"}}"#,
                "openai answered 429 (requests): Rate limit reached",
            ),
            (
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                "openai answered 429 (overloaded_error): Overloaded",
            ),
            (
                r#"[{"error":{"code":429,"message":"Resource exhausted.","status":"RESOURCE_EXHAUSTED"}}]"#,
                "openai answered 429 (RESOURCE_EXHAUSTED): Resource exhausted.",
            ),
            (
                "<html>bad gateway</html>",
                "openai answered 429: <html>bad gateway</html>",
            ),
            ("", "openai answered 429"),
        ];
        for (body, expected) in cases {
            assert_eq!(error_summary(&t, 429, body.as_bytes()), expected);
        }
    }

    #[test]
    fn a_quoted_key_is_scrubbed_whole_or_cut() {
        let key = "sk-canary-0123456789abcdefXYZ";
        let t = target("openai", key);
        let body = format!(
            r#"{{"error":{{"message":"Incorrect API key provided: {key}. Also sk-canar************defXYZ and '{}'.","type":"invalid_request_error"}}}}"#,
            &key[3..20]
        );
        let s = error_summary(&t, 401, body.as_bytes());
        assert_eq!(
            s,
            "openai answered 401 (invalid_request_error): Incorrect API key provided: ***. Also *** and ***"
        );
    }
}
