//! How fleet reaches a host. A transport ([`Connection`]: SSH or this machine) starts a
//! process from a command line with its three pipes. On top of it, [`AnyConnection::exec`]
//! runs a script as the login user or, through `sudo`, as another account: in a shell kept
//! open for that account for the whole run ([`shell`]), the script on its stdin (never on a
//! command line, where other users of the host could read it); or, when the exec streams
//! content on stdin, as the argument of a one-off `sh -c`.

pub mod local;
pub mod resolve;
pub mod shell;
pub mod ssh;
pub mod sudo;

use std::future::Future;
use std::time::Duration;

use crate::connection::shell::{Shell, ShellError, Spawned, run_to_end};
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

impl RunAs<'_> {
    /// The account's name, `None` for the login user.
    fn account(&self) -> Option<&str> {
        match *self {
            RunAs::Login => None,
            RunAs::Become { user, login } if login == Some(user) => None,
            RunAs::Become { user, .. } => Some(user),
        }
    }
}

/// A way to start processes on a host.
pub trait Connection: Send + Sync {
    /// Starts one command line through the host's login shell, its pipes open.
    fn spawn(&self, line: &str) -> impl Future<Output = Result<Spawned, ConnError>> + Send;

    /// Runs one command line with optional stdin and a time limit.
    fn exec_line(
        &self,
        line: &str,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<ExecOutput, ConnError>> + Send {
        async move {
            let run = async {
                let p = self.spawn(line).await?;
                run_to_end(p, stdin).await
            };
            match timeout {
                Some(t) => tokio::time::timeout(t, run)
                    .await
                    .map_err(|_| ConnError::Timeout(humantime::format_duration(t).to_string()))?,
                None => run.await,
            }
        }
    }
}

/// The transports fleet has.
#[derive(Debug)]
pub enum Transport {
    /// Over SSH (one multiplexed master per host).
    Ssh(ssh::SshConnection),
    /// This machine.
    Local(local::LocalConnection),
}

impl Connection for Transport {
    async fn spawn(&self, line: &str) -> Result<Spawned, ConnError> {
        match self {
            Transport::Ssh(c) => c.spawn(line).await,
            Transport::Local(c) => c.spawn(line).await,
        }
    }
}

/// A host's connection as the engine holds it: the transport and the shells kept open on it,
/// one per account.
#[derive(Debug)]
pub struct AnyConnection {
    transport: Transport,
    shells: tokio::sync::Mutex<Vec<(Option<String>, Shell)>>,
    /// The sudo password for `become` (see [`sudo`]); `None`: `sudo -n`.
    become_password: std::sync::Mutex<Option<crate::secret::Secret<String>>>,
    /// sudo refused that password once: no more attempts on this host (an account lock-out
    /// counts them).
    refused: std::sync::atomic::AtomicBool,
}

/// The longest fleet waits for sudo to take the password.
const SUDO_LIMIT: Duration = Duration::from_secs(60);

impl AnyConnection {
    /// A connection over this transport.
    pub fn new(transport: Transport) -> AnyConnection {
        AnyConnection {
            transport,
            shells: tokio::sync::Mutex::new(Vec::new()),
            become_password: std::sync::Mutex::new(None),
            refused: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Sets the sudo password `become` uses from now on (`None`: `sudo -n`, no password).
    pub fn set_become_password(&self, password: Option<crate::secret::Secret<String>>) {
        if let Ok(mut p) = self.become_password.lock() {
            if *p != password {
                self.refused
                    .store(false, std::sync::atomic::Ordering::Relaxed);
            }
            *p = password;
        }
    }

    fn password_for(&self, who: RunAs<'_>) -> Option<crate::secret::Secret<String>> {
        who.account()?;
        self.become_password.lock().ok()?.clone()
    }

    /// Starts `inner` as `who` through `sudo -S` and gives it the password; `Err(output)`
    /// when sudo refused it or ended.
    async fn spawn_with_password(
        &self,
        inner: &str,
        who: RunAs<'_>,
        password: &crate::secret::Secret<String>,
        timeout: Option<Duration>,
    ) -> Result<Result<Spawned, ExecOutput>, ConnError> {
        let user = who.account().unwrap_or("root");
        if self.refused.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(Err(sudo::refused(user)));
        }
        let mut p = self.transport.spawn(&sudo::line(inner, who)).await?;
        let limit = timeout.map_or(SUDO_LIMIT, |t| t.min(SUDO_LIMIT));
        match sudo::handshake(&mut p, password, user, limit).await? {
            None => Ok(Ok(p)),
            Some(out) => {
                self.refused
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                // Dropped: sudo's stdin closes, so it ends instead of asking again.
                drop(p);
                Ok(Err(out))
            }
        }
    }

    /// Runs `script` with `sh` as `who`. Without `stdin` it runs in the shell kept for that
    /// account (started on first use); with `stdin` (content the script reads) in a one-off
    /// `sh -c SCRIPT`.
    pub async fn exec(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
        who: RunAs<'_>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, ConnError> {
        let started = std::time::Instant::now();
        let result = self.exec_inner(script, stdin, who, timeout).await;
        // -vv: every script sent, its size and how long it took (never its text, which holds
        // the task's values).
        match &result {
            Ok(out) => tracing::debug!(
                account = who.account().unwrap_or("login"),
                script_bytes = script.len(),
                stdin_bytes = stdin.map_or(0, <[u8]>::len),
                rc = out.status,
                ms = started.elapsed().as_millis() as u64,
                "exec"
            ),
            Err(e) => tracing::debug!(
                account = who.account().unwrap_or("login"),
                script_bytes = script.len(),
                ms = started.elapsed().as_millis() as u64,
                error = %e,
                "exec failed"
            ),
        }
        result
    }

    async fn exec_inner(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
        who: RunAs<'_>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, ConnError> {
        let password = self.password_for(who);
        if let Some(data) = stdin {
            let inner = format!("sh -c {}", shquote(script));
            let Some(pw) = &password else {
                return self
                    .transport
                    .exec_line(&run_as(&inner, who), Some(data), timeout)
                    .await;
            };
            let p = match self.spawn_with_password(&inner, who, pw, timeout).await? {
                Ok(p) => p,
                Err(out) => return Ok(out),
            };
            let run = run_to_end(p, Some(data));
            return match timeout {
                Some(t) => tokio::time::timeout(t, run)
                    .await
                    .map_err(|_| ConnError::Timeout(humantime::format_duration(t).to_string()))?,
                None => run.await,
            };
        }
        let account = who.account().map(str::to_string);
        let mut shells = self.shells.lock().await;
        let found = shells.iter().position(|(a, _)| *a == account);
        let i = match found {
            Some(i) => i,
            None => {
                let p = match &password {
                    None => self.transport.spawn(&run_as("sh -s", who)).await?,
                    Some(pw) => match self.spawn_with_password("sh -s", who, pw, timeout).await? {
                        Ok(p) => p,
                        Err(out) => return Ok(out),
                    },
                };
                shells.push((account, Shell::new(p)));
                shells.len() - 1
            }
        };
        match shells[i].1.run(script, timeout).await {
            Ok(out) => Ok(out),
            Err(e) => {
                // The shell is not usable any more; the next script starts another.
                let (_, shell) = shells.remove(i);
                drop(shell);
                match e {
                    ShellError::Timeout(t) => Err(ConnError::Timeout(t)),
                    ShellError::Ended(r) => r,
                }
            }
        }
    }

    /// Closes the shells, then the connection (an SSH master exits now, not after its
    /// persist time).
    pub async fn close(self) {
        let shells = std::mem::take(&mut *self.shells.lock().await);
        for (_, s) in shells {
            s.close().await;
        }
        if let Transport::Ssh(c) = self.transport {
            c.close().await;
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
        assert_eq!(root.account(), None);
        let svc = RunAs::Become {
            user: "svc",
            login: Some("deploy"),
        };
        assert_eq!(run_as("sh -s", svc), "sudo -n -H -u svc -- sh -s");
        assert_eq!(svc.account(), Some("svc"));
        let unknown = RunAs::Become {
            user: "a'b",
            login: None,
        };
        assert!(run_as("sh -s", unknown).contains("-u 'a'\\''b' -- sh -s"));
    }
}
