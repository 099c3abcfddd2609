//! TLS to HQ: a real `fleet serve` over HTTPS with the certificate `fleet init` issued from
//! the fleet CA; the agent and the CLI's client pin that CA (a handshake succeeds) and refuse
//! HQ's certificate when they pin another fleet's CA; plain HTTP is refused off loopback; the
//! CA key is 0600 and git-ignored; the hq role's TLS task re-issues a certificate within the
//! renewal window and leaves a fresh one alone; `fleet_agent` places the CA on a real sshd
//! host, whose agent then reports over HTTPS.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use predicates::prelude::PredicateBooleanExt;
use support::{build_repo, crate_root, fleet, free_port, parse_case, spawn_fleet, wait_for};

/// `fleet init NAME` in `dir` with HQ at 127.0.0.1 (so HQ's certificate covers it); `hq_url`
/// then points at `port`.
fn init_repo(dir: &Path, name: &str, port: u16) -> PathBuf {
    fleet(dir)
        .args([
            "init",
            name,
            "--non-interactive",
            "--hq-host",
            "127.0.0.1",
            "--hq-os",
            "linux",
        ])
        .assert()
        .success();
    let repo = dir.join(name);
    let inv_path = repo.join("inventory/fleet.yaml");
    let inv = std::fs::read_to_string(&inv_path).expect("inventory");
    assert!(inv.contains("hq_url: https://127.0.0.1:8765"), "{inv}");
    std::fs::write(
        &inv_path,
        inv.replace(
            "https://127.0.0.1:8765",
            &format!("https://127.0.0.1:{port}"),
        ),
    )
    .expect("write inventory");
    repo
}

