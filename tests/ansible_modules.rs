//! The modules Ansible users reach for (`git`, `unarchive`, `cron`, `authorized_key` …) on
//! real sshd test hosts, each three ways like tests/modules.rs: `--check` predicts exactly
//! the changes of the real run that follows, the real run does the work (looked at on the
//! host), and a second run changes nothing.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use support::{Hosts, build_repo, crate_root, parse_case};

fn repo(hosts: &Hosts, playbook: &str, extra_files: &str) -> tempfile::TempDir {
    let inv = format!(
        "fleet: {{ name: t, hq: h1, hq_url: \"http://127.0.0.1:1\", ssh_config: \"{}\" }}\nnodes:\n  h1: {{ host: 127.0.0.1, role: common, vars: {{ ssh_port: {} }} }}\n",
        hosts.ssh_config().display(),
        hosts.port(1)
    );
    let case = parse_case(
        "m",
        &format!("--- inventory/fleet.yaml\n{inv}--- playbooks/site.yaml\n{playbook}{extra_files}"),
    );
    build_repo(&crate_root().join("tests/corpus/base"), &case)
}

fn run(repo: &Path, args: &[&str]) -> (i32, Vec<serde_json::Value>) {
    let (code, events, _) = support::apply_json(repo, "playbooks/site.yaml", args);
    (code, events)
}

fn set(events: &[serde_json::Value], status: &str) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e["status"] == status)
        .map(|e| format!("{} | {}", e["task"].as_str().unwrap_or(""), e["item"]))
        .collect()
}

fn failures(events: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    events.iter().filter(|e| e["status"] == "failed").collect()
}

/// check == real, real as expected, second run (and its check) quiet. Returns the real
/// run's events.
fn three_ways(repo: &Path, expect_changed: usize) -> Vec<serde_json::Value> {
    let (code, check) = run(repo, &["--check"]);
    assert_eq!(code, 0, "check run failed: {:?}", failures(&check));
    let (code, real) = run(repo, &[]);
    assert_eq!(code, 0, "real run failed: {:?}", failures(&real));
    assert_eq!(
        set(&check, "changed"),
        set(&real, "changed"),
        "--check predicted other changes than the run made"
    );
    assert_eq!(
        set(&real, "changed").len(),
        expect_changed,
        "{:?}",
        set(&real, "changed")
    );
    let (code, again) = run(repo, &[]);
    assert_eq!(code, 0, "{:?}", failures(&again));
    assert!(
        set(&again, "changed").is_empty(),
        "second run changed: {:?}",
        set(&again, "changed")
    );
    let (_, check_again) = run(repo, &["--check"]);
    assert!(set(&check_again, "changed").is_empty());
    real
}

/// The message of the first failed event of `task`.
fn failure_of(events: &[serde_json::Value], task: &str) -> String {
    events
        .iter()
        .find(|e| e["task"] == task && e["status"] == "failed")
        .and_then(|e| e["msg"].as_str())
        .unwrap_or("")
        .to_string()
}

const GIT_ID: &str = "git -c user.email=t@t -c user.name=t";

#[test]
fn git_clones_and_follows_branches_tags_and_commits() {
    let hosts = Hosts::up(1);
    // A bare repository on the host with a branch, an annotated tag and two commits.
    hosts.sh(
        1,
        &format!(
            "set -e; mkdir -p /srv/src && cd /srv/src && git init -q -b main . && echo one > f && git add f && {GIT_ID} commit -q -m one && {GIT_ID} tag -a v1 -m v1 && echo two > f && {GIT_ID} commit -q -am two && git clone -q --bare /srv/src /srv/repo.git"
        ),
    );
    let first = hosts
        .sh(1, "git -C /srv/src rev-parse HEAD~1")
        .trim()
        .to_string();
    let pb = format!(
        concat!(
            "- name: git\n  hosts: all\n  tasks:\n",
            "    - {{ name: branch, git: {{ repo: file:///srv/repo.git, dest: /opt/main, version: main }} }}\n",
            "    - {{ name: tag, git: {{ repo: file:///srv/repo.git, dest: /opt/tag, version: v1, depth: 1 }} }}\n",
            "    - {{ name: commit, git: {{ repo: /srv/repo.git, dest: /opt/commit, version: {} }} }}\n",
            "    - {{ name: head, git: {{ repo: file:///srv/repo.git, dest: /opt/head }}, register: h }}\n",
            "    - {{ name: registered, copy: {{ content: \"{{{{ h.stdout }}}}\", dest: /opt/head.sha }} }}\n",
        ),
        first
    );
    let r = repo(&hosts, &pb, "");
    three_ways(r.path(), 5);
    assert_eq!(
        hosts.sh(1, "cat /opt/main/f /opt/tag/f /opt/commit/f /opt/head/f; git -C /opt/main symbolic-ref --short HEAD; git -C /opt/tag rev-list --count HEAD"),
        "two\none\none\ntwo\nmain\n1\n"
    );
    assert_eq!(
        hosts.sh(1, "cat /opt/head.sha"),
        hosts.sh(1, "git -C /srv/src rev-parse HEAD").trim()
    );

    // The branch moves on: check predicts the update of the branch and HEAD checkouts only.
    hosts.sh(
        1,
        &format!("set -e; cd /srv/src && echo three > f && {GIT_ID} commit -q -am three && git push -q /srv/repo.git main"),
    );
    let (_, check) = run(r.path(), &["--check"]);
    let (code, real) = run(r.path(), &[]);
    assert_eq!(code, 0, "{:?}", failures(&real));
    assert_eq!(set(&check, "changed"), set(&real, "changed"));
    assert_eq!(
        set(&real, "changed")
            .into_iter()
            .map(|s| s.split(" | ").next().unwrap_or("").to_string())
            .collect::<Vec<_>>(),
        ["branch", "head", "registered"]
    );
    assert_eq!(hosts.sh(1, "cat /opt/main/f"), "three\n");

    // Local modifications fail the task unless `force` discards them.
    hosts.sh(
        1,
        &format!("echo local > /opt/tag/f; cd /srv/src && {GIT_ID} tag v2"),
    );
    let moved = repo(
        &hosts,
        "- name: git\n  hosts: all\n  tasks:\n    - { name: tag, git: { repo: file:///srv/repo.git, dest: /opt/tag, version: v2 } }\n",
        "",
    );
    hosts.sh(1, "git -C /srv/src push -q /srv/repo.git v2");
    let (code, ev) = run(moved.path(), &[]);
    assert_eq!(code, 1);
    assert!(
        failure_of(&ev, "tag").contains("/opt/tag has local modifications"),
        "{ev:?}"
    );
    let forced = repo(
        &hosts,
        "- name: git\n  hosts: all\n  tasks:\n    - { name: tag, git: { repo: file:///srv/repo.git, dest: /opt/tag, version: v2, force: true } }\n",
        "",
    );
    three_ways(forced.path(), 1);
    assert_eq!(hosts.sh(1, "cat /opt/tag/f"), "three\n");

    // An unknown version and a directory that is not a checkout are clear failures.
    hosts.sh(1, "mkdir -p /opt/other && touch /opt/other/x");
    let bad = repo(
        &hosts,
        "- name: git\n  hosts: all\n  tasks:\n    - { name: nobranch, git: { repo: file:///srv/repo.git, dest: /opt/x, version: nope }, ignore_errors: true }\n    - { name: notgit, git: { repo: file:///srv/repo.git, dest: /opt/other } }\n",
        "",
    );
    let (code, ev) = run(bad.path(), &["--check"]);
    assert_eq!(code, 1);
    assert!(
        failure_of(&ev, "nobranch").contains("has no branch or tag nope"),
        "{ev:?}"
    );
    assert!(
        failure_of(&ev, "notgit").contains("/opt/other exists and is not a git checkout"),
        "{ev:?}"
    );
}

