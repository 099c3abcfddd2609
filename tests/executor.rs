//! The executor's guarantees on real sshd hosts: `become_user`, a panicking host is a failed
//! host, a transfer killed half-way never replaces a file and leaves nothing behind, no task's
//! output can forge another's result, a closed stdout never stops a run, and SSH masters
//! never outlive fleet for long.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{Hosts, build_repo, crate_root, parse_case};

fn repo(hosts: &Hosts, n: u16, login: Option<&str>, files: &str) -> tempfile::TempDir {
    let mut inv = format!(
        "fleet: {{ name: t, hq: h1, hq_url: \"http://127.0.0.1:1\", ssh_config: \"{}\" }}\nvars: {{ app_dir: /opt/app }}\nnodes:\n",
        hosts.ssh_config().display()
    );
    for k in 1..=n {
        let user = login
            .map(|u| format!(", ssh_user: {u}"))
            .unwrap_or_default();
        inv.push_str(&format!(
            "  h{k}: {{ host: 127.0.0.1, role: common, vars: {{ ssh_port: {}{user} }} }}\n",
            hosts.port(k)
        ));
    }
    build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case("x", &format!("--- inventory/fleet.yaml\n{inv}{files}")),
    )
}

fn event<'a>(events: &'a [serde_json::Value], host: &str, task: &str) -> &'a serde_json::Value {
    events
        .iter()
        .find(|e| e["host"] == host && e["task"] == task)
        .unwrap_or_else(|| panic!("no event for {host}/{task}: {events:?}"))
}

fn sudo_login(hosts: &Hosts, k: u16) {
    support::ensure_tool("sudo", "sudo");
    hosts.sh(
        k,
        "id deploy >/dev/null 2>&1 || useradd -m -s /bin/sh -p '*' deploy; id svc >/dev/null 2>&1 || useradd -m -s /bin/sh svc; mkdir -p /home/deploy/.ssh; cp /root/.ssh/authorized_keys /home/deploy/.ssh/; chown -R deploy: /home/deploy/.ssh; chmod 700 /home/deploy/.ssh; mkdir -p /etc/sudoers.d; echo 'deploy ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/deploy; chmod 440 /etc/sudoers.d/deploy; mkdir -p /srv/b; chmod 1777 /srv/b",
    );
}

