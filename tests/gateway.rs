//! The HQ gateway as real processes on loopback: `fleet serve`, `fleet agent`s reporting real
//! heartbeats, and stand-ins for each node's Ollama chat API (tests/support/chat.rs) that
//! record what they receive and can be told to fail.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::chat::{Mode, stream_pieces};
use support::hq_fleet::{Answer, Fleet, Node, chat_body, request};
use support::{fleet, wait_for};

const RULES: &str = "    - { task: chat, model: m:8b }\n";

fn two(serve_args: &[&str]) -> Fleet {
    Fleet::new(
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
        RULES,
        serve_args,
    )
}

#[test]
fn the_highest_priority_worker_answers_with_the_rules_model() {
    let f = two(&[]);
    let a = f.chat("task:chat", false);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("x-fleet-worker"), "w1");
    assert_eq!(a.header("x-fleet-attempts"), "1");
    assert_eq!(a.json()["choices"][0]["message"]["content"], "w1 answers");
    let got = f.stand_ins["w1"].received.lock().expect("lock").clone();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0]["model"], "m:8b",
        "`task:chat` becomes the rule's model"
    );
    assert_eq!(got[0]["messages"][0]["content"], "hello");
    // A model name routes the same way.
    let a = f.chat("m:8b", false);
    assert_eq!((a.status, a.header("x-fleet-worker")), (200, "w1"));
    // /v1/models lists the task and the model.
    let m = request("GET", &format!("{}/v1/models", f.url), Some(&f.client), b"").json();
    let ids: Vec<&str> = m["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids, ["task:chat", "m:8b"]);
}

#[test]
fn busy_workers_are_skipped_and_never_get_more_than_max_concurrent() {
    let f = two(&[]);
    for c in f.stand_ins.values() {
        c.set(Mode::Ok {
            latency: Duration::from_millis(300),
        });
    }
    let url = format!("{}/v1/chat/completions", f.url);
    let handles: Vec<_> = (0..200)
        .map(|_| {
            let (url, token) = (url.clone(), f.client.clone());
            std::thread::spawn(move || {
                request(
                    "POST",
                    &url,
                    Some(&token),
                    &chat_body("task:chat", false, "x"),
                )
            })
        })
        .collect();
    let answers: Vec<Answer> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for a in &answers {
        *by_status.entry(a.status).or_default() += 1;
        if a.status == 503 {
            assert_eq!(a.header("retry-after"), "1");
            assert!(
                a.json()["error"]["message"]
                    .as_str()
                    .expect("msg")
                    .contains("busy: w1, w2"),
                "{}",
                a.body
            );
        }
    }
    assert_eq!(
        by_status.keys().copied().collect::<Vec<_>>(),
        [200, 503],
        "{by_status:?}"
    );
    assert!(by_status[&200] >= 5, "{by_status:?}");
    assert_eq!(f.stand_ins["w1"].max_in_flight.load(Ordering::SeqCst), 2);
    assert!(f.stand_ins["w2"].max_in_flight.load(Ordering::SeqCst) <= 3);
    let w2 = answers
        .iter()
        .filter(|a| a.header("x-fleet-worker") == "w2")
        .count();
    assert!(w2 > 0, "with w1 full, requests went to w2");
}

