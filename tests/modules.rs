//! Every module on real sshd hosts, each checked three ways: `--check` predicts exactly the
//! changes of the real run that follows, the real run does the work, and a second run
//! changes nothing. systemd, apt and Ollama cannot run on the test hosts: small stand-ins of
//! their command lines (tests/standins) and of Ollama's HTTP API (tests/support/ollama.rs)
//! answer the way they do.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use support::{Hosts, build_repo, crate_root, http_routes, parse_case};

fn repo(hosts: &Hosts, n: u16, playbook: &str, extra_files: &str) -> tempfile::TempDir {
    let mut inv = format!(
        "fleet: {{ name: t, hq: h1, hq_url: \"http://127.0.0.1:1\", ssh_config: \"{}\" }}\nvars: {{ app_dir: /opt/app }}\nnodes:\n",
        hosts.ssh_config().display()
    );
    for k in 1..=n {
        inv.push_str(&format!(
            "  h{k}: {{ host: 127.0.0.1, role: common, vars: {{ ssh_port: {} }} }}\n",
            hosts.port(k)
        ));
    }
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
        .map(|e| {
            format!(
                "{} | {} | {}",
                e["host"].as_str().unwrap_or(""),
                e["task"].as_str().unwrap_or(""),
                e["item"]
            )
        })
        .collect()
}

/// check == real, real as expected, second run quiet. Returns the real run's events.
fn three_ways(repo: &Path, expect_changed: usize) -> Vec<serde_json::Value> {
    let (code, check) = run(repo, &["--check"]);
    assert_eq!(code, 0, "check run failed: {check:?}");
    let (code, real) = run(repo, &[]);
    assert_eq!(
        code,
        0,
        "real run failed: {:?}",
        real.iter()
            .filter(|e| e["status"] == "failed")
            .collect::<Vec<_>>()
    );
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
    assert_eq!(code, 0);
    assert!(
        set(&again, "changed").is_empty(),
        "second run changed: {:?}",
        set(&again, "changed")
    );
    let (_, check_again) = run(repo, &["--check"]);
    assert!(set(&check_again, "changed").is_empty());
    real
}

#[test]
fn files_lines_links_users_and_commands() {
    let hosts = Hosts::up(1);
    hosts.sh(1, "printf 'A=1\\nOLD_SETTING=yes\\n' > /etc/sample.conf; mkdir -p /opt/gone && touch /opt/gone/x");
    let pb = concat!(
        "- name: files\n  hosts: all\n  tasks:\n",
        "    - { name: dir, file: { path: /opt/app/data, state: directory, mode: \"0700\" } }\n",
        "    - { name: touch, file: { path: /opt/app/data/stamp, state: touch, mode: \"0640\" } }\n",
        "    - { name: link, file: { path: /opt/app/current, src: /opt/app/data, state: link } }\n",
        "    - { name: absent, file: { path: /opt/gone, state: absent } }\n",
        "    - { name: inline copy, copy: { content: \"x = 1\\n\", dest: /opt/app/x.conf, mode: \"0600\" } }\n",
        "    - { name: replace line, lineinfile: { path: /etc/sample.conf, regexp: \"^OLD_SETTING=\", line: \"NEW_SETTING=1\" } }\n",
        "    - { name: append line, lineinfile: { path: /etc/sample.conf, line: \"B=2\" } }\n",
        "    - { name: remove line, lineinfile: { path: /etc/sample.conf, regexp: \"^A=\", state: absent } }\n",
        "    - { name: nothing to remove, lineinfile: { path: /etc/no-such.conf, regexp: \"^A=\", state: absent } }\n",
        "    - { name: user, user: { name: svc, system: true, groups: [adm] } }\n",
        "    - { name: guarded, shell: { cmd: \"echo done > /opt/app/init\", creates: /opt/app/init } }\n",
        "    - { name: needs file, command: { cmd: \"cat /opt/app/init\", removes: /opt/app/never } }\n",
    );
    let r = repo(&hosts, 1, pb, "");
    three_ways(r.path(), 10);
    let out = hosts.sh(1, "stat -c '%a %n' /opt/app/data /opt/app/data/stamp /opt/app/x.conf; readlink /opt/app/current; cat /etc/sample.conf; ls /opt/gone 2>&1 | head -1; id -nG svc; cat /opt/app/init");
    assert_eq!(
        out,
        "700 /opt/app/data\n640 /opt/app/data/stamp\n600 /opt/app/x.conf\n/opt/app/data\nNEW_SETTING=1\nB=2\nls: cannot access '/opt/gone': No such file or directory\nsvc adm\ndone\n"
    );
}

