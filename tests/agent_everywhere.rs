//! One controller provisions the agent on an Apple-silicon Mac, an Intel Mac and a Linux box
//! with no hand-built binary: each node gets the fleet binary for its own platform (facts
//! `os`, `arch`), from the repo's `dist/fleet-<os>-<arch>` or from a release URL checked
//! against its sha256 on the node. The Macs are real sshd test hosts answering like Macs
//! (tests/standins/macos: `uname` says arm64 or, with /etc/standin-mac-arch, x86_64; launchd
//! runs the agent); the "binaries" for each platform are fleet's own with a different tail
//! appended, so each still runs here and each node's copy shows which one it got.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use support::{
    Child, Hosts, build_repo, crate_root, fleet, free_port, http, parse_case, spawn_fleet, wait_for,
};

/// Makes host `k` a Mac of `arch` (its admin `symphony` with passwordless sudo, launchd).
fn make_mac(hosts: &Hosts, k: u16, arch: &str) {
    support::ensure_tool("sudo", "sudo");
    hosts.sh(
        k,
        &format!(
            "useradd -m -s /bin/sh -p '*' symphony && mkdir -p /home/symphony/.ssh && cp /root/.ssh/authorized_keys /home/symphony/.ssh/ && chown -R symphony: /home/symphony/.ssh && chmod 700 /home/symphony/.ssh && mkdir -p /etc/sudoers.d && echo 'symphony ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/symphony && chmod 440 /etc/sudoers.d/symphony && echo {arch} > /etc/standin-mac-arch && mkdir -p /Library/LaunchDaemons /etc/newsyslog.d"
        ),
    );
    for (src, dest) in [
        ("tests/standins/macos/uname", "/usr/local/bin/uname"),
        ("tests/standins/macos/sw_vers", "/usr/local/bin/sw_vers"),
        ("tests/standins/macos/launchctl", "/usr/local/bin/launchctl"),
    ] {
        hosts.install(k, src, dest);
    }
}

/// A "fleet binary built for" `platform`: fleet's own, with a tail naming the platform.
fn build_for(dir: &Path, platform: &str, tag: &str) -> String {
    let mut bytes = std::fs::read(env!("CARGO_BIN_EXE_fleet")).expect("fleet binary");
    bytes.extend_from_slice(format!("\nfleet-test-build {platform} {tag}\n").as_bytes());
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(dir.join(format!("fleet-{platform}")), &bytes).expect("write");
    sha256(&bytes)
}

fn sha256(bytes: &[u8]) -> String {
    fleet::util::sha256_hex(bytes)
}

/// The sha256 of the fleet binary installed on host `k`.
fn installed(hosts: &Hosts, k: u16) -> String {
    hosts
        .sh(
            k,
            "sha256sum /usr/local/bin/fleet 2>/dev/null | cut -d' ' -f1",
        )
        .trim()
        .to_string()
}

fn changed(events: &[serde_json::Value]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e["status"] == "changed")
        .map(|e| format!("{} {}", e["host"].as_str().unwrap_or(""), e["task"]))
        .collect()
}

/// A repo with HQ on the controller and `nodes` (YAML lines) running the agent role.
fn repo(hosts: &Hosts, hq_port: u16, vars: &str, nodes: &str) -> tempfile::TempDir {
    let inv = format!(
        "fleet: {{ name: t, hq: hq1, hq_url: \"http://127.0.0.1:{hq_port}\", ssh_config: \"{cfg}\" }}\nvars: {{ app_dir: /opt/app, agent_interval: 300ms, {vars} }}\nnodes:\n  hq1: {{ host: 127.0.0.1, role: common, vars: {{ connection: local }} }}\n{nodes}",
        cfg = hosts.ssh_config().display(),
    );
    let r = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "everywhere",
            &format!(
                "--- inventory/fleet.yaml\n{inv}--- playbooks/agents.yaml\n- hosts: all:!hq1\n  roles: [agent]\n"
            ),
        ),
    );
    let to = r.path().join("roles/agent");
    std::fs::create_dir_all(&to).expect("role dir");
    std::fs::copy(
        crate_root().join("roles/agent/role.yaml"),
        to.join("role.yaml"),
    )
    .expect("role");
    r
}

/// Starts HQ with a token for each of `nodes`.
fn hq(r: &Path, port: u16, nodes: &[&str]) -> Child {
    let db = r.join(".fleet/hq.sqlite").display().to_string();
    for n in nodes {
        let out = fleet(r)
            .args(["token", "issue", n, "--db", &db, "--out"])
            .arg(r.join(format!(".fleet/tokens/{n}.token")))
            .output()
            .expect("runs");
        assert!(out.status.success(), "{out:?}");
    }
    let child = spawn_fleet(
        r,
        &[
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--db",
            &db,
        ],
        &r.join("serve.log"),
    );
    wait_for(20, "serve", || {
        http(
            "GET",
            &format!("http://127.0.0.1:{port}/healthz"),
            None,
            None,
        )
        .ok()
        .filter(|(c, _)| *c == 200)
    });
    child
}

