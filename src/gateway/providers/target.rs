//! A cloud provider made callable: its dialect, base URL and key, from one
//! `routing.cloud_fallback` entry. The key is read here, at the one place it enters fleet,
//! and is a [`Secret`] from then on (also remembered, so any printer masks it).

use std::path::Path;

use super::Dialect;
use crate::secret::Secret;
use crate::spec::inventory::{ApiKeySource, CloudFallback, key_file_path};

/// One cloud provider the gateway can call.
#[derive(Debug, Clone)]
pub struct CloudTarget {
    /// Provider name as the inventory writes it (`openai`, `groq`, a custom name …).
    pub provider: String,
    /// Model at the provider.
    pub model: String,
    /// Everything before the endpoint's own path (e.g. `https://api.openai.com/v1`).
    pub base_url: reqwest::Url,
    /// The API key.
    pub key: Secret<String>,
    /// The API shape it speaks.
    pub dialect: Dialect,
}

/// Why a provider cannot be called. Names the variable or file, never the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TargetError {
    /// The key's environment variable is unset or empty.
    #[error("cloud provider `{provider}`: the environment variable {var} (its API key) is not set")]
    EnvMissing {
        /// The provider.
        provider: String,
        /// The variable.
        var: String,
    },
    /// The key file cannot be read.
    #[error("cloud provider `{provider}`: cannot read its key file {path}: {reason}")]
    FileUnreadable {
        /// The provider.
        provider: String,
        /// The file.
        path: String,
        /// The OS's reason.
        reason: String,
    },
    /// The key (from a variable or a file) is empty.
    #[error("cloud provider `{provider}`: its API key ({source_name}) is empty")]
    Empty {
        /// The provider.
        provider: String,
        /// The variable or file.
        source_name: String,
    },
    /// The key has characters no HTTP header can carry.
    #[error(
        "cloud provider `{provider}`: its API key ({source_name}) has characters an HTTP header cannot carry (spaces, control characters or non-ASCII)"
    )]
    Malformed {
        /// The provider.
        provider: String,
        /// The variable or file.
        source_name: String,
    },
    /// No base URL: an unknown provider without `base_url`, or one that does not parse.
    #[error("cloud provider `{provider}`: {why}")]
    BaseUrl {
        /// The provider.
        provider: String,
        /// What is wrong.
        why: String,
    },
}

/// The API base URL of a known provider.
pub fn default_base_url(provider: &str) -> Option<&'static str> {
    Some(match provider {
        "openai" => "https://api.openai.com/v1",
        "anthropic" => "https://api.anthropic.com/v1",
        "gemini" => "https://generativelanguage.googleapis.com/v1beta",
        "groq" => "https://api.groq.com/openai/v1",
        "together" => "https://api.together.xyz/v1",
        "openrouter" => "https://openrouter.ai/api/v1",
        _ => return None,
    })
}

/// Every provider of the cloud fallback, in the order they are tried; one whose key cannot
/// be read is its error (the gateway skips it and says why, without the key).
pub fn targets(
    routing: &crate::spec::inventory::Routing,
    repo_root: &Path,
) -> Vec<Result<CloudTarget, TargetError>> {
    routing
        .cloud_fallback
        .iter()
        .map(|c| CloudTarget::from_config(c, repo_root))
        .collect()
}

impl CloudTarget {
    /// The target of a `routing.cloud_fallback` entry, reading its key from the process's
    /// environment or its key file (relative to `repo_root`).
    pub fn from_config(c: &CloudFallback, repo_root: &Path) -> Result<CloudTarget, TargetError> {
        CloudTarget::resolve(c, repo_root, &|name| std::env::var(name).ok())
    }

