//! Join and leave, end to end with real processes: `fleet join` run on a real sshd test host
//! (the fleet binary copied there, so its facts are that host's) registers it with a real
//! `fleet serve` as pending; `fleet adopt` provisions it and its agent comes online; join
//! tokens work once, expire and can be revoked; a taken name is refused; `fleet drain` and
//! `fleet leave` take the node out of the live routing table and stop its agent (nothing is in
//! flight here; the in-flight rule is unit-tested in `hq::drain`), and undoing it brings it back.
//! No secret (join token, agent token) appears in any output but the one-time issue.

mod support;

use std::path::Path;
use std::process::Output;

use support::{
    Hosts, build_repo, crate_root, fleet, free_port, http, parse_case, spawn_fleet, wait_for,
};

/// Runs `cmd` on host `k` with the system ssh; its whole output.
fn on_host(hosts: &Hosts, k: u16, cmd: &str) -> Output {
    std::process::Command::new("ssh")
        .arg("-F")
        .arg(hosts.ssh_config())
        .arg(format!("host{k}"))
        .arg(cmd)
        .output()
        .expect("ssh")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Copies the fleet binary under test to host `k` as /usr/local/bin/fleet.
fn copy_fleet(hosts: &Hosts, k: u16) {
    let bin = std::fs::read(assert_cmd::cargo::cargo_bin("fleet")).expect("binary");
    let mut child = std::process::Command::new("ssh")
        .arg("-F")
        .arg(hosts.ssh_config())
        .arg(format!("host{k}"))
        .arg("mkdir -p /usr/local/bin && cat > /usr/local/bin/fleet && chmod 755 /usr/local/bin/fleet")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("ssh");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&bin)
        .expect("copy");
    assert!(child.wait().expect("wait").success(), "copying fleet");
}

/// `fleet token issue --join [ARGS]`: the token (stdout) and the token's name (from the note).
fn issue_join(repo: &Path, args: &[&str]) -> (String, String) {
    let out = fleet(repo)
        .args(["token", "issue", "--join"])
        .args(args)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", text(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    let name = err
        .split('`')
        .find(|w| w.starts_with("join-"))
        .expect("the token's name")
        .to_string();
    assert!(!err.contains(&token), "the note does not repeat the token");
    (token, name)
}

fn routing_pool(port: u16, token: &str) -> Vec<String> {
    let (code, body) = http(
        "GET",
        &format!("http://127.0.0.1:{port}/api/routing"),
        Some(token),
        None,
    )
    .expect("routing");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["rules"][0]["pool"]
        .as_array()
        .expect("pool")
        .iter()
        .filter_map(|w| w.as_str().map(str::to_string))
        .collect()
}

fn node_status(port: u16, token: &str, node: &str) -> serde_json::Value {
    let (_, body) = http(
        "GET",
        &format!("http://127.0.0.1:{port}/api/nodes/{node}"),
        Some(token),
        None,
    )
    .expect("node");
    serde_json::from_str(&body).unwrap_or_default()
}