#[test]
fn templates_services_and_handlers_with_a_systemctl_stand_in() {
    let hosts = Hosts::up(1);
    hosts.install_standins(1);
    let pb = concat!(
        "- name: service\n  hosts: all\n  vars: { port: 8080 }\n  tasks:\n",
        "    - name: unit\n      template: { src: demo.service.j2, dest: /etc/systemd/system/demo.service, mode: \"0644\" }\n      notify: restart demo\n",
        "    - name: running\n      service: { name: demo, state: started, enabled: true }\n",
        "  handlers:\n    - name: restart demo\n      service: { name: demo, state: restarted }\n",
    );
    let r = repo(
        &hosts,
        1,
        pb,
        "--- templates/demo.service.j2\n[Service]\n# {{ node.name }} listens on {{ port }}\nExecStart=/bin/sleep 100{{ port }}\n",
    );
    let real = three_ways(r.path(), 3);
    assert!(
        real.iter()
            .any(|e| e["event"] == "handler" && e["status"] == "changed")
    );
    let log = hosts.sh(1, "cat /var/log/standin-systemctl.log");
    assert!(
        log.contains("systemctl start -- demo")
            && log.contains("systemctl enable -- demo")
            && log.contains("systemctl restart -- demo"),
        "{log}"
    );
    // A change to the template restarts the service; --diff shows it.
    let (code, ev) = run(r.path(), &["-e", "port=9090", "--diff"]);
    assert_eq!(code, 0);
    let unit = ev.iter().find(|e| e["task"] == "unit").expect("unit event");
    assert_eq!(unit["status"], "changed");
    let diff = unit["diff"].as_str().expect("diff");
    assert!(
        diff.contains("-ExecStart=/bin/sleep 1008080")
            && diff.contains("+ExecStart=/bin/sleep 1009090"),
        "{diff}"
    );
    assert_eq!(
        hosts.sh(1, "grep -c restart /var/lib/standin-systemd/demo.history"),
        "2\n"
    );
}

#[test]
fn packages_with_an_apt_stand_in() {
    let hosts = Hosts::up(1);
    hosts.install_standins(1);
    let pb = concat!(
        "- name: packages\n  hosts: all\n  tasks:\n",
        "    - { name: tools, package: { name: [coreutils, fleet-demo-tool], state: present } }\n",
        "    - { name: not wanted, package: { name: fleet-never-installed, state: absent } }\n",
    );
    let r = repo(&hosts, 1, pb, "");
    three_ways(r.path(), 1);
    let log = hosts.sh(1, "cat /var/log/standin-apt.log");
    assert!(
        log.contains("install -y -q 'fleet-demo-tool'")
            || log.contains("install -y -q fleet-demo-tool"),
        "only the missing package is installed: {log}"
    );
    assert!(!log.contains("coreutils"), "{log}");
    // A package the manager cannot find fails the task with the manager's words.
    let bad = repo(
        &hosts,
        1,
        "- name: bad\n  hosts: all\n  tasks:\n    - { name: missing, package: { name: does-not-exist-pkg } }\n",
        "",
    );
    let (code, ev) = run(bad.path(), &[]);
    assert_eq!(code, 1);
    let msg = ev
        .iter()
        .find(|e| e["task"] == "missing")
        .and_then(|e| e["msg"].as_str())
        .unwrap_or("")
        .to_string();
    assert!(
        msg.contains("Unable to locate package does-not-exist-pkg"),
        "{msg}"
    );
}