/// Reads HQ's nodes pinning `ca`, with the client token `fleet serve` keeps for the repo whose
/// CA it is (`<repo>/.fleet/hq.token`; reads need a token).
fn nodes_with_ca(url: &str, ca: &Path) -> Result<fleet::hq::wire::NodesResponse, String> {
    let repo = ca.parent().and_then(Path::parent).expect("repo of the CA");
    let token = fleet::hq::client::client_token(repo);
    fleet::hq::client::block_on(fleet::hq::client::fetch_nodes(
        url,
        token.as_deref(),
        Duration::from_secs(5),
        Some(ca),
    ))
    .expect("runtime")
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

#[test]
fn https_hq_answers_clients_that_pin_its_fleet_ca_and_only_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let repo = init_repo(dir.path(), "f", port);
    // Another fleet: another CA.
    let other = init_repo(dir.path(), "g", free_port());
    let (ca, other_ca) = (repo.join("tls/ca.pem"), other.join("tls/ca.pem"));
    assert_ne!(
        std::fs::read(&ca).expect("ca"),
        std::fs::read(&other_ca).expect("other ca")
    );

    // The CA key: 0600, git-ignored; the CA certificate is committed.
    let key = repo.join(".fleet/tls/ca.key");
    #[cfg(unix)]
    {
        assert_eq!(mode(&key), 0o600, "CA key mode");
        assert_eq!(mode(&repo.join(".fleet/tls/hq.key")), 0o600, "HQ key mode");
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(&repo)
            .output()
            .expect("git")
    };
    assert!(git(&["init", "-q"]).status.success());
    assert!(
        git(&["check-ignore", "-q", ".fleet/tls/ca.key"])
            .status
            .success(),
        "the CA key is git-ignored"
    );
    assert!(
        !git(&["check-ignore", "-q", "tls/ca.pem"]).status.success(),
        "the CA certificate is committed"
    );
    assert!(git(&["add", "-A"]).status.success());
    let staged = String::from_utf8_lossy(&git(&["ls-files"]).stdout).into_owned();
    assert!(staged.contains("tls/ca.pem"), "{staged}");
    assert!(
        !staged.contains("ca.key") && !staged.contains("hq.key"),
        "{staged}"
    );

    // HQ serves HTTPS (hq_url is https://; the certificate comes from the repo's .fleet/tls).
    let db = repo.join(".fleet/hq.sqlite");
    let _serve = spawn_fleet(
        &repo,
        &[
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--db",
            &db.display().to_string(),
        ],
        &dir.path().join("serve.log"),
    );
    let url = format!("https://127.0.0.1:{port}");
    wait_for(20, "HQ over HTTPS", || nodes_with_ca(&url, &ca).ok());
    let log = std::fs::read_to_string(dir.path().join("serve.log")).expect("log");
    assert!(
        log.contains(&format!("listening on https://127.0.0.1:{port}")),
        "{log}"
    );

    // A client that connects and never says a word holds up no one else's handshake.
    let _silent = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let started = std::time::Instant::now();
    nodes_with_ca(&url, &ca).expect("answered beside a silent client");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Plain HTTP to it gets no HTTP answer.
    assert!(
        support::http(
            "GET",
            &format!("http://127.0.0.1:{port}/healthz"),
            None,
            None
        )
        .map_or(true, |(c, _)| c != 200),
        "HQ answered plain HTTP"
    );

    // The agent pins the CA: its heartbeat is stored.
    fleet(&repo)
        .args([
            "token",
            "issue",
            "hq",
            "--out",
            ".fleet/tokens/hq.token",
            "--db",
            &db.display().to_string(),
        ])
        .assert()
        .success();
    let agent = |ca: &Path| {
        fleet(&repo)
            .args([
                "agent",
                "--hq",
                &url,
                "--node",
                "hq",
                "--token-file",
                ".fleet/tokens/hq.token",
                "--ca",
                &ca.display().to_string(),
                "--ollama-url",
                "http://127.0.0.1:1",
                "--once",
            ])
            .output()
            .expect("agent runs")
    };
    let ok = agent(&ca);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let nodes = nodes_with_ca(&url, &ca).expect("CLI read with the fleet CA");
    let hq = nodes
        .nodes
        .iter()
        .find(|n| n.name == "hq")
        .expect("hq listed");
    assert!(
        hq.last_heartbeat.is_some(),
        "the agent's heartbeat was stored"
    );

    // Another fleet's CA: the handshake fails, and says why.
    let bad = agent(&other_ca);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("HQ's certificate is not signed by this fleet's CA"),
        "{err}"
    );
    let e = nodes_with_ca(&url, &other_ca).expect_err("another CA is refused");
    assert!(
        e.contains("HQ's certificate is not signed by this fleet's CA")
            && e.contains(&other_ca.display().to_string()),
        "{e}"
    );
    // `fleet check` (the CLI) reads HQ with the repo's own CA file, so pointing the other
    // fleet's repo at this HQ fails the same way.
    let inv_path = other.join("inventory/fleet.yaml");
    let inv = std::fs::read_to_string(&inv_path).expect("inv");
    let other_port = inv
        .split("https://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("port")
        .to_string();
    std::fs::write(
        &inv_path,
        inv.replace(
            &format!("https://127.0.0.1:{other_port}"),
            &format!("https://127.0.0.1:{port}"),
        ),
    )
    .expect("write");
    let out = fleet(&other)
        .args(["check", "--json"])
        .output()
        .expect("check runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("HQ's certificate is not signed by this fleet's CA"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = fleet(&repo)
        .args(["check", "--json"])
        .output()
        .expect("check runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("not signed by this fleet's CA"), "{text}");

    // An agent for an https HQ without a CA file: a configuration error.
    fleet(&repo)
        .args([
            "agent",
            "--hq",
            &url,
            "--node",
            "hq",
            "--token-file",
            ".fleet/tokens/hq.token",
            "--ca",
            "no/such/ca.pem",
            "--once",
        ])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("no fleet CA at `no/such/ca.pem`"));
}

fn plain_repo(extra: &str) -> tempfile::TempDir {
    let inv = format!(
        "fleet: {{ name: t, hq: me, hq_url: \"http://127.0.0.1:1\"{extra} }}\nvars: {{ app_dir: /opt/app }}\nnodes:\n  me: {{ host: localhost, role: common }}\n"
    );
    build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case("plain", &format!("--- inventory/fleet.yaml\n{inv}")),
    )
}

