//! HQ under abuse, as a real `fleet serve` on loopback: slowloris headers and bodies are cut,
//! idle keep-alive connections closed, a flood of idle connections does not lock out an agent,
//! hostile heartbeats are refused with nothing stored, unauthenticated requests are limited
//! per address, and a node that left the inventory is refused and can be revoked by name.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::{Child, build_repo, crate_root, fleet, free_port, http, parse_case, wait_for};

struct Hq {
    repo: tempfile::TempDir,
    db: PathBuf,
    url: String,
    port: u16,
    child: Option<Child>,
}

fn inventory(port: u16, nodes: &str) -> String {
    format!(
        "fleet: {{ name: t, hq: hq1, hq_url: \"http://127.0.0.1:{port}\" }}\nvars: {{ app_dir: /opt/app }}\nnodes:\n  hq1: {{ host: 127.0.0.1, role: hq }}\n{nodes}"
    )
}

const NODES: &str =
    "  n1: { host: 127.0.0.1, role: common }\n  forge: { host: 127.0.0.1, role: common }\n";

impl Hq {
    /// `fleet serve` with `args`, under an open-file limit of `nofile` when given.
    fn new(args: &[&str], nofile: Option<u32>) -> Hq {
        let port = free_port();
        let case = parse_case(
            "abuse",
            &format!("--- inventory/fleet.yaml\n{}", inventory(port, NODES)),
        );
        let repo = build_repo(&crate_root().join("tests/corpus/base"), &case);
        let db = repo.path().join("state/hq.sqlite");
        let bin = assert_cmd::cargo::cargo_bin("fleet");
        let listen = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(repo.path().join("serve.log")).expect("log");
        // `ulimit -n` sets the hard limit too, so HQ cannot raise it: its connection cap must
        // keep it under.
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(match nofile {
                Some(n) => format!("ulimit -n {n} && exec \"$0\" \"$@\""),
                None => "exec \"$0\" \"$@\"".to_string(),
            })
            .arg(&bin)
            .args(["serve", "--listen", &listen, "--db"])
            .arg(&db)
            .args(args)
            .current_dir(repo.path())
            .env("HOME", repo.path())
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = Child(cmd.spawn().expect("serve"));
        let url = format!("http://{listen}");
        wait_for(20, "fleet serve", || {
            http("GET", &format!("{url}/healthz"), None, None)
                .ok()
                .filter(|(c, _)| *c == 200)
        });
        Hq {
            repo,
            db,
            url,
            port,
            child: Some(child),
        }
    }

    fn token(&self, node: &str) -> String {
        let out = fleet(self.repo.path())
            .args(["token", "issue", node, "--db"])
            .arg(&self.db)
            .output()
            .expect("token issue");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn post(&self, token: &str, body: &[u8]) -> (u16, String) {
        http(
            "POST",
            &format!("{}/api/heartbeat", self.url),
            Some(token),
            Some(body),
        )
        .expect("POST heartbeat")
    }

    fn history(&self, node: &str) -> Vec<serde_json::Value> {
        let token = support::hq_token(self.repo.path());
        let (code, body) = http(
            "GET",
            &format!("{}/api/nodes/{node}", self.url),
            Some(&token),
            None,
        )
        .expect("GET node");
        if code == 404 {
            return Vec::new();
        }
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v["history"].as_array().cloned().unwrap_or_default()
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(8)))
            .expect("timeout");
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.repo.path().join("serve.log")).unwrap_or_default()
    }
}

impl Drop for Hq {
    fn drop(&mut self) {
        self.child.take();
    }
}

fn beat(node: &str, seq: u64) -> serde_json::Value {
    serde_json::json!({ "node": node, "agent_version": "test", "sent_at": "2026-11-23T10:00:00Z", "seq": seq })
}

/// Waits for the server to close `s` (EOF or reset); returns how long that took, or None when
/// it was still open after the read timeout. Bytes the server sends first (an error answer)
/// are read and returned too.
fn closed_within(s: &mut TcpStream) -> (Option<Duration>, String) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (Some(start.elapsed()), String::from_utf8_lossy(&got).into()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (None, String::from_utf8_lossy(&got).into());
            }
            Err(_) => return (Some(start.elapsed()), String::from_utf8_lossy(&got).into()),
        }
    }
}

