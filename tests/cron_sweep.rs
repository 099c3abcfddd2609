//! The health sweep the `hq` role puts in cron, run as cron would run it: HQ (the `hq` role
//! with its registry) and a worker (`agent`) on real sshd test hosts, the crontab line read
//! back from HQ's /etc/crontab and its command run as the cron user with cron's bare
//! environment. All well: exit 0, nothing on stdout or stderr. A worker going down: exactly
//! one alert to a real webhook receiver, and none on the next run without a change.

mod support;

use std::collections::BTreeSet;

use support::{Hosts, build_repo, crate_root, fleet, free_port, http, parse_case, wait_for};

fn changed(events: &[serde_json::Value]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e["status"] == "changed")
        .map(|e| format!("{} {} {}", e["host"], e["task"], e["item"]))
        .collect()
}

/// Runs `cmd` on host `k` as cron does: with /bin/sh, as `user`, with cron's minimal
/// environment; returns exit code, stdout, stderr.
fn as_cron(hosts: &Hosts, k: u16, user: &str, cmd: &str) -> (i32, String, String) {
    let q = fleet::script::shquote;
    let out = std::process::Command::new("ssh")
        .arg("-F")
        .arg(hosts.ssh_config())
        .arg(format!("host{k}"))
        .arg(format!(
            "cd / && env -i PATH=/usr/bin:/bin SHELL=/bin/sh LOGNAME={u} su -s /bin/sh {u} -c {c}",
            u = q(user),
            c = q(cmd)
        ))
        .output()
        .expect("ssh");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The user and command of the crontab line that runs `fleet … check`.
fn sweep_line(hosts: &Hosts) -> (String, String) {
    let crontab = hosts.sh(1, "cat /etc/crontab");
    let lines: Vec<&str> = crontab
        .lines()
        .filter(|l| l.contains(" check --alert"))
        .collect();
    assert_eq!(lines.len(), 1, "one sweep line in /etc/crontab:\n{crontab}");
    // minute hour day month weekday user command
    let mut fields = lines[0].splitn(7, ' ');
    let when: Vec<&str> = fields.by_ref().take(5).collect();
    assert_eq!(when, ["*/5", "*", "*", "*", "*"], "{}", lines[0]);
    let user = fields.next().expect("user").to_string();
    let cmd = fields.next().expect("command").to_string();
    // cron ends a command at an unescaped `%`.
    assert!(!cmd.replace("\\%", "").contains('%'), "{cmd}");
    (user, cmd.replace("\\%", "%"))
}

fn hq_says(hq: &str, token: &str, node: &str, status: &str) -> Option<()> {
    let (_, body) = http("GET", &format!("{hq}/api/nodes/{node}"), Some(token), None).ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    (v["status"] == status).then_some(())
}

#[test]
fn the_hq_crontab_line_sweeps_quietly_and_alerts_once_per_change() {
    let hosts = Hosts::up(2);
    for k in 1..=2 {
        for tool in ["systemctl", "apt-get", "dpkg-query", "ollama"] {
            hosts.install(
                k,
                &format!("tests/standins/{tool}"),
                &format!("/usr/local/bin/{tool}"),
            );
        }
        hosts.install(k, "tests/standins/docker", "/usr/local/lib/standins/docker");
        // systemd for facts, Ollama's own user (its installer makes it), and the fleet user
        // the services and the sweep run as.
        hosts.sh(
            k,
            "mkdir -p /run/systemd/system && useradd -r -s /bin/false -U -m -d /var/lib/ollama ollama && useradd -r -s /bin/sh -U -m -d /var/lib/fleet-home fleet",
        );
    }
    let hq_port = free_port();
    let ollama_port = free_port();
    let hq = format!("http://127.0.0.1:{hq_port}");
    let (hook, got) = support::webhook();
    let inv = format!(
        "fleet: {{ name: t, hq: bob, hq_url: \"{hq}\", ssh_config: \"{cfg}\" }}\nvars:\n  fleet_user: fleet\n  ollama_bind: 127.0.0.1\n  agent_interval: 1s\n  hq_bind: 127.0.0.1\n  hq_port: {hq_port}\n  hq_alert_webhook: \"{{{{ env('CRON_SWEEP_WEBHOOK') }}}}\"\nnodes:\n  bob: {{ host: 127.0.0.1, role: hq, hardware: {{ os: linux, arch: x86_64, ram_gb: 16 }}, vars: {{ ssh_port: {p1}, ollama_port: {ollama_port} }} }}\n  w1: {{ host: 127.0.0.1, role: agent, hardware: {{ os: linux, arch: x86_64, ram_gb: 8 }}, vars: {{ ssh_port: {p2} }} }}\n",
        cfg = hosts.ssh_config().display(),
        p1 = hosts.port(1),
        p2 = hosts.port(2),
    );
    let r = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "cron",
            &format!(
                "--- inventory/fleet.yaml\n{inv}--- playbooks/site.yaml\n- name: HQ\n  hosts: bob\n  roles: [hq]\n- name: worker\n  hosts: w1\n  roles: [agent]\n"
            ),
        ),
    );
    // The shipped roles (HQ ships them all to /var/lib/fleet for `fleet check` and `serve`).
    for role in ["hq", "ollama", "docker", "agent"] {
        let to = r.path().join("roles").join(role);
        std::fs::create_dir_all(&to).expect("role dir");
        std::fs::copy(
            crate_root().join("roles").join(role).join("role.yaml"),
            to.join("role.yaml"),
        )
        .expect("role");
    }
    // The agents' tokens, issued into the store HQ will run on, placed on HQ before it starts.
    let db = r.path().join("hq-store.sqlite");
    for node in ["bob", "w1"] {
        let out = fleet(r.path())
            .args(["token", "issue", node, "--db"])
            .arg(&db)
            .arg("--out")
            .arg(r.path().join(format!(".fleet/tokens/{node}.token")))
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    hosts.copy_to(1, &db, "/var/lib/fleet/hq.sqlite");
    hosts.sh(
        1,
        "chown -R fleet: /var/lib/fleet && chmod 750 /var/lib/fleet",
    );

    // --check predicts the real run; the second run changes nothing. The webhook is read
    // from the controller's environment, as docs/check.md suggests; HQ's copy of the
    // inventory says `env(…)`, which the sweep there must not need.
    let apply = |args: &[&str]| {
        let out = fleet(r.path())
            .env("CRON_SWEEP_WEBHOOK", &hook)
            .args(["apply", "playbooks/site.yaml", "--json"])
            .args(args)
            .output()
            .expect("runs");
        let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (
            out.status.code().unwrap_or(-1),
            events,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, check, err) = apply(&["--check"]);
    assert_eq!(code, 0, "{err}\n{check:?}");
    let (code, real, err) = apply(&[]);
    assert_eq!(code, 0, "{err}\n{real:?}");
    assert!(
        !format!("{real:?}{err}").contains(&hook),
        "the webhook is a secret"
    );
    assert_eq!(changed(&check), changed(&real));
    for task in ["HQ alert webhook", "health sweep on a schedule"] {
        assert!(
            changed(&real).contains(&format!("\"bob\" \"{task}\" null")),
            "{task}: {:?}",
            changed(&real)
        );
    }
    let (code, again, err) = apply(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(changed(&again).is_empty(), "{:?}", changed(&again));

    // The webhook is in a file only the cron user reads, never in /etc/crontab.
    let (user, cmd) = sweep_line(&hosts);
    assert_eq!(user, "fleet");
    assert!(!hosts.sh(1, "cat /etc/crontab").contains(&hook));
    assert_eq!(
        hosts.sh(
            1,
            "stat -c '%a %U' /etc/crontab /etc/fleet/alert-webhook; cat /etc/fleet/alert-webhook"
        ),
        format!("644 root\n600 fleet\n{hook}\n")
    );
    assert!(
        cmd.starts_with("/usr/local/bin/fleet -q -i /var/lib/fleet check --alert"),
        "{cmd}"
    );

    // `fleet serve` keeps a client token for its repo; the cron line's `fleet check` uses it.
    let token = hosts
        .sh(1, "cat /var/lib/fleet/.fleet/hq.token")
        .trim()
        .to_string();
    wait_for(60, "both agents to report", || {
        hq_says(&hq, &token, "bob", "online")?;
        hq_says(&hq, &token, "w1", "online")
    });

    // All well: quiet, exit 0, nothing posted (nodes first seen online are no change).
    let (code, out, err) = as_cron(&hosts, 1, &user, &cmd);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""), "all well");
    let (code, out, err) = as_cron(&hosts, 1, &user, &cmd);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "", ""),
        "all well again"
    );
    assert!(got.lock().expect("lock").is_empty());

    // The worker goes down: one alert, naming it; the run says so by its exit code only.
    hosts.kill(2);
    let (code, out, err) = as_cron(&hosts, 1, &user, &cmd);
    assert_eq!((code, out.as_str(), err.as_str()), (1, "", ""), "w1 down");
    let posts = got.lock().expect("lock").clone();
    assert_eq!(posts.len(), 1, "{posts:?}");
    let v: serde_json::Value = serde_json::from_str(&posts[0]).expect("JSON");
    assert_eq!(v["transitions"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["transitions"][0]["node"], "w1");
    assert_eq!(v["transitions"][0]["from"], "online");
    assert_eq!(v["transitions"][0]["to"], "offline");

    // No change since: no second alert.
    let (code, out, err) = as_cron(&hosts, 1, &user, &cmd);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (1, "", ""),
        "w1 still down"
    );
    assert_eq!(got.lock().expect("lock").len(), 1);
}
