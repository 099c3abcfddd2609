//! Upgrading the fleet binary, end to end on real sshd test hosts: the `hq` role (with the
//! agent role it includes) installs binary A and HQ runs it; the controller's binary becomes
//! B (A with bytes appended, still runnable); `--check` predicts the agent's and HQ's
//! restarts, the real run does exactly that — HQ now reports B's sha256, the agent runs B,
//! every heartbeat HQ had stored is still there — and a second run changes nothing. Once on
//! a Linux host (systemd, the systemctl stand-in) and once on the Mac-like host (launchd).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use support::{Hosts, build_repo, crate_root, fleet, free_port, http, parse_case, wait_for};

fn changed(events: &[serde_json::Value]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e["status"] == "changed")
        .map(|e| format!("{} | {}", e["task"].as_str().unwrap_or(""), e["item"]))
        .collect()
}

fn sha256(path: &Path) -> String {
    fleet::hq::binary::file_sha256(path).expect("sum")
}

/// The sha256 HQ reports for the binary it runs, once it reports one.
fn hq_binary(url: &str) -> Option<String> {
    let (code, body) = http("GET", &format!("{url}/healthz"), None, None).ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    (code == 200)
        .then(|| v["binary_sha256"].as_str().map(str::to_string))
        .flatten()
}

