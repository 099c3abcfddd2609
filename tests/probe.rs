//! `fleet check`'s SSH probe reads the server's identification line (`SSH-2.0-…`), so a port
//! that accepts and never speaks SSH is offline, not "ssh ok": real listeners on loopback that
//! stay silent, send garbage, send lines before the identification (RFC 4253 allows it) or
//! speak only SSH 1, a real sshd test host, and a sweep of many silent nodes that still takes
//! about one timeout.

mod support;

use std::io::Write;

use support::{Hosts, SSH_BANNER, black_hole, build_repo, crate_root, fleet, parse_case};

/// A listener that writes `first` to every connection, then holds it open (or closes it).
fn sends(first: &'static [u8], then_close: bool) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut s in listener.incoming().flatten() {
            let _ = s.write_all(first);
            if !then_close {
                held.push(s);
            }
        }
    });
    port
}

/// A repo whose nodes (`name`, ssh port) have a role with no probes but SSH, and no HQ.
fn repo(nodes: &[(String, u16)]) -> tempfile::TempDir {
    let mut inv = "fleet: { name: t }\nvars: { app_dir: /opt/app }\nnodes:\n".to_string();
    for (name, port) in nodes {
        inv.push_str(&format!(
            "  {name}: {{ host: 127.0.0.1, role: common, vars: {{ ssh_port: {port} }} }}\n"
        ));
    }
    build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case("probe", &format!("--- inventory/fleet.yaml\n{inv}")),
    )
}

fn check(repo: &tempfile::TempDir, timeout: &str) -> (i32, serde_json::Value) {
    let out = fleet(repo.path())
        .args(["check", "--json", "--timeout", timeout])
        .output()
        .expect("runs");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
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
fn a_port_that_never_identifies_itself_as_ssh_is_offline() {
    let silent = black_hole();
    let http = sends(
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
        true,
    );
    let noise = sends(b"\x00\x01garbage\xff\r\nmore garbage\r\n", false);
    let chatty = sends(b"welcome to the lab\r\nSSH-2.0-Lab_1.0\r\n", false);
    let old = sends(b"SSH-1.5-OldServer\r\n", false);
    let r = repo(&[
        ("silent".into(), silent),
        ("http".into(), http),
        ("noise".into(), noise),
        ("chatty".into(), chatty),
        ("old".into(), old),
    ]);
    let (code, v) = check(&r, "1s");
    assert_eq!(code, 1, "{v}");
    let state = |n: &str| node(&v, n)["state"].as_str().expect("state").to_string();
    let ssh = |n: &str| node(&v, n)["checks"]["ssh"].clone();
    let reasons = |n: &str| node(&v, n)["reasons"].clone();

    assert_eq!(state("silent"), "offline", "{v}");
    assert_eq!(ssh("silent")["ok"], false);
    assert_eq!(
        reasons("silent"),
        serde_json::json!([format!(
            "silent is unreachable: ssh port 127.0.0.1:{silent} (the port accepted the connection but never identified itself as SSH within 1s)"
        )])
    );
    // The probe waited for the identification about one timeout, not much longer.
    let ms = ssh("silent")["ms"].as_u64().expect("ms");
    assert!((900..1900).contains(&ms), "{ms} ms");

    assert_eq!(state("http"), "offline");
    assert_eq!(
        ssh("http")["detail"],
        "the port accepted the connection and closed it without identifying itself as SSH (it sent `HTTP/1.1 400 Bad Request`)"
    );

    assert_eq!(state("noise"), "offline");
    assert_eq!(
        ssh("noise")["detail"],
        "the port accepted the connection but never identified itself as SSH within 1s (it sent `\\u{0}\\u{1}garbage\u{fffd}`)"
    );

    assert_eq!(state("old"), "offline");
    assert_eq!(
        ssh("old")["detail"],
        "the server speaks only an SSH protocol fleet cannot use (`SSH-1.5-OldServer`; fleet needs SSH 2.0)"
    );

    // Lines before the identification are allowed (RFC 4253 §4.2).
    assert_eq!(state("chatty"), "online", "{v}");
    assert_eq!(ssh("chatty")["detail"], "SSH-2.0-Lab_1.0");
}

#[test]
fn a_stand_in_and_a_real_sshd_are_online() {
    let hosts = Hosts::up(1);
    let stand_in = support::ssh_banner();
    let r = repo(&[("real".into(), hosts.port(1)), ("standin".into(), stand_in)]);
    let (code, v) = check(&r, "5s");
    assert_eq!(code, 0, "{v}");
    let ssh = |n: &str| node(&v, n)["checks"]["ssh"].clone();
    assert_eq!(node(&v, "real")["state"], "online", "{v}");
    let banner = ssh("real")["detail"].as_str().expect("detail").to_string();
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner}");
    assert_eq!(ssh("standin")["detail"], SSH_BANNER);
    // The real host's sshd is killed: nothing listens, the node is offline.
    hosts.kill(1);
    let (code, v) = check(&r, "5s");
    assert_eq!(code, 1);
    assert_eq!(node(&v, "real")["state"], "offline", "{v}");
    assert_eq!(ssh("standin")["ok"], true);
}

#[test]
fn many_silent_nodes_are_probed_in_parallel_within_about_one_timeout() {
    // Each silent node on its own listener, as separate machines would be.
    let nodes: Vec<(String, u16)> = (0..200).map(|i| (format!("n{i}"), black_hole())).collect();
    let r = repo(&nodes);
    let started = std::time::Instant::now();
    let (code, v) = check(&r, "1s");
    let wall = started.elapsed();
    assert_eq!(code, 1);
    assert_eq!(v["summary"]["offline"], 200, "{}", v["summary"]);
    for (name, _) in &nodes {
        let d = node(&v, name)["checks"]["ssh"]["detail"].clone();
        assert_eq!(
            d, "the port accepted the connection but never identified itself as SSH within 1s",
            "{name}"
        );
    }
    // 200 one-second waits, side by side: about one second, nowhere near 200.
    let swept = v["duration_ms"].as_u64().expect("duration");
    assert!((900..4000).contains(&swept), "sweep took {swept} ms");
    assert!(
        wall < std::time::Duration::from_secs(10),
        "fleet check took {wall:?}"
    );
}
