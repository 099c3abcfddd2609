//! Play structure on real sshd test hosts: `block`/`rescue`/`always`, `import_tasks` and
//! `include_tasks`, rolling runs (`serial`, `max_fail_percentage`), `run_once`,
//! `delegate_to`, `throttle`, `--start-at-task`, `--step` — each with check mode predicting
//! the real run's changes and a second run changing nothing; and the located errors of
//! `fleet validate` for their misuse.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value as J;
use support::{Hosts, build_repo, crate_root, fleet, parse_case};

/// A repo of `n` test hosts with these extra files (`--- path` sections).
fn repo(hosts: &Hosts, n: u16, files: &str) -> tempfile::TempDir {
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
    build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case("plays", &format!("--- inventory/fleet.yaml\n{inv}{files}")),
    )
}

/// A repo without hosts (nothing is contacted): for `validate`, `plan` and usage errors.
fn offline_repo(files: &str) -> tempfile::TempDir {
    build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case("plays", files),
    )
}

fn apply(repo: &Path, playbook: &str, args: &[&str]) -> (i32, Vec<J>, String) {
    support::apply_json(repo, playbook, args)
}

fn changed(events: &[J]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e["status"] == "changed")
        .map(|e| format!("{} {} {}", e["host"], e["task"], e["item"]))
        .collect()
}

fn recap(events: &[J], host: &str) -> J {
    events
        .iter()
        .find(|e| e["event"] == "recap" && e["host"] == host)
        .map(|e| e["counts"].clone())
        .unwrap_or_default()
}

/// Tasks (names) that ran on `host` with this status.
fn with_status(events: &[J], host: &str, status: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "task" && e["host"] == host && e["status"] == status)
        .map(|e| e["task"].as_str().unwrap_or("").to_string())
        .collect()
}

/// check == real, then a second run changes nothing; returns the real run's events.
fn exact_and_idempotent(repo: &Path, playbook: &str, args: &[&str], code: i32) -> Vec<J> {
    let check_args: Vec<&str> = args.iter().copied().chain(["--check"]).collect();
    let (c, predicted, err) = apply(repo, playbook, &check_args);
    assert_eq!(c, code, "check run: {err}\n{predicted:#?}");
    let (c, real, err) = apply(repo, playbook, args);
    assert_eq!(c, code, "real run: {err}\n{real:#?}");
    assert_eq!(
        changed(&predicted),
        changed(&real),
        "--check must predict exactly the real run's changes"
    );
    assert!(
        !changed(&real).is_empty(),
        "the first run changes something"
    );
    let (c, again, err) = apply(repo, playbook, args);
    assert_eq!(c, code, "second run: {err}");
    assert!(
        changed(&again).is_empty(),
        "second run: {:?}",
        changed(&again)
    );
    real
}

const STRUCTURE: &str = r#"
--- playbooks/structure.yaml
- name: structure
  hosts: all
  tasks:
    - name: guarded
      block:
        - name: plays directory
          file: { path: /opt/plays, state: directory, mode: "0755" }
        - name: must exist
          file: { path: /opt/plays/absent, state: file }
        - name: never reached
          copy: { dest: /opt/plays/never, content: "no\n" }
      rescue:
        - name: rescued marker
          copy: { dest: /opt/plays/rescued, content: "{{ ansible_failed_task.name }}\n" }
      always:
        - name: always marker
          copy: { dest: /opt/plays/always, content: "always\n" }
    - name: outer
      block:
        - name: inner
          block:
            - name: inner fails
              file: { path: /opt/plays/absent-too, state: file }
          always:
            - name: inner always
              copy: { dest: /opt/plays/inner-always, content: "x\n" }
      rescue:
        - name: outer rescue
          copy: { dest: /opt/plays/outer-rescued, content: "x\n" }
    - name: only on h1
      when: node.name == "h1"
      tags: [only]
      block:
        - name: h1 marker
          copy: { dest: /opt/plays/only-h1, content: "h1\n" }
    - import_tasks: tasks/common.yaml
      tags: [imported]
    - name: per item
      include_tasks: tasks/item.yaml
      loop: [a, b]
      vars: { suffix: "-{{ node.name }}" }
      when: item != "b" or node.name == "h2"
