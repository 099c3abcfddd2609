//! HQ and agents as real processes on loopback: `fleet serve` with its SQLite file, several
//! `fleet agent`s, tokens issued and revoked with `fleet token`, an Ollama stand-in.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use support::{
    Child, build_repo, crate_root, fleet, free_port, http, http_routes, parse_case, spawn_fleet,
    wait_for,
};

struct Hq {
    repo: tempfile::TempDir,
    db: PathBuf,
    port: u16,
    url: String,
    child: Option<Child>,
}

fn inventory(port: u16, extra_nodes: &str) -> String {
    format!(
        "fleet: {{ name: t, hq: hq1, hq_url: \"http://127.0.0.1:{port}\" }}\nvars: {{ app_dir: /opt/app }}\nnodes:\n  hq1: {{ host: 127.0.0.1, role: hq }}\n  n1: {{ host: 127.0.0.1, role: common }}\n  n2: {{ host: 127.0.0.1, role: common }}\n  llm: {{ host: 127.0.0.1, role: worker, models: [big:8b], hardware: {{ os: linux, ram_gb: 32 }} }}\n{extra_nodes}routing:\n  rules:\n    - {{ task: t, model: big:8b }}\n"
    )
}

impl Hq {
    fn new(extra_nodes: &str, serve_args: &[&str]) -> Hq {
        let port = free_port();
        let case = parse_case(
            "hq",
            &format!("--- inventory/fleet.yaml\n{}", inventory(port, extra_nodes)),
        );
        let repo = build_repo(&crate_root().join("tests/corpus/base"), &case);
        let db = repo.path().join("state/hq.sqlite");
        let mut hq = Hq {
            url: format!("http://127.0.0.1:{port}"),
            repo,
            db,
            port,
            child: None,
        };
        hq.start(serve_args);
        hq
    }

    fn start(&mut self, serve_args: &[&str]) {
        let listen = format!("127.0.0.1:{}", self.port);
        let db = self.db.display().to_string();
        let mut args = vec!["serve", "--listen", &listen, "--db", &db];
        args.extend_from_slice(serve_args);
        let log = self.repo.path().join(format!(
            "serve-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("time")
                .as_nanos()
        ));
        self.child = Some(spawn_fleet(self.repo.path(), &args, &log));
        let url = format!("{}/healthz", self.url);
        wait_for(20, "fleet serve to answer /healthz", || {
            http("GET", &url, None, None)
                .ok()
                .filter(|(c, _)| *c == 200)
        });
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.0.kill().expect("kill -9");
            c.0.wait().expect("wait");
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

    fn token_file(&self, node: &str) -> PathBuf {
        let p = self.repo.path().join(format!("{node}.token"));
        fleet(self.repo.path())
            .args(["token", "issue", node, "--out"])
            .arg(&p)
            .arg("--db")
            .arg(&self.db)
            .assert()
            .success();
        p
    }

    fn agent(&self, node: &str, token_file: &Path, ollama: &str) -> Child {
        let log = self.repo.path().join(format!("agent-{node}.log"));
        spawn_fleet(
            self.repo.path(),
            &[
                "agent",
                "--hq",
                &self.url,
                "--node",
                node,
                "--token-file",
                &token_file.display().to_string(),
                "--interval",
                "150ms",
                "--ollama-url",
                ollama,
                "--log-file",
                &self
                    .repo
                    .path()
                    .join(format!("agent-{node}.file.log"))
                    .display()
                    .to_string(),
            ],
            &log,
        )
    }

    /// Everything `fleet serve` logged so far (every run of it).
    fn log(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.repo.path()).expect("repo").flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("serve-") && name.ends_with(".log") {
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }

    /// The client token `fleet serve` wrote for its repo.
    fn client(&self) -> String {
        support::hq_token(self.repo.path())
    }

    fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        http("GET", &format!("{}{path}", self.url), token, None).expect("GET")
    }