#[test]
fn plain_http_only_on_loopback_or_when_the_inventory_says_so() {
    let r = plain_repo("");
    let port = free_port();
    fleet(r.path())
        .args(["serve", "--listen", &format!("0.0.0.0:{port}")])
        .timeout(Duration::from_secs(20))
        .assert()
        .code(2)
        .stderr(
            predicates::str::contains("refusing to serve plain HTTP on 0.0.0.0")
                .and(predicates::str::contains("insecure_http: true")),
        );
    // An https:// hq_url needs a certificate.
    let r2 = plain_repo("");
    let inv = r2.path().join("inventory/fleet.yaml");
    let text = std::fs::read_to_string(&inv).expect("inv");
    std::fs::write(
        &inv,
        text.replace("http://127.0.0.1:1", "https://127.0.0.1:1"),
    )
    .expect("w");
    fleet(r2.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .timeout(Duration::from_secs(20))
        .assert()
        .code(2)
        .stderr(predicates::str::contains("HQ has no certificate"));

    // Loopback: plain HTTP is fine.
    let log = r.path().join("serve.log");
    let serve = spawn_fleet(
        r.path(),
        &["serve", "--listen", &format!("127.0.0.1:{port}")],
        &log,
    );
    wait_for(20, "HQ on loopback", || {
        support::http(
            "GET",
            &format!("http://127.0.0.1:{port}/healthz"),
            None,
            None,
        )
        .ok()
        .filter(|(c, _)| *c == 200)
    });
    drop(serve);

    // `insecure_http: true`: plain HTTP on every interface (reached here through loopback).
    let r3 = plain_repo(", insecure_http: true");
    let port = free_port();
    let _serve = spawn_fleet(
        r3.path(),
        &["serve", "--listen", &format!("0.0.0.0:{port}")],
        &r3.path().join("serve.log"),
    );
    wait_for(20, "HQ with insecure_http", || {
        support::http(
            "GET",
            &format!("http://127.0.0.1:{port}/healthz"),
            None,
            None,
        )
        .ok()
        .filter(|(c, _)| *c == 200)
    });
}

/// The hq role's TLS tasks (between its `--- TLS` and `--- end of TLS` markers) as a role of
/// their own, with the hq role's TLS defaults.
fn tls_role() -> String {
    let hq = std::fs::read_to_string(crate_root().join("roles/hq/role.yaml")).expect("hq role");
    let start = hq.find("  # --- TLS").expect("TLS block start");
    let end = hq.find("  # --- end of TLS").expect("TLS block end");
    let defaults: String = hq
        .lines()
        .filter(|l| l.starts_with("  hq_tls_"))
        .map(|l| format!("{l}\n"))
        .collect();
    format!(
        "description: the hq role's TLS tasks\ndefaults:\n  hq_service: true\n{defaults}tasks:\n{}handlers:\n  - name: restart hq\n    debug: {{ msg: restarted }}\n",
        &hq[start..end]
    )
}

fn changed(events: &[serde_json::Value]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e["status"] == "changed")
        .map(|e| e["task"].to_string())
        .collect()
}

fn expires_within_days(cert: &Path, days: u32) -> bool {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-checkend"])
        .arg((u64::from(days) * 86_400).to_string())
        .arg("-in")
        .arg(cert)
        .output()
        .expect("openssl");
    !out.status.success()
}