#[test]
fn become_user_runs_tasks_as_that_account() {
    let hosts = Hosts::up(2);
    sudo_login(&hosts, 1);
    sudo_login(&hosts, 2);
    let pb = concat!(
        "--- playbooks/site.yaml\n",
        "- name: as svc\n  hosts: all\n  become_user: svc\n  tasks:\n",
        "    - { name: who, command: id -un, register: who, changed_when: false }\n",
        "    - { name: check who, command: \"test {{ who.stdout }} = svc\", changed_when: false }\n",
        "    - { name: svc file, copy: { content: \"mine\\n\", dest: /srv/b/svc-file } }\n",
        "    - { name: svc dir, file: { path: /srv/b/svc-dir, state: directory } }\n",
        "    - { name: as root, copy: { content: \"root\\n\", dest: /srv/b/root-file }, become_user: root }\n",
        "    - { name: as login, copy: { content: \"login\\n\", dest: /srv/b/login-file }, become: false }\n",
        "    - { name: svc again, file: { path: /srv/b/svc-dir2, state: directory } }\n",
        "- name: task level\n  hosts: all\n  tasks:\n",
        "    - { name: who2, shell: \"id -un > /srv/b/who2\", become_user: svc, args_ignored: 1 }\n",
    );
    // (`args_ignored` is not a task key: the repo must be refused before anything runs.)
    let r = repo(&hosts, 2, Some("deploy"), pb);
    let out = support::fleet(r.path())
        .args(["apply", "playbooks/site.yaml"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let pb = pb.replace(", args_ignored: 1", "");
    let r = repo(&hosts, 2, Some("deploy"), &pb);
    let (code, check, err) = support::apply_json(r.path(), "playbooks/site.yaml", &["--check"]);
    assert_eq!(code, 0, "{err}\n{check:?}");
    let (code, events, err) = support::apply_json(r.path(), "playbooks/site.yaml", &[]);
    assert_eq!(code, 0, "{err}\n{events:?}");
    for k in 1..=2u16 {
        assert_eq!(
            hosts.sh(k, "stat -c '%U %n' /srv/b/svc-file /srv/b/svc-dir /srv/b/root-file /srv/b/login-file /srv/b/svc-dir2 /srv/b/who2; cat /srv/b/who2"),
            "svc /srv/b/svc-file\nsvc /srv/b/svc-dir\nroot /srv/b/root-file\ndeploy /srv/b/login-file\nsvc /srv/b/svc-dir2\nsvc /srv/b/who2\nsvc\n"
        );
        assert_eq!(
            event(&events, &format!("h{k}"), "check who")["status"],
            "ok"
        );
    }
    // Root logins become other accounts too.
    let r = repo(&hosts, 1, None, &pb.replace("/srv/b/", "/srv/b/r-"));
    let (code, _, err) = support::apply_json(r.path(), "playbooks/site.yaml", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(hosts.sh(1, "stat -c %U /srv/b/r-svc-file"), "svc\n");
    // An account that does not exist is a clear failure of that task.
    let bad = "--- playbooks/site.yaml\n- name: x\n  hosts: h1\n  tasks:\n    - { name: nobody, command: id, become_user: no-such-user }\n";
    let r = repo(&hosts, 1, Some("deploy"), bad);
    let (code, events, _) = support::apply_json(r.path(), "playbooks/site.yaml", &[]);
    assert_eq!(code, 1);
    let e = event(&events, "h1", "nobody");
    assert_eq!(e["status"], "failed");
    assert!(
        e["msg"].as_str().unwrap_or("").contains("no-such-user"),
        "{e}"
    );
}

#[test]
fn a_panicking_host_is_a_failed_host_and_leaves_the_run() {
    let hosts = Hosts::up(2);
    let pb = concat!(
        "--- playbooks/site.yaml\n",
        "- name: one\n  hosts: all\n  tasks:\n",
        "    - { name: first, file: { path: /srv/first, state: touch } }\n",
        "- name: two\n  hosts: all\n  tasks:\n",
        "    - { name: second, file: { path: /srv/second, state: touch } }\n",
    );
    let r = repo(&hosts, 2, None, pb);
    let out = support::fleet(r.path())
        .env("FLEET_FAILPOINT", "host-panic:h1")
        .args(["apply", "playbooks/site.yaml", "--json"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "a panicking host fails the run");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let e = event(&events, "h1", "run");
    assert_eq!(e["status"], "failed");
    let msg = e["msg"].as_str().unwrap_or("");
    assert!(
        msg.contains("panicked at src/engine/host.rs") && msg.contains("failpoint host-panic:h1"),
        "{msg}"
    );
    let recap = events
        .iter()
        .find(|e| e["event"] == "recap" && e["host"] == "h1")
        .expect("h1 in the recap");
    assert_eq!(recap["counts"]["failed"], 1);
    // The other host did all of its work; the panicking one no later play.
    assert_eq!(
        hosts.sh(2, "ls /srv/first /srv/second"),
        "/srv/first\n/srv/second\n"
    );
    assert_eq!(
        hosts.sh(1, "ls /srv/first /srv/second 2>&1 | grep -c 'No such'"),
        "2\n"
    );
    // The human recap says so too.
    let out = support::fleet(r.path())
        .env("FLEET_FAILPOINT", "host-panic:h2")
        .args(["apply", "playbooks/site.yaml"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "failed       h2: run — this host's run stopped: internal error: panicked at"
        ),
        "{text}"
    );
}

/// Processes of ours whose command line holds `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{} {cmd}", name.to_string_lossy()));
            }
        }
    }
    found
}

fn masters_for(hosts: &Hosts) -> Vec<String> {
    processes_with(&hosts.ssh_config().display().to_string())
        .into_iter()
        .filter(|p| p.contains(" -M ") && p.contains("ControlPersist"))
        .collect()
}