#[test]
fn slowloris_headers_are_cut_within_the_header_timeout() {
    let hq = Hq::new(&["--header-timeout", "1s"], None);
    let mut s = hq.connect();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .expect("write");
    // One header line every 300 ms, never the blank line that ends them.
    let mut t = s.try_clone().expect("clone");
    let trickle = std::thread::spawn(move || {
        for i in 0..40 {
            std::thread::sleep(Duration::from_millis(300));
            if t.write_all(format!("x-slow-{i}: y\r\n").as_bytes())
                .is_err()
            {
                break;
            }
        }
    });
    let (closed, _) = closed_within(&mut s);
    let took = closed.expect("the trickling connection is cut");
    assert!(took < Duration::from_secs(3), "cut after {took:?}");
    drop(s);
    let _ = trickle.join();
}

#[test]
fn a_trickled_body_is_cut_with_408() {
    let hq = Hq::new(&["--body-timeout", "1s"], None);
    let token = hq.token("n1");
    let mut s = hq.connect();
    s.write_all(
        format!(
            "POST /api/heartbeat HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n{{\"node\""
        )
        .as_bytes(),
    )
    .expect("write");
    let mut t = s.try_clone().expect("clone");
    let trickle = std::thread::spawn(move || {
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(300));
            if t.write_all(b" ").is_err() {
                break;
            }
        }
    });
    let (closed, answer) = closed_within(&mut s);
    let took = closed.expect("the trickled body is cut");
    assert!(took < Duration::from_secs(3), "cut after {took:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(hq.history("n1").is_empty(), "nothing stored");
    drop(s);
    let _ = trickle.join();
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let hq = Hq::new(&["--idle-timeout", "1s", "--header-timeout", "5s"], None);
    let mut s = hq.connect();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("write");
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).expect("answer");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let start = Instant::now();
    let (closed, _) = closed_within(&mut s);
    assert!(closed.is_some(), "the idle connection was never closed");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        start.elapsed()
    );
}

#[test]
fn many_idle_connections_do_not_lock_out_an_agent() {
    // 200 open files: far fewer than the idle connections below. Without a cap HQ runs out
    // of descriptors and cannot accept the agent.
    let hq = Hq::new(
        &[
            "--header-timeout",
            "30s",
            "--idle-timeout",
            "30s",
            "--rate-limit",
            "1000",
        ],
        Some(200),
    );
    let token = hq.token("n1");
    let body = serde_json::to_vec(&beat("n1", 1)).expect("json");
    assert_eq!(hq.post(&token, &body).0, 200);
    let mut idle = Vec::new();
    for _ in 0..400 {
        match TcpStream::connect(("127.0.0.1", hq.port)) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect: {e}"),
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    for seq in 2..12 {
        let start = Instant::now();
        let body = serde_json::to_vec(&beat("n1", seq)).expect("json");
        let (code, answer) = hq.post(&token, &body);
        assert_eq!(code, 200, "{answer}\n{}", hq.log());
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "heartbeat {seq} took {:?}",
            start.elapsed()
        );
        // More idle connections keep arriving.
        for _ in 0..30 {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", hq.port)) {
                idle.push(s);
            }
        }
    }
    assert_eq!(hq.history("n1").len(), 11);
    drop(idle);
}

#[test]
fn hostile_heartbeats_are_400_and_nothing_is_stored() {
    let hq = Hq::new(&[], None);
    let t = hq.token("n1");
    let deep =
        |inner: &str| -> String { format!("{}{inner}{}", "[".repeat(20_000), "]".repeat(20_000)) };
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    // Deep nesting in every place a value can go: known fields and unknown ones.
    for (field, place) in [
        ("node", "node"),
        ("sent_at", "sent_at"),
        ("resources", "resources"),
        ("services", "services"),
        ("unknown", "surprise"),
    ] {
        let mut v = beat("n1", 1);
        v[place] = serde_json::json!("__DEEP__");
        let text = serde_json::to_string(&v)
            .expect("json")
            .replace("\"__DEEP__\"", &deep("1"));
        cases.push((format!("deep {field}"), text.into_bytes()));
    }
    let mut in_services = beat("n1", 1);
    in_services["services"] = serde_json::json!({ "ollama": { "up": true, "models": "__DEEP__" } });
    cases.push((
        "deep in a service".into(),
        serde_json::to_string(&in_services)
            .expect("json")
            .replace("\"__DEEP__\"", &deep("\"m\""))
            .into_bytes(),
    ));
    // Unknown fields at every level.
    for (what, patch) in [
        ("top", serde_json::json!({ "surprise": 1 })),
        (
            "resources",
            serde_json::json!({ "resources": { "cores": 1, "surprise": 1 } }),
        ),
        (
            "disk",
            serde_json::json!({ "resources": { "disks": [{ "mount": "/", "total_gb": 1.0, "free_gb": 1.0, "surprise": 1 }] } }),
        ),
        (
            "gpu",
            serde_json::json!({ "resources": { "gpus": [{ "vendor": "nvidia", "vram_gb": 8.0, "surprise": 1 }] } }),
        ),
        (
            "service",
            serde_json::json!({ "services": { "ollama": { "up": true, "surprise": 1 } } }),
        ),
    ] {
        let mut v = beat("n1", 1);
        for (k, x) in patch.as_object().expect("object") {
            v[k] = x.clone();
        }
        cases.push((
            format!("unknown field in {what}"),
            serde_json::to_vec(&v).expect("json"),
        ));
    }
    for bad in [
        "y",
        "",
        "2026-11-23",
        "2026-13-01T00:00:00Z",
        "2026-11-23T10:00:00",
    ] {
        let mut v = beat("n1", 1);
        v["sent_at"] = serde_json::json!(bad);
        cases.push((
            format!("sent_at {bad:?}"),
            serde_json::to_vec(&v).expect("json"),
        ));
    }
    for (what, body) in &cases {
        let (code, answer) = hq.post(&t, body);
        assert_eq!(code, 400, "{what}: {answer}");
        assert!(answer.contains("malformed heartbeat"), "{what}: {answer}");
    }
    assert!(hq.history("n1").is_empty(), "nothing stored");
    // HQ is still up and takes a good one.
    let ok = serde_json::to_vec(&beat("n1", 2)).expect("json");
    assert_eq!(hq.post(&t, &ok).0, 200);
    assert_eq!(hq.history("n1").len(), 1);
}

