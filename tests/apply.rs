//! `fleet apply` on real sshd hosts (`tests/hosts/fleet-hosts`: one sshd per host on
//! loopback, each in its own mount namespace with private /etc /opt /usr/local /var).

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use support::{Hosts, build_repo, crate_root, fleet, parse_case, spawn_fleet, wait_for};

fn inventory(hosts: &Hosts, n: u16, extra: &str) -> String {
    let mut s = format!(
        "fleet: {{ name: t, hq: h1, hq_url: \"http://127.0.0.1:1\", ssh_config: \"{}\" }}\nvars: {{ app_dir: /opt/app, ollama_port: 11434 }}\nnodes:\n",
        hosts.ssh_config().display()
    );
    for k in 1..=n {
        s.push_str(&format!(
            "  h{k}: {{ host: 127.0.0.1, role: common, vars: {{ ssh_port: {} }} }}\n",
            hosts.port(k)
        ));
    }
    s.push_str(extra);
    s
}

fn repo_with(hosts: &Hosts, n: u16, extra_nodes: &str, files: &str) -> tempfile::TempDir {
    let case = parse_case(
        "apply",
        &format!(
            "--- inventory/fleet.yaml\n{}{files}",
            inventory(hosts, n, extra_nodes)
        ),
    );
    build_repo(&crate_root().join("tests/corpus/base"), &case)
}

/// Runs apply with --json; returns exit code and events.
fn apply(repo: &Path, args: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    support::apply_json(repo, "playbooks/site.yaml", args)
}

fn changed(events: &[serde_json::Value]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e["status"] == "changed")
        .map(|e| format!("{} {} {}", e["host"], e["task"], e["item"]))
        .collect()
}

fn recap(events: &[serde_json::Value], host: &str) -> serde_json::Value {
    events
        .iter()
        .find(|e| e["event"] == "recap" && e["host"] == host)
        .map(|e| e["counts"].clone())
        .unwrap_or_default()
}

fn workload_repo(hosts: &Hosts, n: u16) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    support::copy_tree(&crate_root().join("bench/workload"), dir.path());
    let inv = std::process::Command::new(dir.path().join("gen-inventory"))
        .args([
            &n.to_string(),
            &hosts.ssh_config().display().to_string(),
            &hosts.base.to_string(),
        ])
        .output()
        .expect("gen-inventory");
    std::fs::write(dir.path().join("inventory/fleet.yaml"), inv.stdout).expect("write");
    dir
}

#[test]
fn check_predicts_exactly_what_the_run_changes_and_the_second_run_changes_nothing() {
    let hosts = Hosts::up(3);
    let repo = workload_repo(&hosts, 3);
    let (code, predicted, err) = apply(repo.path(), &["--check"]);
    assert_eq!(code, 0, "{err}");
    let (code, real, err) = apply(repo.path(), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        changed(&predicted),
        changed(&real),
        "--check must predict exactly the changes of the real run"
    );
    assert_eq!(changed(&real).len(), 36, "12 changes on each of 3 hosts");
    // Check mode changed nothing on the hosts: the first real run still had everything to do.
    let (code, again, _) = apply(repo.path(), &[]);
    assert_eq!(code, 0);
    assert!(
        changed(&again).is_empty(),
        "second run: {:?}",
        changed(&again)
    );
    assert_eq!(
        recap(&again, "host1"),
        serde_json::json!({ "ok": 12, "changed": 0, "failed": 0, "skipped": 0, "unreachable": 0 })
    );
    let (_, predicted_again, _) = apply(repo.path(), &["--check"]);
    assert!(changed(&predicted_again).is_empty());
    // What landed on a host, with the requested modes and owners.
    let out = hosts.sh(2, "stat -c '%a %U %G %n' /etc/fleet /var/lib/fleet /etc/fleet/node.toml /opt/fleet/bin/healthcheck.sh; readlink /usr/local/bin/fleet-healthcheck; grep OLLAMA_HOST /etc/environment; ls -a /etc/fleet");
    assert!(out.contains("750 root root /etc/fleet"), "{out}");
    assert!(out.contains("750 fleet"), "{out}");
    assert!(out.contains("640 root fleet /etc/fleet/node.toml"), "{out}");
    assert!(
        out.contains("755 root root /opt/fleet/bin/healthcheck.sh"),
        "{out}"
    );
    assert!(
        out.contains("/opt/fleet/bin/healthcheck.sh\nOLLAMA_HOST=127.0.0.1:11434"),
        "{out}"
    );
    assert!(
        !out.contains(".fleet."),
        "no temporary files left behind: {out}"
    );
    let toml = hosts.sh(3, "cat /etc/fleet/node.toml");
    assert!(
        toml.contains("name = \"host3\"") && toml.contains("cpus = "),
        "{toml}"
    );
    // Facts were cached for render and eligible.
    assert!(repo.path().join(".fleet/facts/host1.json").exists());
}

