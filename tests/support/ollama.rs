//! A small stand-in for Ollama's HTTP API, for tests (Ollama itself cannot run here):
//! `GET /api/tags`, `GET /api/version`, `POST /api/pull` (streams NDJSON progress like
//! Ollama, then adds the model), `DELETE /api/delete`. A model named `missing:*` cannot be
//! pulled, as with a name the registry does not know.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

/// A running stand-in.
pub struct Ollama {
    /// Its base URL.
    pub url: String,
    /// Its port.
    pub port: u16,
    /// The models it holds.
    pub models: Arc<Mutex<Vec<String>>>,
    /// Requests it received (`METHOD /path`).
    pub requests: Arc<Mutex<Vec<String>>>,
}

fn full(name: &str) -> String {
    if name.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// Starts a stand-in holding `models`.
pub fn start(models: &[&str]) -> Ollama {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let held = Arc::new(Mutex::new(
        models.iter().map(|m| full(m)).collect::<Vec<_>>(),
    ));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (m2, r2) = (held.clone(), requests.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(s) = stream else { continue };
            let (models, requests) = (m2.clone(), r2.clone());
            std::thread::spawn(move || serve(s, &models, &requests));
        }
    });
    Ollama {
        url: format!("http://127.0.0.1:{port}"),
        port,
        models: held,
        requests,
    }
}

fn serve(mut s: std::net::TcpStream, models: &Mutex<Vec<String>>, requests: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(match s.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    let _ = reader.read_exact(&mut body);
    requests
        .lock()
        .expect("lock")
        .push(format!("{method} {path}"));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let name = full(v["model"].as_str().or(v["name"].as_str()).unwrap_or(""));
    let json = |code: &str, body: String| {
        format!(
            "HTTP/1.1 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let resp = match (method.as_str(), path.as_str()) {
        ("GET", "/api/tags") => {
            let list: Vec<serde_json::Value> = models.lock().expect("lock").iter().map(|m| serde_json::json!({ "name": m, "model": m, "size": 4_000_000_000u64, "digest": "sha256:0" })).collect();
            json("200 OK", serde_json::json!({ "models": list }).to_string())
        }
        ("GET", "/api/version") => json("200 OK", r#"{"version":"0.5.7"}"#.into()),
        ("POST", "/api/pull") => {
            if name.starts_with("missing:") {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nconnection: close\r\n\r\n{\"status\":\"pulling manifest\"}\n{\"error\":\"pull model manifest: file does not exist\"}\n");
                return;
            }
            let mut out = String::from(
                "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nconnection: close\r\n\r\n",
            );
            out.push_str("{\"status\":\"pulling manifest\"}\n");
            for done in [0u64, 2_000_000_000, 4_000_000_000] {
                out.push_str(&format!("{{\"status\":\"pulling 8eeb52dfb3bb\",\"digest\":\"sha256:8eeb\",\"total\":4000000000,\"completed\":{done}}}\n"));
            }
            out.push_str("{\"status\":\"verifying sha256 digest\"}\n{\"status\":\"writing manifest\"}\n{\"status\":\"success\"}\n");
            let mut m = models.lock().expect("lock");
            if !m.contains(&name) {
                m.push(name);
            }
            let _ = s.write_all(out.as_bytes());
            return;
        }
        ("DELETE", "/api/delete") => {
            let mut m = models.lock().expect("lock");
            match m.iter().position(|x| *x == name) {
                Some(i) => {
                    m.remove(i);
                    json("200 OK", String::new())
                }
                None => json(
                    "404 Not Found",
                    format!("{{\"error\":\"model '{name}' not found\"}}"),
                ),
            }
        }
        _ => json("404 Not Found", r#"{"error":"not found"}"#.into()),
    };
    let _ = s.write_all(resp.as_bytes());
}