#[test]
fn join_pending_adopt_online_drain_leave_and_back() {
    let hosts = Hosts::up(1);
    hosts.install_standins(1);
    let port = free_port();
    let hq = format!("http://127.0.0.1:{port}");
    let inv = format!(
        "fleet: {{ name: t, hq: hq1, hq_url: \"{hq}\", ssh_config: \"{}\" }}\nvars: {{ app_dir: /opt/app, fleet_user: root }}\nnodes:\n  hq1: {{ host: 127.0.0.1, role: common, capabilities: [browser], vars: {{ connection: local }} }}\nrouting:\n  rules:\n    - {{ task: browse, capability: browser }}\n",
        hosts.ssh_config().display()
    );
    let role = "description: a browser node with its agent\ncapabilities: [browser]\ntasks:\n  - name: agent\n    fleet_agent: { hq_url: \"{{ fleet.hq_url }}\", interval: 200ms }\n";
    let r = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "j",
            &format!("--- inventory/fleet.yaml\n{inv}--- roles/browsing/role.yaml\n{role}"),
        ),
    );
    let repo = r.path();
    let db = repo.join(".fleet/hq.sqlite");
    let serve = || {
        let s = spawn_fleet(
            repo,
            &[
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--db",
                &db.display().to_string(),
            ],
            &repo.join(format!("serve-{}.log", support::free_port())),
        );
        wait_for(20, "serve", || {
            http("GET", &format!("{hq}/healthz"), None, None)
                .ok()
                .filter(|(c, _)| *c == 200)
        });
        s
    };
    let mut hq_process = serve();
    let client = support::hq_token(repo);

    // A join token: shown once, listed by name with its expiry, unused.
    let (token, token_name) = issue_join(repo, &[]);
    assert!(token.starts_with("fleet_"), "{token}");
    let list = fleet(repo).args(["token", "list"]).output().expect("runs");
    let listed = text(&list);
    assert!(
        listed.contains(&token_name) && listed.contains("expires"),
        "{listed}"
    );
    assert!(
        listed.contains("unused") && !listed.contains(&token),
        "{listed}"
    );

    // `fleet join` on the host itself: its facts are the host's (hostname host1).
    copy_fleet(&hosts, 1);
    let ssh_port = hosts.port(1);
    let join_cmd = |tok: &str, extra: &str| {
        format!(
            "FLEET_JOIN_TOKEN='{tok}' fleet join --hq {hq} --address 127.0.0.1 --ssh-port {ssh_port} {extra}"
        )
    };
    let joined = on_host(&hosts, 1, &join_cmd(&token, ""));
    let said = text(&joined);
    assert!(joined.status.success(), "{said}");
    assert!(
        said.contains("`host1`") && said.contains("is pending"),
        "{said}"
    );
    assert!(!said.contains(&token), "{said}");

    // The token works once.
    let again = on_host(&hosts, 1, &join_cmd(&token, "--name other"));
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(text(&again).contains("already used"), "{}", text(&again));
    assert!(!text(&again).contains(&token));

    // An expired and a revoked token are refused.
    let (short, _) = issue_join(repo, &["--ttl", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let expired = on_host(&hosts, 1, &join_cmd(&short, "--name other"));
    assert_eq!(expired.status.code(), Some(1));
    assert!(text(&expired).contains("expired"), "{}", text(&expired));
    let (revoked, revoked_name) = issue_join(repo, &[]);
    fleet(repo)
        .args(["token", "revoke", &revoked_name])
        .assert()
        .success();
    let refused = on_host(&hosts, 1, &join_cmd(&revoked, "--name other"));
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused).contains("revoked"), "{}", text(&refused));

    // A name in the inventory or pending is refused, and the token stays usable.
    let (spare, spare_name) = issue_join(repo, &[]);
    let clash = on_host(&hosts, 1, &join_cmd(&spare, "--name hq1"));
    assert_eq!(clash.status.code(), Some(1));
    assert!(
        text(&clash).contains("a node called `hq1` is already in the inventory"),
        "{}",
        text(&clash)
    );
    let clash = on_host(&hosts, 1, &join_cmd(&spare, ""));
    assert!(
        text(&clash).contains("`host1` joined at") && text(&clash).contains("waits to be adopted"),
        "{}",
        text(&clash)
    );
    let listed = text(&fleet(repo).args(["token", "list"]).output().expect("runs"));
    let spare_row = listed
        .lines()
        .find(|l| l.contains(&spare_name))
        .expect("listed");
    assert!(spare_row.contains("unused"), "{listed}");

    // `fleet nodes --pending` lists it from HQ, with the host's facts.
    let pending = fleet(repo)
        .args(["nodes", "--pending", "--json"])
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&pending.stdout).expect("json");
    let p = &v["pending"][0];
    assert_eq!(p["name"], "host1", "{v}");
    assert_eq!(p["request"]["facts"]["hostname"], "host1");
    assert_eq!(p["request"]["facts"]["os"], "linux");
    assert_eq!(p["request"]["ssh"]["port"], ssh_port);
    let table = text(
        &fleet(repo)
            .args(["nodes", "--pending"])
            .output()
            .expect("runs"),
    );
    assert!(
        table.contains("host1") && table.contains(&format!("root@127.0.0.1:{ssh_port}")),
        "{table}"
    );

    // Adopting: clear errors first, nothing changes.
    fleet(repo)
        .args(["adopt", "nobody", "--role", "browsing"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("no pending machine `nobody`"));
    fleet(repo)
        .args(["adopt", "host1", "--role", "nope"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("unknown role `nope`"));
    let adopt = fleet(repo)
        .args(["adopt", "host1", "--role", "browsing"])
        .output()
        .expect("runs");
    let said = text(&adopt);
    assert!(adopt.status.success(), "{said}");
    assert!(said.contains("issued an agent token for `host1`"), "{said}");
    assert!(said.contains("`host1` is adopted"), "{said}");
    let agent_token = std::fs::read_to_string(repo.join(".fleet/tokens/host1.token"))
        .expect("agent token")
        .trim()
        .to_string();
    assert!(!said.contains(&agent_token), "the agent token is not shown");
    let inventory = std::fs::read_to_string(repo.join("inventory/fleet.yaml")).expect("inv");
    assert!(
        inventory.contains("  host1:\n    host: 127.0.0.1\n    role: browsing\n    hardware: { "),
        "{inventory}"
    );
    assert!(
        inventory.contains(&format!("vars: {{ ssh_user: root, ssh_port: {ssh_port} }}")),
        "{inventory}"
    );
    fleet(repo).arg("validate").assert().success();
    let pending = fleet(repo)
        .args(["nodes", "--pending", "--json"])
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&pending.stdout).expect("json");
    assert_eq!(v["pending"], serde_json::json!([]), "no longer pending");

    // Its agent reports and it serves.
    wait_for(30, "host1 online", || {
        (node_status(port, &client, "host1")["status"] == "online").then_some(())
    });
    assert_eq!(routing_pool(port, &client), ["host1"]);

    // Drain needs an admin token: the client token is refused, with what to do.
    fleet(repo)
        .args(["drain", "host1", "--token-file", ".fleet/hq.token"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("needs an admin token"));
    fleet(repo)
        .args([
            "token",
            "issue",
            "--admin",
            "ops",
            "--out",
            ".fleet/hq-admin.token",
        ])
        .assert()
        .success();
    let drained = fleet(repo).args(["drain", "host1"]).output().expect("runs");
    assert!(drained.status.success(), "{}", text(&drained));
    assert!(
        text(&drained).contains("out of the routing table"),
        "{}",
        text(&drained)
    );
    // Out of routing at once; with nothing in flight its agent is told to stop and exits.
    assert_eq!(routing_pool(port, &client), Vec::<String>::new());
    let s = node_status(port, &client, "host1");
    assert_eq!(s["status"], "draining", "{s}");
    wait_for(20, "the agent to stop", || {
        let o = on_host(&hosts, 1, "systemctl is-active fleet-agent");
        (!o.status.success()).then_some(())
    });
    // The agent's log is the journal (the systemctl stand-in's file for it), at info.
    let log = hosts.sh(1, "cat /var/log/standin-fleet-agent.log");
    assert!(log.contains("<6>INFO HQ says stop"), "{log}");
    let s = node_status(port, &client, "host1");
    assert!(
        s["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("told to stop")),
        "{s}"
    );
    // The unit does not restart a drained agent (exit 0).
    let unit = hosts.sh(1, "cat /etc/systemd/system/fleet-agent.service");
    assert!(unit.contains("RestartPreventExitStatus=0"), "{unit}");

    // Draining survives a restart of HQ (it is in HQ's SQLite).
    drop(hq_process);
    hq_process = serve();
    let s = node_status(port, &client, "host1");
    assert_eq!(s["status"], "draining", "{s}");
    assert_eq!(routing_pool(port, &client), Vec::<String>::new());
    let nodes = text(
        &fleet(repo)
            .args(["nodes", "--live"])
            .output()
            .expect("runs"),
    );
    assert!(
        nodes
            .lines()
            .any(|l| l.contains("host1") && l.contains("draining")),
        "{nodes}"
    );

    // `fleet check` shows it draining and does not fail for it.
    let check = fleet(repo)
        .args(["check", "--node", "host1"])
        .output()
        .expect("runs");
    assert!(text(&check).contains("draining"), "{}", text(&check));
    assert!(
        check.status.success(),
        "draining is not a failure: {}",
        text(&check)
    );

    // Undo: back in routing once its agent runs again (`fleet provision` starts it).
    let undo = fleet(repo)
        .args(["drain", "--undo", "host1"])
        .output()
        .expect("runs");
    assert!(undo.status.success(), "{}", text(&undo));
    assert!(
        text(&undo).contains("fleet provision host1"),
        "{}",
        text(&undo)
    );
    fleet(repo).args(["provision", "host1"]).assert().success();
    wait_for(30, "host1 back online", || {
        (node_status(port, &client, "host1")["status"] == "online").then_some(())
    });
    assert_eq!(routing_pool(port, &client), ["host1"]);

    // `fleet leave` on the node, with its own agent token: draining, out of routing.
    let left = on_host(&hosts, 1, &format!("fleet leave --hq {hq}"));
    assert!(left.status.success(), "{}", text(&left));
    assert!(
        text(&left).contains("`host1` is leaving"),
        "{}",
        text(&left)
    );
    assert!(!text(&left).contains(&agent_token));
    assert_eq!(routing_pool(port, &client), Vec::<String>::new());
    fleet(repo).args(["undrain", "host1"]).assert().success();
    fleet(repo).args(["provision", "host1"]).assert().success();
    wait_for(30, "host1 online after leaving", || {
        (node_status(port, &client, "host1")["status"] == "online").then_some(())
    });
    assert_eq!(routing_pool(port, &client), ["host1"]);

    // A node token drains only its own node: the endpoint takes no name.
    let (code, body) = http(
        "POST",
        &format!("{hq}/api/nodes/hq1/drain"),
        Some(&agent_token),
        Some(b""),
    )
    .expect("post");
    assert_eq!(code, 403, "{body}");

    // No secret in HQ's logs or the agent's.
    drop(hq_process);
    for entry in std::fs::read_dir(repo).expect("repo") {
        let path = entry.expect("entry").path();
        if path.to_string_lossy().ends_with(".log") {
            let log = std::fs::read_to_string(&path).expect("log");
            for secret in [&token, &spare, &agent_token] {
                assert!(!log.contains(secret.as_str()), "{}: {log}", path.display());
            }
        }
    }
    let agent_log = hosts.sh(1, "cat /var/log/standin-fleet-agent.log");
    assert!(!agent_log.contains(&agent_token), "{agent_log}");
}

#[test]
fn join_pins_hq_by_the_ca_fingerprint_in_its_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    fleet(dir.path())
        .args([
            "init",
            "f",
            "--non-interactive",
            "--hq-host",
            "127.0.0.1",
            "--hq-os",
            "linux",
        ])
        .assert()
        .success();
    let repo = dir.path().join("f");
    let inv_path = repo.join("inventory/fleet.yaml");
    let inv = std::fs::read_to_string(&inv_path).expect("inventory");
    std::fs::write(
        &inv_path,
        inv.replace(
            "https://127.0.0.1:8765",
            &format!("https://127.0.0.1:{port}"),
        ),
    )
    .expect("write");
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
    let hq = format!("https://127.0.0.1:{port}");
    wait_for(20, "HQ over HTTPS", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let (token, name) = issue_join(&repo, &[]);
    let (secret, fp) = token.split_once(".sha256:").expect("the CA fingerprint");
    assert_eq!(fp.len(), 64, "{token}");

    // A wrong fingerprint: HQ's CA is refused and the token is never sent (still unused).
    let wrong = format!("{secret}.sha256:{}", "0".repeat(64));
    let other = tempfile::tempdir().expect("tmp");
    let refused = fleet(other.path())
        .args([
            "join",
            "--hq",
            &hq,
            "--name",
            "box1",
            "--address",
            "127.0.0.1",
        ])
        .env("FLEET_JOIN_TOKEN", &wrong)
        .output()
        .expect("runs");
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("is not the one the join token names"),
        "{}",
        text(&refused)
    );
    assert!(!text(&refused).contains(secret));
    let listed = text(&fleet(&repo).args(["token", "list"]).output().expect("runs"));
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&name) && l.contains("unused")),
        "{listed}"
    );

    // The right one: HQ's certificate checks out against the fetched CA; the machine is pending.
    let joined = fleet(other.path())
        .args([
            "join",
            "--hq",
            &hq,
            "--name",
            "box1",
            "--address",
            "127.0.0.1",
        ])
        .env("FLEET_JOIN_TOKEN", &token)
        .output()
        .expect("runs");
    assert!(joined.status.success(), "{}", text(&joined));
    assert!(!text(&joined).contains(secret));
    let pending = fleet(&repo)
        .args(["nodes", "--pending", "--json"])
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&pending.stdout).expect("json");
    assert_eq!(v["pending"][0]["name"], "box1", "{v}");

    // Plain HTTP off loopback is refused before anything is sent.
    fleet(other.path())
        .args(["join", "--hq", "http://hq.example:8765", "--token", "x"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("in clear"));
}

