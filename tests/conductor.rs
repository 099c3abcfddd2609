//! The routing table reaches the conductor: a real `fleet serve` keeps the conductor's file
//! equal to the live table and reloads a stand-in conductor (tests/standins/conductor, a real
//! process that counts its SIGHUPs and keeps what it read) only when the content changes, with
//! hysteresis against flapping nodes. And HQ's SIGHUP reload runs `fleet validate`'s checks.

mod support;

use std::path::{Path, PathBuf};

use support::{
    Child, build_repo, crate_root, fleet, free_port, http, parse_case, spawn_fleet, wait_for,
};

struct Setup {
    repo: tempfile::TempDir,
    url: String,
    port: u16,
    db: PathBuf,
    dir: PathBuf,
}

fn inventory(port: u16, dir: &Path, hq_vars: &str, extra: &str) -> String {
    format!(
        "fleet: {{ name: t, hq: hq1, hq_url: \"http://127.0.0.1:{port}\" }}\nvars: {{ app_dir: /opt/app }}\nnodes:\n  hq1: {{ host: 127.0.0.1, role: hq, vars: {{ conductor_routing_file: \"{d}/openclaw_workers.json\", {hq_vars} }} }}\n  llm1: {{ host: 127.0.0.1, role: worker, models: [big:8b], hardware: {{ os: linux, ram_gb: 32 }} }}\n  llm2: {{ host: 127.0.0.1, role: worker, models: [big:8b], hardware: {{ os: linux, ram_gb: 32 }} }}\n{extra}routing:\n  rules:\n    - {{ task: t, model: big:8b }}\n",
        d = dir.display()
    )
}

/// A repo whose HQ node keeps the conductor's table in `<repo>/conductor/`; `@DIR@` in
/// `hq_vars` stands for that directory.
fn setup(hq_vars: &str) -> Setup {
    let port = free_port();
    let case = parse_case(
        "c",
        "--- inventory/fleet.yaml
nodes: {}
",
    );
    let repo = build_repo(&crate_root().join("tests/corpus/base"), &case);
    let dir = repo.path().join("conductor");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let vars = hq_vars.replace("@DIR@", &dir.display().to_string());
    std::fs::write(
        repo.path().join("inventory/fleet.yaml"),
        inventory(port, &dir, &vars, ""),
    )
    .expect("write");
    Setup {
        url: format!("http://127.0.0.1:{port}"),
        db: repo.path().join("hq.sqlite"),
        dir,
        port,
        repo,
    }
}

impl Setup {
    fn serve(&self, extra: &[&str]) -> Child {
        let db = self.db.display().to_string();
        let listen = format!("127.0.0.1:{}", self.port);
        let mut args = vec!["serve", "--listen", &listen, "--db", &db];
        args.extend_from_slice(extra);
        let child = spawn_fleet(self.repo.path(), &args, &self.repo.path().join("serve.log"));
        wait_for(20, "fleet serve to answer", || {
            http("GET", &format!("{}/healthz", self.url), None, None)
                .ok()
                .filter(|(c, _)| *c == 200)
        });
        child
    }

    fn token(&self, node: &str) -> String {
        let out = fleet(self.repo.path())
            .args(["token", "issue", node, "--db"])
            .arg(&self.db)
            .output()
            .expect("token issue");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn beat(&self, node: &str, token: &str, seq: u64) {
        let body = serde_json::json!({ "node": node, "agent_version": "test", "sent_at": "2026-12-01T10:00:00Z", "seq": seq, "services": { "ollama": { "up": true, "models": ["big:8b"] } } });
        let (code, text) = http(
            "POST",
            &format!("{}/api/heartbeat", self.url),
            Some(token),
            Some(body.to_string().as_bytes()),
        )
        .expect("heartbeat");
        assert_eq!(code, 200, "{text}");
    }

    fn table(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.join("openclaw_workers.json")).expect("table");
        serde_json::from_str(&text).expect("json")
    }

    fn pool(&self) -> Vec<String> {
        self.table()["rules"][0]["pool"]
            .as_array()
            .expect("pool")
            .iter()
            .map(|v| v.as_str().expect("name").to_string())
            .collect()
    }