#[test]
fn ollama_models_through_the_api_stand_in() {
    let hosts = Hosts::up(1);
    let o = support::ollama::start(&["llama3.2:3b"]);
    let pb = format!(
        "- name: models\n  hosts: all\n  tasks:\n    - name: pull\n      ollama_model: {{ name: \"{{{{ item }}}}\", url: \"{}\" }}\n      loop: [llama3.2:3b, mistral:7b, nomic-embed-text]\n",
        o.url
    );
    let r = repo(&hosts, 1, &pb, "");
    three_ways(r.path(), 2);
    let models = o.models.lock().expect("lock").clone();
    assert_eq!(
        models,
        ["llama3.2:3b", "mistral:7b", "nomic-embed-text:latest"]
    );
    let pulls = o
        .requests
        .lock()
        .expect("lock")
        .iter()
        .filter(|r| r.starts_with("POST /api/pull"))
        .count();
    assert_eq!(
        pulls, 2,
        "check mode pulled nothing; the real run pulled the two missing models"
    );
    // absent deletes; an unknown model fails with Ollama's message.
    let rm = repo(
        &hosts,
        1,
        &format!(
            "- name: rm\n  hosts: all\n  tasks:\n    - {{ name: drop, ollama_model: {{ name: mistral:7b, state: absent, url: \"{}\" }} }}\n",
            o.url
        ),
        "",
    );
    three_ways(rm.path(), 1);
    assert!(
        !o.models
            .lock()
            .expect("lock")
            .contains(&"mistral:7b".to_string())
    );
    let bad = repo(
        &hosts,
        1,
        &format!(
            "- name: bad\n  hosts: all\n  tasks:\n    - {{ name: nope, ollama_model: {{ name: missing:1b, url: \"{}\" }} }}\n",
            o.url
        ),
        "",
    );
    let (code, ev) = run(bad.path(), &[]);
    assert_eq!(code, 1);
    let msg = ev
        .iter()
        .find(|e| e["task"] == "nope")
        .and_then(|e| e["msg"].as_str())
        .unwrap_or("")
        .to_string();
    assert!(msg.contains("file does not exist"), "{msg}");
}

#[test]
fn downloads_http_checks_and_waits() {
    let hosts = Hosts::up(1);
    let body = "#!/bin/sh\necho fleet-tool\n";
    let sum = fleet::util::sha256_hex(body.as_bytes());
    let web = http_routes(vec![
        ("/tool.sh", body.to_string()),
        ("/health", "{\"ok\":true}".to_string()),
    ]);
    let pb = format!(
        concat!(
            "- name: net\n  hosts: all\n  tasks:\n",
            "    - {{ name: download, get_url: {{ url: \"{web}/tool.sh\", dest: /usr/local/bin/tool.sh, sha256: \"{sum}\", mode: \"0755\" }} }}\n",
            "    - {{ name: healthy, http: {{ url: \"{web}/health\", status: 200 }}, register: h }}\n",
            "    - {{ name: wait, wait_for: {{ url: \"{web}/health\", timeout: 5s }} }}\n",
            "    - {{ name: uses result, copy: {{ content: \"{{{{ h.stdout }}}}\\n\", dest: /opt/health.json }} }}\n",
        ),
        web = web,
        sum = sum
    );
    let r = repo(&hosts, 1, &pb, "");
    three_ways(r.path(), 2);
    assert_eq!(
        hosts.sh(
            1,
            "/usr/local/bin/tool.sh; stat -c %a /usr/local/bin/tool.sh; cat /opt/health.json"
        ),
        "fleet-tool\n755\n{\"ok\":true}\n"
    );
    let bad = repo(
        &hosts,
        1,
        &format!(
            "- name: bad\n  hosts: all\n  tasks:\n    - {{ name: wrong sum, get_url: {{ url: \"{web}/tool.sh\", dest: /opt/other.sh, sha256: \"{}\" }} }}\n",
            "0".repeat(64)
        ),
        "",
    );
    let (code, ev) = run(bad.path(), &[]);
    assert_eq!(code, 1);
    let msg = ev
        .iter()
        .find(|e| e["task"] == "wrong sum")
        .and_then(|e| e["msg"].as_str())
        .unwrap_or("")
        .to_string();
    assert!(msg.contains("checksum mismatch"), "{msg}");
    assert!(
        hosts
            .sh(1, "ls /opt/other.sh /opt/.fleet.* 2>&1 || true")
            .contains("No such file"),
        "nothing half-written"
    );
}