#[test]
fn the_join_drain_and_leave_endpoints_are_strict() {
    let port = free_port();
    let hq = format!("http://127.0.0.1:{port}");
    let inv = format!(
        "fleet: {{ name: t, hq: hq1, hq_url: \"{hq}\" }}\nvars: {{ app_dir: /opt/app }}\nnodes:\n  hq1: {{ host: 127.0.0.1, role: common }}\n  w1: {{ host: 127.0.0.2, role: common }}\n"
    );
    let r = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case("s", &format!("--- inventory/fleet.yaml\n{inv}")),
    );
    let repo = r.path();
    let db = repo.join(".fleet/hq.sqlite");
    let _serve = spawn_fleet(
        repo,
        &[
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--db",
            &db.display().to_string(),
        ],
        &repo.join("serve.log"),
    );
    wait_for(20, "serve", || {
        http("GET", &format!("{hq}/healthz"), None, None)
            .ok()
            .filter(|(c, _)| *c == 200)
    });
    let client = support::hq_token(repo);
    let (token, name) = issue_join(repo, &[]);
    let good = serde_json::json!({
        "name": "box1",
        "ssh": { "address": "127.0.0.1", "user": "root", "port": 22 },
        "facts": { "os": "linux", "cores": 4 },
        "fleet_version": "0.1.0"
    });
    let post = |body: &[u8], bearer: Option<&str>| {
        http("POST", &format!("{hq}/api/join"), bearer, Some(body)).expect("post")
    };
    // No token; an unknown field anywhere; a bad name; too big: refused, the token unused.
    assert_eq!(post(good.to_string().as_bytes(), None).0, 401);
    let mut unknown = good.clone();
    unknown["facts"]["extra"] = serde_json::json!(1);
    let (code, body) = post(unknown.to_string().as_bytes(), Some(&token));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("unknown field"), "{body}");
    let mut bad_name = good.clone();
    bad_name["name"] = serde_json::json!("-rf");
    assert_eq!(post(bad_name.to_string().as_bytes(), Some(&token)).0, 400);
    let big = vec![b' '; 20_000];
    assert_eq!(post(&big, Some(&token)).0, 413);
    let listed = text(&fleet(repo).args(["token", "list"]).output().expect("runs"));
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&name) && l.contains("unused")),
        "{listed}"
    );
    // A join token is not rotated (it works once: issue a new one).
    fleet(repo)
        .args(["token", "rotate", &name])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("is a join token"));
    // A join token reads nothing.
    let (code, _) = http("GET", &format!("{hq}/api/nodes"), Some(&token), None).expect("get");
    assert_eq!(code, 401);
    // The good one is pending; the token is then used up.
    let (code, body) = post(good.to_string().as_bytes(), Some(&token));
    assert_eq!(code, 200, "{body}");
    let (code, body) = post(good.to_string().as_bytes(), Some(&token));
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("already used"), "{body}");
    // A node token does not read the pending list; a client token does.
    fleet(repo)
        .args(["token", "issue", "w1"])
        .assert()
        .success();
    let node_token = String::from_utf8_lossy(
        &fleet(repo)
            .args(["token", "rotate", "w1", "--overlap", "0s"])
            .output()
            .expect("runs")
            .stdout,
    )
    .trim()
    .to_string();
    let (code, _) =
        http("GET", &format!("{hq}/api/pending"), Some(&node_token), None).expect("get");
    assert_eq!(code, 403);
    let (code, body) = http("GET", &format!("{hq}/api/pending"), Some(&client), None).expect("get");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"box1\""), "{body}");
    // Draining needs an admin token; leaving, a node token (and drains only its own node).
    let drain = format!("{hq}/api/nodes/w1/drain");
    assert_eq!(
        http("POST", &drain, Some(&client), Some(b""))
            .expect("post")
            .0,
        403
    );
    assert_eq!(http("POST", &drain, None, Some(b"")).expect("post").0, 401);
    assert_eq!(
        http("POST", &format!("{hq}/api/leave"), Some(&client), Some(b""))
            .expect("post")
            .0,
        403
    );
    let (code, body) = http(
        "POST",
        &format!("{hq}/api/leave"),
        Some(&node_token),
        Some(b""),
    )
    .expect("post");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (v["node"].as_str(), v["draining"].as_bool()),
        (Some("w1"), Some(true))
    );
    let (_, body) = http("GET", &format!("{hq}/api/nodes"), Some(&client), None).expect("get");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let states: Vec<(String, String)> = v["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or("").to_string(),
                n["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        states.contains(&("w1".into(), "draining".into())),
        "{states:?}"
    );
    assert!(
        states.contains(&("hq1".into(), "offline".into())),
        "{states:?}"
    );
}