#[test]
fn the_hq_role_reissues_a_certificate_due_for_renewal_and_leaves_a_fresh_one() {
    let node = tempfile::tempdir().expect("tmp");
    let nd = node.path().display().to_string();
    let inv = format!(
        "fleet: {{ name: t, hq: hq, hq_url: \"https://127.0.0.1:8765\" }}\nvars: {{ fleet_user: root }}\nnodes:\n  hq: {{ host: 127.0.0.1, role: common, vars: {{ connection: local, hq_tls_cert: \"{nd}/tls/hq.pem\", hq_tls_key: \"{nd}/tls/hq.key\" }} }}\n"
    );
    let playbook = "- name: HQ TLS\n  hosts: hq\n  roles: [hqtls]\n";
    let r = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "renew",
            &format!(
                "--- inventory/fleet.yaml\n{inv}--- playbooks/site.yaml\n{playbook}--- roles/hqtls/role.yaml\n{}",
                tls_role()
            ),
        ),
    );
    let root = r.path();
    // An existing repo gets its CA and HQ's certificate from `fleet tls init`.
    fleet(root)
        .args(["tls", "init"])
        .assert()
        .success()
        .stderr(predicates::str::contains("created the fleet CA"));
    let gitignore = std::fs::read_to_string(root.join(".gitignore")).expect(".gitignore");
    assert!(gitignore.lines().any(|l| l == ".fleet/"), "{gitignore}");
    let cert = root.join(".fleet/tls/hq.pem");
    let first = std::fs::read_to_string(&cert).expect("hq cert");
    let (node_cert, node_key) = (
        node.path().join("tls/hq.pem"),
        node.path().join("tls/hq.key"),
    );
    let apply = |args: &[&str]| {
        let (code, events, err) = support::apply_json(root, "playbooks/site.yaml", args);
        assert_eq!(code, 0, "{err}\n{events:?}");
        changed(&events)
    };
    let task = "\"HQ TLS certificate\"".to_string();

    // A fresh certificate: placed once (check == real), then nothing; never re-issued.
    assert_eq!(apply(&["--check"]), BTreeSet::from([task.clone()]));
    assert!(!node_cert.exists(), "check placed nothing");
    assert_eq!(apply(&[]), BTreeSet::from([task.clone()]));
    assert_eq!(std::fs::read_to_string(&node_cert).expect("placed"), first);
    #[cfg(unix)]
    assert_eq!(mode(&node_key), 0o600);
    assert_eq!(apply(&[]), BTreeSet::new(), "second run");
    assert_eq!(apply(&["--check"]), BTreeSet::new(), "check after");
    assert_eq!(
        std::fs::read_to_string(&cert).expect("cert"),
        first,
        "not re-issued"
    );

    // Within the renewal window (20 days left, renewal at 30): re-issued by the task.
    fleet(root)
        .args(["tls", "issue-hq", "--force", "--days", "20"])
        .assert()
        .success();
    let short = std::fs::read_to_string(&cert).expect("cert");
    assert!(expires_within_days(&cert, 30));
    assert_eq!(apply(&["--check"]), BTreeSet::from([task.clone()]));
    assert_eq!(
        std::fs::read_to_string(&cert).expect("cert"),
        short,
        "check issues nothing"
    );
    assert_eq!(apply(&[]), BTreeSet::from([task.clone()]));
    let renewed = std::fs::read_to_string(&cert).expect("cert");
    assert_ne!(renewed, short, "re-issued");
    assert!(!expires_within_days(&cert, 80), "valid 90 days again");
    assert_eq!(
        std::fs::read_to_string(&node_cert).expect("node cert"),
        renewed
    );
    let key = std::fs::read_to_string(root.join(".fleet/tls/hq.key")).expect("key");
    assert_eq!(std::fs::read_to_string(&node_key).expect("node key"), key);
    assert_eq!(apply(&[]), BTreeSet::new(), "second run after renewal");
    assert_eq!(apply(&["--check"]), BTreeSet::new());
    // Without the CA key (a clone of the repo elsewhere), nothing is issued and nothing is
    // lost: `issue-hq` refuses, and the task fails on a certificate due for renewal.
    fleet(root)
        .args(["tls", "issue-hq", "--force", "--days", "20"])
        .assert()
        .success();
    let due = std::fs::read_to_string(&cert).expect("cert");
    let ca_key = root.join(".fleet/tls/ca.key");
    let aside = root.join("ca.key.aside");
    std::fs::rename(&ca_key, &aside).expect("move the CA key away");
    fleet(root)
        .args(["tls", "issue-hq", "--force"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("is not on this machine"));
    assert_eq!(std::fs::read_to_string(&cert).expect("cert"), due);
    assert_eq!(apply(&["--check"]), BTreeSet::from([task.clone()]));
    let (code, events, err) = support::apply_json(root, "playbooks/site.yaml", &[]);
    assert_ne!(code, 0, "{events:?}");
    let all = format!("{events:?}{err}");
    assert!(all.contains("is not on this machine"), "{all}");
    assert_eq!(std::fs::read_to_string(&cert).expect("cert"), due);
    std::fs::rename(&aside, &ca_key).expect("put the CA key back");
    assert_eq!(apply(&[]), BTreeSet::from([task.clone()]));
    assert_eq!(apply(&[]), BTreeSet::new());

    // The key never reaches the output.
    let out = fleet(root)
        .args(["apply", "playbooks/site.yaml", "--json", "-v"])
        .output()
        .expect("runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("PRIVATE KEY"), "{all}");
}

#[test]
fn provisioned_agents_get_the_fleet_ca_and_report_over_https() {
    let hosts = support::Hosts::up(1);
    hosts.install_standins(1);
    let port = free_port();
    let inv = format!(
        "fleet: {{ name: t, hq: hq1, hq_url: \"https://127.0.0.1:{port}\", ssh_config: \"{}\" }}\nvars: {{ app_dir: /opt/app, fleet_user: root }}\nnodes:\n  hq1: {{ host: 127.0.0.1, role: common, vars: {{ connection: local }} }}\n",
        hosts.ssh_config().display()
    );
    let role = "description: the agent only\ntasks:\n  - name: agent\n    fleet_agent: { hq_url: \"{{ fleet.hq_url }}\", interval: 200ms }\n";
    let r = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "a",
            &format!("--- inventory/fleet.yaml\n{inv}--- roles/agentonly/role.yaml\n{role}"),
        ),
    );
    fleet(r.path()).args(["tls", "init"]).assert().success();
    let db = r.path().join(".fleet/hq.sqlite");
    let _serve = spawn_fleet(
        r.path(),
        &[
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--db",
            &db.display().to_string(),
        ],
        &r.path().join("serve.log"),
    );
    let (url, ca) = (
        format!("https://127.0.0.1:{port}"),
        r.path().join("tls/ca.pem"),
    );
    wait_for(20, "HQ over HTTPS", || nodes_with_ca(&url, &ca).ok());

    let out = fleet(r.path())
        .args(["provision", "a1", "--role", "agentonly", "--host", "host1"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    // The CA is placed next to the token; the unit names no CA (the agent's default is it).
    let placed = hosts.sh(
        1,
        "stat -c '%a %n' /etc/fleet/ca.pem; cat /etc/fleet/ca.pem",
    );
    let ca_text = std::fs::read_to_string(&ca).expect("ca");
    assert!(placed.contains("644 /etc/fleet/ca.pem"), "{placed}");
    assert!(placed.contains(ca_text.trim()), "{placed}");
    // The agent on the host pins it and HQ hears it over HTTPS.
    wait_for(30, "a1 to report over HTTPS", || {
        let nodes = nodes_with_ca(&url, &ca).ok()?;
        nodes
            .nodes
            .iter()
            .any(|n| n.name == "a1" && n.last_heartbeat.is_some())
            .then_some(())
    });
    let again = fleet(r.path())
        .args(["provision", "a1", "--json"])
        .output()
        .expect("runs");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&again.stdout).contains("\"status\":\"changed\""),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}