#[test]
fn file_contents_of_every_kind_arrive_byte_for_byte() {
    // Small text travels inside the batch script, large or binary content on stdin; a batch
    // bigger than one command-line argument may hold (128 KiB on Linux) still runs.
    let hosts = Hosts::up(1);
    let big = |c: char| format!("{}\n", c.to_string().repeat(45 * 1024));
    let pb = concat!(
        "- name: contents\n  hosts: all\n  tasks:\n",
        "    - { name: dir, file: { path: /srv/c, state: directory, mode: \"0750\" } }\n",
        "    - { name: tricky, copy: { content: \"it's $HOME `id` \\\\n %s \\\"q\\\" é\\n\\n\\n\", dest: /srv/c/tricky, mode: \"0644\" } }\n",
        "    - { name: no newline, copy: { content: \"last line\", dest: /srv/c/nonl } }\n",
        "    - { name: empty, copy: { content: \"\", dest: /srv/c/empty, mode: \"0600\" } }\n",
        "    - { name: big a, copy: { src: files/a.txt, dest: /srv/c/a.txt, mode: \"0755\" } }\n",
        "    - { name: big b, copy: { src: files/b.txt, dest: /srv/c/b.txt } }\n",
        "    - { name: big c, copy: { src: files/c.txt, dest: /srv/c/c.txt, owner: nobody, group: nogroup } }\n",
        "    - { name: binary, copy: { src: files/blob.bin, dest: /srv/c/blob.bin, mode: \"0640\" } }\n",
        "    - { name: after, file: { path: /srv/c/done, state: touch } }\n",
    );
    let r = repo(&hosts, 1, pb, "");
    let files = r.path().join("files");
    std::fs::create_dir_all(&files).expect("files dir");
    let mut blob: Vec<u8> = (0..=255u8).collect();
    blob.extend_from_slice(b"\0\0tail\xff");
    std::fs::write(files.join("blob.bin"), &blob).expect("blob");
    for (name, c) in [("a.txt", 'a'), ("b.txt", 'b'), ("c.txt", 'c')] {
        std::fs::write(files.join(name), big(c)).expect("big file");
    }
    three_ways(r.path(), 9);
    let local = |bytes: &[u8]| fleet::util::sha256_hex(bytes);
    let remote = hosts.sh(
        1,
        "cd /srv/c && sha256sum tricky nonl empty a.txt b.txt c.txt blob.bin | cut -d' ' -f1; stat -c '%a %U:%G' tricky nonl empty a.txt b.txt c.txt blob.bin; ls -A | grep -c '^.fleet' || true",
    );
    let want: Vec<String> = [
        "it's $HOME `id` \\n %s \"q\" é\n\n\n".as_bytes().to_vec(),
        b"last line".to_vec(),
        Vec::new(),
        big('a').into_bytes(),
        big('b').into_bytes(),
        big('c').into_bytes(),
        blob,
    ]
    .iter()
    .map(|b| local(b))
    .collect();
    assert_eq!(
        remote,
        format!(
            "{}\n644 root:root\n644 root:root\n600 root:root\n755 root:root\n644 root:root\n644 nobody:nogroup\n640 root:root\n0\n",
            want.join("\n")
        )
    );

    // A destination that is a directory is an error, not a file moved into it; the error
    // of a task inside a batch is reported as that task's.
    let pb2 = concat!(
        "- name: bad\n  hosts: all\n  tasks:\n",
        "    - { name: fine, file: { path: /srv/c/d, state: directory } }\n",
        "    - { name: onto a dir, copy: { content: \"x\", dest: /srv/c/d } }\n",
        "    - { name: never, file: { path: /srv/c/never, state: touch } }\n",
    );
    let r2 = repo(&hosts, 1, pb2, "");
    let (code, ev) = run(r2.path(), &[]);
    assert_eq!(code, 1);
    let failed = ev
        .iter()
        .find(|e| e["status"] == "failed")
        .expect("a failure");
    assert_eq!(failed["task"], "onto a dir");
    assert!(
        failed["msg"]
            .as_str()
            .unwrap_or("")
            .contains("/srv/c/d is a directory"),
        "{failed}"
    );
    assert!(!ev.iter().any(|e| e["task"] == "never"));
    assert_eq!(
        hosts.sh(
            1,
            "ls -A /srv/c/d | wc -l; test -e /srv/c/never && echo yes || echo no"
        ),
        "0\nno\n"
    );
}

