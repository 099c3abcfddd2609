//! `fleet check` against real listeners on loopback: an Ollama stand-in with and without a
//! model, closed ports, black-holed listeners, a real `fleet serve` with fresh and stale
//! heartbeats, and a webhook receiver that records what it is sent.

mod support;

use support::{
    Child, black_hole, build_repo, crate_root, fleet, free_port, http, http_routes, parse_case,
    serve_ssh_banner, spawn_fleet, ssh_banner, wait_for, webhook,
};

struct Fleet {
    repo: tempfile::TempDir,
    hq_url: String,
    _serve: Option<Child>,
    _agents: Vec<Child>,
    ports: std::collections::BTreeMap<&'static str, u16>,
}

fn ollama(models: &[&str]) -> u16 {
    let tags = serde_json::json!({ "models": models.iter().map(|m| serde_json::json!({ "name": m })).collect::<Vec<_>>() });
    let url = http_routes(vec![("/api/tags", tags.to_string())]);
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

fn beat(node: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "node": node, "agent_version": "test", "sent_at": "2026-11-23T10:00:00Z" })).expect("json")
}

/// hq1 (hq), good (all fine), missing (model missing), hole (Ollama black-holed), down (ssh
/// port closed), silent (stale heartbeat).
fn setup(with_hq: bool) -> Fleet {
    let hq_port = free_port();
    let ssh = ssh_banner(); // an SSH server as far as the probe goes: it identifies itself
    let mut ports = std::collections::BTreeMap::new();
    ports.insert("down", free_port());
    let node = |name: &str, role: &str, ssh_port: u16, ollama_port: u16, models: &str| {
        format!(
            "  {name}: {{ host: 127.0.0.1, role: {role}, models: [{models}], hardware: {{ os: linux, ram_gb: 32 }}, vars: {{ ssh_port: {ssh_port}, ollama_port: {ollama_port} }} }}\n"
        )
    };
    let inv = format!(
        "fleet: {{ name: t, hq: hq1, hq_url: \"http://127.0.0.1:{hq_port}\" }}\nvars: {{ app_dir: /opt/app }}\nnodes:\n{}{}{}{}{}{}",
        node("hq1", "hq", ssh, ollama(&["small:1b"]), "small:1b"),
        node(
            "good",
            "worker",
            ssh,
            ollama(&["big:8b", "other:1b"]),
            "big:8b"
        ),
        node("missing", "worker", ssh, ollama(&["other:1b"]), "big:8b"),
        node("hole", "worker", ssh, black_hole(), "big:8b"),
        node("down", "common", ports["down"], 1, ""),
        node("silent", "common", ssh, 1, ""),
    );
    let repo = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case("c", &format!("--- inventory/fleet.yaml\n{inv}")),
    );
    let hq_url = format!("http://127.0.0.1:{hq_port}");
    let serve = with_hq.then(|| {
        let db = repo.path().join("hq.sqlite").display().to_string();
        let c = spawn_fleet(
            repo.path(),
            &[
                "serve",
                "--listen",
                &format!("127.0.0.1:{hq_port}"),
                "--db",
                &db,
            ],
            &repo.path().join("serve.log"),
        );
        wait_for(20, "serve", || {
            http("GET", &format!("{hq_url}/healthz"), None, None)
                .ok()
                .filter(|(c, _)| *c == 200)
        });
        let tokens: std::collections::BTreeMap<&str, String> =
            ["hq1", "good", "missing", "hole", "down", "silent"]
                .into_iter()
                .map(|n| {
                    let out = fleet(repo.path())
                        .args(["token", "issue", n, "--db", &db])
                        .output()
                        .expect("token");
                    (n, String::from_utf8_lossy(&out.stdout).trim().to_string())
                })
                .collect();
        // `silent` reported once, long enough ago; the others have agents reporting all along.
        assert_eq!(
            http(
                "POST",
                &format!("{hq_url}/api/heartbeat"),
                Some(&tokens["silent"]),
                Some(&beat("silent"))
            )
            .expect("post")
            .0,
            200
        );
        wait_for(10, "a stale heartbeat", || {
            let (_, body) = http(
                "GET",
                &format!("{hq_url}/api/nodes/silent"),
                Some(&support::hq_token(repo.path())),
                None,
            )
            .ok()?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (v["heartbeat_age_secs"].as_f64()? > 3.0).then_some(())
        });
        let agents = tokens
            .iter()
            .filter(|(n, _)| **n != "silent")
            .map(|(n, t)| {
                let tf = repo.path().join(format!("{n}.token"));
                std::fs::write(&tf, t).expect("token file");
                let tf = tf.display().to_string();
                let log = repo.path().join(format!("agent-{n}.log"));
                spawn_fleet(
                    repo.path(),
                    &[
                        "agent",
                        "--hq",
                        &hq_url,
                        "--node",
                        n,
                        "--token-file",
                        &tf,
                        "--interval",
                        "150ms",
                        "--ollama-url",
                        "http://127.0.0.1:9",
                    ],
                    &log,
                )
            })
            .collect::<Vec<_>>();
        for n in ["hq1", "good", "missing", "hole", "down"] {
            wait_for(20, "agents reporting", || {
                let (_, body) = http(
                    "GET",
                    &format!("{hq_url}/api/nodes/{n}"),
                    Some(&support::hq_token(repo.path())),
                    None,
                )
                .ok()?;
                let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                (v["heartbeat_age_secs"].as_f64()? < 1.0).then_some(())
            });
        }
        (c, agents)
    });
    let (serve, agents) = match serve {
        Some((s, a)) => (Some(s), a),
        None => (None, Vec::new()),
    };
    Fleet {
        repo,
        hq_url,
        _serve: serve,
        _agents: agents,
        ports,
    }
}