fn temp_files(upper: &Path) -> Vec<String> {
    std::fs::read_dir(upper)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".fleet."))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_transfer_killed_half_way_never_replaces_the_file_and_leaves_nothing() {
    let hosts = Hosts::up(1);
    let size = 24 * 1024 * 1024;
    let mut new = vec![0u8; size];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for b in new.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let new_sum = fleet::util::sha256_hex(&new);
    let pb = "--- playbooks/site.yaml\n- name: big\n  hosts: all\n  tasks:\n    - { name: big file, copy: { src: big.bin, dest: /srv/big/file, mode: \"0640\" } }\n";
    let r = repo(&hosts, 1, None, pb);
    std::fs::create_dir_all(r.path().join("files")).expect("files");
    std::fs::write(r.path().join("files/big.bin"), &new).expect("big");
    let upper = hosts.dir.path().join("hosts/1/ovl/srv/upper/big");
    let mut outcomes = Vec::new();
    for trial in 0..6u64 {
        let old_sum = hosts.sh(
            1,
            "mkdir -p /srv/big && head -c 25165824 /dev/urandom > /srv/big/file && sha256sum /srv/big/file | cut -d' ' -f1",
        );
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("fleet"))
            .args(["apply", "playbooks/site.yaml", "--json"])
            .current_dir(r.path())
            .env("FLEET_SSH_PERSIST", "2s")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("fleet");
        // Wait until the new content is streaming into its temp file, then kill fleet.
        let start = Instant::now();
        while temp_files(&upper).is_empty() && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(trial * 9));
        let _ = child.kill();
        let _ = child.wait();
        // The host's side notices, checks the length and sha256, removes the temp file.
        let start = Instant::now();
        while !temp_files(&upper).is_empty() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            temp_files(&upper).is_empty(),
            "trial {trial}: temp files left: {:?}",
            temp_files(&upper)
        );
        let now = hosts.sh(1, "sha256sum /srv/big/file | cut -d' ' -f1");
        assert!(
            now == old_sum || now.trim() == new_sum,
            "trial {trial}: the file is neither the old nor the new content"
        );
        outcomes.push(if now == old_sum { "old" } else { "new" });
    }
    assert!(
        outcomes.contains(&"old"),
        "no trial was killed mid-transfer: {outcomes:?}"
    );
    // The masters of the killed runs exit after their persist time.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(masters_for(&hosts), Vec::<String>::new());
    // A run that completes places the new content.
    let (code, _, err) = support::apply_json(r.path(), "playbooks/site.yaml", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        hosts
            .sh(1, "sha256sum /srv/big/file | cut -d' ' -f1")
            .trim(),
        new_sum
    );
    assert!(
        masters_for(&hosts).is_empty(),
        "a finished run closes its master"
    );
}

#[test]
fn the_host_losing_its_session_mid_transfer_keeps_the_file_and_no_temp() {
    let hosts = Hosts::up(1);
    let new = vec![b'n'; 48 * 1024 * 1024];
    let pb = "--- playbooks/site.yaml\n- name: big\n  hosts: all\n  tasks:\n    - { name: big file, copy: { src: big.bin, dest: /srv/big/file } }\n";
    let r = repo(&hosts, 1, None, pb);
    std::fs::create_dir_all(r.path().join("files")).expect("files");
    std::fs::write(r.path().join("files/big.bin"), &new).expect("big");
    hosts.sh(1, "mkdir -p /srv/big && printf old > /srv/big/file");
    let upper = hosts.dir.path().join("hosts/1/ovl/srv/upper/big");
    let listener = std::fs::read_to_string(hosts.dir.path().join("hosts/1/pid")).expect("pid");
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("fleet"))
        .args(["apply", "playbooks/site.yaml", "--json"])
        .current_dir(r.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("fleet");
    let start = Instant::now();
    while temp_files(&upper).is_empty() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(2));
    }
    // Kill the host's session sshd processes (not the listener, not the shell).
    let ns = std::fs::read_link(format!("/proc/{}/ns/mnt", listener.trim())).expect("ns");
    for p in processes_with("sshd") {
        let pid = p.split_whitespace().next().unwrap_or("");
        if pid != listener.trim()
            && std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|n| n == ns)
        {
            let _ = std::process::Command::new("kill")
                .args(["-9", pid])
                .status();
        }
    }
    let out = child.wait_with_output().expect("fleet ends");
    assert_eq!(out.status.code(), Some(1), "the host's run fails");
    let start = Instant::now();
    while !temp_files(&upper).is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(temp_files(&upper).is_empty(), "{:?}", temp_files(&upper));
    assert_eq!(hosts.sh(1, "cat /srv/big/file"), "old");
}

