//! The `fleet_agent` module through `fleet provision`, end to end on a real sshd host: the
//! token issued into a local HQ store, the binary, token (0600) and unit placed, the agent
//! started (by the systemctl stand-in, which runs ExecStart as systemd would), and the node
//! reporting to a real `fleet serve`.

mod support;

use support::{
    Hosts, build_repo, crate_root, fleet, free_port, http, parse_case, spawn_fleet, wait_for,
};

#[test]
fn provision_installs_a_running_agent_that_reports_to_hq() {
    let hosts = Hosts::up(1);
    hosts.install_standins(1);
    let port = free_port();
    let inv = format!(
        "fleet: {{ name: t, hq: hq1, hq_url: \"http://127.0.0.1:{port}\", ssh_config: \"{}\" }}\nvars: {{ app_dir: /opt/app, fleet_user: root }}\nnodes:\n  hq1: {{ host: 127.0.0.1, role: common, vars: {{ connection: local }} }}\n",
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

    let out = fleet(r.path())
        .args(["provision", "a1", "--role", "agentonly", "--host", "host1"])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{err}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(err.contains("issued an agent token for `a1`"), "{err}");
    let token = std::fs::read_to_string(r.path().join(".fleet/tokens/a1.token"))
        .expect("token on the controller");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(token.trim()),
        "the token never reaches the output"
    );
    let placed = hosts.sh(1, "stat -c '%a %n' /etc/fleet/agent.token /usr/local/bin/fleet; grep ExecStart /etc/systemd/system/fleet-agent.service");
    assert!(
        placed.contains("600 /etc/fleet/agent.token")
            && placed.contains("755 /usr/local/bin/fleet"),
        "{placed}"
    );
    assert!(
        placed
            .contains("--node \"a1\" --token-file \"/etc/fleet/agent.token\" --interval \"200ms\""),
        "{placed}"
    );
    // The agent runs on the host and HQ hears it.
    wait_for(30, "a1 to report", || {
        let (_, body) = http(
            "GET",
            &format!("http://127.0.0.1:{port}/api/nodes/a1"),
            Some(&support::hq_token(r.path())),
            None,
        )
        .ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["status"] == "online").then_some(())
    });
    // Logs go to the journal: the unit names them and gives the agent no file; the agent,
    // its stderr being the journal (JOURNAL_STREAM, set by the systemctl stand-in as systemd
    // does), writes each line with its syslog priority and without a timestamp or colours.
    let unit = hosts.sh(1, "cat /etc/systemd/system/fleet-agent.service");
    assert!(unit.contains("\nSyslogIdentifier=fleet-agent\n"), "{unit}");
    assert!(!unit.contains("--log-file"), "{unit}");
    let journal = hosts.sh(1, "cat /var/log/standin-fleet-agent.log");
    assert!(
        journal
            .lines()
            .any(|l| l.starts_with("<6>INFO agent for `a1` reporting to ")),
        "{journal}"
    );
    for l in journal.lines() {
        let level = l.get(3..).unwrap_or("");
        assert!(
            l.starts_with('<')
                && ["ERROR ", "WARN ", "INFO ", "DEBUG "]
                    .iter()
                    .any(|w| level.starts_with(w))
                && !l.contains('\x1b'),
            "not a journal line: {l:?}"
        );
    }
    assert_eq!(
        hosts.sh(1, "ls -A /var/log/fleet 2>/dev/null || true"),
        "",
        "no log file on Linux"
    );
    // A second provision changes nothing (binary by checksum, token, unit, running service).
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