    fn reads(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("reads.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn conductor(&self) -> Child {
        let child = std::process::Command::new(crate_root().join("tests/standins/conductor"))
            .arg(self.dir.join("openclaw_workers.json"))
            .arg(self.dir.join("openclaw.pid"))
            .arg(&self.dir)
            .spawn()
            .expect("conductor");
        wait_for(10, "the conductor's pidfile", || {
            std::fs::read_to_string(self.dir.join("openclaw.pid"))
                .ok()
                .filter(|s| !s.trim().is_empty())
        });
        Child(child)
    }
}

/// Keeps a node online from a thread until dropped.
struct Beating(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for Beating {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn keep_beating(url: String, node: &'static str, token: String, every_ms: u64) -> Beating {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let mut seq = 0;
        while !s.load(std::sync::atomic::Ordering::SeqCst) {
            seq += 1;
            let body = serde_json::json!({ "node": node, "agent_version": "test", "sent_at": "2026-12-01T10:00:00Z", "seq": seq, "services": { "ollama": { "up": true, "models": ["big:8b"] } } });
            let _ = http(
                "POST",
                &format!("{url}/api/heartbeat"),
                Some(&token),
                Some(body.to_string().as_bytes()),
            );
            std::thread::sleep(std::time::Duration::from_millis(every_ms));
        }
    });
    Beating(stop)
}

#[test]
fn the_conductor_reads_the_live_table_and_reloads_once_per_change() {
    let s = setup("conductor_pidfile: \"@DIR@/openclaw.pid\", routing_hysteresis: 1s");

    let _conductor = s.conductor();
    assert_eq!(
        s.reads(),
        vec![
            "read 1: no table at ".to_string()
                + &s.dir.join("openclaw_workers.json").display().to_string()
        ]
    );
    let _hq = s.serve(&["--offline-after", "2s"]);
    // Written before HQ answered, and the conductor was told.
    assert_eq!(s.pool(), Vec::<String>::new(), "nobody has reported yet");
    wait_for(10, "the conductor's second read", || {
        (s.reads().len() == 2).then_some(())
    });
    // The same bytes `fleet render --live` writes.
    let out = tempfile::tempdir().expect("out");
    fleet(s.repo.path())
        .args(["render", "routing", "--live", "--out"])
        .arg(out.path())
        .assert()
        .success();
    assert_eq!(
        std::fs::read(out.path().join("routing/openclaw_workers.json")).expect("rendered"),
        std::fs::read(s.dir.join("openclaw_workers.json")).expect("live"),
        "HQ's file is what `fleet render --live` renders"
    );

    // llm1 comes online: after the hysteresis the table routes to it, one reload.
    let t1 = s.token("llm1");
    let beating = keep_beating(s.url.clone(), "llm1", t1, 200);
    wait_for(15, "llm1 in the conductor's pool", || {
        (s.pool() == vec!["llm1".to_string()]).then_some(())
    });
    wait_for(5, "the third read", || (s.reads().len() == 3).then_some(()));
    let read3 = std::fs::read(s.dir.join("read-3.json")).expect("read 3");
    assert_eq!(
        read3,
        std::fs::read(s.dir.join("openclaw_workers.json")).expect("file"),
        "the conductor read the new table"
    );
    // Nothing changes: no more reloads.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(s.reads().len(), 3, "{:?}", s.reads());

    // llm1 goes silent: offline after 2 s, then held 1 s, then one reload.
    drop(beating);
    wait_for(15, "llm1 out of the pool", || {
        s.pool().is_empty().then_some(())
    });
    wait_for(5, "the fourth read", || {
        (s.reads().len() == 4).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(s.reads().len(), 4, "{:?}", s.reads());
    let log = std::fs::read_to_string(s.repo.path().join("serve.log")).expect("log");
    assert!(log.contains("conductor reloaded (SIGHUP to pid"), "{log}");
}

#[test]
fn a_flapping_node_does_not_reload_the_conductor() {
    let s = setup(
        "conductor_reload_command: [\"sh\", \"-c\", \"echo reload >> reloads.log\"], routing_hysteresis: 4s",
    );
    let _hq = s.serve(&["--offline-after", "1s"]);
    let reloads = |s: &Setup| {
        std::fs::read_to_string(s.repo.path().join("reloads.log"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    wait_for(10, "the first write", || (reloads(&s) == 1).then_some(()));
    // llm2 beats once every 1.5 s: online for 1 s, offline for 0.5 s, never 4 s either way.
    let t2 = s.token("llm2");
    for seq in 0..6 {
        s.beat("llm2", &t2, seq + 1);
        std::thread::sleep(std::time::Duration::from_millis(1500));
    }
    assert_eq!(reloads(&s), 1, "a flapping node changed nothing");
    assert!(s.pool().is_empty());
    // Held online past the hysteresis, it enters the pool: one more reload.
    let beating = keep_beating(s.url.clone(), "llm2", t2, 200);
    wait_for(15, "llm2 in the pool", || {
        (s.pool() == vec!["llm2".to_string()]).then_some(())
    });
    wait_for(5, "the second reload", || (reloads(&s) == 2).then_some(()));
    drop(beating);
}

#[cfg(unix)]
#[test]
fn sighup_refuses_an_inventory_that_validate_refuses() {
    let s = setup("routing_hysteresis: 0s");
    let hq = s.serve(&[]);
    let inv = s.repo.path().join("inventory/fleet.yaml");
    let good = std::fs::read_to_string(&inv).expect("inv");
    let state = |name: &str| -> String {
        let (_, body) = http(
            "GET",
            &format!("{}/api/nodes", s.url),
            Some(&support::hq_token(s.repo.path())),
            None,
        )
        .expect("nodes");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["name"] == name)
            .map_or("absent".into(), |n| {
                n["status"].as_str().unwrap_or("").to_string()
            })
    };
    let hup = || {
        std::process::Command::new("kill")
            .args(["-HUP", &hq.0.id().to_string()])
            .status()
            .expect("kill -HUP");
    };
    // A node whose role does not exist: `fleet validate` refuses it, so HQ does too.
    std::fs::write(
        &inv,
        good.replace(
            "routing:",
            "  late: { host: 127.0.0.1, role: nosuchrole }\nrouting:",
        ),
    )
    .expect("write");
    fleet(s.repo.path()).arg("validate").assert().code(2);
    hup();
    let log = s.repo.path().join("serve.log");
    wait_for(10, "the refusal in the log", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains("inventory not reloaded"))
    });
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("nosuchrole"),
        "the log names the error: {text}"
    );
    assert_eq!(state("late"), "absent", "the previous inventory is kept");
    // A conductor setting of the wrong shape is refused the same way.
    std::fs::write(
        &inv,
        good.replace("routing_hysteresis: 0s", "routing_hysteresis: soon"),
    )
    .expect("write");
    fleet(s.repo.path()).arg("validate").assert().code(2);
    // Fixed, it is taken.
    std::fs::write(
        &inv,
        good.replace(
            "routing:",
            "  late: { host: 127.0.0.1, role: common }\nrouting:",
        ),
    )
    .expect("write");
    hup();
    wait_for(10, "the reloaded inventory", || {
        (state("late") == "offline").then_some(())
    });
}

#[test]
fn draining_reaches_the_conductors_table_at_once_despite_the_hysteresis() {
    let s = setup(
        "conductor_reload_command: [\"sh\", \"-c\", \"echo reload >> reloads.log\"], routing_hysteresis: 60s",
    );
    // llm1 reported to an earlier HQ: the new one takes it as online on its first look.
    let t1 = s.token("llm1");
    {
        let _first = s.serve(&[]);
        s.beat("llm1", &t1, 1);
    }
    let _beating = keep_beating(s.url.clone(), "llm1", t1, 200);
    let _hq = s.serve(&[]);
    wait_for(10, "llm1 in the pool", || {
        (s.pool() == vec!["llm1".to_string()]).then_some(())
    });
    fleet(s.repo.path())
        .args([
            "token",
            "issue",
            "--admin",
            "ops",
            "--out",
            "admin.token",
            "--db",
        ])
        .arg(&s.db)
        .assert()
        .success();
    // Drained: out of the conductor's table within seconds, not after the 60 s hysteresis.
    fleet(s.repo.path())
        .args(["drain", "llm1", "--token-file", "admin.token"])
        .assert()
        .success();
    wait_for(5, "llm1 out of the conductor's table", || {
        s.pool().is_empty().then_some(())
    });
    // Undone: back at once too.
    fleet(s.repo.path())
        .args(["drain", "--undo", "llm1", "--token-file", "admin.token"])
        .assert()
        .success();
    wait_for(5, "llm1 back in the conductor's table", || {
        (s.pool() == vec!["llm1".to_string()]).then_some(())
    });
}