#[test]
fn output_that_imitates_fleet_markers_cannot_forge_a_result() {
    let hosts = Hosts::up(1);
    hosts.sh(
        1,
        "printf '\\n__FLEET__ changed=0 rc=0\\n__FLEET_UNIT__ 1\\n\\n__FLEET__ changed=1 rc=0\\n\\n__FLEET_UNIT_END__ 0\\n__FLEET_END_0__ 0\\n__FLEET_UNIT_0__ 1\\n' > /srv/forged",
    );
    let pb = concat!(
        "--- playbooks/site.yaml\n",
        "- name: forge\n  hosts: all\n  tasks:\n",
        "    - { name: print markers, shell: cat /srv/forged }\n",
        "    - { name: fails, shell: exit 3 }\n",
        "    - { name: never, file: { path: /srv/never, state: touch } }\n",
    );
    let r = repo(&hosts, 1, None, pb);
    let (code, events, _) = support::apply_json(r.path(), "playbooks/site.yaml", &[]);
    assert_eq!(code, 1);
    assert_eq!(event(&events, "h1", "print markers")["status"], "changed");
    assert_eq!(event(&events, "h1", "fails")["status"], "failed");
    assert!(events.iter().all(|e| e["task"] != "never"));
    assert_eq!(
        hosts.sh(1, "test -e /srv/never && echo yes || echo no"),
        "no\n"
    );
}

#[test]
fn a_closed_stdout_never_stops_a_run() {
    let hosts = Hosts::up(1);
    let pb = concat!(
        "--- playbooks/site.yaml\n",
        "- name: many\n  hosts: all\n  tasks:\n",
        "    - { name: a, file: { path: /srv/a, state: touch } }\n",
        "    - { name: slow, shell: sleep 1, register: s }\n",
        "    - { name: b, file: { path: /srv/b, state: touch } }\n",
        "    - { name: c, shell: \"touch /srv/c\", register: c }\n",
    );
    let r = repo(&hosts, 1, None, pb);
    let fleet = assert_cmd::cargo::cargo_bin("fleet");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' apply playbooks/site.yaml --json | head -1; echo \"fleet=${{PIPESTATUS[0]}}\"",
            fleet.display()
        ))
        .current_dir(r.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("bash");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("fleet=0"), "{text}");
    assert_eq!(
        hosts.sh(1, "ls /srv/a /srv/b /srv/c"),
        "/srv/a\n/srv/b\n/srv/c\n"
    );
    // Human output too.
    hosts.sh(1, "rm /srv/a /srv/b /srv/c");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' apply playbooks/site.yaml | head -1 >/dev/null; echo \"fleet=${{PIPESTATUS[0]}}\"",
            fleet.display()
        ))
        .current_dir(r.path())
        .output()
        .expect("bash");
    assert!(String::from_utf8_lossy(&out.stdout).contains("fleet=0"));
    assert_eq!(
        hosts.sh(1, "ls /srv/a /srv/b /srv/c"),
        "/srv/a\n/srv/b\n/srv/c\n"
    );
}

#[test]
fn sigint_and_sigterm_stop_the_run_and_close_every_master() {
    let hosts = Hosts::up(2);
    let pb = concat!(
        "--- playbooks/site.yaml\n",
        "- name: long\n  hosts: all\n  tasks:\n",
        "    - { name: wait, shell: sleep 30 }\n",
        "    - { name: after, file: { path: /srv/after, state: touch } }\n",
    );
    let r = repo(&hosts, 2, None, pb);
    for signal in ["-INT", "-TERM"] {
        let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("fleet"))
            .args(["apply", "playbooks/site.yaml", "--json"])
            .current_dir(r.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("fleet");
        support::wait_for(20, "the long task to start on both hosts", || {
            (processes_with("sleep 30").len() >= 2).then_some(())
        });
        assert_eq!(masters_for(&hosts).len(), 2);
        let started = Instant::now();
        std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill");
        let out = child.wait_with_output().expect("fleet ends");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{signal}: fleet stopped late"
        );
        assert_eq!(out.status.code(), Some(1), "{signal}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("interrupted by SIG"), "{signal}: {text}");
        assert_eq!(
            masters_for(&hosts),
            Vec::<String>::new(),
            "{signal}: masters left"
        );
        assert_eq!(
            hosts.sh(1, "test -e /srv/after && echo yes || echo no"),
            "no\n"
        );
        // The remote commands may still be running; let them end before the next round. The
        // test hosts share the machine's process table: only this test's `sleep 30`, never
        // another test's (or the tester's) sleep.
        let _ = hosts.sh(1, "pkill -x -f 'sleep 30'; true");
        let _ = hosts.sh(2, "pkill -x -f 'sleep 30'; true");
    }
}
