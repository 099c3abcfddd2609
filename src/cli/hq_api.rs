//! The HQ connection the gateway commands share (`prompt`, `dispatch`, `peers`, `status`,
//! `spend`): HQ's URL (`--hq`, else the inventory's `fleet.hq_url`), the fleet CA pinned for
//! `https://`, and the client token (`FLEET_HQ_TOKEN`, else `.fleet/hq.token`).

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::hq::client::{client_token, describe, hq_client, refused, repo_ca};
use crate::repo::Repo;

/// A connection to HQ.
#[derive(Debug, Clone)]
pub struct Hq {
    /// Base URL, without a trailing slash.
    pub url: String,
    /// The HTTP client (CA pinned).
    pub client: reqwest::Client,
    /// The client token, when there is one.
    pub token: Option<String>,
}

/// An error answer from the gateway: its status and message.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// The message.
    pub message: String,
}

impl Hq {
    /// HQ for `repo` (`url` overrides `fleet.hq_url`); `timeout` bounds connecting and, when
    /// set, whole requests.
    pub fn for_repo(repo: &Repo, url: Option<&str>, timeout: Option<Duration>) -> Result<Hq> {
        let url = match url {
            Some(u) => u.to_string(),
            None => repo
                .inventory
                .fleet
                .hq_url
                .as_ref()
                .map(|u| u.value.clone())
                .ok_or_else(|| {
                    Error::Usage(
                        "the inventory sets no `fleet.hq_url`; pass `--hq URL`".to_string(),
                    )
                })?,
        };
        let ca = repo_ca(&repo.root);
        let client = match timeout {
            Some(t) => hq_client(&url, t, Some(&ca)),
            // Long requests (a prompt, a stream): only connecting is bounded.
            None => hq_client(&url, Duration::from_secs(24 * 3600), Some(&ca)),
        }
        .map_err(Error::Usage)?;
        Ok(Hq {
            url: url.trim_end_matches('/').to_string(),
            client,
            token: client_token(&repo.root),
        })
    }

    /// A request to `path` with the token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(method, format!("{}{path}", self.url));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// `GET path` as JSON; a refusal or failure is an error that says why.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = format!("{}{path}", self.url);
        let resp = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(|e| Error::Failed(format!("HQ at {}: {}", self.url, describe(&e))))?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            return Err(Error::Failed(refused(
                status,
                self.token.is_some(),
                &error_message(&body),
            )));
        }
        if !status.is_success() {
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            return Err(Error::Failed(format!(
                "{url}: HQ answered {status}: {}",
                error_message(&body)
            )));
        }
        resp.json::<T>()
            .await
            .map_err(|e| Error::Failed(format!("{url}: unexpected answer: {e}")))
    }
}

/// The message of an error body, in either shape HQ uses (`{"error": "…"}` or the gateway's
/// `{"error": {"message": "…"}}`).
pub fn error_message(body: &serde_json::Value) -> String {
    match &body["error"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => o
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}
