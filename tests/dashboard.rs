//! HQ's dashboard in a real browser: headless Chromium (Debian's `chromium`, driven over the
//! DevTools protocol) loads the page from a real `fleet serve` with live agents, signed in by
//! `fleet dashboard`'s one-time link; the DOM shows each node's state; a screenshot is taken;
//! an agent is stopped and its node turns offline on the page without a reload.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::hq_fleet::{Fleet, Node, request};
use support::{ensure_tool, fleet, wait_for};

/// A headless Chromium and a DevTools connection to its page.
struct Browser {
    child: std::process::Child,
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    id: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().expect("profile");
        let mut child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium");
        // Chromium says where its DevTools listen on stderr.
        // Its stderr is read to the end in a thread: a closed pipe would kill it on its next log line.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                    let _ = tx.send(rest.split('/').next().and_then(|p| p.parse::<u16>().ok()));
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .ok()
            .flatten()
            .expect("chromium printed its DevTools address");
        let pages = wait_for(20, "chromium's page list", || page_list(port));
        let pages: serde_json::Value = serde_json::from_str(&pages).expect("json");
        let url = pages
            .as_array()
            .and_then(|p| p.iter().find(|p| p["type"] == "page"))
            .and_then(|p| p["webSocketDebuggerUrl"].as_str())
            .expect("a page")
            .to_string();
        let (ws, _) = tungstenite::connect(url).expect("devtools websocket");
        Browser {
            child,
            ws,
            id: 0,
            _profile: profile,
        }
    }

    /// Sends a DevTools command and returns its result.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.id += 1;
        let id = self.id;
        let msg = serde_json::json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .expect("send");
        loop {
            let m = self.ws.read().expect("read");
            let Ok(text) = m.to_text() else { continue };
            let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    fn eval(&mut self, js: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": js, "returnByValue": true }),
        );
        r["result"]["value"].clone()
    }

    fn states(&mut self) -> Vec<(String, String)> {
        let v = self.eval("JSON.stringify([...document.querySelectorAll('#nodes [data-node]')].map(e => [e.dataset.node, e.dataset.state]))");
        serde_json::from_str(v.as_str().unwrap_or("[]")).unwrap_or_default()
    }
}

/// `GET /json/list` of Chromium's DevTools (which keeps the connection open: the body is read
/// by its length).
fn page_list(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET /json/list HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .ok()?;
    let mut r = BufReader::new(s);
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    String::from_utf8(body).ok()
}

#[test]
fn the_dashboard_shows_the_fleet_live_in_a_browser() {
    ensure_tool("chromium", "chromium");
    let mut f = Fleet::new(
        &[
            Node {
                name: "w1",
                priority: 90,
                max_concurrent: 2,
                models: &["m:8b"],
            },
            Node {
                name: "w2",
                priority: 50,
                max_concurrent: 3,
                models: &["m:8b"],
            },
        ],
        &[],
        "    - { task: chat, model: m:8b }\n",
        &["--offline-after", "2s"],
    );
    // Without a session: 401 with a page that says what to do, and nothing about the fleet.
    let a = request("GET", &format!("{}/", f.url), None, b"");
    assert_eq!(a.status, 401);
    assert!(
        a.body.contains("fleet dashboard") && !a.body.contains("w1"),
        "{}",
        a.body
    );
    // `fleet dashboard --print` gives a one-time link.
    let out = fleet(f.repo.path())
        .args(["dashboard", "--print"])
        .output()
        .expect("dashboard");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        link.starts_with(&format!("{}/login?code=", f.url)),
        "{link}"
    );

    let mut b = Browser::start();
    b.call("Page.enable", serde_json::json!({}));
    b.call("Page.navigate", serde_json::json!({ "url": link }));
    wait_for(20, "the dashboard to load with both nodes", || {
        let s = b.states();
        (s.len() == 3).then_some(())
    });
    let states = b.states();
    assert_eq!(
        states,
        [
            ("hq1".to_string(), "offline".to_string()),
            ("w1".into(), "online".into()),
            ("w2".into(), "online".into())
        ],
        "the hq node has no agent here"
    );
    let text = b
        .eval("document.body.innerText")
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        text.contains("chat") && text.contains("w1 → w2"),
        "routing table on the page: {text}"
    );
    // The link worked once: a second use is refused.
    assert_eq!(request("GET", &link, None, b"").status, 401);
    // A screenshot, for people.
    let shot = b.call(
        "Page.captureScreenshot",
        serde_json::json!({ "format": "png" }),
    );
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("data"))
        .expect("base64");
    assert!(png.starts_with(b"\x89PNG"));
    let dir = support::crate_root().join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("dashboard.png"), &png).expect("screenshot");
    // Stop w1's agent: the page shows it offline without being reloaded.
    b.eval("window.__notReloaded = true");
    f.agents.remove("w1");
    wait_for(20, "w1 to turn offline on the page", || {
        b.states()
            .contains(&("w1".into(), "offline".into()))
            .then_some(())
    });
    assert_eq!(
        b.eval("window.__notReloaded === true"),
        serde_json::json!(true),
        "the page was reloaded"
    );
    let text = b
        .eval("document.body.innerText")
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(text.contains("1 of 3 nodes online"), "{text}");
    assert!(text.contains("no heartbeat"), "the reason is shown: {text}");
}

#[test]
fn node_names_are_escaped_and_a_client_token_reads_the_page() {
    let mut f = Fleet::new(
        &[Node {
            name: "w1",
            priority: 90,
            max_concurrent: 2,
            models: &["m:8b"],
        }],
        &[],
        "    - { task: chat, model: m:8b }\n",
        &[],
    );
    let a = request("GET", &format!("{}/", f.url), Some(&f.client), b"");
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), "text/html; charset=utf-8");
    assert!(
        a.header("content-security-policy")
            .contains("default-src 'none'")
    );
    assert!(
        a.body.contains("data-node=\"w1\" data-state=\"online\""),
        "{}",
        a.body
    );
    // A node token does not read it; neither does a forged cookie.
    let node_token = std::fs::read_to_string(f.repo.path().join("w1.token")).expect("token");
    assert_eq!(
        request("GET", &format!("{}/", f.url), Some(node_token.trim()), b"").status,
        401
    );
    let forged =
        support::http("GET", &format!("{}/login?code=forged", f.url), None, None).expect("get");
    assert_eq!(forged.0, 401);
    // A heartbeat cannot smuggle markup onto the page: what it says is escaped.
    f.agents.remove("w1");
    let hostile = serde_json::json!({
        "node": "w1", "agent_version": "t", "sent_at": "2026-12-01T10:00:00Z", "seq": 1,
        "services": {"ollama": {"up": true, "models": ["m:8b", "<script>alert(1)</script>"]}}
    });
    let hb = request(
        "POST",
        &format!("{}/api/heartbeat", f.url),
        Some(node_token.trim()),
        hostile.to_string().as_bytes(),
    );
    assert_eq!(hb.status, 200, "{}", hb.body);
    let a = request("GET", &format!("{}/", f.url), Some(&f.client), b"");
    assert!(a.body.contains("&lt;script&gt;alert(1)&lt;"), "{}", a.body);
    assert!(!a.body.contains("<script>alert"), "{}", a.body);
}
