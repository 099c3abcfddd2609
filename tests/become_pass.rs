//! `become` with a sudo password on a real sshd host whose login needs one for sudo:
//! `--ask-become-pass` (the password on stdin, as a script gives it), a `become_password`
//! variable from an encrypted file, a wrong password (a prompt per-host failure, never a
//! hang), and the password in no output and no command line on the host.

mod support;

use std::time::{Duration, Instant};

use support::{Hosts, build_repo, crate_root, fleet, parse_case};

const PASSWORD: &str = "sudo-PWCANARY-pass";

/// A login `pw` whose sudo asks for its password.
fn password_login(hosts: &Hosts, k: u16) {
    support::ensure_tool("sudo", "sudo");
    hosts.sh(
        k,
        &format!(
            "id pw >/dev/null 2>&1 || useradd -m -s /bin/sh pw; echo 'pw:{PASSWORD}' | chpasswd; mkdir -p /home/pw/.ssh; cp /root/.ssh/authorized_keys /home/pw/.ssh/; chown -R pw: /home/pw/.ssh; chmod 700 /home/pw/.ssh; mkdir -p /etc/sudoers.d; echo 'pw ALL=(ALL) ALL' > /etc/sudoers.d/pw; chmod 440 /etc/sudoers.d/pw"
        ),
    );
}

const PLAYBOOK: &str = concat!(
    "- name: root things\n  hosts: all\n  become: true\n  tasks:\n",
    "    - { name: proof, copy: { content: \"made as root\\n\", dest: /root/become-proof, mode: \"0600\" } }\n",
    "    - { name: dir, file: { path: /srv/become-dir, state: directory, mode: \"0750\" } }\n",
    "    - { name: who, command: id -un, register: who, changed_when: false }\n",
    "    - { name: said, debug: { msg: \"{{ who.stdout }}\" } }\n",
    "    - { name: processes, shell: \"ps -eo args > /srv/become-ps.txt\", changed_when: false }\n",
);

fn repo(hosts: &Hosts, extra_files: &str) -> tempfile::TempDir {
    let inv = format!(
        "fleet: {{ name: t, hq: h1, hq_url: \"http://127.0.0.1:1\", ssh_config: \"{}\" }}\nvars: {{ app_dir: /opt/app }}\nnodes:\n  h1: {{ host: 127.0.0.1, role: common, vars: {{ ssh_port: {}, ssh_user: pw }} }}\n",
        hosts.ssh_config().display(),
        hosts.port(1)
    );
    build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "b",
            &format!(
                "--- inventory/fleet.yaml\n{inv}--- playbooks/site.yaml\n{PLAYBOOK}{extra_files}"
            ),
        ),
    )
}

/// Runs fleet with `stdin`; (exit code, stdout + stderr, how long it took).
fn run(
    r: &std::path::Path,
    home: &std::path::Path,
    args: &[&str],
    stdin: &str,
) -> (i32, String, Duration) {
    let started = Instant::now();
    let out = fleet(r)
        .env("XDG_CONFIG_HOME", home)
        .args(args)
        .write_stdin(stdin)
        .timeout(Duration::from_secs(120))
        .output()
        .expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("PWCANARY"),
        "{args:?}: the password leaked:\n{text}"
    );
    (out.status.code().unwrap_or(-1), text, started.elapsed())
}

fn changed(text: &str) -> usize {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["status"] == "changed")
        .count()
}

#[test]
fn ask_become_pass_feeds_sudo_and_a_wrong_password_fails_fast() {
    let hosts = Hosts::up(1);
    password_login(&hosts, 1);
    let r = repo(&hosts, "");
    let home = tempfile::tempdir().expect("home");
    let h = home.path();

    // Without a password sudo refuses (it never waits for one).
    let (code, text, took) = run(r.path(), h, &["apply", "playbooks/site.yaml"], "");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("password is required"), "{text}");
    assert!(took < Duration::from_secs(60));

    // A wrong password: the host fails, promptly, saying why; nothing ran as root.
    let (code, text, took) = run(
        r.path(),
        h,
        &["apply", "playbooks/site.yaml", "-K"],
        "not-the-password\n",
    );
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("sudo refused the become password for `root`"),
        "{text}"
    );
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert_eq!(
        hosts.sh(1, "test -e /root/become-proof && echo yes || echo no"),
        "no\n"
    );

    // The right one: check mode predicts exactly what the run changes, then nothing changes.
    let pw = format!("{PASSWORD}\n");
    let args = [
        "apply",
        "playbooks/site.yaml",
        "-K",
        "--json",
        "-vv",
        "--diff",
    ];
    let (code, check, _) = run(r.path(), h, &[&args[..], &["--check"]].concat(), &pw);
    assert_eq!(code, 0, "{check}");
    let (code, real, _) = run(r.path(), h, &args, &pw);
    assert_eq!(code, 0, "{real}");
    assert_eq!(
        changed(&check),
        changed(&real),
        "check:\n{check}\nreal:\n{real}"
    );
    assert_eq!(changed(&real), 2, "{real}");
    assert!(real.contains("\"msg\":\"root\""), "{real}");
    let (code, again, _) = run(r.path(), h, &args, &pw);
    assert_eq!(code, 0, "{again}");
    assert_eq!(changed(&again), 0, "{again}");
    assert_eq!(
        hosts.sh(1, "stat -c '%U %a' /root/become-proof"),
        "root 600\n"
    );
    // The password was on no command line while the tasks ran.
    let ps = hosts.sh(1, "cat /srv/become-ps.txt");
    assert!(ps.contains("sudo -S"), "{ps}");
    assert!(!ps.contains("PWCANARY"), "{ps}");

    // Ad-hoc, too.
    let (code, text, _) = run(r.path(), h, &["sh", "all", "id -un", "-b", "-K"], &pw);
    assert_eq!(code, 0, "{text}");
    assert!(text.lines().any(|l| l.trim() == "| root"), "{text}");
}

#[test]
fn become_password_from_an_encrypted_variable() {
    let hosts = Hosts::up(1);
    password_login(&hosts, 1);
    let r = repo(&hosts, "");
    let home = tempfile::tempdir().expect("home");
    let h = home.path();
    let (code, text, _) = run(r.path(), h, &["secret", "init"], "");
    assert_eq!(code, 0, "{text}");
    let (code, text, _) = run(
        r.path(),
        h,
        &["secret", "encrypt", "inventory/host_vars/h1.yaml.age"],
        &format!("become_password: {PASSWORD}\n"),
    );
    assert_eq!(code, 0, "{text}");
    let (code, text, _) = run(
        r.path(),
        h,
        &["apply", "playbooks/site.yaml", "-vv", "--diff"],
        "",
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(hosts.sh(1, "stat -c '%U' /root/become-proof"), "root\n");
}
