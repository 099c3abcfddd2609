//! Issue 16, "private by default": services listen on the node's fleet address, never on every
//! interface unless a variable says so, and `fleet check --deep` finds what listens beyond the
//! fleet network. On real sshd test hosts (tests/hosts/fleet-hosts), which share this machine's
//! network namespace: each host's "fleet address" is a loopback address of its own
//! (127.0.0.x), and `ss` inside the host sees every socket of the machine.

mod support;

use std::path::Path;

use support::{Hosts, build_repo, crate_root, fleet, free_port, parse_case};

/// A repo with the real ollama role and a playbook applying it to `w1`.
fn ollama_repo(inv: &str) -> tempfile::TempDir {
    let r = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "bind",
            &format!(
                "--- inventory/fleet.yaml\n{inv}--- playbooks/ollama.yaml\n- name: an Ollama worker\n  hosts: w1\n  roles: [ollama]\n"
            ),
        ),
    );
    let to = r.path().join("roles/ollama");
    std::fs::create_dir_all(&to).expect("role dir");
    std::fs::copy(
        crate_root().join("roles/ollama/role.yaml"),
        to.join("role.yaml"),
    )
    .expect("role");
    for t in ["ollama.service.j2", "com.fleet.ollama.plist.j2"] {
        let dir = r.path().join("templates/services");
        std::fs::create_dir_all(&dir).expect("templates");
        std::fs::copy(crate_root().join("templates/services").join(t), dir.join(t))
            .expect("template");
    }
    r
}

fn apply(repo: &Path, args: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    support::apply_json(repo, "playbooks/ollama.yaml", args)
}

fn changed(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["status"] == "changed")
        .map(|e| format!("{} {}", e["task"], e["item"]))
        .collect()
}

/// A Linux host with systemd's and apt's stand-ins and the Ollama stand-in installed where
/// the installer would put it.
fn a_linux_host() -> Hosts {
    let hosts = Hosts::up(1);
    hosts.install_standins(1);
    hosts.install(1, "tests/standins/ollama", "/usr/local/bin/ollama");
    hosts
}

fn inventory(hosts: &Hosts, node: &str, vars: &str) -> String {
    format!(
        "fleet: {{ name: t, hq: w1, hq_url: \"http://127.0.0.1:1\", ssh_config: \"{}\" }}\nvars: {{ app_dir: /opt/app, ollama_user: root{vars} }}\nnodes:\n  w1: {{ host: 127.0.0.1, {node}role: ollama, hardware: {{ os: linux, ram_gb: 32 }}, vars: {{ ssh_port: {} }} }}\n",
        hosts.ssh_config().display(),
        hosts.port(1),
    )
}