/// Makes archives of a small tree (a directory, files, a relative link) on the controller.
fn archives(dir: &Path) {
    let sh = |cmd: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(dir)
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(
        "mkdir -p files t/app/bin t/app/lib t/app/data && printf 'run\\n' > t/app/bin/run && chmod 755 t/app/bin/run && printf 'lib\\n' > t/app/lib/libx.so.1 && ln -s libx.so.1 t/app/lib/libx.so && ln -s ../lib/libx.so.1 t/app/bin/lib",
    );
    sh(
        "cd t && tar -czf ../files/app.tar.gz app && tar -cJf ../files/app.tar.xz app && tar -cjf ../files/app.tar.bz2 app && tar -cf ../files/app.tar app && zip -qry ../files/app.zip app",
    );
    // Hostile archives: a member climbing out, an absolute member, a link leading out.
    sh(
        "python3 -c \"import zipfile; z = zipfile.ZipFile('files/slip.zip', 'w'); z.writestr('../../evil', 'x'); z.close()\"",
    );
    sh(
        "python3 -c \"import tarfile, io; t = tarfile.open('files/abs.tar', 'w'); i = tarfile.TarInfo('/etc/evil'); i.size = 1; t.addfile(i, io.BytesIO(b'x')); t.close()\"",
    );
    sh(
        "python3 -c \"import tarfile; t = tarfile.open('files/link.tar.gz', 'w:gz'); i = tarfile.TarInfo('app/etc'); i.type = tarfile.SYMTYPE; i.linkname = '../../etc'; t.addfile(i); t.close()\"",
    );
    sh("rm -rf t");
}

/// Puts a controller file on host 1.
fn put(hosts: &Hosts, from: &Path, to: &str) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(from).expect("read"));
    hosts.sh(
        1,
        &format!("mkdir -p /srv/arc && printf '%s' {b64} | base64 -d > {to}"),
    );
}