#[test]
fn unreachable_and_dying_hosts_leave_the_play_and_the_others_finish() {
    let hosts = Hosts::up(3);
    let files = "--- playbooks/site.yaml\n- name: slow\n  hosts: all\n  tasks:\n    - name: mark\n      shell: \"touch /tmp/started-$(hostname); [ $(hostname) = host2 ] && sleep 5 || true\"\n    - name: after\n      file: { path: /opt/after, state: directory }\n";
    let closed = support::free_port();
    let repo = repo_with(
        &hosts,
        3,
        &format!("  gone: {{ host: 127.0.0.1, role: common, vars: {{ ssh_port: {closed} }} }}\n"),
        files,
    );
    let log = repo.path().join("apply.log");
    let mut child = spawn_fleet(
        repo.path(),
        &["apply", "playbooks/site.yaml", "--json"],
        &log,
    );
    // host2's sshd dies while its first task runs.
    wait_for(20, "host2's task to start", || {
        hosts
            .dir
            .path()
            .join("hosts/2/tmp/started-host2")
            .exists()
            .then_some(())
    });
    hosts.kill(2);
    let status = wait_for(30, "apply to finish", || child.0.try_wait().ok().flatten());
    assert_eq!(status.code(), Some(1));
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(recap(&events, "h2")["unreachable"], 1, "{events:?}");
    assert_eq!(recap(&events, "gone")["unreachable"], 1);
    for h in ["h1", "h3"] {
        assert_eq!(
            recap(&events, h),
            serde_json::json!({ "ok": 0, "changed": 2, "failed": 0, "skipped": 0, "unreachable": 0 }),
            "{h}"
        );
    }
    assert!(hosts.sh(1, "ls -d /opt/after").contains("/opt/after"));
}