#[test]
fn attributes_looked_up_once_per_batch_never_go_stale() {
    // A batch looks up the modes and owners of all its paths with one `stat`; once a task
    // has changed something, later tasks look again.
    let hosts = Hosts::up(1);
    hosts.sh(
        1,
        "mkdir -p /srv/s && printf x > /srv/s/a && chmod 644 /srv/s/a",
    );
    let pb = concat!(
        "- name: modes\n  hosts: all\n  tasks:\n",
        "    - { name: t1, file: { path: /srv/s/a, mode: \"0600\" } }\n",
        "    - { name: t2, file: { path: /srv/s/a, mode: \"0600\", owner: root } }\n",
        "    - { name: t3, file: { path: /srv/s/a, mode: \"0640\" } }\n",
        "    - { name: t4, file: { path: /srv/s, state: directory, mode: \"0700\" } }\n",
    );
    let r = repo(&hosts, 1, pb, "");
    let statuses = |ev: &[serde_json::Value]| {
        ev.iter()
            .filter(|e| e["event"] == "task")
            .map(|e| {
                format!(
                    "{}={}",
                    e["task"].as_str().unwrap_or(""),
                    e["status"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (code, ev) = run(r.path(), &[]);
    assert_eq!(code, 0, "{ev:?}");
    assert_eq!(statuses(&ev), "t1=changed t2=ok t3=changed t4=changed");
    assert_eq!(hosts.sh(1, "stat -c %a /srv/s/a /srv/s"), "640\n700\n");
    // Nothing changed yet in this batch when t4 looks: the up-front answer is used, and right.
    let (code, ev) = run(r.path(), &[]);
    assert_eq!(code, 0);
    assert_eq!(statuses(&ev), "t1=changed t2=ok t3=changed t4=ok");
    hosts.sh(1, "chmod 755 /srv/s");
    let (_, ev) = run(r.path(), &["--tags", "never-matches"]);
    assert_eq!(statuses(&ev), "");
    let pb2 = "- name: m\n  hosts: all\n  tasks:\n    - { name: t4, file: { path: /srv/s, state: directory, mode: \"0700\" } }\n    - { name: t5, file: { path: /srv/s/a, mode: \"0640\" } }\n";
    let r2 = repo(&hosts, 1, pb2, "");
    let (_, ev) = run(r2.path(), &[]);
    assert_eq!(statuses(&ev), "t4=changed t5=ok");
}

#[test]
fn a_task_that_stops_before_reading_its_input_fails_as_itself() {
    // 4 MB of content is more than ssh and the pipes buffer: when the script fails before
    // reading it, the task fails with the script's reason, and the host is not taken for
    // unreachable.
    let hosts = Hosts::up(1);
    let pb = concat!(
        "- name: input\n  hosts: all\n  tasks:\n",
        "    - { name: big into nowhere, copy: { src: files/big.bin, dest: /srv/no/such/dir/big.bin } }\n",
    );
    let r = repo(&hosts, 1, pb, "");
    let files = r.path().join("files");
    std::fs::create_dir_all(&files).expect("files dir");
    std::fs::write(files.join("big.bin"), vec![7u8; 4 << 20]).expect("big file");
    let (code, ev, err) = support::apply_json(r.path(), "playbooks/site.yaml", &[]);
    assert_eq!(code, 1, "{err}");
    let task = ev
        .iter()
        .find(|e| e["task"] == "big into nowhere")
        .expect("the task's own event");
    assert_eq!(task["status"], "failed", "{task}");
    assert!(
        task["msg"]
            .as_str()
            .unwrap_or("")
            .contains("directory /srv/no/such/dir does not exist"),
        "{task}"
    );
    assert!(!ev.iter().any(|e| e["status"] == "unreachable"), "{ev:?}");
}