#[test]
fn unauthenticated_requests_are_limited_per_address() {
    let hq = Hq::new(&["--unauth-rate-limit", "5"], None);
    let t = hq.token("n1");
    let codes: Vec<u16> = (0..40)
        .map(|_| {
            http("GET", &format!("{}/api/nodes", hq.url), None, None)
                .expect("GET")
                .0
        })
        .collect();
    assert!(codes.contains(&401), "{codes:?}");
    assert!(codes.contains(&429), "{codes:?}");
    // An agent from the same address with its token is not limited.
    let body = serde_json::to_vec(&beat("n1", 1)).expect("json");
    assert_eq!(hq.post(&t, &body).0, 200);
}

#[cfg(unix)]
#[test]
fn a_node_removed_from_the_inventory_is_refused_and_revocable_by_name() {
    let hq = Hq::new(&[], None);
    let forge = hq.token("forge");
    let body = serde_json::to_vec(&beat("forge", 1)).expect("json");
    assert_eq!(hq.post(&forge, &body).0, 200);
    // A node added to the inventory (as `fleet provision` does) is heard without a SIGHUP:
    // HQ re-reads an inventory that changed before it refuses a node it does not know.
    std::fs::write(
        hq.repo.path().join("inventory/fleet.yaml"),
        inventory(
            hq.port,
            &format!("{NODES}  fresh: {{ host: 127.0.0.1, role: common }}\n"),
        ),
    )
    .expect("write");
    let fresh = hq.token("fresh");
    let body_fresh = serde_json::to_vec(&beat("fresh", 1)).expect("json");
    let (code, answer) = hq.post(&fresh, &body_fresh);
    assert_eq!(code, 200, "{answer}");
    // forge leaves the inventory (and `late` joins, to see the reload happen).
    std::fs::write(
        hq.repo.path().join("inventory/fleet.yaml"),
        inventory(
            hq.port,
            "  n1: { host: 127.0.0.1, role: common }\n  late: { host: 127.0.0.1, role: common }\n",
        ),
    )
    .expect("write");
    let pid = hq.child.as_ref().expect("child").0.id();
    std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill -HUP");
    let client = support::hq_token(hq.repo.path());
    wait_for(10, "the reloaded inventory", || {
        let (_, body) = http("GET", &format!("{}/api/nodes", hq.url), Some(&client), None).ok()?;
        body.contains("\"late\"").then_some(())
    });
    let body = serde_json::to_vec(&beat("forge", 2)).expect("json");
    let (code, answer) = hq.post(&forge, &body);
    assert_eq!(code, 403, "{answer}");
    assert!(
        answer.contains("`forge` is not in the inventory"),
        "{answer}"
    );
    assert_eq!(
        hq.history("forge").len(),
        1,
        "the refused heartbeat is not stored"
    );
    // Revoked by name though the inventory no longer knows it.
    fleet(hq.repo.path())
        .args(["token", "revoke", "forge", "--db"])
        .arg(&hq.db)
        .assert()
        .success();
    let (code, _) = hq.post(&forge, &body);
    assert_eq!(code, 401, "revoked");
    fleet(hq.repo.path())
        .args(["token", "revoke", "forge", "--db"])
        .arg(&hq.db)
        .assert()
        .code(1)
        .stderr(predicates::str::contains("no active token called `forge`"));
}
