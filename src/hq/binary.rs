//! Which fleet binary HQ is running: its version, the commit it was built from and the
//! sha256 of its executable, reported by `GET /healthz`. The hq role compares that sum with
//! the binary installed on HQ's node and restarts HQ when they differ, so a new fleet binary
//! reaches HQ as it reaches the agents.

use std::io::Read;
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

/// The running executable's sha256 (hex), computed once, in the background: a debug build
/// is large and hashing it must not delay the first answer. `None` until it is known, or
/// when the executable cannot be read (reported once in the log).
#[derive(Debug, Clone, Default)]
pub struct RunningBinary(Arc<OnceLock<Option<String>>>);

impl RunningBinary {
    /// Starts hashing the running executable on a thread of its own.
    pub fn start() -> RunningBinary {
        let cell = RunningBinary::default();
        let fill = cell.0.clone();
        let spawned = std::thread::Builder::new()
            .name("hq-binary-sum".into())
            .spawn(move || {
                let sum = match executable_sha256() {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::warn!("cannot read HQ's own executable to report its sha256: {e}");
                        None
                    }
                };
                let _ = fill.set(sum);
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start hashing HQ's own executable: {e}");
        }
        cell
    }

    /// The sum, once known.
    pub fn sha256(&self) -> Option<&str> {
        self.0.get().and_then(|s| s.as_deref())
    }
}

/// The sha256 of the file this process was started from. On Linux `/proc/self/exe` opens
/// the running image even after an upgrade replaced the file at its path, so the sum is
/// that of the binary running, never of its successor.
fn executable_sha256() -> std::io::Result<String> {
    let path = if cfg!(target_os = "linux") {
        std::path::PathBuf::from("/proc/self/exe")
    } else {
        std::env::current_exe()?
    };
    file_sha256(&path)
}

/// The sha256 (hex) of a file, read in chunks.
pub fn file_sha256(path: &std::path::Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

/// The body of `GET /healthz`: `status` and `schema_version` as before, then what is
/// running. `binary_sha256` is `null` while the sum is being computed.
pub fn healthz_body(schema_version: i64, running: &RunningBinary) -> serde_json::Value {
    serde_json::json!({
        "status": "ok",
        "schema_version": schema_version,
        "version": env!("CARGO_PKG_VERSION"),
        "commit": env!("FLEET_GIT_COMMIT"),
        "binary_sha256": running.sha256(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_sum_matches_the_one_shot_sum() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("f");
        // Over one read chunk, so the chunking is exercised.
        let data: Vec<u8> = (0..(3u32 << 19)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).expect("write");
        assert_eq!(
            file_sha256(&p).expect("sum"),
            crate::util::sha256_hex(&data)
        );
    }

    #[test]
    fn the_running_binary_is_hashed_and_reported() {
        let r = RunningBinary::start();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while r.0.get().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let want = file_sha256(&std::env::current_exe().expect("exe")).expect("sum");
        assert_eq!(r.sha256(), Some(want.as_str()));
        let body = healthz_body(7, &r);
        assert_eq!(body["status"], "ok");
        assert_eq!(body["schema_version"], 7);
        assert_eq!(body["binary_sha256"], want.as_str());
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    }
}