--- playbooks/tasks/common.yaml
- name: imported file
  copy: { dest: /opt/plays/imported, content: "imported\n" }
--- playbooks/tasks/item.yaml
- name: "item {{ item }}"
  copy: { dest: "/opt/plays/item-{{ item }}{{ suffix }}", content: "{{ item }}\n" }
"#;

#[test]
fn blocks_rescue_always_and_includes_are_exact_and_idempotent() {
    let hosts = Hosts::up(2);
    let repo = repo(&hosts, 2, STRUCTURE);
    let real = exact_and_idempotent(repo.path(), "playbooks/structure.yaml", &[], 0);
    // A rescued failure is reported, and counted as rescued, not failed: exit 0.
    assert_eq!(
        with_status(&real, "h1", "failed"),
        ["must exist", "inner fails"]
    );
    assert_eq!(recap(&real, "h1")["failed"], 0, "{:?}", recap(&real, "h1"));
    assert_eq!(recap(&real, "h1")["rescued"], 2);
    assert_eq!(
        hosts.sh(1, "cat /opt/plays/rescued"),
        "must exist\n",
        "the rescue sees the failed task"
    );
    let h1 = hosts.sh(1, "cd /opt/plays && ls");
    let h2 = hosts.sh(2, "cd /opt/plays && ls");
    assert_eq!(
        h1.split_whitespace().collect::<Vec<_>>(),
        [
            "always",
            "imported",
            "inner-always",
            "item-a-h1",
            "only-h1",
            "outer-rescued",
            "rescued"
        ],
        "the task after the failure in the block never ran; the include ran for `a` only"
    );
    assert_eq!(
        h2.split_whitespace().collect::<Vec<_>>(),
        [
            "always",
            "imported",
            "inner-always",
            "item-a-h2",
            "item-b-h2",
            "outer-rescued",
            "rescued"
        ]
    );
    // The included file's tasks are named per item; the skipped include item is reported.
    let h1_skipped = with_status(&real, "h1", "skipped");
    assert!(
        h1_skipped.contains(&"per item".to_string()),
        "{h1_skipped:?}"
    );
    // Tags given to an import go to its tasks: --tags selects them.
    let (code, events, err) = apply(
        repo.path(),
        "playbooks/structure.yaml",
        &["--tags", "imported", "--check"],
    );
    assert_eq!(code, 0, "{err}");
    let ran: BTreeSet<String> = events
        .iter()
        .filter(|e| e["event"] == "task")
        .map(|e| e["task"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(ran, BTreeSet::from(["imported file".to_string()]));
}

#[test]
fn a_failure_without_rescue_fails_the_host_after_always() {
    let hosts = Hosts::up(1);
    let repo = repo(
        &hosts,
        1,
        r#"
--- playbooks/fail.yaml
- name: fail
  hosts: all
  tasks:
    - block:
        - name: must exist
          file: { path: /opt/nothing-here, state: file }
      always:
        - name: cleanup
          copy: { dest: /opt/cleanup, content: "x\n" }
    - name: after the block
      copy: { dest: /opt/after, content: "x\n" }
"#,
    );
    let (code, events, _) = apply(repo.path(), "playbooks/fail.yaml", &[]);
    assert_eq!(code, 1);
    assert_eq!(with_status(&events, "h1", "changed"), ["cleanup"]);
    assert_eq!(recap(&events, "h1")["failed"], 1);
    assert!(
        hosts
            .sh(1, "ls /opt")
            .split_whitespace()
            .all(|f| f != "after"),
        "the host left the play after its always"
    );
}

#[test]
fn serial_batches_stop_at_max_fail_percentage() {
    let hosts = Hosts::up(3);
    let repo = repo(
        &hosts,
        3,
        r#"
--- playbooks/rolling.yaml
- name: rolling
  hosts: all
  serial: [1, 2]
  max_fail_percentage: 0
  tasks:
    - name: marker
      copy: { dest: /opt/rolled, content: "{{ node.name }}\n" }
    - name: h1 is broken
      file: { path: /opt/broken, state: file }
      when: node.name == "h1"
- name: later play
  hosts: all
  tasks:
    - name: later
      copy: { dest: /opt/later, content: "x\n" }
--- playbooks/rolling-ok.yaml
- name: rolling
  hosts: all
  serial: "34%"
  tasks:
    - name: marker
      copy: { dest: /opt/rolled-ok, content: "{{ node.name }}\n" }
"#,
    );
    // The first batch (h1) fails: 100% > 0%, so h2 and h3 are never reached and the later
    // play does not start.
    let check = apply(repo.path(), "playbooks/rolling.yaml", &["--check"]);
    let (code, events, err) = apply(repo.path(), "playbooks/rolling.yaml", &[]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(check.0, 1);
    assert_eq!(changed(&check.1), changed(&events));
    assert!(
        err.contains("the run stopped before 2 hosts: h2, h3"),
        "{err}"
    );
    let stop = events
        .iter()
        .find(|e| e["event"] == "stop")
        .expect("a stop event");
    assert!(
        stop["msg"]
            .as_str()
            .is_some_and(|m| m.contains("batch 1 of 2: 1 of 1 hosts failed (100%)")
                && m.contains("not reached: h2, h3")),
        "{stop}"
    );
    assert_eq!(recap(&events, "h2")["not_reached"], 1);
    assert_eq!(recap(&events, "h2")["changed"], 0);
    assert!(events.iter().all(|e| e["task"] != "later"));
    // The human output says why it stopped, and whom it did not reach.
    let human = fleet(repo.path())
        .args(["apply", "playbooks/rolling.yaml"])
        .output()
        .expect("runs");
    assert_eq!(human.status.code(), Some(1));
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("  batch 1 of 2: h1\n"), "{text}");
    assert!(!text.contains("batch 2 of 2"), "{text}");
    assert!(
        text.contains("  stopped play `rolling`, batch 1 of 2"),
        "{text}"
    );
    let h3 = text
        .lines()
        .find(|l| l.contains(" h3 "))
        .expect("h3 in the recap");
    assert!(text.contains("not reached") && h3.contains("yes"), "{text}");
    assert_eq!(
        hosts
            .sh(2, "ls /opt/rolled 2>/dev/null || echo none")
            .trim(),
        "none"
    );
    // --list-hosts shows the batches.
    let out = fleet(repo.path())
        .args(["apply", "playbooks/rolling.yaml", "--list-hosts"])
        .output()
        .expect("runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "play rolling (3 hosts): h1 | h2, h3\nplay later play (3 hosts): h1, h2, h3\n"
    );
    // 34% of 3 hosts is one host a batch: each batch finishes before the next starts.
    let real = exact_and_idempotent(repo.path(), "playbooks/rolling-ok.yaml", &[], 0);
    let order: Vec<&str> = real
        .iter()
        .filter(|e| e["event"] == "task")
        .map(|e| e["host"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(order, ["h1", "h2", "h3"]);
}

#[test]
fn run_once_delegate_to_and_throttle() {
    let hosts = Hosts::up(3);
    let controller = tempfile::tempdir().expect("tmp");
    let log = controller.path().join("throttle.log");
    let repo = repo(
        &hosts,
        3,
        r#"
--- playbooks/coord.yaml
- name: coordination
  hosts: all
  tasks:
    - name: plays directory
      file: { path: /opt/plays, state: directory }
    - name: who runs once
      shell: "echo {{ node.name }} >> /opt/plays/once.log; echo {{ node.name }}"
      run_once: true
      register: once
      changed_when: false
    - name: everyone got its result
      copy: { dest: /opt/plays/once, content: "{{ once.stdout }}\n" }
    - name: delegated to h1
      copy: { dest: "/opt/plays/from-{{ node.name }}", content: "x\n" }
      delegate_to: h1
    - name: delegated to the controller
      copy: { dest: "{{ out }}/local-{{ node.name }}", content: "{{ node.name }}\n" }
      delegate_to: localhost
    - name: one at a time
      shell: "echo start >> {{ log }}; sleep 0.3; echo end >> {{ log }}"
      delegate_to: localhost
      throttle: 1
      changed_when: false
"#,
    );
    let out = controller.path().display().to_string();
    let e_out = format!("out={out}");
    let e_log = format!("log={}", log.display());
    let args = ["-e", &e_out, "-e", &e_log];
    let (code, predicted, err) = apply(
        repo.path(),
        "playbooks/coord.yaml",
        &[&args[..], &["--check"]].concat(),
    );
    assert_eq!(code, 0, "{err}\n{predicted:#?}");
    let (code, real, err) = apply(repo.path(), "playbooks/coord.yaml", &args);
    assert_eq!(code, 0, "{err}\n{real:#?}");
    assert_eq!(changed(&predicted), changed(&real));
    // run_once: one host ran the command; every host registered its output.
    let ran: Vec<&J> = real
        .iter()
        .filter(|e| e["task"] == "who runs once" && e["event"] == "task")
        .collect();
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert_eq!(ran[0]["host"], "h1", "the first host of the batch runs it");
    for k in 1..=3 {
        assert_eq!(hosts.sh(k, "cat /opt/plays/once"), "h1\n", "host {k}");
    }
    assert_eq!(hosts.sh(1, "cat /opt/plays/once.log"), "h1\n");
    assert_eq!(
        hosts
            .sh(2, "ls /opt/plays/once.log 2>/dev/null || echo none")
            .trim(),
        "none"
    );
    // delegate_to: every host's file is on h1, none on h2; localhost is this machine.
    assert_eq!(
        hosts
            .sh(1, "cd /opt/plays && ls from-*")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["from-h1", "from-h2", "from-h3"]
    );
    assert_eq!(
        hosts
            .sh(2, "ls /opt/plays/from-h2 2>/dev/null || echo none")
            .trim(),
        "none"
    );
    for k in 1..=3 {
        let got = std::fs::read_to_string(controller.path().join(format!("local-h{k}")))
            .expect("written on the controller");
        assert_eq!(got, format!("h{k}\n"));
    }
    // throttle 1: the hosts' runs of the task (on this machine, where the log is) never
    // overlap.
    let lines = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(
        lines,
        ["start", "end", "start", "end", "start", "end"],
        "one host at a time"
    );
    let (code, again, err) = apply(repo.path(), "playbooks/coord.yaml", &args);
    assert_eq!(code, 0, "{err}");
    assert!(changed(&again).is_empty(), "{:?}", changed(&again));
}

#[test]
fn start_at_task_skips_what_comes_before() {
    let hosts = Hosts::up(1);
    let repo = repo(
        &hosts,
        1,
        r#"
--- playbooks/start.yaml
- name: first
  hosts: all
  tasks:
    - name: one
      copy: { dest: /opt/one, content: "1\n" }
- name: second
  hosts: all
  tasks:
    - name: two
      copy: { dest: /opt/two, content: "2\n" }
    - name: three
      copy: { dest: /opt/three, content: "3\n" }
"#,
    );
    let (code, events, err) = apply(
        repo.path(),
        "playbooks/start.yaml",
        &["--start-at-task", "two"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(with_status(&events, "h1", "changed"), ["two", "three"]);
    assert_eq!(
        hosts.sh(1, "ls /opt/one 2>/dev/null || echo none").trim(),
        "none"
    );
    let out = fleet(repo.path())
        .args(["apply", "playbooks/start.yaml", "--start-at-task", "thre"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no task of this playbook is named `thre`") && err.contains("`three`"),
        "{err}"
    );
}

#[test]
fn step_needs_a_terminal() {
    let repo =
        offline_repo("--- playbooks/step.yaml\n- hosts: all\n  tasks:\n    - debug: { msg: hi }\n");
    let out = fleet(repo.path())
        .args(["apply", "playbooks/step.yaml", "--step"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--step asks before each task on the terminal"),
        "{err}"
    );
}

#[test]
fn validate_reports_misused_structure_with_its_place() {
    let repo = offline_repo(
        r#"--- playbooks/bad.yaml
- name: bad
  hosts: all
  serial: 0
  max_fail_percentage: "150%"
  tasks:
    - rescue:
        - debug: { msg: x }
    - block:
        - debug: { msg: x }
      resuce: []
    - import_tasks: tasks/missing.yaml
    - import_tasks: tasks/loop-a.yaml
    - import_tasks: tasks/loop-a.yaml
      loop: [1]
    - name: t
      debug: { msg: x }
      throttle: 0
--- playbooks/serial.yaml
- name: bad percent
  hosts: all
  serial: [1, "abc%", "0%"]
  tasks:
    - debug: { msg: x }
--- playbooks/tasks/loop-a.yaml
- import_tasks: tasks/loop-b.yaml
--- playbooks/tasks/loop-b.yaml
- import_tasks: tasks/loop-a.yaml
"#,
    );
    let out = fleet(repo.path()).arg("validate").output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "playbooks/bad.yaml:3:11: error: play `serial: 0` would run no host",
        "playbooks/bad.yaml:4:24: error: play `max_fail_percentage`: `150%` is not a percentage",
        "playbooks/bad.yaml:6:7: error: `rescue` without `block`",
        "playbooks/bad.yaml:10:7: error: unknown key `resuce` in a block",
        "playbooks/bad.yaml:11:21: error: `import_tasks`: cannot read `playbooks/tasks/missing.yaml`: no such file",
        "playbooks/tasks/loop-b.yaml:1:17: error: `import_tasks: tasks/loop-a.yaml` includes itself: loop-a.yaml → loop-b.yaml → loop-a.yaml",
        "playbooks/bad.yaml:14:7: error: `import_tasks` is static (read once, at load time): it takes no `loop`",
        "playbooks/bad.yaml:17:17: error: task `throttle: 0` would never run the task",
        "playbooks/serial.yaml:3:15: error: play `serial`: `abc%` is not a percentage",
        "playbooks/serial.yaml:3:23: error: play `serial`: `0%` is not a percentage",
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }
}

#[test]
fn plan_shows_rescue_and_include_items_honestly() {
    let repo = offline_repo(STRUCTURE);
    let out = fleet(repo.path())
        .args([
            "plan",
            "playbooks/structure.yaml",
            "--json",
            "--limit",
            "w1",
        ])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: J = serde_json::from_slice(&out.stdout).expect("json");
    let tasks = plan["plays"][0]["targets"][0]["tasks"]
        .as_array()
        .expect("tasks")
        .clone();
    let decision = |name: &str| {
        tasks
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["decision"].clone())
            .unwrap_or_default()
    };
    assert_eq!(decision("plays directory")["state"], "run");
    assert_eq!(decision("rescued marker")["state"], "at_run_time");
    assert!(
        decision("rescued marker")["when"]
            .as_str()
            .is_some_and(|w| w == "block `guarded` fails")
    );
    assert_eq!(decision("always marker")["state"], "run");
    assert_eq!(decision("imported file")["state"], "run");
    assert_eq!(decision("item a")["state"], "run");
    // The include's `when` is false for item b on w1.
    let b: Vec<&J> = tasks.iter().filter(|t| t["item"] == "b").collect();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0]["decision"]["state"], "skip");
}

#[test]
fn step_asks_per_task_on_a_terminal() {
    // `script` gives fleet a terminal; the answers are typed into it.
    support::ensure_tool("script", "util-linux");
    let out_dir = tempfile::tempdir().expect("tmp");
    let repo = offline_repo(&format!(
        r#"--- inventory/fleet.yaml
fleet: {{ name: t, hq: me, hq_url: "http://127.0.0.1:1" }}
nodes:
  me: {{ host: localhost, role: common, vars: {{ connection: local }} }}
--- playbooks/step.yaml
- hosts: all
  tasks:
    - name: first
      copy: {{ dest: "{d}/first", content: "1\n" }}
    - name: second
      copy: {{ dest: "{d}/second", content: "2\n" }}
    - name: third
      copy: {{ dest: "{d}/third", content: "3\n" }}
    - name: fourth
      copy: {{ dest: "{d}/fourth", content: "4\n" }}
"#,
        d = out_dir.path().display()
    ));
    let bin = assert_cmd::cargo::cargo_bin("fleet");
    let cmd = format!(
        "{} apply playbooks/step.yaml --step",
        fleet::script::shquote(&bin.display().to_string())
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(repo.path())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script runs");
    // The terminal's output, read as it comes, so each answer is typed only once its question
    // is on the screen.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        })
    };
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        for (task, answer) in [("first", "y\n"), ("second", "n\n"), ("third", "c\n")] {
            let question = format!("run task `{task}`?");
            support::wait_for(60, &question, || {
                String::from_utf8_lossy(&seen.lock().expect("lock"))
                    .contains(&question)
                    .then_some(())
            });
            stdin.write_all(answer.as_bytes()).expect("type");
        }
    }
    let status = child.wait().expect("script ends");
    reader.join().expect("reader");
    let out = std::process::Output {
        status,
        stdout: seen.lock().expect("lock").clone(),
        stderr: Vec::new(),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("run task `first`? [y]es / [n]o / [c]ontinue"),
        "{text}"
    );
    assert!(
        !text.contains("run task `fourth`?"),
        "c answers for the rest: {text}"
    );
    let mut made: Vec<String> = std::fs::read_dir(out_dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    made.sort();
    assert_eq!(made, ["first", "fourth", "third"], "{text}");
}

#[test]
fn roles_import_from_their_tasks_directory_and_delegates_are_checked() {
    let repo = offline_repo(
        r#"--- roles/worker/role.yaml
description: test worker
capabilities: [ollama]
requires: { ram_gb: 16, os: [linux] }
includes: [common]
tasks:
  - import_tasks: setup.yaml
    when: node.name == "w1"
--- roles/worker/tasks/setup.yaml
- name: from the role's tasks directory
  debug: { msg: "{{ greeting }}" }
--- playbooks/site.yaml
- hosts: worker
  roles: [worker]
"#,
    );
    let out = fleet(repo.path())
        .args(["plan", "playbooks/site.yaml", "--json"])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: J = serde_json::from_slice(&out.stdout).expect("json");
    let t = plan["plays"][0]["targets"][0]["tasks"]
        .as_array()
        .and_then(|ts| {
            ts.iter()
                .find(|t| t["name"] == "from the role's tasks directory")
                .cloned()
        })
        .expect("the imported task");
    assert_eq!(t["role"], "worker");
    assert_eq!(t["decision"]["state"], "run");
    assert!(
        t["source"]
            .as_str()
            .is_some_and(|s| s.ends_with("roles/worker/tasks/setup.yaml:1")),
        "{t}"
    );

    let repo = offline_repo(
        "--- playbooks/delegate.yaml\n- hosts: all\n  tasks:\n    - name: d\n      debug: { msg: x }\n      delegate_to: w2\n",
    );
    let out = fleet(repo.path()).arg("validate").output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "playbooks/delegate.yaml:5:20: error: `delegate_to: w2` names no node of the inventory"
        ),
        "{err}"
    );
}

#[test]
fn a_blocks_broken_when_is_reported_once() {
    let repo = offline_repo(
        "--- playbooks/when.yaml\n- hosts: all\n  tasks:\n    - block:\n        - debug: { msg: a }\n        - debug: { msg: b }\n      when: node.name ==\n",
    );
    let out = fleet(repo.path()).arg("validate").output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("playbooks/when.yaml:6:13: error: template syntax error")
            .count(),
        1,
        "{err}"
    );
    assert!(err.contains("1 error found"), "{err}");
}