    /// [`CloudTarget::from_config`] with the environment given as a lookup.
    pub fn resolve(
        c: &CloudFallback,
        repo_root: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<CloudTarget, TargetError> {
        let provider = c.provider.clone();
        let base = match (&c.base_url, default_base_url(&c.provider)) {
            (Some(b), _) => b.as_str(),
            (None, Some(d)) => d,
            (None, None) => {
                return Err(TargetError::BaseUrl {
                    provider,
                    why: "no base URL is known for it; set `base_url`".into(),
                });
            }
        };
        let base_url = reqwest::Url::parse(base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| TargetError::BaseUrl {
                provider: provider.clone(),
                why: format!("`{base}` is not an http(s) URL"),
            })?;
        let (raw, source_name) = match &c.key {
            ApiKeySource::Env(var) => (
                env(var).ok_or_else(|| TargetError::EnvMissing {
                    provider: provider.clone(),
                    var: var.clone(),
                })?,
                format!("${var}"),
            ),
            ApiKeySource::File(file) => {
                let path = key_file_path(repo_root, file);
                let text =
                    std::fs::read_to_string(&path).map_err(|e| TargetError::FileUnreadable {
                        provider: provider.clone(),
                        path: path.display().to_string(),
                        // The OS's reason only: an error of a read never quotes the file.
                        reason: e.kind().to_string(),
                    })?;
                (text, path.display().to_string())
            }
        };
        let key = raw.trim();
        if key.is_empty() {
            return Err(TargetError::Empty {
                provider,
                source_name,
            });
        }
        // Known before any check can fail on it, so nothing prints it even then.
        crate::secret::remember(key);
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TargetError::Malformed {
                provider,
                source_name,
            });
        }
        Ok(CloudTarget {
            dialect: Dialect::of(&c.provider),
            provider,
            model: c.model.clone(),
            base_url,
            key: Secret::new(key.to_string()),
        })
    }

    /// How the gateway names this target as a worker (`X-Fleet-Worker`): `cloud:<provider>`.
    pub fn worker_label(&self) -> String {
        format!("cloud:{}", self.provider)
    }

    /// `base_url` followed by `path` (which starts with `/`).
    pub(crate) fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.as_str().trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Loc;

    fn entry(provider: &str, key: ApiKeySource, base_url: Option<&str>) -> CloudFallback {
        CloudFallback {
            provider: provider.into(),
            model: "m".into(),
            key,
            base_url: base_url.map(str::to_string),
            loc: Loc::file_start(&std::sync::Arc::from("inv.yaml")),
        }
    }

    #[test]
    fn keys_come_from_the_variable_or_the_file_and_never_show() {
        let canary = "sk-canary-target-5f1e2d";
        let env = |n: &str| (n == "K").then(|| format!("{canary}\n"));
        let t = CloudTarget::resolve(
            &entry("groq", ApiKeySource::Env("K".into()), None),
            Path::new("/"),
            &env,
        )
        .expect("target");
        assert_eq!(t.key.expose(), canary);
        assert_eq!(t.dialect, Dialect::OpenAi);
        assert_eq!(
            t.endpoint("/chat/completions"),
            "https://api.groq.com/openai/v1/chat/completions"
        );
        assert!(!format!("{t:?}").contains(canary));

        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("key"), format!("  {canary}  \n")).expect("write");
        let t = CloudTarget::resolve(
            &entry("anthropic", ApiKeySource::File("key".into()), None),
            dir.path(),
            &|_| None,
        )
        .expect("target");
        assert_eq!(t.key.expose(), canary);
        assert_eq!(t.dialect, Dialect::Anthropic);
    }

    #[test]
    fn targets_keep_the_fallbacks_order() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("k"), "key-a").expect("write");
        let routing = crate::spec::inventory::Routing {
            cloud_fallback: vec![
                entry("gemini", ApiKeySource::File("k".into()), None),
                entry("openai", ApiKeySource::File("missing".into()), None),
                entry("groq", ApiKeySource::File("k".into()), None),
            ],
            ..Default::default()
        };
        let got: Vec<Result<String, String>> = targets(&routing, dir.path())
            .into_iter()
            .map(|t| t.map(|t| t.worker_label()).map_err(|e| e.to_string()))
            .collect();
        assert_eq!(got[0], Ok("cloud:gemini".to_string()));
        assert!(
            got[1].as_ref().is_err_and(|e| e.contains("`openai`")),
            "{got:?}"
        );
        assert_eq!(got[2], Ok("cloud:groq".to_string()));
    }

    #[test]
    fn each_failure_names_its_source_and_not_the_key() {
        let canary = "sk-canary bad\u{7}key";
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("bad"), canary).expect("write");
        std::fs::write(dir.path().join("empty"), "\n").expect("write");
        let cases: Vec<(CloudFallback, &str)> = vec![
            (
                entry("openai", ApiKeySource::Env("NOPE".into()), None),
                "the environment variable NOPE (its API key) is not set",
            ),
            (
                entry("openai", ApiKeySource::File("missing".into()), None),
                "cannot read its key file",
            ),
            (
                entry("openai", ApiKeySource::File("empty".into()), None),
                "is empty",
            ),
            (
                entry("openai", ApiKeySource::File("bad".into()), None),
                "characters an HTTP header cannot carry",
            ),
            (
                entry("mistral", ApiKeySource::File("bad".into()), None),
                "no base URL is known for it",
            ),
        ];
        for (c, expected) in cases {
            let e = CloudTarget::resolve(&c, dir.path(), &|_| None).expect_err("fails");
            let shown = format!("{e} {e:?}");
            assert!(shown.contains(expected), "{shown}");
            assert!(!shown.contains("canary"), "{shown}");
        }
    }
}