fn check(f: &Fleet, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let out = fleet(f.repo.path())
        .args([
            "check",
            "--json",
            // Loose enough that a probe of a healthy local listener never times out while the
            // rest of the suite loads the machine; black-holed probes wait this long.
            "--timeout",
            "2s",
            "--heartbeat-max-age",
            "3s",
        ])
        .args(extra)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let v = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or(serde_json::Value::Null);
    (
        out.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn node<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["node"] == name)
        .expect("node present")
}

#[test]
fn states_reasons_and_exit_code() {
    let f = setup(true);
    let (code, v, err) = check(&f, &[]);
    assert_eq!(code, 1, "not all online: {err}");
    let state = |n: &str| node(&v, n)["state"].as_str().expect("state").to_string();
    let reasons = |n: &str| {
        node(&v, n)["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .map(|r| r.as_str().expect("str").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(state("hq1"), "online", "{:?}", reasons("hq1"));
    assert_eq!(state("good"), "online", "{:?}", reasons("good"));
    assert_eq!(state("missing"), "degraded");
    let ollama_port = node(&v, "missing")["checks"]["ollama"]["target"]
        .as_str()
        .expect("target")
        .to_string();
    let addr = ollama_port
        .trim_start_matches("http://")
        .trim_end_matches("/api/tags")
        .to_string();
    assert_eq!(
        reasons("missing"),
        vec![format!(
            "ollama on {addr} answers but big:8b is missing; run `fleet provision missing`"
        )]
    );
    assert_eq!(state("hole"), "degraded");
    assert!(
        reasons("hole")[0].ends_with("does not answer: no answer within 2s"),
        "{:?}",
        reasons("hole")
    );
    assert_eq!(state("down"), "offline");
    assert_eq!(
        reasons("down"),
        vec![format!(
            "down is unreachable: ssh port 127.0.0.1:{} (connection refused)",
            f.ports["down"]
        )]
    );
    assert_eq!(state("silent"), "offline");
    assert!(
        reasons("silent")[0].starts_with("no heartbeat from silent for "),
        "{:?}",
        reasons("silent")
    );
    assert_eq!(
        v["summary"],
        serde_json::json!({ "degraded": 2, "offline": 2, "online": 2 })
    );
    assert_eq!(v["hq"]["ok"], true);
    // One node alone, all fine: exit 0.
    let (code, v, _) = check(&f, &["--node", "good"]);
    assert_eq!(code, 0);
    assert_eq!(v["nodes"].as_array().expect("nodes").len(), 1);
    // The human dashboard says the same.
    let out = fleet(f.repo.path())
        .args([
            "check",
            // Loose enough that a probe of a healthy local listener never times out while the
            // rest of the suite loads the machine; black-holed probes wait this long.
            "--timeout",
            "2s",
            "--heartbeat-max-age",
            "3s",
            "--limit",
            "missing,good",
        ])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 online, 1 degraded, 0 offline"), "{text}");
}

#[test]
fn alerts_fire_once_per_transition() {
    let f = setup(true);
    let (hook, got) = webhook();
    let db = f.repo.path().join("alerts.sqlite").display().to_string();
    let args = ["--alert", "--webhook-url", &hook, "--db", &db];
    let (_, _, err) = check(&f, &args);
    assert!(err.contains("alert sent"), "{err}");
    {
        let bodies = got.lock().expect("lock");
        assert_eq!(bodies.len(), 1, "one message for the first sweep");
        let p: serde_json::Value = serde_json::from_str(&bodies[0]).expect("json");
        let changed: Vec<&str> = p["transitions"]
            .as_array()
            .expect("t")
            .iter()
            .map(|t| t["node"].as_str().expect("node"))
            .collect();
        assert_eq!(
            changed,
            ["missing", "hole", "down", "silent"],
            "first sweep: every node not online"
        );
        assert!(
            p["text"]
                .as_str()
                .expect("text")
                .contains("*down*: unknown → offline"),
            "{p}"
        );
    }
    check(&f, &args);
    check(&f, &args);
    let bodies = got.lock().expect("lock").clone();
    assert_eq!(
        bodies.len(),
        1,
        "repeated sweeps with no change send nothing: {bodies:?}"
    );
    // `down` comes up: its ssh port opens and identifies itself as SSH.
    serve_ssh_banner(
        std::net::TcpListener::bind(("127.0.0.1", f.ports["down"])).expect("open the port"),
    );
    let (_, v, _) = check(&f, &args);
    assert_eq!(node(&v, "down")["state"], "online");
    let bodies = got.lock().expect("lock").clone();
    assert_eq!(bodies.len(), 2);
    let p: serde_json::Value = serde_json::from_str(&bodies[1]).expect("json");
    assert_eq!(
        p["transitions"],
        serde_json::json!([{ "node": "down", "from": "offline", "to": "online", "reasons": [] }])
    );
}

#[test]
fn a_failing_webhook_is_reported_not_fatal_and_retried() {
    let f = setup(true);
    let db = f.repo.path().join("alerts.sqlite").display().to_string();
    let dead = format!("http://127.0.0.1:{}/hook", free_port());
    let (code, _, err) = check(&f, &["--alert", "--webhook-url", &dead, "--db", &db]);
    assert_eq!(code, 1, "the sweep's verdict, not the webhook's");
    assert!(
        err.contains("could not post the alert for 4 changes"),
        "{err}"
    );
    let (hook, got) = webhook();
    check(&f, &["--alert", "--webhook-url", &hook, "--db", &db]);
    assert_eq!(
        got.lock().expect("lock").len(),
        1,
        "the unsent changes go out with the next sweep"
    );
}

#[test]
fn hq_down_is_a_reason_on_the_hq_node() {
    let f = setup(false);
    let (code, v, _) = check(&f, &[]);
    assert_eq!(code, 1);
    assert_eq!(v["hq"]["ok"], false);
    let hq1 = node(&v, "hq1");
    assert_eq!(hq1["state"], "degraded");
    assert!(
        hq1["reasons"][0]
            .as_str()
            .expect("reason")
            .starts_with(&format!("the HQ registry at {} does not answer", f.hq_url)),
        "{hq1}"
    );
    assert_eq!(
        node(&v, "good")["state"],
        "online",
        "without HQ, heartbeats are not judged"
    );
}

#[test]
fn alert_without_a_webhook_is_a_usage_error() {
    let f = setup(false);
    fleet(f.repo.path())
        .args(["check", "--alert"])
        .env_remove("FLEET_WEBHOOK_URL")
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "--alert needs `--webhook-url URL`",
        ));
    fleet(f.repo.path())
        .args(["check", "--node", "god"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("did you mean `good`?"));
}
