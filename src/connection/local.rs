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
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn put_writes_atomically_with_its_mode_and_get_reads_it_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("it's a file");
        let p = path.to_string_lossy().into_owned();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let c = LocalConnection;
            let out = c.put(&p, b"a\0b\nc", 0o640, false).await.expect("put");
            assert_eq!(out.status, 0, "{}", out.stderr);
            assert_eq!(std::fs::read(&path).expect("written"), b"a\0b\nc");
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o640);
            // Only the file itself: no temp file left beside it.
            assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
            let got = c.get(&p, false).await.expect("get");
            assert_eq!(got.stdout, "a\0b\nc");
            let missing = c.get(&format!("{p}.nope"), false).await.expect("runs");
            assert_ne!(missing.status, 0);
        });
    }
}