#[test]
fn failures_handlers_registers_and_conditions() {
    let hosts = Hosts::up(2);
    let files = concat!(
        "--- playbooks/site.yaml\n",
        "- name: logic\n  hosts: all\n  tasks:\n",
        "    - name: probe\n      command: uname -s\n      register: kernel\n      changed_when: false\n",
        "    - name: only on linux\n      copy: { content: \"{{ kernel.stdout }}\\n\", dest: /etc/kernel-name, mode: \"0600\" }\n      when: kernel.stdout == \"Linux\"\n      notify: announce\n",
        "    - name: never\n      file: { path: /opt/never, state: directory }\n      when: facts.os == \"macos\"\n",
        "    - name: tolerated failure\n      command: \"false\"\n      ignore_errors: true\n",
        "    - name: fails on h2\n      command: \"test {{ node.name }} != h2\"\n",
        "    - name: after the failure\n      file: { path: /opt/after, state: directory }\n",
        "  handlers:\n    - name: announce\n      copy: { content: \"handled\\n\", dest: /etc/handled }\n"
    );
    let repo = repo_with(&hosts, 2, "", files);
    let (code, events, _) = apply(repo.path(), &[]);
    assert_eq!(code, 1, "h2 failed");
    let st = |h: &str, t: &str| {
        events
            .iter()
            .find(|e| e["host"] == h && e["task"] == t)
            .map(|e| e["status"].as_str().unwrap_or("").to_string())
            .unwrap_or_else(|| "absent".into())
    };
    assert_eq!(st("h1", "probe"), "ok");
    assert_eq!(st("h1", "only on linux"), "changed");
    assert_eq!(st("h1", "never"), "skipped");
    assert_eq!(st("h1", "tolerated failure"), "failed");
    assert_eq!(st("h1", "fails on h2"), "changed");
    assert_eq!(st("h2", "fails on h2"), "failed");
    assert_eq!(st("h1", "after the failure"), "changed");
    assert_eq!(
        st("h2", "after the failure"),
        "absent",
        "a failed host leaves the play"
    );
    assert_eq!(
        st("h1", "announce"),
        "changed",
        "notified handler ran on h1"
    );
    assert_eq!(
        st("h2", "announce"),
        "absent",
        "h2 failed before the handlers"
    );
    let msg = events
        .iter()
        .find(|e| e["host"] == "h2" && e["task"] == "fails on h2")
        .and_then(|e| e["msg"].as_str())
        .unwrap_or("")
        .to_string();
    assert!(msg.starts_with("exit 1"), "{msg}");
    assert_eq!(
        hosts.sh(
            1,
            "cat /etc/kernel-name; stat -c %a /etc/kernel-name; cat /etc/handled"
        ),
        "Linux\n600\nhandled\n"
    );
    assert_eq!(
        recap(&events, "h1"),
        serde_json::json!({ "ok": 1, "changed": 4, "failed": 1, "skipped": 1, "unreachable": 0 })
    );
    // Second run: the handler is not notified again.
    let (_, events, _) = apply(repo.path(), &["--limit", "h1"]);
    assert_eq!(events.iter().filter(|e| e["event"] == "handler").count(), 0);
}

