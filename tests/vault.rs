//! Encrypted secrets (`fleet secret`, `*.yaml.age`, `secrets/*.age`): the CLI's round trip
//! (init, encrypt, decrypt, view, edit with an editor script, rekey), a missing or wrong
//! identity, and canary values from encrypted files searched for in everything `plan`,
//! `validate` and `apply -v --diff [--json]` print and on the controller's disk, while the
//! host gets the real values.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use support::{Hosts, build_repo, crate_root, fleet, parse_case};

/// A multi-line secret with quotes and a backslash.
const PEM: &str =
    "-----BEGIN VAULT CANARY-----\nAAAAvaultlineONE\nBBBBvaultlineTWO\n-----END VAULT CANARY-----";
const PASSWORD: &str = "pw-VAULTCANARY-\"q\\uote'$x";
const TOKEN: &str = "tok-VAULTCANARYtoken";
const HOSTVAR: &str = "hv-VAULTCANARYhost";
const PLAYVAR: &str = "pv-VAULTCANARYplay";
/// The CLI test's value: not a canary, since that test's editor files may exist on
/// /dev/shm while the run test looks for canaries there.
const EDITED: &str = "edited-value-7q";

fn canaries() -> [&'static str; 6] {
    [
        "VAULTCANARY",
        "vaultlineONE",
        "vaultlineTWO",
        "vaultcanary",
        "VAULTCANARYTOKEN",
        "VAULTCANARYHOST",
    ]
}

fn assert_clean(what: &str, out: &std::process::Output) {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for c in canaries() {
        assert!(!all.contains(c), "{what}: `{c}` leaked:\n{all}");
    }
}

/// A scratch setting: a repo, a config home (the default identity lives there) and a
/// private temporary directory for fleet.
struct Setup {
    repo: tempfile::TempDir,
    home: tempfile::TempDir,
    tmp: tempfile::TempDir,
}

impl Setup {
    fn new(inventory: &str, playbook: &str) -> Setup {
        let repo = build_repo(
            &crate_root().join("tests/corpus/base"),
            &parse_case(
                "v",
                &format!(
                    "--- inventory/fleet.yaml\n{inventory}--- playbooks/site.yaml\n{playbook}--- templates/vault.j2\npem = {{{{ tls_key }}}}\n"
                ),
            ),
        );
        Setup {
            repo,
            home: tempfile::tempdir().expect("home"),
            tmp: tempfile::Builder::new()
                .prefix("fv")
                .tempdir_in("/tmp")
                .expect("tmp"),
        }
    }

    fn path(&self) -> &Path {
        self.repo.path()
    }

    /// `fleet` in the repo with this setting's config home and temporary directory.
    fn fleet(&self) -> assert_cmd::Command {
        let mut c = fleet(self.path());
        c.env("XDG_CONFIG_HOME", self.home.path())
            .env("HOME", self.home.path())
            .env("TMPDIR", self.tmp.path())
            .env_remove("FLEET_AGE_IDENTITY")
            .env_remove("FLEET_AGE_IDENTITY_FILE")
            .env_remove("VISUAL")
            .env_remove("EDITOR");
        c
    }

    fn identity(&self) -> PathBuf {
        self.home.path().join("fleet/age-identity.txt")
    }