#[test]
fn unarchive_tar_and_zip_from_the_controller_or_the_host() {
    let hosts = Hosts::up(1);
    let pb = concat!(
        "- name: unarchive\n  hosts: all\n  tasks:\n",
        "    - { name: dirs, file: { path: \"/opt/u/{{ item }}\", state: directory }, loop: [gz, xz, bz2, tar, zip, rgz, rzip, skip] }\n",
        "    - { name: gz, unarchive: { src: app.tar.gz, dest: /opt/u/gz }, register: g }\n",
        "    - { name: xz, unarchive: { src: app.tar.xz, dest: /opt/u/xz } }\n",
        "    - { name: bz2, unarchive: { src: files/app.tar.bz2, dest: /opt/u/bz2/ } }\n",
        "    - { name: tar, unarchive: { src: app.tar, dest: /opt/u/tar } }\n",
        "    - { name: zip, unarchive: { src: app.zip, dest: /opt/u/zip } }\n",
        "    - { name: remote gz, unarchive: { src: /srv/arc/app.tar.gz, dest: /opt/u/rgz, remote_src: true }, register: rg }\n",
        "    - { name: remote zip, unarchive: { src: /srv/arc/app.zip, dest: /opt/u/rzip, remote_src: true } }\n",
        "    - { name: creates, unarchive: { src: app.tar.gz, dest: /opt/u/skip, creates: /etc/hostname } }\n",
        "    - { name: show gz, debug: { msg: \"{{ g.stdout }}\" } }\n",
        "    - { name: show remote gz, debug: { msg: \"{{ rg.stdout }}\" } }\n",
    );
    let r = repo(&hosts, pb, "");
    archives(r.path());
    put(
        &hosts,
        &r.path().join("files/app.tar.gz"),
        "/srv/arc/app.tar.gz",
    );
    put(&hosts, &r.path().join("files/app.zip"), "/srv/arc/app.zip");
    three_ways(r.path(), 8 + 7);
    for d in ["gz", "xz", "bz2", "tar", "zip", "rgz", "rzip"] {
        assert_eq!(
            hosts.sh(1, &format!("cd /opt/u/{d}/app && cat bin/run lib/libx.so bin/lib && readlink lib/libx.so bin/lib && stat -c %a bin/run && ls -A data | wc -l")),
            "run\nlib\nlib\nlibx.so.1\n../lib/libx.so.1\n755\n0\n",
            "{d}"
        );
    }
    assert_eq!(hosts.sh(1, "ls -A /opt/u/skip | wc -l"), "0\n");

    // A file changed on the host, a link replaced, a file gone: only those tasks change, and
    // check mode says so first (listing what differs).
    hosts.sh(1, "echo local > /opt/u/gz/app/bin/run; rm /opt/u/zip/app/lib/libx.so && ln -s /etc/passwd /opt/u/zip/app/lib/libx.so; rm /opt/u/rgz/app/lib/libx.so.1");
    let (_, check) = run(r.path(), &["--check"]);
    let (code, real) = run(r.path(), &[]);
    assert_eq!(code, 0, "{:?}", failures(&real));
    assert_eq!(set(&check, "changed"), set(&real, "changed"));
    assert_eq!(
        set(&real, "changed").len(),
        3,
        "{:?}",
        set(&real, "changed")
    );
    let out = |ev: &[serde_json::Value], t: &str| {
        ev.iter()
            .find(|e| e["task"] == t)
            .and_then(|e| e["msg"].as_str())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(out(&check, "show gz"), "app/bin/run");
    assert_eq!(out(&check, "show remote gz"), "app/lib/libx.so.1");
    assert_eq!(hosts.sh(1, "cat /opt/u/gz/app/bin/run; readlink /opt/u/zip/app/lib/libx.so; cat /opt/u/rgz/app/lib/libx.so.1"), "run\nlibx.so.1\nlib\n");
}

#[test]
fn unarchive_refuses_members_that_escape_dest() {
    let hosts = Hosts::up(1);
    // From the controller: refused while planning, before any host is touched (exit 2).
    for (src, why) in [
        ("slip.zip", "member `../../evil` has a `..` component"),
        ("abs.tar", "member `/etc/evil` is an absolute path"),
        (
            "link.tar.gz",
            "member `app/etc` is a link to `../../etc`, outside",
        ),
    ] {
        let r = repo(
            &hosts,
            &format!(
                "- name: u\n  hosts: all\n  tasks:\n    - {{ name: u, unarchive: {{ src: {src}, dest: /opt }} }}\n"
            ),
            "",
        );
        archives(r.path());
        let (code, _, stderr) = support::apply_json(r.path(), "playbooks/site.yaml", &[]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains(why), "{src}: {stderr}");
        if src == "slip.zip" {
            put(
                &hosts,
                &r.path().join("files/slip.zip"),
                "/srv/arc/slip.zip",
            );
        } else {
            put(
                &hosts,
                &r.path().join(format!("files/{src}")),
                &format!("/srv/arc/{src}"),
            );
        }
    }
    // On the host: the task fails with the member named, nothing is unpacked.
    let pb = concat!(
        "- name: u\n  hosts: all\n  tasks:\n",
        "    - { name: slip, unarchive: { src: /srv/arc/slip.zip, dest: /opt/x/y, remote_src: true }, ignore_errors: true }\n",
        "    - { name: abs, unarchive: { src: /srv/arc/abs.tar, dest: /opt/x/y, remote_src: true }, ignore_errors: true }\n",
        "    - { name: link, unarchive: { src: /srv/arc/link.tar.gz, dest: /opt/x/y, remote_src: true }, ignore_errors: true }\n",
    );
    let r = repo(&hosts, pb, "");
    hosts.sh(1, "mkdir -p /opt/x/y");
    for check in [true, false] {
        let (_, ev) = run(r.path(), if check { &["--check"] } else { &[] });
        assert!(
            failure_of(&ev, "slip").contains("member ../../evil would land outside /opt/x/y"),
            "{ev:?}"
        );
        assert!(
            failure_of(&ev, "abs").contains("member /etc/evil would land outside"),
            "{ev:?}"
        );
        assert!(
            failure_of(&ev, "link")
                .contains("member app/etc is a link that leads outside /opt/x/y"),
            "{ev:?}"
        );
    }
    assert_eq!(
        hosts.sh(
            1,
            "ls -A /opt/x/y /opt/x; ls /opt/evil /etc/evil 2>&1 | grep -c 'No such'"
        ),
        "/opt/x:\ny\n\n/opt/x/y:\n2\n"
    );
}

#[test]
fn cron_entries_by_name_through_crontab() {
    let hosts = Hosts::up(1);
    // The test machine has no cron: a stand-in of crontab(1) (tests/standins/crontab).
    hosts.install(1, "tests/standins/crontab", "/usr/local/bin/crontab");
    hosts.sh(
        1,
        "useradd -m app && printf 'MAILTO=ops\\n#Ansible: old\\n*/5 * * * * /old\\n#fleet: gone\\n* * * * * /gone\\n' | crontab -",
    );
    let pb = concat!(
        "- name: cron\n  hosts: all\n  tasks:\n",
        "    - { name: nightly, cron: { name: nightly backup, minute: 0, hour: 3, job: \"/usr/bin/backup --all > /dev/null 2>&1\" } }\n",
        "    - { name: reboot, cron: { name: agent, special_time: reboot, job: fleet agent, user: app } }\n",
        "    - { name: off, cron: { name: off, job: /bin/true, weekday: \"1-5\", disabled: true } }\n",
        "    - { name: path, cron: { name: PATH, env: true, job: \"/usr/local/bin:/usr/bin:/bin\" } }\n",
        "    - { name: taken over, cron: { name: old, minute: \"*/10\", job: /old } }\n",
        "    - { name: removed, cron: { name: gone, state: absent } }\n",
        "    - { name: never there, cron: { name: never, state: absent } }\n",
    );
    let r = repo(&hosts, pb, "");
    three_ways(r.path(), 6);
    assert_eq!(
        hosts.sh(
            1,
            "crontab -l; echo ---; crontab -l -u app; stat -c '%a %U' /var/spool/cron/crontabs/app"
        ),
        concat!(
            "PATH=/usr/local/bin:/usr/bin:/bin\nMAILTO=ops\n#fleet: old\n*/10 * * * * /old\n",
            "#fleet: nightly backup\n0 3 * * * /usr/bin/backup --all > /dev/null 2>&1\n#fleet: off\n#* * * * 1-5 /bin/true\n",
            "---\n#fleet: agent\n@reboot fleet agent\n600 app\n"
        )
    );

    // A change of time shows as a diff of the crontab; check mode shows it too.
    for args in [
        &["--check", "--diff", "-e", "h=4"][..],
        &["--diff", "-e", "h=4"],
    ] {
        let moved = repo(
            &hosts,
            "- name: cron\n  hosts: all\n  tasks:\n    - { name: nightly, cron: { name: nightly backup, minute: 0, hour: \"{{ h }}\", job: \"/usr/bin/backup --all > /dev/null 2>&1\" } }\n",
            "",
        );
        let (code, ev) = run(moved.path(), args);
        assert_eq!(code, 0, "{ev:?}");
        let diff = ev
            .iter()
            .find(|e| e["task"] == "nightly")
            .and_then(|e| e["diff"].as_str())
            .unwrap_or("")
            .to_string();
        assert!(
            diff.contains("-0 3 * * * /usr/bin/backup")
                && diff.contains("+0 4 * * * /usr/bin/backup")
                && diff.contains(" #fleet: nightly backup"),
            "{diff}"
        );
    }
    assert!(
        hosts
            .sh(1, "crontab -l")
            .contains("0 4 * * * /usr/bin/backup")
    );

    // Bad values are refused before anything runs, at the argument.
    let bad = repo(
        &hosts,
        "- name: cron\n  hosts: all\n  tasks:\n    - { name: bad, cron: { name: x, minute: \"1;reboot\", job: /bin/true } }\n",
        "",
    );
    let (code, _, stderr) = support::apply_json(bad.path(), "playbooks/site.yaml", &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`minute`: expected a crontab time field"),
        "{stderr}"
    );
}

/// A fresh key pair on the controller: (private key path, public key line).
fn keypair(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let path = dir.join(name);
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success());
    let public = std::fs::read_to_string(path.with_extension("pub")).expect("pub");
    (path, public.trim().to_string())
}

