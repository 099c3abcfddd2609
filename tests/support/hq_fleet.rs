//! A fleet on loopback for gateway and dashboard tests: `fleet serve`, one `fleet agent` per
//! node reporting it online, and a chat stand-in (support::chat) for each node's Ollama.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use super::chat::Chat;
use super::{Child, build_repo, crate_root, fleet, free_port, parse_case, spawn_fleet, wait_for};

/// One answer, whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
    /// A chunked body ended with its terminating chunk (false: the stream broke off).
    pub complete: bool,
}

impl Answer {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A blocking HTTP/1.1 request with `connection: close`, reading the answer whole.
pub fn request(method: &str, url: &str, token: Option<&str>, body: &[u8]) -> Answer {
    let rest = url.strip_prefix("http://").expect("http");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    req.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    ));
    s.write_all(req.as_bytes()).expect("write");
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked")
    {
        let (mut body, mut rest, mut complete) = (String::new(), rest, false);
        while let Some((size, after)) = rest.split_once("\r\n") {
            let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                break;
            };
            if n == 0 {
                complete = true;
                break;
            }
            if after.len() < n {
                break;
            }
            body.push_str(&after[..n]);
            rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
        }
        return Answer {
            status,
            headers,
            body,
            complete,
        };
    }
    Answer {
        status,
        headers,
        body: rest.to_string(),
        complete: true,
    }
}

pub struct Node {
    pub name: &'static str,
    pub priority: u32,
    pub max_concurrent: u32,
    pub models: &'static [&'static str],
}

pub struct Fleet {
    pub repo: tempfile::TempDir,
    pub db: PathBuf,
    pub url: String,
    pub stand_ins: BTreeMap<&'static str, Chat>,
    pub agents: BTreeMap<&'static str, Child>,
    pub hq: Child,
    pub client: String,
    /// The arguments `fleet serve` was started with.
    pub serve_args: Vec<String>,
}

pub fn chat_body(model: &str, stream: bool, text: &str) -> Vec<u8> {
    serde_json::json!({
        "model": model, "stream": stream,
        "messages": [{"role": "user", "content": text}]
    })
    .to_string()
    .into_bytes()
}

impl Fleet {
    /// A fleet of `nodes` (each with its stand-in; `dead` ones point routing at a closed port),
    /// the rules given, and `fleet serve` with `serve_args`.
    pub fn new(nodes: &[Node], dead: &[&str], rules: &str, serve_args: &[&str]) -> Fleet {
        let port = free_port();
        let mut stand_ins = BTreeMap::new();
        let mut inv = format!(
            "fleet: {{ name: t, hq: hq1, hq_url: \"http://127.0.0.1:{port}\" }}\nvars: {{ app_dir: /opt/app }}\nnodes:\n  hq1: {{ host: 127.0.0.1, role: hq }}\n"
        );
        for n in nodes {
            let chat = Chat::start(n.name, n.models);
            let routed_port = if dead.contains(&n.name) {
                free_port()
            } else {
                chat.port
            };
            inv.push_str(&format!(
                "  {}: {{ host: 127.0.0.1, role: worker, priority: {}, max_concurrent: {}, models: [{}], hardware: {{ os: linux, ram_gb: 64 }}, vars: {{ ollama_port: {routed_port} }} }}\n",
                n.name,
                n.priority,
                n.max_concurrent,
                n.models.join(", ")
            ));
            stand_ins.insert(n.name, chat);
        }
        inv.push_str(&format!("routing:\n  rules:\n{rules}"));
        let case = parse_case("gateway", &format!("--- inventory/fleet.yaml\n{inv}"));
        let repo = build_repo(&crate_root().join("tests/corpus/base"), &case);
        let db = repo.path().join("state/hq.sqlite");
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec![
            "serve",
            "--listen",
            &listen,
            "--db",
            db.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(serve_args);
        let serve_args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let hq = spawn_fleet(repo.path(), &args, &repo.path().join("serve.log"));
        let url = format!("http://127.0.0.1:{port}");
        wait_for(20, "fleet serve to answer", || {
            super::http("GET", &format!("{url}/healthz"), None, None)
                .ok()
                .filter(|(c, _)| *c == 200)
        });
        let issue = |args: &[&str]| {
            let out = fleet(repo.path())
                .args(["token", "issue"])
                .args(args)
                .arg("--db")
                .arg(&db)
                .output()
                .expect("token issue");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let client = issue(&["--client", "ci"]);
        let mut agents = BTreeMap::new();
        for n in nodes {
            let token_file = repo.path().join(format!("{}.token", n.name));
            std::fs::write(&token_file, issue(&[n.name])).expect("token file");
            let agent = spawn_fleet(
                repo.path(),
                &[
                    "agent",
                    "--hq",
                    &url,
                    "--node",
                    n.name,
                    "--token-file",
                    token_file.to_str().expect("utf-8"),
                    "--interval",
                    "150ms",
                    "--ollama-url",
                    &stand_ins[n.name].url,
                    "--log-file",
                    repo.path()
                        .join(format!("agent-{}.log", n.name))
                        .to_str()
                        .expect("utf-8"),
                ],
                &repo.path().join(format!("agent-{}.out", n.name)),
            );
            agents.insert(n.name, agent);
        }
        let f = Fleet {
            repo,
            db,
            url,
            stand_ins,
            agents,
            hq,
            client,
            serve_args,
        };
        for n in nodes {
            f.wait_in_gateway(n.name, "online");
        }
        f
    }

    /// Kills HQ with SIGKILL and starts it again on the same store and port.
    pub fn restart_hq(&mut self) {
        self.hq.0.kill().expect("kill -9");
        let _ = self.hq.0.wait();
        let args: Vec<&str> = self.serve_args.iter().map(String::as_str).collect();
        self.hq = spawn_fleet(
            self.repo.path(),
            &args,
            &self.repo.path().join("serve-2.log"),
        );
        let url = self.url.clone();
        wait_for(20, "fleet serve to answer again", || {
            super::http("GET", &format!("{url}/healthz"), None, None)
                .ok()
                .filter(|(c, _)| *c == 200)
        });
    }

    /// Waits until the gateway's table shows `node` in `state`.
    pub fn wait_in_gateway(&self, node: &str, state: &str) {
        wait_for(20, &format!("`{node}` {state} in the gateway"), || {
            let a = request(
                "GET",
                &format!("{}/api/gateway", self.url),
                Some(&self.client),
                b"",
            );
            (a.status == 200).then_some(())?;
            a.json()["workers"]
                .as_array()?
                .iter()
                .any(|w| w["name"] == node && w["status"] == state)
                .then_some(())
        });
    }

    pub fn chat(&self, model: &str, stream: bool) -> Answer {
        self.post(&chat_body(model, stream, "hello"), Some(&self.client))
    }

    pub fn post(&self, body: &[u8], token: Option<&str>) -> Answer {
        request(
            "POST",
            &format!("{}/v1/chat/completions", self.url),
            token,
            body,
        )
    }

    pub fn log(&self) -> String {
        let mut out =
            std::fs::read_to_string(self.repo.path().join("serve.log")).unwrap_or_default();
        out.push_str(
            &std::fs::read_to_string(self.repo.path().join("serve-2.log")).unwrap_or_default(),
        );
        out
    }
}