    /// Encrypts `text` into `rel` (from standard input).
    fn encrypt(&self, rel: &str, text: &str) {
        std::fs::create_dir_all(self.path().join(rel).parent().expect("dir")).expect("mkdir");
        let out = self
            .fleet()
            .args(["secret", "encrypt", rel])
            .write_stdin(text)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn ok(out: &std::process::Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const INVENTORY: &str = "fleet: { name: t, hq: h1, hq_url: \"http://127.0.0.1:1\" }\nvars: { app_dir: /opt/app }\nnodes:\n  h1: { host: 127.0.0.1, role: common }\n";

#[test]
fn init_encrypt_decrypt_view_edit_rekey() {
    let s = Setup::new(INVENTORY, "- { name: p, hosts: all, roles: [common] }\n");
    let public = ok(&s.fleet().args(["secret", "init"]).output().expect("runs"));
    let public = public.trim().to_string();
    assert!(public.starts_with("age1"), "{public}");
    let id = s.identity();
    assert_eq!(
        std::fs::metadata(&id)
            .expect("identity")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(id.parent().expect("dir"))
            .expect("dir")
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let recipients = s.path().join("secrets/recipients.txt");
    assert!(
        std::fs::read_to_string(&recipients)
            .expect("recipients")
            .contains(&public)
    );
    // Again: the same identity, listed once.
    let again = ok(&s.fleet().args(["secret", "init"]).output().expect("runs"));
    assert_eq!(again.trim(), public);
    assert_eq!(
        std::fs::read_to_string(&recipients)
            .expect("recipients")
            .matches(&public)
            .count(),
        1
    );
    // An identity inside the repo is refused.
    let out = s
        .fleet()
        .args(["secret", "init", "--identity"])
        .arg(s.path().join("id.txt"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("inside the repo"), "{}", stderr(&out));

    // A plain file becomes FILE.age; the plain file goes.
    let plain = s.path().join("inventory/group_vars/all.yaml");
    std::fs::create_dir_all(plain.parent().expect("dir")).expect("mkdir");
    std::fs::write(&plain, format!("db_password: {EDITED}\n")).expect("write");
    ok(&s
        .fleet()
        .args(["secret", "encrypt", "inventory/group_vars/all.yaml"])
        .output()
        .expect("runs"));
    let sealed = s.path().join("inventory/group_vars/all.yaml.age");
    assert!(!plain.exists());
    let armored = std::fs::read_to_string(&sealed).expect("sealed");
    assert!(armored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
    assert!(!armored.contains("VAULTCANARY"));
    let shown = ok(&s
        .fleet()
        .args(["secret", "decrypt", "inventory/group_vars/all.yaml.age"])
        .output()
        .expect("runs"));
    assert_eq!(shown, format!("db_password: {EDITED}\n"));
    let viewed = ok(&s
        .fleet()
        .args(["secret", "view", "inventory/group_vars/all.yaml.age"])
        .output()
        .expect("runs"));
    assert_eq!(viewed, shown);
    // Plain text into the repo is refused, with --out and through a redirect alike.
    let out = s
        .fleet()
        .args([
            "secret",
            "decrypt",
            "inventory/group_vars/all.yaml.age",
            "--out",
            "plain.yaml",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(!s.path().join("plain.yaml").exists());
    let redirected = s.path().join("redirected.yaml");
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("fleet"))
        .args(["secret", "decrypt", "inventory/group_vars/all.yaml.age"])
        .current_dir(s.path())
        .env("XDG_CONFIG_HOME", s.home.path())
        .stdout(std::fs::File::create(&redirected).expect("file"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&redirected).expect("r"), "");
    let outside = s.tmp.path().join("plain.yaml");
    ok(&s
        .fleet()
        .args([
            "secret",
            "decrypt",
            "inventory/group_vars/all.yaml.age",
            "--out",
        ])
        .arg(&outside)
        .output()
        .expect("runs"));
    assert_eq!(
        std::fs::metadata(&outside)
            .expect("out")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    std::fs::remove_file(&outside).expect("rm");

    // Edit: the editor gets a 0600 file in a 0700 directory on /dev/shm, named like the
    // plain file; the new text is encrypted, and the directory is gone.
    let editor = s.tmp.path().join("editor.sh");
    let seen = s.tmp.path().join("seen");
    std::fs::write(
        &editor,
        format!(
            "#!/bin/sh\nstat -c '%a %n' \"$(dirname \"$1\")\" \"$1\" > {seen}\nprintf 'extra: 1\\n' >> \"$1\"\n",
            seen = seen.display()
        ),
    )
    .expect("editor");
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = s
        .fleet()
        .args(["secret", "edit", "inventory/group_vars/all.yaml.age"])
        .env("EDITOR", &editor)
        .output()
        .expect("runs");
    ok(&out);
    let seen_text = std::fs::read_to_string(&seen).expect("seen");
    let lines: Vec<&str> = seen_text.lines().collect();
    assert!(
        lines[0].starts_with("700 /dev/shm/fleet-secret-"),
        "{seen_text}"
    );
    assert!(
        lines[1].starts_with("600 /dev/shm/fleet-secret-"),
        "{seen_text}"
    );
    assert!(lines[1].ends_with("/all.yaml"), "{seen_text}");
    let scratch = Path::new(lines[1].split_once(' ').expect("path").1);
    assert!(
        !scratch.parent().expect("dir").exists(),
        "the editor's directory is removed"
    );
    let shown = ok(&s
        .fleet()
        .args(["secret", "decrypt", "inventory/group_vars/all.yaml.age"])
        .output()
        .expect("runs"));
    assert_eq!(shown, format!("db_password: {EDITED}\nextra: 1\n"));

    // An unchanged edit, a failing editor and text that is not YAML rewrite nothing.
    let before = std::fs::read(&sealed).expect("sealed");
    for (editor, code) in [
        ("true", 0),
        ("false", 1),
        ("sh -c 'printf \"a: [\\n\" > \"$0\"'", 2),
    ] {
        let out = s
            .fleet()
            .args(["secret", "edit", "inventory/group_vars/all.yaml.age"])
            .env("EDITOR", editor)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(code), "{editor}: {}", stderr(&out));
        assert_eq!(std::fs::read(&sealed).expect("sealed"), before, "{editor}");
    }
    assert!(
        stderr(
            &s.fleet()
                .args(["secret", "edit", "inventory/group_vars/all.yaml.age"])
                .env("EDITOR", "sh -c 'printf \"a: [\\n\" > \"$0\"'")
                .output()
                .expect("runs")
        )
        .contains("not valid YAML at line")
    );

    // SIGTERM while the editor runs: the editor is stopped, its file removed, nothing saved.
    let slow = s.tmp.path().join("slow.sh");
    std::fs::write(
        &slow,
        format!(
            "#!/bin/sh\necho \"$1\" > {seen}\necho changed >> \"$1\"\nsleep 30\n",
            seen = seen.display()
        ),
    )
    .expect("editor");
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let _ = std::fs::remove_file(&seen);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("fleet"))
        .args(["secret", "edit", "inventory/group_vars/all.yaml.age"])
        .current_dir(s.path())
        .env("XDG_CONFIG_HOME", s.home.path())
        .env("EDITOR", &slow)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let path = support::wait_for(20, "the editor", || {
        std::fs::read_to_string(&seen)
            .ok()
            .filter(|t| t.ends_with('\n'))
    });
    let scratch = PathBuf::from(path.trim());
    assert!(scratch.exists());
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let status = child.wait().expect("waits");
    assert_eq!(status.code(), Some(1));
    assert!(
        !scratch.parent().expect("dir").exists(),
        "removed on SIGTERM"
    );
    assert_eq!(std::fs::read(&sealed).expect("sealed"), before);

    // A second person: added to the recipients, they read nothing until a rekey.
    let other_home = tempfile::tempdir().expect("home");
    let other_id = other_home.path().join("id.txt");
    let out = s
        .fleet()
        .env("XDG_CONFIG_HOME", other_home.path())
        .args(["secret", "init", "--identity"])
        .arg(&other_id)
        .output()
        .expect("runs");
    ok(&out);
    let as_other = |args: &[&str]| {
        s.fleet()
            .args(["--identity"])
            .arg(&other_id)
            .args(args)
            .output()
            .expect("runs")
    };
    let out = as_other(&["secret", "decrypt", "inventory/group_vars/all.yaml.age"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("none of the identities"),
        "{}",
        stderr(&out)
    );
    ok(&s.fleet().args(["secret", "rekey"]).output().expect("runs"));
    let out = as_other(&["secret", "decrypt", "inventory/group_vars/all.yaml.age"]);
    assert_eq!(ok(&out), format!("db_password: {EDITED}\nextra: 1\n"));
}

#[test]
fn a_missing_or_wrong_identity_names_the_file() {
    let s = Setup::new(
        INVENTORY,
        "- name: p\n  hosts: all\n  tasks:\n    - { name: t, debug: { msg: \"{{ db_password }}\" } }\n    - { name: shipped, debug: { msg: \"{{ fleet.inventory_files | join(' ') }}\" } }\n",
    );
    ok(&s.fleet().args(["secret", "init"]).output().expect("runs"));
    s.encrypt(
        "inventory/group_vars/all.yaml.age",
        &format!("db_password: {TOKEN}\n"),
    );
    std::fs::create_dir_all(s.path().join("inventory/host_vars")).expect("mkdir");
    std::fs::write(s.path().join("inventory/host_vars/h1.yaml"), "plain: 1\n").expect("w");
    // What the hq role ships to HQ: the plain variables files, not the encrypted ones (HQ
    // holds no identity).
    let plan = ok(&s
        .fleet()
        .args(["plan", "playbooks/site.yaml"])
        .output()
        .expect("runs"));
    assert!(
        plan.contains("msg=\"inventory/fleet.yaml inventory/host_vars/h1.yaml\""),
        "{plan}"
    );
    ok(&s
        .fleet()
        .args(["plan", "playbooks/site.yaml"])
        .output()
        .expect("runs"));
    // The key itself in the environment (CI) works too.
    let key = std::fs::read_to_string(s.identity()).expect("id");
    let mut c = s.fleet();
    c.env("XDG_CONFIG_HOME", s.tmp.path())
        .env("FLEET_AGE_IDENTITY", &key)
        .args(["plan", "playbooks/site.yaml"]);
    ok(&c.output().expect("runs"));

    // No identity: exit 2, the file named, what to do.
    let mut c = s.fleet();
    c.env("XDG_CONFIG_HOME", s.tmp.path());
    let out = c
        .args(["plan", "playbooks/site.yaml"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("inventory/group_vars/all.yaml.age:1:1: error: cannot decrypt this file: no age identity"),
        "{err}"
    );
    assert!(err.contains("fleet secret init"), "{err}");
    // validate says it cannot check them, as a warning.
    let mut c = s.fleet();
    c.env("XDG_CONFIG_HOME", s.tmp.path());
    let out = c.arg("validate").output().expect("runs");
    ok(&out);
    assert!(
        stderr(&out).contains("warning: cannot decrypt this file"),
        "{}",
        stderr(&out)
    );

    // Somebody else's identity: exit 2, the file named, for plan, apply and validate alike.
    let wrong = s.tmp.path().join("wrong.txt");
    let out = s
        .fleet()
        .args(["secret", "init", "--identity"])
        .arg(&wrong)
        .env("XDG_CONFIG_HOME", s.tmp.path())
        .output()
        .expect("runs");
    ok(&out);
    for args in [
        vec!["plan", "playbooks/site.yaml"],
        vec!["apply", "playbooks/site.yaml", "--check"],
        vec!["validate"],
        vec!["nodes"],
    ] {
        let out = s
            .fleet()
            .arg("--identity")
            .arg(&wrong)
            .args(&args)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains(
                "all.yaml.age:1:1: error: cannot decrypt this file: none of the identities"
            ),
            "{args:?}: {err}"
        );
    }
    // A damaged file.
    std::fs::write(
        s.path().join("inventory/group_vars/all.yaml.age"),
        "not age\n",
    )
    .expect("w");
    let out = s
        .fleet()
        .args(["plan", "playbooks/site.yaml"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not an age file"), "{}", stderr(&out));
}

/// Every regular file below `dir` that holds a canary.
fn files_with_canaries(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            files_with_canaries(&p, out);
        } else if t.is_file() {
            let bytes = std::fs::read(&p).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            if canaries().iter().any(|c| text.contains(c)) {
                out.push(p);
            }
        }
    }
}

#[test]
fn encrypted_values_reach_the_host_and_nothing_else() {
    let hosts = Hosts::up(1);
    let inventory = format!(
        "fleet: {{ name: t, hq: h1, hq_url: \"http://127.0.0.1:1\", ssh_config: \"{}\" }}\nvars: {{ app_dir: /opt/app }}\nnodes:\n  h1: {{ host: 127.0.0.1, role: common, vars: {{ ssh_port: {} }} }}\n",
        hosts.ssh_config().display(),
        hosts.port(1)
    );
    let playbook = concat!(
        "- name: vault\n  hosts: all\n  vars_files: [vars/play.yaml.age]\n  tasks:\n",
        "    - { name: pem, copy: { content: \"{{ tls_key }}\\n\", dest: /etc/vault.pem, mode: \"0600\" } }\n",
        "    - { name: upper, debug: { msg: \"{{ db_password | upper }}\" } }\n",
        "    - { name: \"looped {{ item }}\", debug: { msg: \"item {{ item }}\" }, loop: [\"{{ host_secret }}\", plain] }\n",
        "    - { name: token, copy: { content: \"{{ secrets.api_token }}\", dest: /etc/vault.token } }\n",
        "    - { name: play var, copy: { content: \"{{ play_secret }}\\n\", dest: /etc/vault.play } }\n",
        "    - { name: rendered, template: { src: vault.j2, dest: /etc/vault.conf } }\n",
        "    - { name: echo it, shell: \"echo {{ db_password | shquote }}; echo {{ secrets.api_token }} >&2\", register: said, changed_when: false }\n",
        "    - { name: said, debug: { msg: \"{{ said.stdout }}\" } }\n",
        "    - { name: read back, command: cat /etc/vault.pem, register: pem, changed_when: false }\n",
        "    - { name: one line, debug: { msg: \"{{ pem.stdout_lines[1] }}\" }, when: \"pem.stdout_lines | length > 1\" }\n",
    );
    let s = Setup::new(&inventory, playbook);
    ok(&s.fleet().args(["secret", "init"]).output().expect("runs"));
    let quoted = serde_json::to_string(PASSWORD).expect("json");
    let pem = serde_json::to_string(PEM).expect("json");
    s.encrypt(
        "inventory/group_vars/all.yaml.age",
        &format!("db_password: {quoted}\ntls_key: {pem}\n"),
    );
    s.encrypt(
        "inventory/host_vars/h1.yaml.age",
        &format!("host_secret: {HOSTVAR}\n"),
    );
    s.encrypt(
        "playbooks/vars/play.yaml.age",
        &format!("play_secret: {PLAYVAR}\n"),
    );
    s.encrypt("secrets/api_token.age", TOKEN);

    for args in [
        vec!["plan", "playbooks/site.yaml"],
        vec!["plan", "playbooks/site.yaml", "--diff"],
        vec!["plan", "playbooks/site.yaml", "--json"],
        vec!["validate"],
        vec!["nodes", "--json"],
        vec!["apply", "playbooks/site.yaml", "--check", "--diff", "-vv"],
        vec!["apply", "playbooks/site.yaml", "-vv", "--diff", "--json"],
        vec!["apply", "playbooks/site.yaml", "-v", "--diff"],
    ] {
        let out = s.fleet().args(&args).output().expect("runs");
        ok(&out);
        assert_clean(&args.join(" "), &out);
        if args[0] == "plan" && args.len() == 2 {
            assert!(String::from_utf8_lossy(&out.stdout).contains("***"));
        }
    }
    // The host has the real values.
    assert_eq!(hosts.sh(1, "cat /etc/vault.pem"), format!("{PEM}\n"));
    assert_eq!(hosts.sh(1, "cat /etc/vault.token"), TOKEN);
    assert_eq!(hosts.sh(1, "cat /etc/vault.play"), format!("{PLAYVAR}\n"));
    assert_eq!(hosts.sh(1, "cat /etc/vault.conf"), format!("pem = {PEM}\n"));

    // An error that would quote a secret value.
    std::fs::write(
        s.path().join("playbooks/site.yaml"),
        "- name: bad\n  hosts: all\n  tasks:\n    - { name: bad state, file: { path: /x, state: \"{{ db_password }}\" } }\n    - { name: bad loop, debug: { msg: x }, loop: \"{{ host_secret }}\" }\n",
    )
    .expect("w");
    for args in [
        vec!["plan", "playbooks/site.yaml"],
        vec!["apply", "playbooks/site.yaml"],
    ] {
        let out = s.fleet().args(&args).output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_clean(&format!("errors of {}", args.join(" ")), &out);
        assert!(stderr(&out).contains("***"), "{}", stderr(&out));
    }

    // Nothing in plain text on the controller: the repo (and its .fleet cache), fleet's
    // temporary directory, the home, /dev/shm.
    let mut found = Vec::new();
    for dir in [s.path(), s.tmp.path(), s.home.path(), Path::new("/dev/shm")] {
        files_with_canaries(dir, &mut found);
    }
    assert!(found.is_empty(), "plain text on disk: {found:?}");
}