    fn issue(&self, args: &[&str]) -> String {
        let out = fleet(self.repo.path())
            .args(["token", "issue"])
            .args(args)
            .arg("--db")
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

    fn nodes(&self) -> serde_json::Value {
        let (code, body) = self.get("/api/nodes", Some(&self.client()));
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("json")
    }

    fn state(&self, node: &str) -> (String, Vec<String>) {
        let v = self.nodes();
        let n = v["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["name"] == node)
            .cloned()
            .unwrap_or_default();
        (
            n["status"].as_str().unwrap_or("absent").to_string(),
            n["reasons"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    fn wait_state(&self, node: &str, want: &str) -> Vec<String> {
        wait_for(20, &format!("{node} to be {want}"), || {
            let (s, reasons) = self.state(node);
            (s == want).then_some(reasons)
        })
    }

    fn history(&self, node: &str) -> Vec<serde_json::Value> {
        let (code, body) = self.get(&format!("/api/nodes/{node}"), Some(&self.client()));
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v["history"].as_array().cloned().unwrap_or_default()
    }

    fn post(&self, token: Option<&str>, body: &[u8]) -> (u16, String) {
        http(
            "POST",
            &format!("{}/api/heartbeat", self.url),
            token,
            Some(body),
        )
        .expect("POST heartbeat")
    }
}

fn beat(node: &str, seq: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "node": node, "agent_version": "test", "sent_at": "2026-11-23T10:00:00Z", "seq": seq })).expect("json")
}

fn ollama(models: &[&str]) -> String {
    let tags = serde_json::json!({ "models": models.iter().map(|m| serde_json::json!({ "name": m, "model": m, "size": 1 })).collect::<Vec<_>>() });
    http_routes(vec![
        ("/api/tags", tags.to_string()),
        ("/api/version", r#"{"version":"0.5.7"}"#.to_string()),
    ])
}

#[test]
fn nodes_come_online_go_offline_and_come_back() {
    let hq = Hq::new("", &["--offline-after", "2s"]);
    let (t1, t2, tl) = (
        hq.token_file("n1"),
        hq.token_file("n2"),
        hq.token_file("llm"),
    );
    let standin = ollama(&["big:8b"]);
    let _a1 = hq.agent("n1", &t1, &standin);
    let mut a2 = Some(hq.agent("n2", &t2, &standin));
    let _al = hq.agent("llm", &tl, &standin);
    hq.wait_state("n1", "online");
    hq.wait_state("n2", "online");
    hq.wait_state("llm", "online");
    let (s, reasons) = hq.state("hq1");
    assert_eq!(s, "offline");
    assert_eq!(
        reasons,
        vec!["no heartbeat from hq1 yet; is its agent installed and running?"]
    );
    // The live routing table has the LLM worker in its pool while it is online.
    let (_, routing) = hq.get("/api/routing", Some(&hq.client()));
    let routing: serde_json::Value = serde_json::from_str(&routing).expect("json");
    assert_eq!(routing["rules"][0]["pool"], serde_json::json!(["llm"]));

    a2.take(); // stops n2's agent
    let reasons = hq.wait_state("n2", "offline");
    assert!(
        reasons[0].starts_with("no heartbeat from n2 for "),
        "{reasons:?}"
    );
    assert_eq!(hq.state("n1").0, "online");
    let _a2 = hq.agent("n2", &t2, &standin);
    hq.wait_state("n2", "online");
    // The agent logged to its file too.
    let log =
        std::fs::read_to_string(hq.repo.path().join("agent-n1.file.log")).expect("agent log file");
    assert!(log.contains("agent for `n1` reporting to"), "{log}");
}

#[test]
fn missing_model_or_ollama_makes_a_node_degraded_and_offline_workers_leave_pools() {
    let hq = Hq::new("", &["--offline-after", "2s"]);
    let tl = hq.token_file("llm");
    let (_, routing) = hq.get("/api/routing", Some(&hq.client()));
    let routing: serde_json::Value = serde_json::from_str(&routing).expect("json");
    assert_eq!(
        routing["rules"][0]["pool"],
        serde_json::json!([]),
        "llm never reported: offline, out of the pool"
    );
    let without = ollama(&["other:1b"]);
    let agent = hq.agent("llm", &tl, &without);
    let reasons = hq.wait_state("llm", "degraded");
    assert_eq!(
        reasons,
        vec!["ollama on llm answers but big:8b is missing; run `fleet provision llm`"]
    );
    drop(agent);
    let _agent = hq.agent("llm", &tl, "http://127.0.0.1:9");
    let reasons = wait_for(20, "ollama-down reason", || {
        let (s, r) = hq.state("llm");
        (s == "degraded" && r.iter().any(|x| x.starts_with("ollama is down on llm"))).then_some(r)
    });
    assert!(reasons[0].contains("ollama is down on llm"), "{reasons:?}");
}

#[test]
fn bad_tokens_and_bodies_are_rejected_and_nothing_is_stored() {
    let hq = Hq::new("", &[]);
    let t1 = hq.token("n1");
    let forged = "fleet_0000000000000000000000000000000000000000000000000000000000000000";
    assert_eq!(hq.post(None, &beat("n1", 1)).0, 401, "missing token");
    assert_eq!(hq.post(Some(forged), &beat("n1", 1)).0, 401, "forged token");
    assert_eq!(
        hq.post(Some(&t1), &beat("n2", 1)).0,
        401,
        "n1's token for n2"
    );
    assert_eq!(hq.post(Some(&t1), &beat("ghost", 1)).0, 401, "unknown node");
    let (code, body) = hq.post(Some(&t1), b"{\"node\": \"n1\", ");
    assert_eq!(code, 400);
    assert!(body.contains("malformed heartbeat"), "{body}");
    let (code, body) = hq.post(
        Some(&t1),
        b"{\"node\": \"n1\", \"agent_version\": \"x\", \"sent_at\": \"y\", \"surprise\": 1}",
    );
    assert_eq!(code, 400, "unknown fields are refused: {body}");
    let mut big = beat("n1", 1);
    big.truncate(big.len() - 1);
    big.extend_from_slice(format!(", \"pad\": \"{}\"}}", "x".repeat(70 * 1024)).as_bytes());
    assert_eq!(hq.post(Some(&t1), &big).0, 413);
    assert!(
        hq.history("n1").is_empty(),
        "nothing stored from refused heartbeats"
    );
    assert!(hq.history("n2").is_empty());

    assert_eq!(hq.post(Some(&t1), &beat("n1", 7)).0, 200);
    assert_eq!(hq.history("n1").len(), 1);
    fleet(hq.repo.path())
        .args(["token", "revoke", "n1", "--db"])
        .arg(&hq.db)
        .assert()
        .success();
    assert_eq!(
        hq.post(Some(&t1), &beat("n1", 8)).0,
        401,
        "a revoked token is refused at once"
    );
    assert_eq!(hq.history("n1").len(), 1);
    fleet(hq.repo.path())
        .args(["token", "revoke", "n1", "--db"])
        .arg(&hq.db)
        .assert()
        .code(1);
    fleet(hq.repo.path())
        .args(["token", "issue", "n9", "--db"])
        .arg(&hq.db)
        .assert()
        .code(2);
}

#[test]
fn per_node_rate_limit() {
    let hq = Hq::new("", &["--rate-limit", "1"]);
    let t = hq.token("n1");
    let codes: Vec<u16> = (0..6)
        .map(|i| hq.post(Some(&t), &beat("n1", i)).0)
        .collect();
    assert_eq!(
        codes.iter().filter(|c| **c == 200).count(),
        2,
        "burst of 2 at 1/s: {codes:?}"
    );
    assert!(codes.contains(&429), "{codes:?}");
}

#[test]
fn every_answered_heartbeat_survives_kill_9() {
    let nodes: Vec<String> = (1..=8).map(|i| format!("d{i}")).collect();
    let extra: String = nodes
        .iter()
        .map(|n| format!("  {n}: {{ host: 127.0.0.1, role: common }}\n"))
        .collect();
    let mut hq = Hq::new(&extra, &["--history", "1000000", "--rate-limit", "1000000"]);
    let tokens: Vec<String> = nodes.iter().map(|n| hq.token(n)).collect();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, u64)>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    for (node, token) in nodes.iter().cloned().zip(tokens) {
        let (acked, stop, url) = (acked.clone(), stop.clone(), hq.url.clone());
        threads.push(std::thread::spawn(move || {
            for seq in 1.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match http(
                    "POST",
                    &format!("{url}/api/heartbeat"),
                    Some(&token),
                    Some(&beat(&node, seq)),
                ) {
                    Ok((200, _)) => acked.lock().expect("lock").push((node.clone(), seq)),
                    _ => break,
                }
            }
        }));
    }
    wait_for(30, "400 acknowledged heartbeats", || {
        (acked.lock().expect("lock").len() >= 400).then_some(())
    });
    hq.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().expect("thread");
    }
    let acked = acked.lock().expect("lock").clone();
    hq.start(&["--history", "1000000"]);
    let mut missing = Vec::new();
    for node in &nodes {
        let stored: BTreeSet<u64> = hq
            .history(node)
            .iter()
            .filter_map(|h| h["heartbeat"]["seq"].as_u64())
            .collect();
        for (n, seq) in acked.iter().filter(|(n, _)| n == node) {
            if !stored.contains(seq) {
                missing.push(format!("{n}#{seq}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged heartbeats lost after kill -9: {missing:?}",
        missing.len(),
        acked.len()
    );
    // Tokens survived the restart too.
    assert_eq!(hq.state("d1").0, "online");
}

#[test]
fn metrics_parse_as_prometheus_text() {
    let hq = Hq::new("", &[]);
    let t = hq.token("n1");
    let rich = serde_json::json!({
        "node": "n1", "agent_version": "test", "sent_at": "2026-11-23T10:00:00Z", "seq": 1,
        "resources": {
            "cores": 8, "load_1m": 1.5, "ram_gb": 32.0, "ram_used_gb": 12.5,
            "disks": [{"mount": "/", "total_gb": 500.0, "free_gb": 200.0}],
            "gpus": [{"vendor": "nvidia", "name": "RTX 4090", "vram_gb": 24.0}]
        },
        "services": {"ollama": {"up": true, "models": ["big:8b", "small:3b"]}}
    });
    assert_eq!(
        hq.post(Some(&t), &serde_json::to_vec(&rich).expect("json"))
            .0,
        200
    );
    assert_eq!(hq.post(Some("bad"), &beat("n1", 2)).0, 401);
    let scrape = hq.issue(&["--scrape", "prom"]);
    let (code, text) = hq.get("/metrics", Some(&scrape));
    assert_eq!(code, 200);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("parses as Prometheus text");
    let value = |name: &str, label: (&str, &str)| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(value("fleet_nodes", ("status", "online")), Some(1.0));
    assert_eq!(value("fleet_nodes", ("status", "offline")), Some(3.0));
    assert_eq!(
        value("fleet_hq_requests_total", ("status", "401")),
        Some(1.0)
    );
    assert!(value("fleet_node_heartbeat_age_seconds", ("node", "n1")).is_some());
    // What the heartbeat measured, per node.
    assert_eq!(value("fleet_node_up", ("node", "n1")), Some(1.0));
    assert_eq!(value("fleet_node_up", ("node", "n2")), Some(0.0));
    assert_eq!(value("fleet_node_load1", ("node", "n1")), Some(1.5));
    assert_eq!(
        value("fleet_node_memory_used_bytes", ("node", "n1")),
        Some(12.5e9)
    );
    assert_eq!(
        value("fleet_node_memory_total_bytes", ("node", "n1")),
        Some(32e9)
    );
    assert_eq!(
        value("fleet_node_disk_free_bytes", ("mount", "/")),
        Some(200e9)
    );
    assert_eq!(
        value("fleet_node_gpu_memory_bytes", ("name", "RTX 4090")),
        Some(24e9)
    );
    assert_eq!(value("fleet_node_models_loaded", ("node", "n1")), Some(2.0));
    // HQ's own process.
    let rss = scrape
        .samples
        .iter()
        .find(|s| s.metric == "process_resident_memory_bytes");
    assert!(
        rss.is_some_and(|s| matches!(s.value, prometheus_parse::Value::Gauge(v) if v > 1e6)),
        "{rss:?}"
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "process_cpu_seconds")
    );
    // The access log names each request, and a refused heartbeat is a warning with its reason.
    let log = hq.log();
    assert!(
        log.contains("route=/api/heartbeat status=200") && log.contains("node=n1"),
        "{log}"
    );
    assert!(
        log.contains("heartbeat refused: no valid token for node `n1`"),
        "{log}"
    );
    assert!(!log.contains(&t), "a token in the log");
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric.starts_with("fleet_hq_request_duration_seconds"))
    );
}

#[cfg(unix)]
#[test]
fn sighup_reloads_the_inventory() {
    let hq = Hq::new("", &[]);
    assert_eq!(hq.state("late").0, "absent");
    let inv = hq.repo.path().join("inventory/fleet.yaml");
    std::fs::write(
        &inv,
        inventory(hq.port, "  late: { host: 127.0.0.1, role: common }\n"),
    )
    .expect("write");
    let pid = hq.child.as_ref().expect("child").0.id();
    std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill -HUP");
    wait_for(10, "the reloaded inventory", || {
        (hq.state("late").0 == "offline").then_some(())
    });
}

/// A restart (the hq role's `restart hq`: SIGTERM, then a new process) keeps every
/// heartbeat HQ acknowledged: on SIGTERM HQ stops accepting at once, answers the requests it
/// is in the middle of (a heartbeat whose body is still arriving is stored and answered 200),
/// exits 0, and the new process has everything.
#[test]
fn a_restart_keeps_every_acknowledged_heartbeat_and_finishes_requests_in_flight() {
    use std::io::{Read, Write};
    let nodes: Vec<String> = (1..=4).map(|i| format!("g{i}")).collect();
    let extra: String = nodes
        .iter()
        .map(|n| format!("  {n}: {{ host: 127.0.0.1, role: common }}\n"))
        .collect();
    let mut hq = Hq::new(&extra, &["--history", "1000000", "--rate-limit", "1000000"]);
    let tokens: Vec<String> = nodes.iter().map(|n| hq.token(n)).collect();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, u64)>::new()));
    let mut threads = Vec::new();
    for (node, token) in nodes.iter().cloned().zip(tokens.clone()) {
        let (acked, url) = (acked.clone(), hq.url.clone());
        threads.push(std::thread::spawn(move || {
            // Until HQ stops answering (it refuses new connections once SIGTERM arrived).
            for seq in 1.. {
                match http(
                    "POST",
                    &format!("{url}/api/heartbeat"),
                    Some(&token),
                    Some(&beat(&node, seq)),
                ) {
                    Ok((200, _)) => acked.lock().expect("lock").push((node.clone(), seq)),
                    _ => break,
                }
            }
        }));
    }
    wait_for(30, "200 acknowledged heartbeats", || {
        (acked.lock().expect("lock").len() >= 200).then_some(())
    });
    // A heartbeat in flight: headers and half its body sent before SIGTERM.
    let body = beat("g1", 1_000_000);
    let (head, tail) = body.split_at(body.len() / 2);
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", hq.port)).expect("connect");
    slow.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    write!(
        slow,
        "POST /api/heartbeat HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        tokens[0],
        body.len()
    )
    .expect("headers");
    slow.write_all(head).expect("half the body");
    slow.flush().expect("flush");
    // HQ has taken the connection and read what was sent: its side of the socket has nothing
    // left to read (a connection still waiting to be accepted keeps its bytes queued).
    let ours = slow.local_addr().expect("local").port();
    wait_for(20, "HQ to read the half-sent heartbeat", || {
        let out = std::process::Command::new("ss")
            .args(["-Htn", "state", "established"])
            .arg(format!("sport = :{} and dport = :{ours}", hq.port))
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.split_whitespace().next() == Some("0")).then_some(())
    });
    let pid = hq.child.as_ref().expect("running").0.id();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    // It stops accepting at once...
    wait_for(5, "HQ to refuse new connections", || {
        std::net::TcpStream::connect(("127.0.0.1", hq.port))
            .is_err()
            .then_some(())
    });
    // ...and answers the request it is in the middle of.
    slow.write_all(tail).expect("the rest of the body");
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("\"stored\":true"),
        "{answer}"
    );
    acked.lock().expect("lock").push(("g1".into(), 1_000_000));
    let mut child = hq.child.take().expect("running");
    let status = wait_for(10, "HQ to exit", || child.0.try_wait().ok().flatten());
    assert!(status.success(), "graceful exit: {status:?}");
    for t in threads {
        t.join().expect("thread");
    }
    let acked = acked.lock().expect("lock").clone();
    hq.start(&["--history", "1000000"]);
    let mut missing = Vec::new();
    for node in &nodes {
        let stored: BTreeSet<u64> = hq
            .history(node)
            .iter()
            .filter_map(|h| h["heartbeat"]["seq"].as_u64())
            .collect();
        for (n, seq) in acked.iter().filter(|(n, _)| n == node) {
            if !stored.contains(seq) {
                missing.push(format!("{n}#{seq}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged heartbeats lost over a restart: {missing:?}",
        missing.len(),
        acked.len()
    );
    assert!(hq.log().contains("fleet HQ stopped"), "{}", hq.log());
}

#[test]
fn serve_listens_on_the_hq_url_by_default_and_shuts_down_on_sigterm() {
    let port = free_port();
    let case = parse_case(
        "hq",
        &format!("--- inventory/fleet.yaml\n{}", inventory(port, "")),
    );
    let repo = build_repo(&crate_root().join("tests/corpus/base"), &case);
    let mut child = spawn_fleet(repo.path(), &["serve"], &repo.path().join("serve.log"));
    wait_for(20, "serve on the hq_url port", || {
        http(
            "GET",
            &format!("http://127.0.0.1:{port}/healthz"),
            None,
            None,
        )
        .ok()
        .filter(|(c, _)| *c == 200)
    });
    assert!(
        repo.path().join(".fleet/hq.sqlite").exists(),
        "default store path"
    );
    std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    let status = wait_for(10, "serve to exit", || child.0.try_wait().ok().flatten());
    assert!(status.success(), "graceful exit: {status:?}");
}

#[test]
fn reads_need_a_token_of_the_right_kind() {
    let hq = Hq::new("", &[]);
    let node = hq.token("n1");
    let client = hq.issue(&["--client", "laptop"]);
    let admin = hq.issue(&["--admin", "root"]);
    let scrape = hq.issue(&["--scrape", "prom"]);
    let forged = "fleet_0000000000000000000000000000000000000000000000000000000000000000";
    let all = [
        "/api/nodes",
        "/api/nodes/n1",
        "/api/nodes/n2",
        "/api/routing",
        "/api/workers",
        "/metrics",
    ];
    for path in all {
        let (code, body) = hq.get(path, None);
        assert_eq!(code, 401, "{path} without a token: {body}");
        assert_eq!(
            body,
            r#"{"error":"missing `Authorization: Bearer <token>`: every HQ endpoint but /healthz needs a token"}"#
        );
        let (code, body) = hq.get(path, Some(forged));
        assert_eq!(code, 401, "{path} with a forged token: {body}");
        assert_eq!(body, r#"{"error":"invalid or revoked token"}"#);
    }
    assert_eq!(hq.get("/healthz", None).0, 200);
    let allowed = |token: &str, path: &str| -> bool {
        let (code, body) = hq.get(path, Some(token));
        assert!(code != 401, "{path}: {body}");
        if code == 403 {
            // Only the reason: no node, no data.
            let v: serde_json::Value = serde_json::from_str(&body).expect("json");
            assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{body}");
            assert!(!body.contains("n2") && !body.contains("llm"), "{body}");
        }
        code != 403
    };
    let can =
        |token: &str| -> Vec<&str> { all.iter().copied().filter(|p| allowed(token, p)).collect() };
    assert_eq!(can(&node), ["/api/nodes/n1", "/api/routing"]);
    assert_eq!(
        can(&client),
        [
            "/api/nodes",
            "/api/nodes/n1",
            "/api/nodes/n2",
            "/api/routing",
            "/api/workers"
        ]
    );
    assert_eq!(can(&admin), all);
    assert_eq!(can(&scrape), ["/metrics"]);
    // Only node tokens post heartbeats.
    assert_eq!(hq.post(Some(&client), &beat("n1", 1)).0, 401);
    assert_eq!(hq.post(Some(&node), &beat("n1", 1)).0, 200);
}

#[test]
fn tokens_are_listed_rotated_with_overlap_and_revoked() {
    let hq = Hq::new("", &[]);
    let client = hq.issue(&["--client", "laptop"]);
    let node = hq.token("n1");
    assert_eq!(hq.get("/api/nodes", Some(&client)).0, 200);
    let list = |json: bool| -> String {
        let out = fleet(hq.repo.path())
            .args(["token", "list", "--db"])
            .arg(&hq.db)
            .args(if json { vec!["--json"] } else { vec![] })
            .output()
            .expect("list");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The first use is recorded soon (by HQ's writer thread, in a batch).
    let listed = wait_for(10, "laptop's last use", || {
        let v: serde_json::Value = serde_json::from_str(&list(true)).expect("json");
        let laptop = v
            .as_array()?
            .iter()
            .find(|t| t["name"] == "laptop")?
            .clone();
        laptop["last_used"].is_string().then_some(v)
    });
    let kinds: Vec<(String, String)> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or_default().to_string(),
                t["kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("hq-local".to_string(), "client".to_string()),
            ("laptop".into(), "client".into()),
            ("n1".into(), "node".into())
        ]
    );
    let table = list(false);
    assert!(
        table.contains("laptop") && table.contains("never"),
        "{table}"
    );
    for text in [listed.to_string(), table] {
        assert!(
            !text.contains(&client) && !text.contains(&node),
            "no secret listed"
        );
        assert!(
            !text.contains(&fleet::hq::tokens::hash(&client)),
            "no hash listed"
        );
    }

    // Rotation: both secrets work during the overlap, then only the new one.
    let out = fleet(hq.repo.path())
        .args(["token", "rotate", "laptop", "--overlap", "2s", "--db"])
        .arg(&hq.db)
        .output()
        .expect("rotate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_ne!(rotated, client);
    assert_eq!(
        hq.get("/api/nodes", Some(&client)).0,
        200,
        "old, in the overlap"
    );
    assert_eq!(hq.get("/api/nodes", Some(&rotated)).0, 200, "new");
    wait_for(10, "the overlap to end", || {
        (hq.get("/api/nodes", Some(&client)).0 == 401).then_some(())
    });
    assert_eq!(hq.get("/api/nodes", Some(&rotated)).0, 200);
    // A rotated node token: the agent's old secret keeps posting during the overlap.
    fleet(hq.repo.path())
        .args(["token", "rotate", "n1", "--overlap", "10m", "--out"])
        .arg(hq.repo.path().join("n1.new"))
        .arg("--db")
        .arg(&hq.db)
        .assert()
        .success();
    assert_eq!(hq.post(Some(&node), &beat("n1", 1)).0, 200);

    fleet(hq.repo.path())
        .args(["token", "revoke", "laptop", "--db"])
        .arg(&hq.db)
        .assert()
        .success();
    assert_eq!(hq.get("/api/nodes", Some(&rotated)).0, 401);
    // Names are shared by kinds: a client token does not replace n1's agent token.
    fleet(hq.repo.path())
        .args(["token", "issue", "--client", "n1", "--db"])
        .arg(&hq.db)
        .assert()
        .code(2);
    fleet(hq.repo.path())
        .args(["token", "rotate", "ghost", "--db"])
        .arg(&hq.db)
        .assert()
        .code(1);
}

#[test]
fn commands_that_read_hq_send_the_client_token_or_say_why_not() {
    let hq = Hq::new("", &[]);
    let token = hq.client();
    let out_dir = hq.repo.path().join("out");
    // With the token `fleet serve` left in .fleet/hq.token: live.
    let out = fleet(hq.repo.path())
        .args(["render", "routing", "--live", "--out"])
        .arg(&out_dir)
        .output()
        .expect("render");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("node status from HQ"), "{err}");
    // Without a token: said clearly, and it goes on without live data.
    std::fs::remove_file(hq.repo.path().join(".fleet/hq.token")).expect("rm");
    let out = fleet(hq.repo.path())
        .args(["render", "routing", "--live", "--out"])
        .arg(&out_dir)
        .output()
        .expect("render");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("HQ refused the read: no token; set FLEET_HQ_TOKEN or put a client token in .fleet/hq.token (fleet token issue --client NAME)"),
        "{err}"
    );
    let out = fleet(hq.repo.path())
        .args(["route", "t", "--json"])
        .output()
        .expect("route");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("inventory only: ") && text.contains("HQ refused the read: no token"),
        "{text}"
    );
    // FLEET_HQ_TOKEN works without the file.
    let out = fleet(hq.repo.path())
        .env("FLEET_HQ_TOKEN", &token)
        .args(["route", "t", "--json"])
        .output()
        .expect("route");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("live status from HQ"), "{text}");
    // A token of the wrong kind: refused, with HQ's reason.
    let node = hq.token("n1");
    let out = fleet(hq.repo.path())
        .env("FLEET_HQ_TOKEN", &node)
        .args(["route", "t", "--json"])
        .output()
        .expect("route");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "HQ refused the read: 403 (a node token reads only its own node and /api/routing)"
        ),
        "{text}"
    );
}