fn online(r: &Path, port: u16, node: &str) {
    wait_for(30, &format!("{node} online"), || {
        let (_, body) = http(
            "GET",
            &format!("http://127.0.0.1:{port}/api/nodes/{node}"),
            Some(&support::hq_token(r)),
            None,
        )
        .ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["status"] == "online").then_some(())
    });
}

fn apply(r: &Path, args: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    support::apply_json(r, "playbooks/agents.yaml", args)
}

#[test]
fn intel_and_apple_silicon_macs_and_linux_each_get_their_own_binary_from_dist() {
    let hosts = Hosts::up_with(3, &["Library", "Users"]);
    hosts.install_standins(1);
    make_mac(&hosts, 2, "arm64");
    make_mac(&hosts, 3, "x86_64");
    let hq_port = free_port();
    let node = |name: &str, k: u16, user: &str| {
        format!(
            "  {name}: {{ host: 127.0.0.1, role: agent, vars: {{ ssh_port: {}, ssh_user: {user}, fleet_user: {user} }} }}\n",
            hosts.port(k)
        )
    };
    let r = repo(
        &hosts,
        hq_port,
        "fleet_user: root",
        &format!(
            "{}{}{}",
            node("lin", 1, "root"),
            node("silicon", 2, "symphony"),
            node("intel", 3, "symphony")
        ),
    );
    let dist = r.path().join("dist");
    let linux = build_for(&dist, "linux-x86_64", "v1");
    let arm = build_for(&dist, "macos-aarch64", "v1");
    let x86 = build_for(&dist, "macos-x86_64", "v1");
    let _hq = hq(r.path(), hq_port, &["lin", "silicon", "intel"]);

    // The plan knows each node's platform from its facts and finds a binary for each.
    let plan = fleet(r.path())
        .args(["plan", "playbooks/agents.yaml"])
        .output()
        .expect("plan");
    let err = String::from_utf8_lossy(&plan.stderr);
    assert_eq!(plan.status.code(), Some(0), "{err}");
    assert!(!err.contains("no fleet binary"), "{err}");

    let (code, check, err) = apply(r.path(), &["--check"]);
    assert_eq!(code, 0, "{err}");
    let (code, real, err) = apply(r.path(), &[]);
    assert_eq!(code, 0, "{err}\n{real:?}");
    assert_eq!(
        changed(&check),
        changed(&real),
        "--check predicted otherwise"
    );
    // Each node runs the binary built for its platform — the Linux one too, though the
    // controller could have sent its own.
    assert_eq!(installed(&hosts, 1), linux);
    assert_eq!(installed(&hosts, 2), arm);
    assert_eq!(installed(&hosts, 3), x86);
    for n in ["lin", "silicon", "intel"] {
        online(r.path(), hq_port, n);
    }
    let (code, again, err) = apply(r.path(), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        changed(&again).is_empty(),
        "second run: {:?}",
        changed(&again)
    );

    // A new release for Intel Macs only: the Intel Mac's agent is replaced and restarted, the
    // others are left alone.
    let pid = |k: u16| {
        hosts
            .sh(
                k,
                "launchctl print system/com.fleet.agent | sed -n 's/.*pid = //p'",
            )
            .trim()
            .to_string()
    };
    let before = pid(3);
    let x86_v2 = build_for(&dist, "macos-x86_64", "v2");
    let (code, check, _) = apply(r.path(), &["--check"]);
    assert_eq!(code, 0);
    let (code, real, err) = apply(r.path(), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(changed(&check), changed(&real));
    assert_eq!(
        changed(&real),
        BTreeSet::from(["intel \"install, register and start the agent\"".to_string()])
    );
    assert_eq!(installed(&hosts, 3), x86_v2);
    assert_eq!(installed(&hosts, 2), arm);
    let after = pid(3);
    assert!(
        !before.is_empty() && before != "0" && before != after,
        "the agent was not restarted: {before} → {after}"
    );
    online(r.path(), hq_port, "intel");
}

#[test]
fn a_release_url_is_downloaded_on_the_node_and_installed_only_when_its_sum_matches() {
    let hosts = Hosts::up_with(1, &["Library", "Users"]);
    make_mac(&hosts, 1, "x86_64");
    let hq_port = free_port();
    let web_port = free_port();
    let site = tempfile::tempdir().expect("site");
    let v1 = build_for(&site.path().join("v1"), "macos-x86_64", "v1");
    let _web = Child(
        std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &web_port.to_string(),
            ])
            .arg("--directory")
            .arg(site.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 http.server"),
    );
    wait_for(20, "web server", || {
        http("GET", &format!("http://127.0.0.1:{web_port}/"), None, None).ok()
    });
    let node = format!(
        "  mac: {{ host: 127.0.0.1, role: agent, vars: {{ ssh_port: {}, ssh_user: symphony, fleet_user: symphony }} }}\n",
        hosts.port(1)
    );
    let wrong = "0".repeat(64);
    let r = repo(
        &hosts,
        hq_port,
        &format!(
            "agent_url: \"http://127.0.0.1:{web_port}/v1/fleet-{{os}}-{{arch}}\", agent_sha256: {{ macos-x86_64: \"{wrong}\" }}"
        ),
        &node,
    );
    let _hq = hq(r.path(), hq_port, &["mac"]);

    // A download whose sha256 is not the expected one is refused, and nothing is left behind.
    let (code, events, err) = apply(r.path(), &[]);
    assert_eq!(code, 1, "{err}\n{events:?}");
    let all = format!("{err}{events:?}");
    assert!(all.contains("not the expected"), "{all}");
    assert_eq!(installed(&hosts, 1), "");
    assert_eq!(
        hosts
            .sh(1, "ls -A /usr/local/bin | grep -c '^\\.fleet' || true")
            .trim(),
        "0"
    );
    // The download comes first: nothing else of the agent was placed (a unit placed now would
    // not count as a change on the next run, which would then not reload it).
    assert_eq!(
        hosts
            .sh(1, "ls /Library/LaunchDaemons/com.fleet.agent.plist /etc/fleet/agent.token 2>/dev/null | wc -l")
            .trim(),
        "0"
    );

    // The release's SHA256SUMS file: downloaded, verified, installed, running.
    std::fs::write(
        r.path().join("SHA256SUMS"),
        format!("{v1}  fleet-macos-x86_64\n{wrong}  fleet-linux-x86_64\n"),
    )
    .expect("sums");
    let set = ["-e", "agent_sha256=SHA256SUMS"];
    let (code, check, err) = apply(r.path(), &["--check", set[0], set[1]]);
    assert_eq!(code, 0, "{err}");
    let (code, real, err) = apply(r.path(), &set);
    assert_eq!(code, 0, "{err}\n{real:?}");
    assert_eq!(changed(&check), changed(&real));
    assert_eq!(installed(&hosts, 1), v1);
    online(r.path(), hq_port, "mac");
    let (code, again, _) = apply(r.path(), &set);
    assert_eq!(code, 0);
    assert!(changed(&again).is_empty(), "{again:?}");

    // A platform the sums do not cover is reported before anything runs.
    std::fs::write(
        r.path().join("SHA256SUMS"),
        format!("{v1}  fleet-linux-x86_64\n"),
    )
    .expect("sums");
    let out = fleet(r.path())
        .args([
            "apply",
            "playbooks/agents.yaml",
            "-e",
            "agent_sha256=SHA256SUMS",
        ])
        .output()
        .expect("apply");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no sha256 for macos-x86_64"), "{err}");
    assert_eq!(installed(&hosts, 1), v1);
}

