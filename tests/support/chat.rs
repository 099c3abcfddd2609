//! A stand-in for Ollama's chat API (Ollama cannot run here), faithful to what the gateway
//! uses: `GET /api/tags` and `/api/version` (what agents report), and Ollama's
//! OpenAI-compatible `POST /v1/chat/completions`, whole or streamed as SSE. It records every
//! chat request, counts requests in flight (and the most ever at once), keeps connections
//! alive like Ollama, and can be told to misbehave: answer 500, reset the connection, hang,
//! wait before the first byte, or trickle a stream.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the stand-in answers chats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Answer after `latency`.
    Ok { latency: Duration },
    /// Answer this status with an error body.
    Status(u16),
    /// Close the connection without answering (a reset).
    Reset,
    /// Never answer.
    Hang,
    /// Stream: send the headers and first chunk, then stop for ever (a stall mid-stream).
    StallAfterFirst,
    /// Stream: wait this long between chunks.
    SlowStream(Duration),
}

/// A running stand-in.
#[derive(Clone)]
pub struct Chat {
    /// Its name (put in every answer).
    pub name: String,
    /// Its port.
    pub port: u16,
    /// Its base URL.
    pub url: String,
    /// How it answers now.
    pub mode: Arc<Mutex<Mode>>,
    /// Chat requests received (their JSON bodies).
    pub received: Arc<Mutex<Vec<serde_json::Value>>>,
    /// Chats in flight now.
    pub in_flight: Arc<AtomicUsize>,
    /// The most chats ever in flight at once.
    pub max_in_flight: Arc<AtomicUsize>,
    /// Models it holds (`/api/tags`).
    pub models: Vec<String>,
}

impl Chat {
    /// Starts a stand-in called `name` holding `models`, answering at once.
    pub fn start(name: &str, models: &[&str]) -> Chat {
        Self::start_on(
            TcpListener::bind("127.0.0.1:0").expect("bind"),
            name,
            models,
        )
    }

    /// Starts one on a listener already bound (to restart on the same port).
    pub fn start_on(listener: TcpListener, name: &str, models: &[&str]) -> Chat {
        let port = listener.local_addr().expect("addr").port();
        let chat = Chat {
            name: name.to_string(),
            port,
            url: format!("http://127.0.0.1:{port}"),
            mode: Arc::new(Mutex::new(Mode::Ok {
                latency: Duration::ZERO,
            })),
            received: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            models: models.iter().map(|m| m.to_string()).collect(),
        };
        let c = chat.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                let c = c.clone();
                std::thread::spawn(move || c.connection(s));
            }
        });
        chat
    }

    /// Sets how it answers.
    pub fn set(&self, mode: Mode) {
        *self.mode.lock().expect("lock") = mode;
    }

    /// Chats received so far.
    pub fn count(&self) -> usize {
        self.received.lock().expect("lock").len()
    }

    fn connection(&self, s: TcpStream) {
        let _ = s.set_nodelay(true);
        let mut r = BufReader::new(match s.try_clone() {
            Ok(c) => c,
            Err(_) => return,
        });
        let mut w = s;
        // Keep-alive: one request after another until the client closes.
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
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
                if r.read_line(&mut h).unwrap_or(0) == 0 {
                    return;
                }
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).is_err() {
                return;
            }
            let keep = match (method.as_str(), path.as_str()) {
                ("GET", "/api/tags") => {
                    let list: Vec<serde_json::Value> = self
                        .models
                        .iter()
                        .map(|m| serde_json::json!({ "name": m, "model": m, "size": 4_000_000_000u64 }))
                        .collect();
                    json(&mut w, 200, &serde_json::json!({ "models": list }))
                }
                ("GET", "/api/version") => {
                    json(&mut w, 200, &serde_json::json!({"version": "0.5.7"}))
                }
                ("POST", "/v1/chat/completions") => self.chat(&mut w, &body),
                _ => json(&mut w, 404, &serde_json::json!({"error": "not found"})),
            };
            if !keep {
                let _ = w.shutdown(Shutdown::Both);
                return;
            }
        }
    }

    /// Answers one chat; false when the connection must close.
    fn chat(&self, w: &mut TcpStream, body: &[u8]) -> bool {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        self.received.lock().expect("lock").push(v.clone());
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let mode = *self.mode.lock().expect("lock");
        let keep = self.answer(w, &v, mode);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        keep
    }

    fn answer(&self, w: &mut TcpStream, v: &serde_json::Value, mode: Mode) -> bool {
        let model = v["model"].as_str().unwrap_or("").to_string();
        let stream = v["stream"].as_bool().unwrap_or(false);
        let text = format!("{} answers", self.name);
        match mode {
            Mode::Status(code) => json(
                w,
                code,
                &serde_json::json!({"error": {"message": format!("stand-in {} fails with {code}", self.name)}}),
            ),
            Mode::Reset => false,
            Mode::Hang => {
                std::thread::sleep(Duration::from_secs(3600));
                false
            }
            Mode::Ok { latency } if !stream => {
                std::thread::sleep(latency);
                json(
                    w,
                    200,
                    &serde_json::json!({
                        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
                    }),
                )
            }
            Mode::Ok { .. } | Mode::SlowStream(_) | Mode::StallAfterFirst => {
                if let Mode::Ok { latency } = mode {
                    std::thread::sleep(latency);
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                if w.write_all(head.as_bytes()).is_err() {
                    return false;
                }
                for (i, piece) in stream_pieces(&self.name, &model).iter().enumerate() {
                    if i == 1 && mode == Mode::StallAfterFirst {
                        std::thread::sleep(Duration::from_secs(3600));
                    }
                    if let (Mode::SlowStream(d), true) = (mode, i > 0) {
                        std::thread::sleep(d);
                    }
                    let chunk = format!("{:x}\r\n{piece}\r\n", piece.len());
                    if w.write_all(chunk.as_bytes())
                        .and_then(|_| w.flush())
                        .is_err()
                    {
                        return false;
                    }
                }
                w.write_all(b"0\r\n\r\n").is_ok()
            }
        }
    }
}

/// The SSE events of a streamed answer, each sent as its own chunk.
pub fn stream_pieces(name: &str, model: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, word) in [name, "streams", "words"].iter().enumerate() {
        let c = serde_json::json!({
            "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": {"content": format!("{word} ")}, "finish_reason": if i == 2 { serde_json::json!("stop") } else { serde_json::Value::Null }}]
        });
        out.push(format!("data: {c}\n\n"));
    }
    out.push("data: [DONE]\n\n".into());
    out
}

fn json(w: &mut TcpStream, code: u16, v: &serde_json::Value) -> bool {
    let body = v.to_string();
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let msg = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    w.write_all(msg.as_bytes()).and_then(|_| w.flush()).is_ok()
}