#[test]
fn ollama_listens_on_the_fleet_address_only() {
    let hosts = a_linux_host();
    let port = free_port();
    let r = ollama_repo(&inventory(
        &hosts,
        "address: 127.0.0.23, ",
        &format!(", ollama_port: {port}"),
    ));
    let (code, predicted, err) = apply(r.path(), &["--check"]);
    assert_eq!(code, 0, "{err}");
    let (code, real, err) = apply(r.path(), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        changed(&predicted),
        changed(&real),
        "--check predicts the run"
    );
    let unit = hosts.sh(1, "cat /etc/systemd/system/ollama.service");
    assert!(
        unit.contains(&format!("Environment=\"OLLAMA_HOST=127.0.0.23:{port}\"")),
        "{unit}"
    );
    // What listens on the port, as the host sees it.
    let ss = hosts.sh(1, &format!("ss -Hltn 'sport = :{port}'"));
    assert!(ss.contains(&format!("127.0.0.23:{port}")), "{ss}");
    assert!(
        !ss.contains(&format!("0.0.0.0:{port}")) && !ss.contains(&format!("*:{port}")),
        "Ollama listens on every interface:\n{ss}"
    );
    let (code, again, err) = apply(r.path(), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        changed(&again).is_empty(),
        "second run: {:?}",
        changed(&again)
    );
    let (_, check, _) = apply(r.path(), &["--check"]);
    assert!(changed(&check).is_empty(), "{:?}", changed(&check));

    // The audit: Ollama on the fleet address is fine; a port a test opens on every interface
    // is reported with the process that holds it.
    let open = free_port();
    hosts.sh(
        1,
        &format!(
            "cd /tmp && (setsid -f python3 -m http.server --bind 0.0.0.0 {open}) >/dev/null 2>&1 </dev/null; for i in $(seq 100); do ss -Hltn 'sport = :{open}' | grep -q . && break; sleep 0.05; done"
        ),
    );
    let out = fleet(r.path())
        .args([
            "check",
            "--deep",
            "--json",
            "--node",
            "w1",
            "--timeout",
            "5s",
        ])
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let reasons: Vec<String> = v["nodes"][0]["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    let mine: Vec<&String> = reasons
        .iter()
        .filter(|r| {
            r.starts_with(&format!(
                "port {open} on w1 is open beyond the fleet network"
            ))
        })
        .collect();
    assert_eq!(mine.len(), 1, "{reasons:#?}");
    assert!(
        mine[0].contains(&format!("0.0.0.0:{open} (python3, pid ")),
        "{}",
        mine[0]
    );
    assert!(
        !reasons
            .iter()
            .any(|r| r.starts_with(&format!("port {port} "))),
        "Ollama on the fleet address is not a problem: {reasons:#?}"
    );
    assert_eq!(v["nodes"][0]["checks"]["listeners"]["ok"], false, "{v}");
    assert_eq!(out.status.code(), Some(1));
    // Only this test's server: its exact command line.
    hosts.sh(
        1,
        &format!("pkill -f -x 'python3 -m http.server --bind 0.0.0.0 {open}' || true"),
    );
}

#[test]
fn a_node_without_an_ip_is_refused_unless_a_variable_opens_every_interface() {
    let r = ollama_repo(
        "fleet: { name: t, hq: w1, hq_url: \"http://w1.lan:8765\" }\nvars: { app_dir: /opt/app }\nnodes:\n  w1: { host: w1.lan, role: ollama, hardware: { os: linux, ram_gb: 32 } }\n",
    );
    let out = fleet(r.path()).arg("validate").output().expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("inventory/fleet.yaml:4:3: error: node `w1` runs Ollama, which listens on its fleet address, and its `host` \"w1.lan\" is not an IP a server can bind to"),
        "{err}"
    );
    assert!(
        err.contains("help: write the node's fleet IP as `address:`"),
        "{err}"
    );
    // `fleet plan` refuses too, before any host is contacted.
    let out = fleet(r.path())
        .args(["plan", "playbooks/ollama.yaml"])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("node w1 has no IP address for Ollama to listen on"),
        "{err}"
    );

    // An `address` that is an IP, or an explicit `ollama_bind`, is accepted.
    for fix in [
        "nodes:\n  w1: { host: w1.lan, address: 10.0.0.7, role: ollama, hardware: { os: linux, ram_gb: 32 } }\n",
        "nodes:\n  w1: { host: w1.lan, role: ollama, hardware: { os: linux, ram_gb: 32 }, vars: { ollama_bind: 0.0.0.0 } }\n",
    ] {
        std::fs::write(
            r.path().join("inventory/fleet.yaml"),
            format!("fleet: {{ name: t, hq: w1, hq_url: \"http://w1.lan:8765\" }}\nvars: {{ app_dir: /opt/app }}\n{fix}"),
        )
        .expect("write");
        let out = fleet(r.path())
            .args(["plan", "playbooks/ollama.yaml", "--json"])
            .output()
            .expect("runs");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{fix}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = if fix.contains("10.0.0.7") {
            "10.0.0.7:11434"
        } else {
            "0.0.0.0:11434"
        };
        let out = fleet(r.path())
            .args(["plan", "playbooks/ollama.yaml", "--diff"])
            .output()
            .expect("runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("OLLAMA_HOST={want}")), "{text}");
    }

    // Gathered facts that know the node's addresses catch an `address` it does not have.
    std::fs::write(
        r.path().join("inventory/fleet.yaml"),
        "fleet: { name: t, hq: w1, hq_url: \"http://w1.lan:8765\" }\nvars: { app_dir: /opt/app }\nnodes:\n  w1: { host: w1.lan, address: 10.0.0.7, role: ollama, hardware: { os: linux, ram_gb: 32 } }\n",
    )
    .expect("write");
    std::fs::create_dir_all(r.path().join(".fleet/facts")).expect("dir");
    std::fs::write(
        r.path().join(".fleet/facts/w1.json"),
        r#"{"os": "linux", "addresses": ["10.0.0.8", "fe80::1"]}"#,
    )
    .expect("facts");
    let out = fleet(r.path()).arg("validate").output().expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("inventory/fleet.yaml:4:32: warning: node `w1` would listen on 10.0.0.7, which is none of its addresses when its facts were gathered (10.0.0.8, fe80::1)"),
        "{err}"
    );
}