#[test]
fn secrets_never_show_in_the_hosts_process_list() {
    // A task's script travels on stdin, so a secret it exports is not in any command line on
    // the host while the task runs. The task records every process's command line then.
    let hosts = Hosts::up(1);
    let files = concat!(
        "--- playbooks/site.yaml\n",
        "- name: secrets\n  hosts: all\n  tasks:\n",
        "    - name: look while a secret is in the environment\n      shell:\n        cmd: \"test -n \\\"$TOKEN\\\" && cat /proc/[0-9]*/cmdline | tr '\\\\000' ' ' > /srv/ps.txt\"\n        env: { TOKEN: \"{{ env('FLEET_TEST_SECRET') }}\" }\n      register: looked\n",
        "    - name: in a batch too\n      shell:\n        cmd: \"cat /proc/[0-9]*/cmdline | tr '\\\\000' ' ' > /srv/ps2.txt\"\n        env: { TOKEN: \"{{ env('FLEET_TEST_SECRET') }}\" }\n",
        "    - { name: end of the batch, file: { path: /srv/done, state: touch } }\n",
    );
    let repo = repo_with(&hosts, 1, "", files);
    let secret = "sk-fleet-test-ps-0123456789";
    let out = fleet(repo.path())
        .env("FLEET_TEST_SECRET", secret)
        .args(["apply", "playbooks/site.yaml"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["/srv/ps.txt", "/srv/ps2.txt"] {
        let ps = hosts.sh(1, &format!("cat {f}"));
        assert!(ps.contains("sh -s"), "{f}: the script came on stdin: {ps}");
        assert!(!ps.contains(secret), "{f}: {ps}");
    }
}

#[test]
fn secrets_never_reach_the_output() {
    let hosts = Hosts::up(1);
    let files = concat!(
        "--- playbooks/site.yaml\n",
        "- name: secrets\n  hosts: all\n  tasks:\n",
        "    - name: config with a key\n      copy: { content: \"key={{ env('FLEET_TEST_SECRET') }}\\n\", dest: /etc/secret.conf, mode: \"0600\" }\n",
        "    - name: say it\n      debug: { msg: \"the key is {{ env('FLEET_TEST_SECRET') }}\" }\n",
        "    - name: fail with it\n      shell: \"echo {{ env('FLEET_TEST_SECRET') }} >&2; exit 3\"\n"
    );
    let repo = repo_with(&hosts, 1, "", files);
    let secret = "sk-fleet-test-0123456789abcdef";
    let out = fleet(repo.path())
        .env("FLEET_TEST_SECRET", secret)
        .args(["apply", "playbooks/site.yaml", "--diff", "-v"])
        .output()
        .expect("runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(secret), "{all}");
    // A message or a file whose rendering read a secret is secret as a whole.
    assert!(all.contains("say it — ***\n"), "{all}");
    assert!(
        all.contains("(the new content reads a secret: ***)"),
        "diff masked: {all}"
    );
    assert!(all.contains("exit 3: ***"), "{all}");
    let json = fleet(repo.path())
        .env("FLEET_TEST_SECRET", secret)
        .args(["apply", "playbooks/site.yaml", "--json", "--diff"])
        .output()
        .expect("runs");
    assert!(!String::from_utf8_lossy(&json.stdout).contains(secret));
    // The host got the real value.
    assert_eq!(
        hosts.sh(1, "cat /etc/secret.conf"),
        format!("key={secret}\n")
    );
}

#[test]
fn a_config_error_touches_nothing() {
    let hosts = Hosts::up(1);
    let files = "--- playbooks/site.yaml\n- name: bad\n  hosts: all\n  tasks:\n    - name: first\n      file: { path: /opt/first, state: directory }\n    - name: broken\n      file: { path: \"{{ nowhere }}\", state: directory }\n";
    let repo = repo_with(&hosts, 1, "", files);
    fleet(repo.path())
        .args(["apply", "playbooks/site.yaml"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("undefined variable `nowhere`"));
    assert!(
        hosts
            .sh(1, "ls -d /opt/first 2>/dev/null || echo missing")
            .contains("missing")
    );
}

#[test]
fn become_runs_tasks_through_sudo_for_a_non_root_login() {
    let hosts = Hosts::up(1);
    support::ensure_tool("sudo", "sudo");
    // A login user with passwordless sudo, as on a typical fleet node.
    hosts.sh(
        1,
        "id deploy >/dev/null 2>&1 || useradd -m -s /bin/sh -p '*' deploy; mkdir -p /home/deploy/.ssh; cp /root/.ssh/authorized_keys /home/deploy/.ssh/; chown -R deploy: /home/deploy/.ssh; chmod 700 /home/deploy/.ssh; mkdir -p /etc/sudoers.d; echo 'deploy ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/deploy; chmod 440 /etc/sudoers.d/deploy",
    );
    let files = concat!(
        "--- playbooks/site.yaml\n",
        "- name: become\n  hosts: all\n  tasks:\n",
        "    - { name: as deploy, copy: { content: \"mine\\n\", dest: /tmp/deploy-file }, register: mine }\n",
        "    - { name: as root, copy: { content: \"root's\\n\", dest: /etc/fleet-become, mode: \"0640\" }, become: true }\n",
        "    - { name: who, command: id -un, become: true, register: who, changed_when: false }\n",
        "    - { name: without become, copy: { content: \"x\\n\", dest: /etc/fleet-denied } }\n",
    );
    let inv = format!(
        "fleet: {{ name: t, hq: h1, hq_url: \"http://127.0.0.1:1\", ssh_config: \"{}\" }}\nvars: {{ app_dir: /opt/app }}\nnodes:\n  h1: {{ host: 127.0.0.1, role: common, vars: {{ ssh_port: {}, ssh_user: deploy }} }}\n",
        hosts.ssh_config().display(),
        hosts.port(1)
    );
    let repo = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case("b", &format!("--- inventory/fleet.yaml\n{inv}{files}")),
    );
    let (code, events, _) = apply(repo.path(), &[]);
    assert_eq!(code, 1, "the last task has no become and must fail");
    let ev = |t: &str| {
        events
            .iter()
            .find(|e| e["task"] == t)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(ev("as deploy")["status"], "changed");
    assert_eq!(ev("as root")["status"], "changed");
    assert_eq!(ev("who")["status"], "ok");
    assert_eq!(ev("without become")["status"], "failed");
    assert!(
        ev("without become")["msg"]
            .as_str()
            .unwrap_or("")
            .contains("cannot write in /etc"),
        "{}",
        ev("without become")
    );
    assert_eq!(
        hosts.sh(1, "stat -c '%U %a' /tmp/deploy-file /etc/fleet-become"),
        "deploy 644\nroot 640\n"
    );
}

#[test]
fn tags_timeouts_and_retries() {
    let hosts = Hosts::up(1);
    let files = concat!(
        "--- playbooks/site.yaml\n",
        "- name: control\n  hosts: all\n  tasks:\n",
        "    - { name: tagged a, file: { path: /opt/a, state: directory }, tags: [a] }\n",
        "    - { name: tagged b, file: { path: /opt/b, state: directory }, tags: [b] }\n",
        "    - name: counts to three\n      shell: \"n=$(cat /opt/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > /opt/count; echo $n\"\n      register: r\n      until: r.stdout == \"3\"\n      retries: 5\n      delay: 0\n      tags: [retry]\n",
        "    - { name: too slow, shell: \"sleep 5\", timeout: 1s, tags: [slow] }\n",
    );
    let repo = repo_with(&hosts, 1, "", files);
    let (code, events, _) = apply(repo.path(), &["--tags", "a"]);
    assert_eq!(code, 0);
    let ran: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "task")
        .map(|e| e["task"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ran, ["tagged a"]);
    let (code, events, _) = apply(repo.path(), &["--skip-tags", "a,slow"]);
    assert_eq!(code, 0);
    let ran: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "task")
        .map(|e| e["task"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ran, ["tagged b", "counts to three"]);
    assert_eq!(
        hosts.sh(1, "cat /opt/count"),
        "3\n",
        "retried until the condition held"
    );
    let (code, events, _) = apply(repo.path(), &["--tags", "slow"]);
    assert_eq!(code, 1);
    let slow = events
        .iter()
        .find(|e| e["task"] == "too slow")
        .expect("event");
    assert_eq!(slow["status"], "failed");
    assert_eq!(slow["msg"], "timed out after 1s");
}

#[test]
fn reaches_a_host_through_a_proxyjump_in_the_ssh_config() {
    let hosts = Hosts::up(2);
    // `jumped` is host2, reached through host1, as a ssh config written for a bastion says.
    let base = std::fs::read_to_string(hosts.ssh_config()).expect("config");
    let cfg = hosts.dir.path().join("jump_config");
    std::fs::write(
        &cfg,
        format!(
            "Host jumped\n  HostName 127.0.0.1\n  Port {}\n  ProxyJump host1\n\n{base}",
            hosts.port(2)
        ),
    )
    .expect("write");
    let inv = format!(
        "fleet: {{ name: t, hq: j1, hq_url: \"http://127.0.0.1:1\", ssh_config: \"{}\" }}\nvars: {{ app_dir: /opt/app }}\nnodes:\n  j1: {{ host: jumped, role: common }}\n",
        cfg.display()
    );
    let files = "--- playbooks/site.yaml\n- name: jump\n  hosts: all\n  tasks:\n    - { name: where, shell: { cmd: \"hostname > /opt/where\", creates: /opt/where } }\n";
    let repo = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case("j", &format!("--- inventory/fleet.yaml\n{inv}{files}")),
    );
    let log = hosts.dir.path().join("hosts/1/ovl/var/upper/log/sshd.log");
    let logins = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    };
    let before = logins();
    let (code, _, err) = apply(repo.path(), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(hosts.sh(2, "cat /opt/where"), "host2\n");
    assert!(
        logins() > before,
        "the connection went through host1 (its sshd logged the hop)"
    );
}