#[test]
fn authorized_keys_of_users() {
    let hosts = Hosts::up(1);
    let keys = tempfile::tempdir().expect("tmp");
    let (k1_private, k1) = keypair(keys.path(), "k1");
    let (_, k2) = keypair(keys.path(), "k2");
    let (_, k3) = keypair(keys.path(), "k3");
    hosts.sh(
        1,
        &format!(
            "set -e; for u in dev ops solo; do useradd -m -s /bin/sh $u; done; passwd -d dev >/dev/null 2>&1 || true; \
             mkdir -m 755 /home/ops/.ssh && printf '# team keys\\n%s\\n%s\\n' '{k2}' '{k3}' > /home/ops/.ssh/authorized_keys && chmod 644 /home/ops/.ssh/authorized_keys && chown -R ops /home/ops/.ssh; \
             mkdir -m 700 /home/solo/.ssh && printf '%s\\n%s\\n' '{k2}' '{k3}' > /home/solo/.ssh/authorized_keys && chown -R solo /home/solo/.ssh && chmod 600 /home/solo/.ssh/authorized_keys"
        ),
    );
    let pb = format!(
        concat!(
            "- name: keys\n  hosts: all\n  tasks:\n",
            "    - {{ name: dev, authorized_key: {{ user: dev, key: \"{k1}\" }} }}\n",
            "    - {{ name: ops options, authorized_key: {{ user: ops, key: \"{k2}\", key_options: \"no-pty,from=\\\"127.0.0.1\\\"\" }} }}\n",
            "    - {{ name: ops gone, authorized_key: {{ user: ops, key: \"{k3}\", state: absent }} }}\n",
            "    - {{ name: ops never, authorized_key: {{ user: ops, key: \"{k1}\", state: absent }} }}\n",
            "    - {{ name: solo, authorized_key: {{ user: solo, key: \"{k1}\", exclusive: true }} }}\n",
        ),
        k1 = k1,
        k2 = k2,
        k3 = k3
    );
    let r = repo(&hosts, &pb, "");
    three_ways(r.path(), 4);
    assert_eq!(
        hosts.sh(1, "stat -c '%a %U %n' /home/dev/.ssh /home/dev/.ssh/authorized_keys /home/ops/.ssh /home/ops/.ssh/authorized_keys /home/solo/.ssh/authorized_keys; cat /home/dev/.ssh/authorized_keys /home/ops/.ssh/authorized_keys /home/solo/.ssh/authorized_keys"),
        format!(
            "700 dev /home/dev/.ssh\n600 dev /home/dev/.ssh/authorized_keys\n700 ops /home/ops/.ssh\n600 ops /home/ops/.ssh/authorized_keys\n600 solo /home/solo/.ssh/authorized_keys\n{k1}\n# team keys\nno-pty,from=\"127.0.0.1\" {k2}\n{k1}\n"
        )
    );
    // sshd itself takes the key it was given (its StrictModes check the modes and owners).
    let out = std::process::Command::new("ssh")
        .arg("-F")
        .arg(hosts.ssh_config())
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-i"])
        .arg(&k1_private)
        .args(["-l", "dev", "host1", "id -un"])
        .output()
        .expect("ssh");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "dev\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A key that is not one fails before any host is touched.
    let bad = repo(
        &hosts,
        "- name: keys\n  hosts: all\n  tasks:\n    - { name: bad, authorized_key: { user: dev, key: \"ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQAB\" } }\n",
        "",
    );
    let (code, _, stderr) = support::apply_json(bad.path(), "playbooks/site.yaml", &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("the ssh-ed25519 key's data is not a ssh-ed25519 key"),
        "{stderr}"
    );
}

