//! The controller itself as a host (`host: localhost` with `connection: local`).

use std::process::Stdio;

use crate::connection::shell::Spawned;
use crate::connection::{ConnError, Connection};

/// Runs commands on this machine.
#[derive(Debug, Default)]
pub struct LocalConnection;

impl Connection for LocalConnection {
    async fn spawn(&self, line: &str) -> Result<Spawned, ConnError> {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(line)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| ConnError::Unreachable(format!("cannot run sh: {e}")))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(ConnError::Unreachable("sh has no pipes".into()));
        };
        Ok(Spawned {
            stdin: Box::pin(stdin),
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            wait: Box::pin(async move {
                child
                    .wait()
                    .await
                    .map(|s| s.code().unwrap_or(-1))
                    .map_err(|e| ConnError::Unreachable(e.to_string()))
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::{AnyConnection, RunAs, Transport};

    #[test]
    fn scripts_run_from_stdin_or_with_content_on_stdin() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let c = AnyConnection::new(Transport::Local(LocalConnection));
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
            // The kept shell goes on after a script that exits, and keeps nothing of it.
            let out = c
                .exec("X=1; cd /; exit 4", None, RunAs::Login, None)
                .await
                .expect("runs");
            assert_eq!(out.status, 4);
            let out = c
                .exec("printf '%s|' \"${X:-unset}\"", None, RunAs::Login, None)
                .await
                .expect("runs");
            assert_eq!(out.stdout, "unset|");
            // A script that kills its shell ends it; the next one starts another.
            let out = c
                .exec("kill -9 $$; sleep 1", None, RunAs::Login, None)
                .await
                .expect("runs");
            assert_ne!(out.status, 0);
            let out = c
                .exec("echo again", None, RunAs::Login, None)
                .await
                .expect("runs");
            assert_eq!(out.stdout, "again\n");
            let started = std::time::Instant::now();
            let e = c
                .exec(
                    "sleep 5",
                    None,
                    RunAs::Login,
                    Some(std::time::Duration::from_millis(200)),
                )
                .await
                .expect_err("times out");
            assert!(matches!(e, ConnError::Timeout(_)), "{e}");
            assert!(started.elapsed() < std::time::Duration::from_secs(2));
            let out = c
                .exec("echo after", None, RunAs::Login, None)
                .await
                .expect("runs");
            assert_eq!(out.stdout, "after\n");
            let started = std::time::Instant::now();
            c.close().await;
            assert!(
                started.elapsed() < std::time::Duration::from_secs(2),
                "close waits"
            );
        });
    }
}