/// (received_at, seq) of every heartbeat HQ holds for `node`.
fn stored(url: &str, token: &str, node: &str) -> BTreeSet<(String, u64)> {
    let Ok((200, body)) = http("GET", &format!("{url}/api/nodes/{node}"), Some(token), None) else {
        return BTreeSet::new();
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| {
                    (
                        e["received_at"].as_str().unwrap_or("").to_string(),
                        e["heartbeat"]["seq"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The sha256 of the running fleet executable of service `svc` (the systemctl or launchctl
/// stand-in keeps its pid; the fleet process is that one or a child of it, as `runuser`
/// starts it). Test hosts share the process table, so the pid is the only way to tell.
fn service_sums(hosts: &Hosts, svc: &str) -> BTreeSet<String> {
    let q = fleet::script::shquote(svc);
    hosts
        .sh(
            1,
            &format!(
                "s={q}; pid=$(cat /var/lib/standin-systemd/$s.pid 2>/dev/null || sed -n 's/.*\"pid\": *\\([0-9][0-9]*\\).*/\\1/p' /var/lib/standin-launchd/$s.json)\n\
                 kids=$(pgrep -P \"$pid\"); for p in $pid $kids $(for c in $kids; do pgrep -P $c; done); do [ \"$(cat /proc/$p/comm 2>/dev/null)\" = fleet ] && sha256sum /proc/$p/exe; done | cut -d' ' -f1"
            ),
        )
        .lines()
        .map(str::to_string)
        .collect()
}

struct Setup {
    hosts: Hosts,
    repo: tempfile::TempDir,
    /// The controller's fleet binary the run installs (`agent_source`).
    binary: PathBuf,
    _bin_dir: tempfile::TempDir,
    hq: String,
}

/// HQ's node `bob` on one test host: Linux with the systemd stand-ins, or the Mac-like host.
fn setup(mac: bool) -> Setup {
    let hosts = if mac {
        let hosts = support::mac::a_mac();
        // Colima as a started one leaves it (the docker role's `creates:`).
        hosts.sh(
            1,
            "mkdir -p /Users/symphony/.colima/default && touch /Users/symphony/.colima/default/colima.yaml && chown -R symphony: /Users/symphony",
        );
        hosts
    } else {
        let hosts = Hosts::up(1);
        for tool in ["systemctl", "apt-get", "dpkg-query", "ollama"] {
            hosts.install(
                1,
                &format!("tests/standins/{tool}"),
                &format!("/usr/local/bin/{tool}"),
            );
        }
        hosts.install(1, "tests/standins/docker", "/usr/local/lib/standins/docker");
        hosts.sh(
            1,
            "mkdir -p /run/systemd/system && useradd -r -s /bin/false -U -m -d /var/lib/ollama ollama && useradd -r -s /bin/sh -U -m -d /var/lib/fleet-home fleet",
        );
        hosts
    };
    let user = if mac { "symphony" } else { "fleet" };
    let hq_port = free_port();
    let ollama_port = free_port();
    let hq = format!("http://127.0.0.1:{hq_port}");
    let bin_dir = tempfile::tempdir().expect("tmp");
    let binary = bin_dir.path().join("fleet");
    std::fs::copy(env!("CARGO_BIN_EXE_fleet"), &binary).expect("binary A");
    let hardware = if mac {
        "{ cpu: apple_silicon, os: macos, arch: aarch64, ram_gb: 24 }"
    } else {
        "{ os: linux, arch: x86_64, ram_gb: 16 }"
    };
    let inv = format!(
        "fleet: {{ name: t, hq: bob, hq_url: \"{hq}\", ssh_config: \"{cfg}\" }}\nvars:\n  fleet_user: {user}\n  ssh_user: {ssh_user}\n  ollama_bind: 127.0.0.1\n  agent_interval: 1s\n  hq_bind: 127.0.0.1\n  hq_port: {hq_port}\n  agent_source: \"{bin}\"\nnodes:\n  bob: {{ host: 127.0.0.1, role: hq, hardware: {hardware}, vars: {{ ssh_port: {p1}, ollama_port: {ollama_port} }} }}\n",
        cfg = hosts.ssh_config().display(),
        ssh_user = if mac { "symphony" } else { "root" },
        bin = binary.display(),
        p1 = hosts.port(1),
    );
    let repo = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "upgrade",
            &format!(
                "--- inventory/fleet.yaml\n{inv}--- playbooks/site.yaml\n- name: HQ\n  hosts: bob\n  roles: [hq]\n"
            ),
        ),
    );
    for role in ["hq", "ollama", "docker", "agent"] {
        let to = repo.path().join("roles").join(role);
        std::fs::create_dir_all(&to).expect("role dir");
        std::fs::copy(
            crate_root().join("roles").join(role).join("role.yaml"),
            to.join("role.yaml"),
        )
        .expect("role");
    }
    // bob's agent token, issued into the store HQ will run on, placed on HQ before it starts.
    let db = repo.path().join("hq-store.sqlite");
    let out = fleet(repo.path())
        .args(["token", "issue", "bob", "--db"])
        .arg(&db)
        .arg("--out")
        .arg(repo.path().join(".fleet/tokens/bob.token"))
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    hosts.copy_to(1, &db, "/var/lib/fleet/hq.sqlite");
    hosts.sh(
        1,
        &format!("chown -R {user}: /var/lib/fleet && chmod 750 /var/lib/fleet"),
    );
    Setup {
        hosts,
        repo,
        binary,
        _bin_dir: bin_dir,
        hq,
    }
}

fn apply(repo: &Path, args: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    support::apply_json(repo, "playbooks/site.yaml", args)
}

fn upgrade_restarts_the_agent_and_hq(mac: bool) {
    let s = setup(mac);
    // The first install: HQ is not running yet, so a check run cannot ask it; it predicts no
    // restart for the binary (the start task starts the installed one), as the real run finds.
    let (code, check, err) = apply(s.repo.path(), &["--check"]);
    assert_eq!(code, 0, "{err}\n{check:?}");
    let (code, first, err) = apply(s.repo.path(), &[]);
    assert_eq!(code, 0, "{err}\n{first:?}");
    assert_eq!(
        changed(&check),
        changed(&first),
        "--check predicted the first install"
    );
    assert!(
        !changed(&first).contains("HQ runs the installed fleet binary | null"),
        "{first:?}"
    );
    let a = sha256(&s.binary);
    wait_for(60, "HQ to report binary A", || {
        (hq_binary(&s.hq)? == a).then_some(())
    });
    // bob's own agent reports to HQ; some of its heartbeats are stored before the upgrade.
    let token = s
        .hosts
        .sh(1, "sudo -n cat /var/lib/fleet/.fleet/hq.token 2>/dev/null || cat /var/lib/fleet/.fleet/hq.token")
        .trim()
        .to_string();
    let before = wait_for(60, "bob's heartbeats", || {
        let got = stored(&s.hq, &token, "bob");
        (got.len() >= 3).then_some(got)
    });
    let (agent, hq_svc) = if mac {
        ("com.fleet.agent", "com.fleet.hq")
    } else {
        ("fleet-agent", "fleet-hq")
    };
    assert_eq!(service_sums(&s.hosts, agent), BTreeSet::from([a.clone()]));
    assert_eq!(service_sums(&s.hosts, hq_svc), BTreeSet::from([a.clone()]));
    // Nothing to do while HQ runs what is installed.
    let (code, again, err) = apply(s.repo.path(), &["--check"]);
    assert_eq!(code, 0, "{err}");
    assert!(changed(&again).is_empty(), "{:?}", changed(&again));

    // Binary B: A with bytes appended (an ELF runs the same).
    let mut bytes = std::fs::read(&s.binary).expect("A");
    bytes.extend_from_slice(b"\0fleet upgrade test: binary B\n");
    std::fs::write(&s.binary, &bytes).expect("B");
    let b = sha256(&s.binary);
    assert_ne!(a, b);

    let (code, check, err) = apply(s.repo.path(), &["--check"]);
    assert_eq!(code, 0, "{err}\n{check:?}");
    let expect: BTreeSet<String> = [
        "install, register and start the agent | null",
        "HQ runs the installed fleet binary | null",
        "restart hq | null",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(changed(&check), expect, "{check:?}");
    // A check run changes nothing: HQ still runs A.
    assert_eq!(hq_binary(&s.hq).as_deref(), Some(a.as_str()));

    let (code, real, err) = apply(s.repo.path(), &[]);
    assert_eq!(code, 0, "{err}\n{real:?}");
    assert_eq!(changed(&real), expect, "--check predicted the real run");
    let note = real
        .iter()
        .find(|e| e["task"] == "HQ runs the installed fleet binary")
        .and_then(|e| e["msg"].as_str().map(str::to_string))
        .unwrap_or_default();
    assert!(
        note.contains(&format!("HQ runs fleet {}", &a[..12])) && note.contains(&b[..12]),
        "{note}\n{real:?}"
    );
    // HQ restarted on B, the agent too, and every heartbeat stored before is still there.
    wait_for(60, "HQ to report binary B", || {
        (hq_binary(&s.hq)? == b).then_some(())
    });
    assert_eq!(service_sums(&s.hosts, agent), BTreeSet::from([b.clone()]));
    assert_eq!(service_sums(&s.hosts, hq_svc), BTreeSet::from([b.clone()]));
    let after = wait_for(60, "heartbeats after the restart", || {
        let got = stored(&s.hq, &token, "bob");
        (got != before).then_some(got)
    });
    let lost: Vec<_> = before.difference(&after).collect();
    assert!(
        lost.is_empty(),
        "heartbeats lost over the restart: {lost:?}"
    );

    let (code, again, err) = apply(s.repo.path(), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        changed(&again).is_empty(),
        "second run changed {:?}",
        changed(&again)
    );
}

#[test]
fn a_new_binary_restarts_the_agent_and_hq_under_systemd() {
    upgrade_restarts_the_agent_and_hq(false);
}

#[test]
fn a_new_binary_restarts_the_agent_and_hq_under_launchd() {
    upgrade_restarts_the_agent_and_hq(true);
}