#[test]
fn systemd_units_and_one_daemon_reload_however_many_changed() {
    let hosts = Hosts::up(1);
    hosts.install_standins(1);
    hosts.sh(
        1,
        "printf '[Timer]\\nOnCalendar=daily\\n' > /etc/systemd/system/old.timer",
    );
    let pb = concat!(
        "- name: units\n  hosts: all\n  vars: { port: 8080 }\n  tasks:\n",
        "    - { name: a, systemd_unit: { name: demo-a, content: \"[Service]\\nExecStart=/bin/sleep 1000\\n\" }, notify: reload systemd }\n",
        "    - { name: b, systemd_unit: { name: demo-b.service, src: b.service.j2 }, notify: reload systemd }\n",
        "    - { name: old, systemd_unit: { name: old.timer, state: absent }, notify: reload systemd }\n",
        "    - { name: never, systemd_unit: { name: never.socket, state: absent }, notify: reload systemd }\n",
        "  handlers:\n",
        "    - { name: reload systemd, systemd_unit: { daemon_reload: true } }\n",
    );
    let r = repo(
        &hosts,
        pb,
        "--- templates/b.service.j2\n[Service]\nExecStart=/bin/sleep {{ port }}\n",
    );
    let real = three_ways(r.path(), 4);
    assert!(
        real.iter().any(|e| e["event"] == "handler"
            && e["task"] == "reload systemd"
            && e["status"] == "changed"),
        "{real:?}"
    );
    let reloads = || {
        hosts.sh(
            1,
            "grep -c 'systemctl daemon-reload' /var/log/standin-systemctl.log || true",
        )
    };
    assert_eq!(reloads(), "1\n", "three units changed, one reload");
    assert_eq!(
        hosts.sh(1, "stat -c '%a' /etc/systemd/system/demo-a.service; cat /etc/systemd/system/demo-b.service; ls /etc/systemd/system/old.timer 2>&1 | grep -c 'No such'"),
        "644\n[Service]\nExecStart=/bin/sleep 8080\n1\n"
    );
    // One unit changes: check mode predicts it and the reload; --diff shows the unit.
    let (_, check) = run(r.path(), &["--check", "-e", "port=9090"]);
    let (code, real) = run(r.path(), &["--diff", "-e", "port=9090"]);
    assert_eq!(code, 0, "{:?}", failures(&real));
    assert_eq!(set(&check, "changed"), set(&real, "changed"));
    assert_eq!(
        set(&real, "changed").len(),
        2,
        "{:?}",
        set(&real, "changed")
    );
    let diff = real
        .iter()
        .find(|e| e["task"] == "b")
        .and_then(|e| e["diff"].as_str())
        .unwrap_or("");
    assert!(
        diff.contains("-ExecStart=/bin/sleep 8080") && diff.contains("+ExecStart=/bin/sleep 9090"),
        "{diff}"
    );
    assert_eq!(reloads(), "2\n");
}

/// The Docker CLI stand-in (tests/standins/docker) ahead of any real CLI, its daemon "up".
fn docker_standin(hosts: &Hosts) {
    hosts.install(1, "tests/standins/docker", "/usr/local/bin/docker");
    hosts.sh(
        1,
        "mkdir -p /var/lib/standin-systemd && touch /var/lib/standin-systemd/docker.active",
    );
}

