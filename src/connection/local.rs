//! The controller itself as a host (`host: localhost` with `connection: local`).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::connection::{ConnError, Connection, ExecOutput};

/// Runs commands on this machine.
#[derive(Debug, Default)]
pub struct LocalConnection;

impl Connection for LocalConnection {
    async fn exec_line(
        &self,
        line: &str,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, ConnError> {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(line)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| ConnError::Unreachable(format!("cannot run sh: {e}")))?;
        // Input is written while the output is read (see the ssh transport).
        let pipe = child.stdin.take();
        let feed = async move {
            if let (Some(data), Some(mut pipe)) = (stdin, pipe) {
                let _ = pipe.write_all(data).await;
            }
        };
        let fut = async move { tokio::join!(feed, child.wait_with_output()).1 };
        let out = match timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .map_err(|_| ConnError::Timeout(humantime::format_duration(t).to_string()))?,
            None => fut.await,
        }
        .map_err(|e| ConnError::Unreachable(e.to_string()))?;
        Ok(ExecOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::RunAs;

    #[test]
    fn scripts_run_from_stdin_or_with_content_on_stdin() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let c = LocalConnection;
            let out = c
                .exec("printf '%s' \"$(cat)\"", None, RunAs::Login, None)
                .await
                .expect("runs");
            // A script on stdin reads /dev/null, not the rest of itself.
            assert_eq!((out.status, out.stdout.as_str()), (0, ""));
            let out = c
                .exec("printf '%s' \"$(cat)\"", Some(b"a\0b"), RunAs::Login, None)
                .await
                .expect("runs");
            assert_eq!(out.stdout, "ab");
            let out = c
                .exec("exit 3", None, RunAs::Login, None)
                .await
                .expect("runs");
            assert_eq!(out.status, 3);
        });
    }
}
