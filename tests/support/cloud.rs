//! The cloud-provider stand-in (`tests/standins/cloud`, flags documented at its top) as a
//! child process: OpenAI-, Anthropic- and Gemini-shaped answers, every request recorded, and
//! failures on demand. Stopped (its own pid only) when dropped.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::crate_root;

/// A running stand-in.
pub struct CloudStandin {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The JSONL file it records requests to.
    pub record: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl CloudStandin {
    /// Starts one; `args` are extra flags (`--key K`, `--latency 0.05`, `--control FILE` …).
    pub fn start(args: &[&str]) -> CloudStandin {
        let dir = tempfile::tempdir().expect("dir");
        let record = dir.path().join("requests.jsonl");
        let mut child = Command::new(crate_root().join("tests/standins/cloud"))
            .arg("--record")
            .arg(&record)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the cloud stand-in");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the stand-in prints its port");
        let port: u16 = line.trim().parse().expect("a port");
        CloudStandin {
            port,
            url: format!("http://127.0.0.1:{port}"),
            record,
            child,
            _dir: dir,
        }
    }

    /// The `base_url` a provider of `dialect` (`openai`, `anthropic`, `gemini`) uses here.
    pub fn base_url(&self, dialect: &str) -> String {
        match dialect {
            "gemini" => format!("{}/v1beta", self.url),
            _ => format!("{}/v1", self.url),
        }
    }

    /// Every request recorded so far, in order.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Queues a failure mode (`{"mode": "status", "status": 503, "count": 1}` …).
    pub fn control(&self, spec: serde_json::Value) {
        let (code, body) = super::http(
            "POST",
            &format!("{}/_control", self.url),
            None,
            Some(spec.to_string().as_bytes()),
        )
        .expect("the stand-in answers /_control");
        assert_eq!(code, 200, "{body}");
    }
}

impl Drop for CloudStandin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