#[test]
fn docker_containers_recreated_when_their_config_differs() {
    let hosts = Hosts::up(1);
    docker_standin(&hosts);
    hosts.sh(1, "docker run -d --name old busybox >/dev/null");
    let pb = concat!(
        "- name: docker\n  hosts: all\n  vars: { tag: \"1.27\" }\n  tasks:\n",
        "    - { name: web, docker_container: { name: web, image: \"nginx:{{ tag }}\", ports: [\"8080:80\"], env: { A: \"1\" }, volumes: [\"/srv/www:/usr/share/nginx/html:ro\"], restart_policy: unless-stopped }, register: w }\n",
        "    - { name: batch, docker_container: { name: batch, image: busybox, command: [sh, -c, \"echo hi\"], state: stopped } }\n",
        "    - { name: gone, docker_container: { name: old, state: absent } }\n",
        "    - { name: never, docker_container: { name: never, state: absent } }\n",
    );
    let r = repo(&hosts, pb, "");
    three_ways(r.path(), 3);
    let inspect =
        |fmt: &str, name: &str| hosts.sh(1, &format!("docker inspect --format '{fmt}' {name}"));
    // Published on the node's fleet address only (its inventory host, 127.0.0.1).
    assert_eq!(
        inspect("{{json .HostConfig.PortBindings}}", "web"),
        "{\"80/tcp\":[{\"HostIp\":\"127.0.0.1\",\"HostPort\":\"8080\"}]}\n"
    );
    assert_eq!(
        inspect(
            "{{.State.Running}} {{.Config.Image}} {{json .Config.Cmd}} {{.HostConfig.RestartPolicy.Name}}",
            "web batch"
        ),
        "true nginx:1.27 null unless-stopped\nfalse busybox [\"sh\",\"-c\",\"echo hi\"] no\n"
    );
    assert!(
        hosts
            .sh(1, "ls /var/lib/standin-docker/containers")
            .lines()
            .all(|l| l != "old.json")
    );

    // A new image tag: check mode and the run both recreate, and say what differs.
    let (_, check) = run(r.path(), &["--check", "-e", "tag=1.28"]);
    let (code, real) = run(r.path(), &["-e", "tag=1.28"]);
    assert_eq!(code, 0, "{:?}", failures(&real));
    assert_eq!(set(&check, "changed"), set(&real, "changed"));
    assert_eq!(set(&real, "changed").len(), 1);
    let note = |ev: &[serde_json::Value]| {
        ev.iter()
            .find(|e| e["task"] == "web")
            .and_then(|e| e["msg"].as_str())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(
        note(&check),
        "recreated: image nginx:1.27 → nginx:1.28",
        "{check:?}"
    );
    assert_eq!(inspect("{{.Config.Image}}", "web"), "nginx:1.28\n");

    // Stopped by hand: started again, not recreated. Made by hand: recreated.
    hosts.sh(1, "docker stop web >/dev/null; docker rm -f batch >/dev/null; docker create --name batch busybox >/dev/null");
    let (_, check) = run(r.path(), &["--check", "-e", "tag=1.28"]);
    let (code, real) = run(r.path(), &["-e", "tag=1.28"]);
    assert_eq!(code, 0);
    assert_eq!(set(&check, "changed"), set(&real, "changed"));
    assert_eq!(set(&real, "changed").len(), 2);
    assert_eq!(note(&real), "");
    let batch = real
        .iter()
        .find(|e| e["task"] == "batch")
        .and_then(|e| e["msg"].as_str())
        .unwrap_or("");
    assert_eq!(batch, "recreated: the container was not made by fleet");
    let log = hosts.sh(1, "cat /var/log/standin-docker.log");
    assert!(log.contains("docker start web"), "{log}");

    // No fleet IP and no IP in the port: refused before the run, at the argument.
    let bad = repo(
        &hosts,
        "- name: d\n  hosts: all\n  tasks:\n    - { name: p, docker_container: { name: pp, image: x, ports: [\"80\"] } }\n",
        "",
    );
    let (code, _, stderr) = support::apply_json(bad.path(), "playbooks/site.yaml", &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`ports`: `80` is not `HOST:CONTAINER`"),
        "{stderr}"
    );
}

#[test]
fn docker_compose_projects_up_only_when_stale() {
    let hosts = Hosts::up(1);
    docker_standin(&hosts);
    let compose = |web: &str, db: bool| {
        format!(
            "mkdir -p /srv/app && printf 'services:\\n  web:\\n    image: nginx:{web}\\n    ports: [\"127.0.0.1:8080:80\"]\\n{}' > /srv/app/compose.yaml",
            if db {
                "  db:\\n    image: postgres:16\\n"
            } else {
                ""
            }
        )
    };
    hosts.sh(1, &compose("1.27", true));
    hosts.sh(1, "mkdir -p /srv/old && printf 'services:\\n  job:\\n    image: busybox\\n' > /srv/old/compose.yaml && cd /srv/old && docker compose up -d 2>/dev/null");
    let pb = concat!(
        "- name: compose\n  hosts: all\n  tasks:\n",
        "    - { name: app, docker_compose: { project_src: /srv/app }, register: a }\n",
        "    - { name: old, docker_compose: { project_src: /srv/old, state: absent } }\n",
        "    - { name: what, debug: { msg: \"{{ a.stdout }}\" } }\n",
    );
    let r = repo(&hosts, pb, "");
    let real = three_ways(r.path(), 2);
    let msg = |ev: &[serde_json::Value]| {
        ev.iter()
            .find(|e| e["task"] == "what")
            .and_then(|e| e["msg"].as_str())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(msg(&real), "up db\nup web");
    let ps = || {
        hosts.sh(1, "cd /srv/app && docker compose ps --all --format json | sed 's/.*\"Service\":\"\\([a-z]*\\)\",\"State\":\"\\([a-z]*\\)\".*/\\1 \\2/'; ls /var/lib/standin-docker/containers")
    };
    assert_eq!(
        ps(),
        "db running\nweb running\napp-db-1.json\napp-web-1.json\n"
    );

    // One service changes, one is dropped, one is stopped by hand: check mode says so, the run
    // brings only that about.
    hosts.sh(1, &compose("1.28", false));
    let (_, check) = run(r.path(), &["--check"]);
    let (code, real) = run(r.path(), &[]);
    assert_eq!(code, 0, "{:?}", failures(&real));
    assert_eq!(set(&check, "changed"), set(&real, "changed"));
    assert_eq!(msg(&check), "remove db\nup web");
    assert_eq!(ps(), "web running\napp-web-1.json\n");
    hosts.sh(1, "docker stop app-web-1 >/dev/null");
    let (_, check) = run(r.path(), &["--check"]);
    assert_eq!(msg(&check), "up web");
    three_ways(r.path(), 1);

    // Down.
    let down = repo(
        &hosts,
        "- name: compose\n  hosts: all\n  tasks:\n    - { name: app, docker_compose: { project_src: /srv/app, state: absent } }\n",
        "",
    );
    three_ways(down.path(), 1);
    assert_eq!(
        hosts.sh(1, "ls /var/lib/standin-docker/containers | wc -l"),
        "0\n"
    );
}

/// Wheels of `fleetdemo` 1.0 and 2.0 and `fleettool` 1.0 (a console script `fleettool`) in
/// /srv/wheels on host 1: the test hosts reach no package index.
fn wheels(hosts: &Hosts) {
    let py = r#"
import base64, hashlib, os, zipfile
os.makedirs("/srv/wheels", exist_ok=True)
def wheel(name, ver, script=None):
    info = f"{name}-{ver}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {ver!r}\ndef main():\n    print({ver!r})\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: fleet-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    if script:
        files[f"{info}/entry_points.txt"] = f"[console_scripts]\n{script} = {name}:main\n"
    record = ""
    for p, t in files.items():
        d = base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b"=").decode()
        record += f"{p},sha256={d},{len(t.encode())}\n"
    files[f"{info}/RECORD"] = record + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(f"/srv/wheels/{name}-{ver}-py3-none-any.whl", "w") as z:
        for p, t in files.items():
            z.writestr(p, t)
wheel("fleetdemo", "1.0")
wheel("fleetdemo", "2.0")
wheel("fleettool", "1.0", "fleettool")
wheel("fleettool", "1.1", "fleettool")
"#;
    hosts.sh(
        1,
        &format!("/usr/bin/python3 -c {}", fleet::script::shquote(py)),
    );
}

#[test]
fn pip_packages_in_a_virtualenv_from_local_wheels() {
    let hosts = Hosts::up(1);
    wheels(&hosts);
    let pb = concat!(
        "- name: pip\n  hosts: all\n  vars: { st: present, v: \"==1.0\" }\n  tasks:\n",
        "    - { name: demo, pip: { name: \"fleetdemo{{ v }}\", virtualenv: /opt/venv, find_links: /srv/wheels, state: \"{{ st }}\" } }\n",
        "    - { name: tool, pip: { name: [fleettool], virtualenv: /opt/venv, find_links: /srv/wheels } }\n",
    );
    let r = repo(&hosts, pb, "");
    three_ways(r.path(), 2);
    let version = || {
        hosts.sh(1, "/opt/venv/bin/python -c 'import fleetdemo; print(fleetdemo.VERSION)' 2>&1; /opt/venv/bin/fleettool")
    };
    assert_eq!(version(), "1.0\n1.1\n");

    // A looser specifier is already met; `latest` finds 2.0 (check mode asks pip, which
    // installs nothing); `absent` removes it.
    for (args, changed, after) in [
        (&["-e", "v=>=1"][..], 0, "1.0\n1.1\n"),
        (&["-e", "st=latest", "-e", "v=>=0"], 1, "2.0\n1.1\n"),
    ] {
        let (_, check) = run(r.path(), &[&["--check"][..], args].concat());
        let (code, real) = run(r.path(), args);
        assert_eq!(code, 0, "{:?}", failures(&real));
        assert_eq!(set(&check, "changed"), set(&real, "changed"));
        assert_eq!(set(&real, "changed").len(), changed, "{args:?}");
        assert_eq!(version(), after);
        let (_, again) = run(r.path(), args);
        assert!(set(&again, "changed").is_empty(), "{args:?}: {again:?}");
    }
    let (_, check) = run(r.path(), &["--check", "-e", "st=absent", "-e", "v=>=0"]);
    let (code, real) = run(r.path(), &["-e", "st=absent", "-e", "v=>=0"]);
    assert_eq!(code, 0, "{:?}", failures(&real));
    assert_eq!(set(&check, "changed"), set(&real, "changed"));
    assert_eq!(set(&real, "changed").len(), 1);
    assert!(
        hosts
            .sh(1, "/opt/venv/bin/python -c 'import fleetdemo' 2>&1 || true")
            .contains("No module named")
    );

    // A requirement that is not one is refused before the run.
    let bad = repo(
        &hosts,
        "- name: pip\n  hosts: all\n  tasks:\n    - { name: p, pip: { name: \"--index-url=http://evil/ x\" } }\n",
        "",
    );
    let (code, _, stderr) = support::apply_json(bad.path(), "playbooks/site.yaml", &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is not a requirement"), "{stderr}");
}

#[test]
fn uv_tools_from_local_wheels() {
    let hosts = Hosts::up(1);
    assert!(
        Path::new("/usr/local/bin/uv").exists(),
        "uv is missing: scripts/install-test-deps installs it"
    );
    wheels(&hosts);
    let pb = concat!(
        "- name: uv\n  hosts: all\n  vars: { st: present, t: \"fleettool==1.0\" }\n  tasks:\n",
        "    - { name: tool, uv: { name: \"{{ t }}\", find_links: /srv/wheels, state: \"{{ st }}\" } }\n",
    );
    let r = repo(&hosts, pb, "");
    three_ways(r.path(), 1);
    let tool = || hosts.sh(1, "/root/.local/bin/fleettool 2>&1 || true");
    assert_eq!(tool(), "1.0\n");
    // Any version will do when none is pinned; `latest` resolves 1.1 (check mode installs
    // nothing); `absent` uninstalls.
    for (args, changed, after) in [
        (&["-e", "t=fleettool"][..], 0, "1.0\n"),
        (&["-e", "t=fleettool", "-e", "st=latest"], 1, "1.1\n"),
        (&["-e", "t=fleettool==1.0"], 1, "1.0\n"),
        (&["-e", "t=fleettool", "-e", "st=absent"], 1, ""),
    ] {
        let (_, check) = run(r.path(), &[&["--check"][..], args].concat());
        let (code, real) = run(r.path(), args);
        assert_eq!(code, 0, "{:?}", failures(&real));
        assert_eq!(set(&check, "changed"), set(&real, "changed"), "{args:?}");
        assert_eq!(set(&real, "changed").len(), changed, "{args:?}");
        let (_, again) = run(r.path(), args);
        assert!(set(&again, "changed").is_empty(), "{args:?}");
        if !after.is_empty() {
            assert_eq!(tool(), after, "{args:?}");
        }
    }
    assert!(!hosts.sh(1, "ls /root/.local/bin").contains("fleettool"));
}

#[test]
fn sysctl_files_and_a_namespaced_kernel_value() {
    let hosts = Hosts::up(1);
    // The test hosts share the machine's kernel: only a value of their own UTS namespace
    // (kernel.domainname) is set in the kernel; the others go to files only.
    let here = std::fs::read_to_string("/proc/sys/kernel/domainname").expect("domainname");
    hosts.sh(1, "mkdir -p /etc/sysctl.d && printf 'net.ipv4.ip_forward=1\\n# keep\\n' > /etc/sysctl.d/99-fleet.conf");
    let pb = concat!(
        "- name: sysctl\n  hosts: all\n  vars: { dn: fleet.test }\n  tasks:\n",
        "    - { name: domain, sysctl: { name: kernel.domainname, value: \"{{ dn }}\" } }\n",
        "    - { name: swap, sysctl: { name: vm.swappiness, value: 10, sysctl_file: /etc/sysctl.d/60-vm.conf, reload: false } }\n",
        "    - { name: forward, sysctl: { name: net/ipv4/ip_forward, state: absent } }\n",
    );
    let r = repo(&hosts, pb, "");
    three_ways(r.path(), 3);
    assert_eq!(
        hosts.sh(1, "sysctl -n kernel.domainname; cat /etc/sysctl.d/99-fleet.conf /etc/sysctl.d/60-vm.conf; stat -c %a /etc/sysctl.d/60-vm.conf"),
        "fleet.test\n# keep\nkernel.domainname = fleet.test\nvm.swappiness = 10\n644\n"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/domainname").expect("domainname"),
        here
    );

    // The kernel's value drifts: only the kernel is set again; a new value shows as a diff.
    hosts.sh(1, "sysctl -q -w kernel.domainname=drifted");
    let (_, check) = run(r.path(), &["--check"]);
    let (code, real) = run(r.path(), &[]);
    assert_eq!(code, 0);
    assert_eq!(set(&check, "changed"), set(&real, "changed"));
    assert_eq!(set(&real, "changed").len(), 1);
    assert_eq!(hosts.sh(1, "sysctl -n kernel.domainname"), "fleet.test\n");
    let (code, ev) = run(r.path(), &["--diff", "-e", "dn=other.test"]);
    assert_eq!(code, 0);
    let diff = ev
        .iter()
        .find(|e| e["task"] == "domain")
        .and_then(|e| e["diff"].as_str())
        .unwrap_or("");
    assert!(
        diff.contains("-kernel.domainname = fleet.test")
            && diff.contains("+kernel.domainname = other.test"),
        "{diff}"
    );

    // A parameter the kernel does not have fails before the file is written.
    let bad = repo(
        &hosts,
        "- name: s\n  hosts: all\n  tasks:\n    - { name: nope, sysctl: { name: fleet.no_such_key, value: 1 } }\n",
        "",
    );
    let (code, ev) = run(bad.path(), &[]);
    assert_eq!(code, 1);
    assert!(
        failure_of(&ev, "nope").contains("the kernel has no parameter fleet.no_such_key"),
        "{ev:?}"
    );
    assert!(
        !hosts
            .sh(1, "cat /etc/sysctl.d/99-fleet.conf")
            .contains("no_such_key")
    );
}

#[test]
fn mount_facts_are_read_not_made() {
    let hosts = Hosts::up(1);
    let r = repo(
        &hosts,
        "- name: m\n  hosts: all\n  tasks:\n    - { name: etc, debug: { msg: \"{{ facts.mounts | selectattr('mount', 'equalto', '/etc') | map(attribute='fstype') | list }}\" } }\n",
        "",
    );
    let out = support::fleet(r.path())
        .args(["facts", "h1", "--json"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("facts JSON");
    let mounts = v["h1"]["mounts"].as_array().expect("mounts");
    // The test host's /etc is an overlay of its own (tests/hosts/fleet-hosts); /proc is not
    // storage and is left out.
    assert!(
        mounts
            .iter()
            .any(|m| m["mount"] == "/etc" && m["fstype"] == "overlay" && m["device"] == "fleet1"),
        "{mounts:?}"
    );
    assert!(mounts.iter().all(|m| m["fstype"] != "proc"), "{mounts:?}");
    // Tasks see them as `facts.mounts`.
    let (code, ev) = run(r.path(), &[]);
    assert_eq!(code, 0);
    let msg = ev
        .iter()
        .find(|e| e["task"] == "etc")
        .and_then(|e| e["msg"].as_str())
        .unwrap_or("");
    assert!(msg.contains("overlay"), "{ev:?}");
}
