//! How fleet reaches a host: a [`Connection`] runs one command line with optional stdin and
//! returns its output. On top of it, [`Connection::exec`] runs a script as the login user or,
//! through `sudo`, as another: the script travels on stdin of `sh -s` (never on a command
//! line, where other users of the host could read it), or, when the exec streams content on
//! stdin, as the argument of `sh -c`. SSH and local transports.

pub mod local;
pub mod ssh;

use std::future::Future;
use std::time::Duration;

use crate::script::shquote;

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

/// The account a script runs as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RunAs<'a> {
    /// The login user.
    #[default]
    Login,
    /// Another account, through `sudo -n` (unless the login user is that account already).
    Become {
        /// The account.
        user: &'a str,
        /// The login user, when facts know it.
        login: Option<&'a str>,
    },
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

    /// Runs `script` with `sh` as `who`. Without `stdin` the script travels on stdin of
    /// `sh -s`, inside `{ … }` so the shell reads all of it before it runs any of it (a
    /// script cut short by a lost connection does nothing); with `stdin` (content the script
    /// reads) it is `sh -c SCRIPT`.
    fn exec(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
        who: RunAs<'_>,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<ExecOutput, ConnError>> + Send {
        let (line, input) = match stdin {
            Some(data) => (
                run_as(&format!("sh -c {}", shquote(script)), who),
                std::borrow::Cow::Borrowed(data),
            ),
            None => (
                run_as("sh -s", who),
                std::borrow::Cow::Owned(format!("{{\n{script}\n}} </dev/null\n").into_bytes()),
            ),
        };
        async move { self.exec_line(&line, Some(&input), timeout).await }
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

impl AnyConnection {
    /// Closes the connection (an SSH master exits now, not after its persist time).
    pub async fn close(self) {
        if let AnyConnection::Ssh(c) = self {
            c.close().await;
        }
    }
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

/// A command line run as `who`: as is for the login user (or when the login user is the
/// account already), else through `sudo -n -H -u USER`. The account name is one quoted
/// word; task decoding accepts account names only.
pub fn run_as(inner: &str, who: RunAs<'_>) -> String {
    match who {
        RunAs::Login => inner.to_string(),
        RunAs::Become { user, login } if login == Some(user) => inner.to_string(),
        RunAs::Become {
            user,
            login: Some(_),
        } => {
            format!("sudo -n -H -u {} -- {inner}", shquote(user))
        }
        RunAs::Become { user, login: None } => {
            let u = shquote(user);
            format!(
                "if [ \"$(id -un)\" = {u} ]; then {inner}; else sudo -n -H -u {u} -- {inner}; fi"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn become_lines() {
        assert_eq!(run_as("sh -s", RunAs::Login), "sh -s");
        let root = RunAs::Become {
            user: "root",
            login: Some("root"),
        };
        assert_eq!(run_as("sh -s", root), "sh -s");
        let svc = RunAs::Become {
            user: "svc",
            login: Some("deploy"),
        };
        assert_eq!(run_as("sh -s", svc), "sudo -n -H -u svc -- sh -s");
        let unknown = RunAs::Become {
            user: "a'b",
            login: None,
        };
        assert!(run_as("sh -s", unknown).contains("-u 'a'\\''b' -- sh -s"));
    }
}
