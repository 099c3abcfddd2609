//! What running one task instance on a host gives: an [`Outcome`], or a [`TaskError`].

use serde_json::Value as J;

use crate::engine::events::Status;
use crate::error::Diagnostic;

/// How a task instance ended on a host.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// ok, changed, failed or skipped.
    pub status: Status,
    /// What `register` keeps (`changed`, `failed`, `rc`, `stdout`, `stderr`, `stdout_lines`,
    /// `msg`).
    pub result: J,
    /// A line to show beside the status (why it failed, what `debug` says …).
    pub msg: Option<String>,
    /// A unified diff of the file it placed (`--diff`).
    pub diff: Option<String>,
}

impl Outcome {
    /// A failure with its message.
    pub fn failed(msg: String) -> Outcome {
        Outcome {
            status: Status::Failed,
            result: serde_json::json!({ "changed": false, "failed": true, "msg": msg }),
            msg: Some(msg),
            diff: None,
        }
    }
}

/// Why a task instance could not run to an outcome.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TaskError {
    /// The host cannot be reached or the connection dropped: the host leaves the run.
    #[error("{0}")]
    Unreachable(String),
    /// Its arguments or templates cannot be used (located in the user's files).
    #[error("{0}")]
    Config(Box<Diagnostic>),
    /// It ran longer than its `timeout`.
    #[error("timed out after {0}")]
    Timeout(String),
    /// It failed on the host.
    #[error("{0}")]
    Failed(String),
}

impl From<Diagnostic> for TaskError {
    fn from(d: Diagnostic) -> TaskError {
        TaskError::Config(Box::new(d))
    }
}

impl From<crate::connection::ConnError> for TaskError {
    fn from(e: crate::connection::ConnError) -> TaskError {
        match e {
            crate::connection::ConnError::Unreachable(m) => TaskError::Unreachable(m),
            crate::connection::ConnError::Timeout(t) => TaskError::Timeout(t),
        }
    }
}