#[test]
fn failures_before_the_first_byte_move_the_request_on() {
    let f = Fleet::new(
        &[
            Node {
                name: "dead",
                priority: 99,
                max_concurrent: 4,
                models: &["m:8b"],
            },
            Node {
                name: "w1",
                priority: 90,
                max_concurrent: 4,
                models: &["m:8b"],
            },
            Node {
                name: "w2",
                priority: 50,
                max_concurrent: 4,
                models: &["m:8b"],
            },
        ],
        &["dead"],
        RULES,
        &["--upstream-timeout", "1s", "--breaker-failures", "100"],
    );
    for (mode, why) in [
        (Mode::Status(500), "answered 500"),
        (Mode::Reset, "connection broken"),
        (Mode::Hang, "no answer within 1s"),
    ] {
        f.stand_ins["w1"].set(mode);
        let t0 = Instant::now();
        let a = f.chat("task:chat", false);
        assert_eq!(a.status, 200, "{mode:?}: {}", a.body);
        assert_eq!(a.header("x-fleet-worker"), "w2", "{mode:?}");
        assert_eq!(
            a.header("x-fleet-attempts"),
            "3",
            "{mode:?}: dead (refused), w1, w2"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{mode:?} took {:?}",
            t0.elapsed()
        );
        let st = request(
            "GET",
            &format!("{}/api/gateway", f.url),
            Some(&f.client),
            b"",
        )
        .json();
        let w1 = st["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .find(|w| w["name"] == "w1")
            .cloned()
            .expect("w1");
        let last = w1["recent_errors"]
            .as_array()
            .expect("errors")
            .last()
            .cloned()
            .expect("an error");
        assert!(
            last["error"].as_str().expect("text").contains(why),
            "{mode:?}: {last}"
        );
        let dead = st["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .find(|w| w["name"] == "dead")
            .cloned()
            .expect("dead");
        assert!(
            dead["recent_errors"][0]["error"]
                .as_str()
                .expect("text")
                .starts_with("cannot connect"),
            "{dead}"
        );
    }
    // Every candidate failing is a 502 that says why, for each.
    f.stand_ins["w1"].set(Mode::Status(500));
    f.stand_ins["w2"].set(Mode::Status(503));
    let a = f.chat("task:chat", false);
    assert_eq!(a.status, 502, "{}", a.body);
    let msg = a.json()["error"]["message"]
        .as_str()
        .expect("msg")
        .to_string();
    assert!(
        msg.contains("dead: cannot connect")
            && msg.contains("w1: answered 500")
            && msg.contains("w2: answered 503"),
        "{msg}"
    );
}

#[test]
fn a_failing_worker_cools_down_then_a_probe_brings_it_back() {
    let f = two(&["--breaker-failures", "2", "--breaker-cooldown", "1500ms"]);
    let w1 = &f.stand_ins["w1"];
    w1.set(Mode::Status(500));
    for _ in 0..2 {
        let a = f.chat("task:chat", false);
        assert_eq!(
            (
                a.status,
                a.header("x-fleet-worker"),
                a.header("x-fleet-attempts")
            ),
            (200, "w2", "2")
        );
    }
    assert_eq!(w1.count(), 2);
    // Open: w1 is not tried at all while it cools down.
    let a = f.chat("task:chat", false);
    assert_eq!(
        (a.header("x-fleet-worker"), a.header("x-fleet-attempts")),
        ("w2", "1")
    );
    assert_eq!(w1.count(), 2, "a cooling worker gets no request");
    let st = request(
        "GET",
        &format!("{}/api/gateway", f.url),
        Some(&f.client),
        b"",
    )
    .json();
    let b = st["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|w| w["name"] == "w1")
        .expect("w1")["breaker"]
        .clone();
    assert_eq!(b["state"], "open", "{b}");
    // After the cooldown one request probes it; it has recovered, so it serves again.
    w1.set(Mode::Ok {
        latency: Duration::ZERO,
    });
    std::thread::sleep(Duration::from_millis(1600));
    let a = f.chat("task:chat", false);
    assert_eq!(
        (a.header("x-fleet-worker"), a.header("x-fleet-attempts")),
        ("w1", "1")
    );
    assert_eq!(f.chat("task:chat", false).header("x-fleet-worker"), "w1");
}

#[test]
fn streams_pass_through_byte_for_byte_and_are_not_retried_once_begun() {
    let f = two(&["--upstream-timeout", "1s"]);
    let a = f.chat("task:chat", true);
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), "text/event-stream");
    assert_eq!(a.header("x-fleet-worker"), "w1");
    assert!(a.complete);
    assert_eq!(a.body, stream_pieces("w1", "m:8b").concat());
    // A stream that stalls after its first chunk ends broken; nothing is sent to w2.
    f.stand_ins["w1"].set(Mode::StallAfterFirst);
    let before = f.stand_ins["w2"].count();
    let a = f.chat("task:chat", true);
    assert_eq!((a.status, a.header("x-fleet-worker")), (200, "w1"));
    assert!(
        !a.complete,
        "the stream must end broken, not look complete: {:?}",
        a.body
    );
    assert_eq!(a.body, stream_pieces("w1", "m:8b")[0]);
    assert_eq!(
        f.stand_ins["w2"].count(),
        before,
        "no retry after the first byte"
    );
    // A slow stream is passed on as it comes.
    f.stand_ins["w1"].set(Mode::SlowStream(Duration::from_millis(300)));
    let a = f.chat("task:chat", true);
    assert!(a.complete);
    assert_eq!(a.body, stream_pieces("w1", "m:8b").concat());
}

#[test]
fn only_client_tokens_pass_and_bad_requests_reach_no_worker() {
    let f = two(&["--max-request-body", "2000"]);
    let node_token = std::fs::read_to_string(f.repo.path().join("w1.token")).expect("token");
    let body = chat_body("task:chat", false, "CANARY-PROMPT-TEXT");
    assert_eq!(f.post(&body, None).status, 401);
    assert_eq!(f.post(&body, Some(node_token.trim())).status, 401);
    assert_eq!(f.post(&body, Some("not-a-token")).status, 401);
    let revoked = {
        let out = fleet(f.repo.path())
            .args(["token", "issue", "--client", "gone", "--db"])
            .arg(&f.db)
            .output()
            .expect("issue");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(f.post(&body, Some(&revoked)).status, 200);
    fleet(f.repo.path())
        .args(["token", "revoke", "gone", "--db"])
        .arg(&f.db)
        .assert()
        .success();
    assert_eq!(f.post(&body, Some(&revoked)).status, 401);
    let big = chat_body("task:chat", false, &"x".repeat(3000));
    assert_eq!(f.post(&big, Some(&f.client)).status, 413);
    for bad in [
        &b"{not json"[..],
        br#"{"model":"task:chat"}"#,
        br#"{"model":"task:chat","messages":[{"content":"no role"}]}"#,
    ] {
        let a = f.post(bad, Some(&f.client));
        assert_eq!(a.status, 400, "{}", a.body);
        assert_eq!(a.json()["error"]["type"], "invalid_request_error");
    }
    let a = f.chat("task:nope", false);
    assert_eq!(a.status, 404);
    assert!(a.body.contains("known: task:chat"), "{}", a.body);
    assert_eq!(
        f.stand_ins["w1"].count() + f.stand_ins["w2"].count(),
        1,
        "only the one good request reached a worker"
    );
    // One access-log line per request, without the prompt.
    let log = f.log();
    assert!(
        log.contains("worker=w1") && log.contains("attempts=1") && log.contains("client=gone"),
        "{log}"
    );
    assert!(
        !log.contains("CANARY-PROMPT-TEXT"),
        "prompt text in the log: {log}"
    );
}

#[test]
fn an_offline_node_gets_no_work() {
    let mut f = two(&["--offline-after", "1s"]);
    assert_eq!(f.chat("task:chat", false).header("x-fleet-worker"), "w1");
    f.agents.remove("w1");
    f.wait_in_gateway("w1", "offline");
    let before = f.stand_ins["w1"].count();
    let a = f.chat("task:chat", false);
    assert_eq!((a.status, a.header("x-fleet-worker")), (200, "w2"));
    assert_eq!(f.stand_ins["w1"].count(), before);
}

#[test]
fn a_draining_node_gets_no_new_work_and_its_idle_agent_stops() {
    let mut f = two(&[]);
    assert_eq!(f.chat("task:chat", false).header("x-fleet-worker"), "w1");
    let out = fleet(f.repo.path())
        .args(["token", "issue", "--admin", "ops", "--db"])
        .arg(&f.db)
        .output()
        .expect("token issue");
    let admin = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let drain = format!("{}/api/nodes/w1/drain", f.url);
    let a = request("POST", &drain, Some(&admin), b"");
    assert_eq!(a.status, 200, "{}", a.body);
    // The gateway's table is rebuilt at once: the very next request goes to w2.
    let before = f.stand_ins["w1"].count();
    let a = f.chat("task:chat", false);
    assert_eq!((a.status, a.header("x-fleet-worker")), (200, "w2"));
    assert_eq!(f.stand_ins["w1"].count(), before);
    f.wait_in_gateway("w1", "draining");
    // Nothing in flight to w1: its agent is told to stop at its next heartbeat and exits 0.
    let agent = f.agents.get_mut("w1").expect("w1's agent");
    let code = wait_for(10, "w1's agent to exit", || {
        agent.0.try_wait().ok().flatten()
    });
    assert_eq!(
        code.code(),
        Some(0),
        "a drained agent exits 0 (not restarted)"
    );
    // Undone: w1 takes work again (its last heartbeat is recent).
    let a = request("DELETE", &drain, Some(&admin), b"");
    assert_eq!(a.status, 200, "{}", a.body);
    let a = f.chat("task:chat", false);
    assert_eq!((a.status, a.header("x-fleet-worker")), (200, "w1"));
}

#[test]
fn prompt_peers_and_status_go_through_hq() {
    let f = two(&[]);
    let out = fleet(f.repo.path())
        .args(["prompt", "say hi"])
        .output()
        .expect("prompt");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "w1 answers\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("— w1 (1 attempt,"), "{err}");
    // Streamed: the words as they come.
    let out = fleet(f.repo.path())
        .args(["prompt", "--stream", "--task", "chat", "hi"])
        .output()
        .expect("prompt");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "w1 streams words \n");
    // JSON: the gateway's answer with who gave it.
    let out = fleet(f.repo.path())
        .args(["prompt", "--json", "--model", "m:8b", "hi"])
        .output()
        .expect("prompt");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (v["worker"].as_str(), v["attempts"].as_u64()),
        (Some("w1"), Some(1))
    );
    assert_eq!(v["response"]["usage"]["completion_tokens"], 3);
    // An unknown task is a usage error (2) that names the known ones.
    let out = fleet(f.repo.path())
        .args(["prompt", "--task", "nope", "hi"])
        .output()
        .expect("prompt");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("known: task:chat"));
    // peers: both online, with their slots.
    let out = fleet(f.repo.path())
        .args(["peers", "--json"])
        .output()
        .expect("peers");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let peers: Vec<(String, u64)> = v["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_string(),
                p["max_concurrent"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(peers, [("w1".to_string(), 2), ("w2".to_string(), 3)]);
    // status of one node: heartbeat, resources, gateway view.
    f.stand_ins["w2"].set(Mode::Status(500));
    f.stand_ins["w1"].set(Mode::Status(500));
    assert_eq!(f.chat("task:chat", false).status, 502);
    let out = fleet(f.repo.path())
        .args(["status", "w2"])
        .output()
        .expect("status");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("w2 — online (heartbeat"), "{text}");
    assert!(
        text.contains("models: m:8b") && text.contains("in flight: 0/3"),
        "{text}"
    );
    assert!(
        text.contains("error at") && text.contains("answered 500"),
        "{text}"
    );
    let out = fleet(f.repo.path())
        .args(["status", "nobody"])
        .output()
        .expect("status");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn prompt_direct_asks_the_workers_when_hq_is_down() {
    let mut f = two(&[]);
    f.stand_ins["w1"].set(Mode::Status(500));
    drop(std::mem::replace(
        &mut f.hq,
        support::Child(std::process::Command::new("true").spawn().expect("true")),
    ));
    let out = fleet(f.repo.path())
        .args(["prompt", "hi"])
        .output()
        .expect("prompt");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--direct"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = fleet(f.repo.path())
        .args(["prompt", "--direct", "hi"])
        .output()
        .expect("prompt");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "w2 answers\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("— w2 (2 attempts"));
}

#[test]
fn dispatch_runs_a_batch_within_capacity_and_resumes() {
    let f = two(&[]);
    for c in f.stand_ins.values() {
        c.set(Mode::Ok {
            latency: Duration::from_millis(100),
        });
    }
    let tasks = f.repo.path().join("tasks.jsonl");
    let mut text = String::new();
    for i in 0..40 {
        text.push_str(&format!(
            "{{\"id\": \"t{i}\", \"task\": \"chat\", \"prompt\": \"n {i}\"}}\n"
        ));
    }
    std::fs::write(&tasks, &text).expect("tasks");
    let results = f.repo.path().join("results.jsonl");
    // A result from an earlier run is kept and its task skipped; a cut-off last line is dropped.
    std::fs::write(
        &results,
        "{\"id\":\"t0\",\"worker\":\"earlier\"}\n{\"id\":\"t1\",\"wor",
    )
    .expect("results");
    let out = fleet(f.repo.path())
        .args([
            "dispatch",
            "tasks.jsonl",
            "--out",
            "results.jsonl",
            "--json",
        ])
        .output()
        .expect("dispatch");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(summary["done"], 39);
    assert_eq!(summary["skipped"], 1);
    assert_eq!(summary["concurrency"], 5, "w1's 2 slots + w2's 3");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&results)
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("result line"))
        .collect();
    assert_eq!(lines.len(), 40);
    let ids: std::collections::BTreeSet<&str> =
        lines.iter().filter_map(|l| l["id"].as_str()).collect();
    assert_eq!(ids.len(), 40);
    assert_eq!(lines[0]["worker"], "earlier");
    assert!(lines[1..].iter().all(|l| {
        l["content"]
            .as_str()
            .is_some_and(|c| c.ends_with(" answers"))
    }));
    assert_eq!(f.stand_ins["w1"].max_in_flight.load(Ordering::SeqCst), 2);
    assert!(f.stand_ins["w2"].count() > 0, "the batch used both workers");
    // Run again: everything is there, nothing is sent.
    let before = f.stand_ins["w1"].count() + f.stand_ins["w2"].count();
    let out = fleet(f.repo.path())
        .args(["dispatch", "tasks.jsonl", "--out", "results.jsonl"])
        .output()
        .expect("dispatch");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 done, 0 failed, 40 skipped"));
    assert_eq!(
        f.stand_ins["w1"].count() + f.stand_ins["w2"].count(),
        before
    );
    // Failures: exit 1, the failed task not written (a rerun retries it).
    std::fs::write(
        &tasks,
        "{\"id\": \"x\", \"task\": \"nope\", \"prompt\": \"p\"}\n",
    )
    .expect("tasks");
    let out = fleet(f.repo.path())
        .args(["dispatch", "tasks.jsonl", "--out", "results.jsonl"])
        .output()
        .expect("dispatch");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("task `x` failed: 404"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A bad task line is a usage error naming the line, before anything is sent.
    std::fs::write(
        &tasks,
        "{\"id\": \"a\", \"task\": \"chat\", \"prompt\": \"p\"}\n{\"id\": \"b\"}\n",
    )
    .expect("tasks");
    let out = fleet(f.repo.path())
        .args(["dispatch", "tasks.jsonl", "--out", "results.jsonl"])
        .output()
        .expect("dispatch");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tasks.jsonl:2: `task` or `model`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_client_that_goes_away_mid_stream_gives_its_slot_back() {
    let f = two(&[]);
    f.stand_ins["w1"].set(Mode::SlowStream(Duration::from_millis(400)));
    // Read the first chunk, then hang up.
    let body = chat_body("task:chat", true, "x");
    let host = f.url.strip_prefix("http://").expect("http").to_string();
    let mut s = std::net::TcpStream::connect(&host).expect("connect");
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        f.client,
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    s.write_all(&body).expect("write");
    let mut first = [0u8; 256];
    let n = s.read(&mut first).expect("read");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let in_flight = |f: &Fleet| {
        let v = request(
            "GET",
            &format!("{}/api/gateway", f.url),
            Some(&f.client),
            b"",
        )
        .json();
        v["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .find(|w| w["name"] == "w1")
            .expect("w1")["in_flight"]
            .as_u64()
    };
    assert_eq!(in_flight(&f), Some(1));
    drop(s);
    wait_for(5, "the slot to be given back", || {
        (in_flight(&f) == Some(0)).then_some(())
    });
    // The gateway let go of the upstream too: the stand-in's stream ends early.
    wait_for(5, "the upstream connection to close", || {
        (f.stand_ins["w1"].in_flight.load(Ordering::SeqCst) == 0).then_some(())
    });
    let log = f.log();
    assert!(
        log.contains("worker=w1 attempts=1") && log.contains("outcome=client_gone"),
        "{log}"
    );
}

#[test]
fn draining_keeps_in_flight_requests_and_stops_the_agent_after_them() {
    let mut f = two(&[]);
    let out = fleet(f.repo.path())
        .args(["token", "issue", "--admin", "ops", "--db"])
        .arg(&f.db)
        .output()
        .expect("token issue");
    let admin = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // A slow stream to w1 is in flight when the drain comes.
    f.stand_ins["w1"].set(Mode::SlowStream(Duration::from_millis(700)));
    let (url, token) = (format!("{}/v1/chat/completions", f.url), f.client.clone());
    let in_flight = std::thread::spawn(move || {
        request(
            "POST",
            &url,
            Some(&token),
            &chat_body("task:chat", true, "long"),
        )
    });
    wait_for(10, "w1 to have a request in flight", || {
        (f.stand_ins["w1"].in_flight.load(Ordering::SeqCst) == 1).then_some(())
    });
    let out = fleet(f.repo.path())
        .env("FLEET_HQ_TOKEN", &admin)
        .args(["drain", "w1"])
        .output()
        .expect("drain");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // New work goes elsewhere at once.
    let a = f.chat("task:chat", false);
    assert_eq!((a.status, a.header("x-fleet-worker")), (200, "w2"));
    // The agent keeps running while the stream is in flight (heartbeats every 150 ms).
    std::thread::sleep(Duration::from_millis(600));
    let agent = f.agents.get_mut("w1").expect("w1's agent");
    assert!(
        agent.0.try_wait().expect("wait").is_none(),
        "the agent stopped with work in flight"
    );
    // The in-flight stream finishes whole, from w1.
    let a = in_flight.join().expect("thread");
    assert_eq!((a.status, a.header("x-fleet-worker")), (200, "w1"));
    assert!(
        a.complete,
        "the drained node's stream was cut: {:?}",
        a.body
    );
    assert_eq!(a.body, stream_pieces("w1", "m:8b").concat());
    // Then the agent is told to stop, and exits 0.
    let code = wait_for(10, "w1's agent to exit after its last request", || {
        agent.0.try_wait().ok().flatten()
    });
    assert_eq!(code.code(), Some(0));
}
