//! Errors as OpenAI-compatible clients expect them: `{"error": {"message", "type", "code"}}`,
//! with the gateway's attempts in the `X-Fleet-*` headers.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error answer.
pub fn error(status: StatusCode, kind: &str, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "error": { "message": message.into(), "type": kind, "code": code, "param": null }
    });
    (status, Json(body)).into_response()
}

/// Adds `X-Fleet-Worker` and `X-Fleet-Attempts` to an answer.
pub fn tag(mut r: Response, worker: &str, attempts: u32) -> Response {
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(worker) {
        h.insert("x-fleet-worker", v);
    }
    h.insert("x-fleet-attempts", HeaderValue::from(attempts));
    r
}
