//! A shell kept open on a host for the whole run: `sh -s` reading scripts from its stdin one
//! after another. Each script is sent inside `{ … }` (the shell reads all of it before it runs
//! any of it) and runs in a subshell (nothing it sets or `exit`s touches the next one); two
//! markers under a fresh nonce, one on stdout and one on stderr, end its output. One SSH
//! session then carries a host's facts, its batches and its single tasks: a session costs
//! the host a process tree and the link a round trip, a subshell only a fork.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::connection::{ConnError, ExecOutput};
use crate::script::Script;
use crate::script::frame::Nonce;

/// Resolves to a process's exit status (-1 when killed), or the connection's error.
pub type Exit = Pin<Box<dyn Future<Output = Result<i32, ConnError>> + Send>>;

/// A process started on a host, with its three pipes.
pub struct Spawned {
    /// Its stdin.
    pub stdin: Pin<Box<dyn AsyncWrite + Send>>,
    /// Its stdout.
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    /// Its stderr.
    pub stderr: Pin<Box<dyn AsyncRead + Send>>,
    /// Its end.
    pub wait: Exit,
}

impl std::fmt::Debug for Spawned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spawned")
    }
}

/// Runs a process to its end: `stdin` written while its output is read (neither side can
/// fill its buffer and wait on the other); a process that ends before reading all its input
/// is its own result, not an error.
pub async fn run_to_end(mut p: Spawned, stdin: Option<&[u8]>) -> Result<ExecOutput, ConnError> {
    let mut input = p.stdin;
    let feed = async move {
        if let Some(data) = stdin
            && input.write_all(data).await.is_ok()
        {
            let _ = input.flush().await;
        }
        let _ = input.shutdown().await;
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let read_out = p.stdout.read_to_end(&mut out);
    let read_err = p.stderr.read_to_end(&mut err);
    let (_, r_out, r_err) = tokio::join!(feed, read_out, read_err);
    let status = p.wait.await?;
    if r_out.is_err() || r_err.is_err() {
        return Err(ConnError::Unreachable(
            "the connection dropped while reading the output".into(),
        ));
    }
    Ok(ExecOutput {
        status,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    })
}

/// Why a script sent to a kept shell has no complete result.
#[derive(Debug)]
pub enum ShellError {
    /// The shell ended before the script's end marker: what it printed, how it ended (or the
    /// connection's error).
    Ended(Result<ExecOutput, ConnError>),
    /// The script ran longer than its time limit; the shell is not usable any more.
    Timeout(String),
}

/// A kept shell.
pub struct Shell {
    stdin: Pin<Box<dyn AsyncWrite + Send>>,
    stdout: Pin<Box<dyn AsyncRead + Send>>,
    stderr: Pin<Box<dyn AsyncRead + Send>>,
    wait: Option<Exit>,
}

impl std::fmt::Debug for Shell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shell")
    }
}

/// Reads `stream` into `buf` until `marker` is in it; returns where it starts.
async fn read_until(
    stream: &mut Pin<Box<dyn AsyncRead + Send>>,
    buf: &mut Vec<u8>,
    marker: &[u8],
) -> Option<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let mut searched = 0;
    loop {
        if let Some(i) = buf[searched..]
            .windows(marker.len())
            .position(|w| w == marker)
        {
            return Some(searched + i);
        }
        searched = buf.len().saturating_sub(marker.len());
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

impl Shell {
    /// A kept shell from a started `sh -s`.
    pub fn new(p: Spawned) -> Shell {
        Shell {
            stdin: p.stdin,
            stdout: p.stdout,
            stderr: p.stderr,
            wait: Some(p.wait),
        }
    }

    /// Runs one script; its status is that of the subshell it ran in.
    pub async fn run(
        &mut self,
        script: &str,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, ShellError> {
        let nonce = Nonce::new();
        let mut chunk = Script::new();
        chunk.code("{\n(\n");
        let mut text = chunk.text().to_string();
        text.push_str(script);
        let mut end = Script::new();
        end.code("\n) </dev/null\nFLEET_RC=$?\n")
            .set("FLEET_DONE", nonce.as_str())
            .code(concat!(
                "printf '\\n__FLEET_DONE_%s__ %s\\n' \"$FLEET_DONE\" \"$FLEET_RC\"; ",
                "printf '\\n__FLEET_DONE_%s__\\n' \"$FLEET_DONE\" >&2\n",
                "}\n",
            ));
        text.push_str(end.text());
        let marker = format!("\n__FLEET_DONE_{}__", nonce.as_str());
        let run = async {
            if self.stdin.write_all(text.as_bytes()).await.is_err()
                || self.stdin.flush().await.is_err()
            {
                return Err(None);
            }
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let (o, e) = tokio::join!(
                read_until(&mut self.stdout, &mut out, marker.as_bytes()),
                read_until(&mut self.stderr, &mut err, marker.as_bytes()),
            );
            match (o, e) {
                (Some(o), Some(e)) => {
                    // The marker's line goes on: ` STATUS\n`.
                    let from = o + marker.len();
                    while !out[from..].contains(&b'\n') {
                        let mut b = [0u8; 64];
                        match self.stdout.read(&mut b).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => out.extend_from_slice(&b[..n]),
                        }
                    }
                    let status = String::from_utf8_lossy(&out[from..])
                        .lines()
                        .next()
                        .unwrap_or("")
                        .trim()
                        .parse()
                        .unwrap_or(-1);
                    Ok(ExecOutput {
                        status,
                        stdout: String::from_utf8_lossy(&out[..o]).into_owned(),
                        stderr: String::from_utf8_lossy(&err[..e]).into_owned(),
                    })
                }
                _ => Err(Some((out, err))),
            }
        };
        let result = match timeout {
            Some(t) => match tokio::time::timeout(t, run).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(ShellError::Timeout(
                        humantime::format_duration(t).to_string(),
                    ));
                }
            },
            None => run.await,
        };
        match result {
            Ok(out) => Ok(out),
            Err(partial) => {
                // The shell is gone: how it ended, or why the connection did.
                let (out, err) = partial.unwrap_or_default();
                let status = match self.wait.take() {
                    Some(w) => w.await,
                    None => Ok(-1),
                };
                Err(ShellError::Ended(status.map(|status| ExecOutput {
                    status,
                    stdout: String::from_utf8_lossy(&out).into_owned(),
                    stderr: String::from_utf8_lossy(&err).into_owned(),
                })))
            }
        }
    }

    /// Ends the shell: its stdin closes (dropped: a shutdown of a pipe does not close it),
    /// it exits.
    pub async fn close(self) {
        let Shell {
            stdin,
            stdout,
            stderr,
            wait,
        } = self;
        drop(stdin);
        drop((stdout, stderr));
        if let Some(w) = wait {
            let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
        }
    }
}