#[test]
fn a_node_never_reached_before_is_refused_before_any_task_when_its_platform_has_no_binary() {
    let hosts = Hosts::up_with(1, &["Library", "Users"]);
    make_mac(&hosts, 1, "x86_64");
    let node = format!(
        "  mac: {{ host: 127.0.0.1, role: agent, vars: {{ ssh_port: {}, ssh_user: symphony, fleet_user: symphony }} }}\n",
        hosts.port(1)
    );
    // Neither the inventory nor a facts cache says what the node is.
    let r = repo(&hosts, free_port(), "fleet_user: root", &node);
    assert!(!r.path().join(".fleet/facts/mac.json").exists());
    std::fs::create_dir_all(r.path().join(".fleet/tokens")).expect("dir");
    std::fs::write(r.path().join(".fleet/tokens/mac.token"), "t\n").expect("token");
    // `fleet provision` learns the machine first, and refuses it before changing anything.
    let out = fleet(r.path())
        .args(["provision", "mac"])
        .output()
        .expect("provision");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no fleet binary for macos/x86_64"), "{err}");
    assert_eq!(
        hosts
            .sh(1, "test -d /etc/fleet && echo yes || echo no")
            .trim(),
        "no"
    );
    let out = fleet(r.path())
        .args(["apply", "playbooks/agents.yaml"])
        .output()
        .expect("apply");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`mac` (macos/x86_64): no fleet binary for macos/x86_64"),
        "{err}"
    );
    assert!(err.contains("dist/fleet-macos-x86_64"), "{err}");
    // Its first task (/etc/fleet) never ran.
    assert_eq!(
        hosts
            .sh(1, "test -d /etc/fleet && echo yes || echo no")
            .trim(),
        "no"
    );
    // Now that its facts are cached, plan and validate say it too (as warnings).
    let plan = fleet(r.path())
        .args(["plan", "playbooks/agents.yaml"])
        .output()
        .expect("plan");
    let err = String::from_utf8_lossy(&plan.stderr);
    assert!(err.contains("warning: `mac` (macos/x86_64)"), "{err}");
}
