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
