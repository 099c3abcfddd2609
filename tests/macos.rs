//! fleet's macOS code paths — facts, Homebrew, launchd plists and `launchctl`, the agent as a
//! launchd daemon — end to end on a real sshd host that answers like a Mac, since macOS
//! cannot run here. Stand-ins (tests/standins/macos): `uname` and `sw_vers` say Darwin/macOS
//! 15; Homebrew lives at /opt/homebrew/bin/brew, off a non-login session's PATH, and refuses
//! root as the real one does; `launchctl` loads plists from the host's private /Library and
//! runs their programs with their environment and as their `UserName`, as launchd would. The
//! login is the Mac's admin user with passwordless sudo, as on a real fleet Mac.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use support::mac::a_mac;
use support::{build_repo, crate_root, fleet, free_port, http, parse_case, spawn_fleet, wait_for};

fn apply(repo: &Path, args: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    support::apply_json(repo, "playbooks/mac.yaml", args)
}

fn changed(events: &[serde_json::Value]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e["status"] == "changed")
        .map(|e| format!("{} | {}", e["task"].as_str().unwrap_or(""), e["item"]))
        .collect()
}

#[test]
fn the_mac_roles_install_with_homebrew_and_run_under_launchd() {
    let hosts = a_mac();
    let hq_port = free_port();
    let ollama_port = free_port();
    let inv = format!(
        "fleet: {{ name: t, hq: hq1, hq_url: \"http://127.0.0.1:{hq_port}\", ssh_config: \"{cfg}\" }}\nvars: {{ app_dir: /opt/app, ssh_user: symphony, fleet_user: symphony, ollama_bind: 127.0.0.1, agent_interval: 300ms, agent_source: \"{bin}\" }}\nnodes:\n  hq1: {{ host: 127.0.0.1, role: common, vars: {{ connection: local }} }}\n  m1:\n    host: 127.0.0.1\n    role: ollama\n    hardware: {{ cpu: apple_silicon, os: macos, arch: aarch64, ram_gb: 24 }}\n    models: [llama3.2:3b]\n    vars: {{ ssh_port: {ssh}, ollama_port: {ollama_port} }}\n",
        cfg = hosts.ssh_config().display(),
        bin = env!("CARGO_BIN_EXE_fleet"),
        ssh = hosts.port(1),
    );
    let r = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "mac",
            &format!(
                "--- inventory/fleet.yaml\n{inv}--- playbooks/mac.yaml\n- name: a Mac worker\n  hosts: m1\n  roles: [ollama, browser, agent]\n"
            ),
        ),
    );
    for role in ["ollama", "browser", "agent"] {
        let to = r.path().join("roles").join(role);
        std::fs::create_dir_all(&to).expect("role dir");
        std::fs::copy(
            crate_root().join("roles").join(role).join("role.yaml"),
            to.join("role.yaml"),
        )
        .expect("role");
    }
    // HQ, and the node's token in its store.
    let db = r.path().join(".fleet/hq.sqlite");
    let db_arg = db.display().to_string();
    let token = r.path().join(".fleet/tokens/m1.token");
    let issued = fleet(r.path())
        .args(["token", "issue", "m1", "--db", &db_arg, "--out"])
        .arg(&token)
        .output()
        .expect("runs");
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    let serve = spawn_fleet(
        r.path(),
        &[
            "serve",
            "--listen",
            &format!("127.0.0.1:{hq_port}"),
            "--db",
            &db_arg,
        ],
        &r.path().join("serve.log"),
    );
    wait_for(20, "serve", || {
        http(
            "GET",
            &format!("http://127.0.0.1:{hq_port}/healthz"),
            None,
            None,
        )
        .ok()
        .filter(|(c, _)| *c == 200)
    });

    // The facts of a Mac.
    let facts = fleet(r.path())
        .args(["facts", "m1", "--json"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&facts.stdout);
    assert!(
        facts.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&facts.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&text).expect("facts JSON");
    for (key, want) in [
        ("os", "macos"),
        ("arch", "aarch64"),
        ("os_version", "macOS 15.1"),
        ("init", "launchd"),
        ("package_manager", "brew"),
    ] {
        assert_eq!(v["m1"][key], want, "{key} in {text}");
    }

    // --check predicts exactly the real run; the second run changes nothing.
    let (code, check, err) = apply(r.path(), &["--check"]);
    assert_eq!(code, 0, "{err}\n{check:?}");
    let (code, real, err) = apply(r.path(), &[]);
    assert_eq!(code, 0, "{err}\n{real:?}");
    assert_eq!(
        changed(&check),
        changed(&real),
        "--check predicted other changes"
    );
    let expect: BTreeSet<String> = [
        "install Ollama (Homebrew) | null",
        "Ollama launchd daemon | null",
        "start Ollama | null",
        "restart ollama | null",
        "pull the node's models | \"llama3.2:3b\"",
        "install Google Chrome (Homebrew cask) | null",
        "browser profile directory | null",
        "managed preferences directory | null",
        "force-install HARPA (Chrome managed preferences) | null",
        "fleet configuration directory | null",
        "fleet state directory | null",
        "install, register and start the agent | null",
        "agent log rotation (newsyslog) | null",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(changed(&real), expect);
    let (code, again, err) = apply(r.path(), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        changed(&again).is_empty(),
        "second run changed {:?}",
        changed(&again)
    );

    // What is on the "Mac": Homebrew ran as the admin, plists in /Library, both daemons loaded
    // and running as the fleet user, the model pulled through Ollama's API.
    let brew = hosts.sh(1, "cat /opt/homebrew/.standin/brew.log");
    assert!(
        brew.contains("brew install ollama") && brew.contains("brew install --cask google-chrome"),
        "{brew}"
    );
    let plists = std::fs::read_dir(
        hosts
            .dir
            .path()
            .join("hosts/1/private/Library/LaunchDaemons"),
    )
    .expect("/Library/LaunchDaemons on the host")
    .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
    .collect::<BTreeSet<_>>();
    assert_eq!(
        plists,
        ["com.fleet.agent.plist", "com.fleet.ollama.plist"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    let ps = hosts.sh(1, "launchctl print system/com.fleet.ollama; launchctl print system/com.fleet.agent; ps -o user= -o args= -u symphony");
    assert!(ps.matches("state = running").count() == 2, "{ps}");
    assert!(
        ps.contains("/opt/homebrew/bin/ollama serve") && ps.contains("fleet agent --hq"),
        "{ps}"
    );
    assert_eq!(
        hosts.sh(1, "stat -c '%a %U' /etc/fleet/agent.token /var/log/fleet"),
        "600 symphony\n755 symphony\n"
    );
    let (_, tags) = http(
        "GET",
        &format!("http://127.0.0.1:{ollama_port}/api/tags"),
        None,
        None,
    )
    .expect("Ollama answers");
    assert!(tags.contains("llama3.2:3b"), "{tags}");
    // The agent, started by launchd as the fleet user, reads its token and reports to HQ.
    wait_for(30, "m1 to report", || {
        let (_, body) = http(
            "GET",
            &format!("http://127.0.0.1:{hq_port}/api/nodes/m1"),
            Some(&support::hq_token(r.path())),
            None,
        )
        .ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["status"] == "online").then_some(())
    });

    // A changed plist restarts the daemon through launchctl (the handler), once.
    let kickstarts = || {
        hosts.sh(
            1,
            "grep -c 'kickstart -k system/com.fleet.ollama' /var/log/standin-launchctl.log || true",
        )
    };
    let before = kickstarts();
    let (code, ev, err) = apply(r.path(), &["-e", "ollama_keep_alive=30m"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        ev.iter()
            .any(|e| e["event"] == "handler" && e["status"] == "changed"),
        "{ev:?}"
    );
    let n: u32 = before.trim().parse().unwrap_or(0);
    assert_eq!(kickstarts(), format!("{}\n", n + 1));
    assert!(
        hosts
            .sh(1, "cat /Library/LaunchDaemons/com.fleet.ollama.plist")
            .contains("<string>30m</string>")
    );

    // `fleet check --deep` lists a Mac's listening sockets with lsof (uname says Darwin): the
    // Ollama launchd runs is found, on loopback, named, and no problem.
    let out = fleet(r.path())
        .args([
            "check",
            "--deep",
            "--json",
            "--node",
            "m1",
            "--timeout",
            "5s",
        ])
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let listeners = &v["nodes"][0]["checks"]["listeners"];
    assert!(
        listeners["detail"]
            .as_str()
            .is_some_and(|d| d.contains("listening socket") && d.ends_with("(lsof)")),
        "{v}"
    );
    let reasons = v["nodes"][0]["reasons"].to_string();
    assert!(
        !reasons.contains(&format!("port {ollama_port} ")),
        "{reasons}"
    );

    // The agent logs to /var/log/fleet/agent.log (its stderr file keeps no log line), which
    // newsyslog rotates by the rule the role placed.
    let conf = hosts.sh(
        1,
        "stat -c '%a %U' /etc/newsyslog.d/fleet-agent.conf; cat /etc/newsyslog.d/fleet-agent.conf",
    );
    assert!(conf.starts_with("644 root\n"), "{conf}");
    let rules: Vec<&str> = conf.lines().filter(|l| l.starts_with('/')).collect();
    assert_eq!(
        rules,
        [
            "/var/log/fleet/agent.log\tsymphony:\t640\t7\t10240\t*\tJN",
            "/var/log/fleet/agent.stderr.log\tsymphony:\t640\t2\t1024\t*\tJN",
        ],
        "{conf}"
    );
    let log = hosts.sh(1, "cat /var/log/fleet/agent.log");
    assert!(log.contains("INFO agent for `m1` reporting to"), "{log}");
    assert_eq!(hosts.sh(1, "cat /var/log/fleet/agent.stderr.log"), "");
    // What newsyslog does: rename the log, then move a new empty file (its owner and mode)
    // into place; nobody tells the agent. Its next lines (HQ gone: heartbeats fail) land in
    // the new file.
    hosts.sh(
        1,
        "cd /var/log/fleet && mv agent.log agent.log.0 && t=$(mktemp agent.log.XXXXXX) && chown symphony: \"$t\" && chmod 640 \"$t\" && mv \"$t\" agent.log",
    );
    drop(serve);
    let fresh = wait_for(30, "the agent's next lines in the new agent.log", || {
        let log = hosts.sh(1, "cat /var/log/fleet/agent.log");
        log.contains("WARN heartbeat").then_some(log)
    });
    assert!(!fresh.contains("reporting to"), "{fresh}");
    let old = hosts.sh(1, "cat /var/log/fleet/agent.log.0");
    assert!(old.contains("INFO agent for `m1` reporting to"), "{old}");
    assert_eq!(
        hosts.sh(1, "stat -c '%a %U' /var/log/fleet/agent.log"),
        "640 symphony\n"
    );
}

#[test]
fn homebrew_refuses_root_with_a_clear_message() {
    let hosts = a_mac();
    let inv = format!(
        "fleet: {{ name: t, hq: m1, hq_url: \"http://127.0.0.1:1\", ssh_config: \"{}\" }}\nvars: {{ ssh_user: symphony }}\nnodes:\n  m1: {{ host: 127.0.0.1, role: common, vars: {{ ssh_port: {} }} }}\n",
        hosts.ssh_config().display(),
        hosts.port(1)
    );
    let r = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "brew",
            &format!(
                "--- inventory/fleet.yaml\n{inv}--- playbooks/mac.yaml\n- name: brew\n  hosts: all\n  tasks:\n    - {{ name: jq, package: {{ name: jq, manager: brew }} }}\n    - {{ name: jq as root, package: {{ name: wget, manager: brew }}, become: true }}\n"
            ),
        ),
    );
    let (code, ev, _) = apply(r.path(), &[]);
    assert_eq!(code, 1);
    assert_eq!(
        ev.iter()
            .find(|e| e["task"] == "jq")
            .map(|e| e["status"].clone()),
        Some("changed".into())
    );
    let failed = ev
        .iter()
        .find(|e| e["task"] == "jq as root")
        .expect("event");
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["msg"]
            .as_str()
            .unwrap_or("")
            .contains("Homebrew does not run as root"),
        "{failed}"
    );
    assert_eq!(hosts.sh(1, "ls /opt/homebrew/Cellar"), "jq\n");
}
