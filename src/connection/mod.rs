//! How fleet reaches a host: a [`Connection`] runs a shell script (with optional stdin) and
//! returns its output; `put` and `get` are built on it, so a file transfer is one exec
//! (content on stdin, temp file beside the target, mode, rename). SSH and local transports.

pub mod local;
pub mod ssh;

use std::future::Future;
use std::time::Duration;

use crate::command::shquote;

/// What a remote command printed and how it ended.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    /// Exit status (-1 when killed by a signal).
    pub status: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Why a command could not run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnError {
    /// The host cannot be reached or the connection dropped.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The command ran out of time.
    #[error("timed out after {0}")]
    Timeout(String),
}

/// A way to run commands on a host.
pub trait Connection: Send + Sync {
    /// Runs one command line through the host's login shell, with optional stdin.
    fn exec_line(
        &self,
        line: &str,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<ExecOutput, ConnError>> + Send;

    /// Runs `script` with `sh` (as root through `sudo -n` when `become_` and not root already).
    /// Without input of its own the script travels on stdin (see [`Connection::exec_piped`]),
    /// so what it holds (exported variables, URLs, headers) never shows in the host's process
    /// list; its commands read `/dev/null`. With input, it is `sh -c SCRIPT`.
    fn exec(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
        become_: bool,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<ExecOutput, ConnError>> + Send {
        let (line, input) = match stdin {
            Some(data) => (
                become_wrap(&format!("sh -c {}", shquote(script)), become_),
                std::borrow::Cow::Borrowed(data),
            ),
            // The shell reads the whole group before running it, and nothing in it can read
            // the rest of its own script.
            None => (
                become_wrap("sh -s", become_),
                std::borrow::Cow::Owned(format!("{{\n{script}\n}} </dev/null\n").into_bytes()),
            ),
        };
        async move { self.exec_line(&line, Some(&input), timeout).await }
    }

    /// Runs a script sent on stdin to `sh -s`: no command-line length limit (a single
    /// argument is capped at 128 KiB on Linux), and the login shell never parses it. The
    /// script must not let its commands read stdin, which is the rest of the script.
    fn exec_piped(
        &self,
        script: &str,
        become_: bool,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<ExecOutput, ConnError>> + Send {
        let line = become_wrap("sh -s", become_);
        async move {
            self.exec_line(&line, Some(script.as_bytes()), timeout)
                .await
        }
    }

    /// Writes a file atomically: temp file beside it, mode, rename.
    fn put(
        &self,
        path: &str,
        contents: &[u8],
        mode: u32,
        become_: bool,
    ) -> impl Future<Output = Result<ExecOutput, ConnError>> + Send {
        let p = shquote(path);
        let script = format!(
            "set -e; t=$(mktemp \"$(dirname {p})/.fleet.XXXXXX\"); trap 'rm -f \"$t\"' EXIT; cat > \"$t\"; chmod {mode:o} \"$t\"; mv -f \"$t\" {p}; trap - EXIT"
        );
        async move { self.exec(&script, Some(contents), become_, None).await }
    }

    /// Reads a file.
    fn get(
        &self,
        path: &str,
        become_: bool,
    ) -> impl Future<Output = Result<ExecOutput, ConnError>> + Send {
        let script = format!("cat {}", shquote(path));
        async move { self.exec(&script, None, become_, None).await }
    }
}

/// The transports fleet has, as one type the engine can hold per host.
#[derive(Debug)]
pub enum AnyConnection {
    /// Over SSH (one multiplexed master per host).
    Ssh(ssh::SshConnection),
    /// This machine.
    Local(local::LocalConnection),
}

impl Connection for AnyConnection {
    async fn exec_line(
        &self,
        line: &str,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, ConnError> {
        match self {
            AnyConnection::Ssh(c) => c.exec_line(line, stdin, timeout).await,
            AnyConnection::Local(c) => c.exec_line(line, stdin, timeout).await,
        }
    }
}

/// Wraps a command line for `become`: root runs it as is; others through `sudo -n`.
pub fn become_wrap(inner: &str, become_: bool) -> String {
    let inner = inner.to_string();
    if become_ {
        format!("if [ \"$(id -u)\" = 0 ]; then {inner}; else sudo -n {inner}; fi")
    } else {
        inner
    }
}