#[test]
fn docker_publishes_ports_on_loopback_only() {
    let hosts = Hosts::up(1);
    hosts.install_standins(1);
    hosts.install(1, "tests/standins/docker", "/usr/local/lib/standins/docker");
    let r = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "docker",
            &format!(
                "--- inventory/fleet.yaml\nfleet: {{ name: t, ssh_config: \"{}\" }}\nvars: {{ app_dir: /opt/app, fleet_user: root }}\nnodes:\n  w1: {{ host: 127.0.0.1, role: docker, hardware: {{ os: linux, ram_gb: 32 }}, vars: {{ ssh_port: {} }} }}\n--- playbooks/docker.yaml\n- name: Docker\n  hosts: w1\n  roles: [docker]\n",
                hosts.ssh_config().display(),
                hosts.port(1)
            ),
        ),
    );
    let to = r.path().join("roles/docker");
    std::fs::create_dir_all(&to).expect("role dir");
    std::fs::copy(
        crate_root().join("roles/docker/role.yaml"),
        to.join("role.yaml"),
    )
    .expect("role");
    let run = |args: &[&str]| support::apply_json(r.path(), "playbooks/docker.yaml", args);
    let (code, predicted, err) = run(&["--check"]);
    assert_eq!(code, 0, "{err}");
    let (code, real, err) = run(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        changed(&predicted),
        changed(&real),
        "--check predicts the run"
    );
    let conf: serde_json::Value =
        serde_json::from_str(&hosts.sh(1, "cat /etc/docker/daemon.json")).expect("daemon.json");
    assert_eq!(conf, serde_json::json!({ "ip": "127.0.0.1" }));
    // The engine was restarted to read it.
    assert!(
        hosts
            .sh(1, "cat /var/lib/standin-systemd/docker.history")
            .contains("restart"),
    );
    let (code, again, err) = run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(changed(&again).is_empty(), "{:?}", changed(&again));
    let (_, check, _) = run(&["--check"]);
    assert!(changed(&check).is_empty(), "{:?}", changed(&check));
}

#[test]
fn the_example_hq_listens_on_its_fleet_address() {
    // bob (macOS) in the example fleet: HQ and Ollama on its `address`, in its launchd plists.
    let out = fleet(&crate_root())
        .args([
            "plan",
            "playbooks/site.yaml",
            "--limit",
            "bob",
            "--diff",
            "--json",
        ])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let tasks: Vec<&serde_json::Value> = v["plays"]
        .as_array()
        .expect("plays")
        .iter()
        .flat_map(|p| p["targets"].as_array().expect("targets").iter())
        .flat_map(|t| t["tasks"].as_array().expect("tasks").iter())
        .collect();
    let file = |dest: &str| -> String {
        tasks
            .iter()
            .find_map(|t| {
                (t["file"]["dest"] == dest)
                    .then(|| t["file"]["content"].as_str().unwrap_or("").to_string())
            })
            .unwrap_or_else(|| panic!("no {dest} in the plan"))
    };
    let hq = file("/Library/LaunchDaemons/com.fleet.hq.plist");
    assert!(hq.contains("<string>192.168.1.10:8765</string>"), "{hq}");
    let ollama = file("/Library/LaunchDaemons/com.fleet.ollama.plist");
    assert!(
        ollama.contains("<string>192.168.1.10:11434</string>"),
        "{ollama}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("https://192.168.1.10:8765/healthz"),
        "HQ is waited for where it listens"
    );
    assert!(!hq.contains("0.0.0.0") && !ollama.contains("0.0.0.0"));
}
