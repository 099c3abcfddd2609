//! The real `fleet` binary on the example fleet and on scratch repos: validate, nodes,
//! plan (snapshot-tested), init, and the exit-code contract.

mod support;

use predicates::prelude::*;
use support::{build_repo, crate_root, fleet, parse_case};

#[test]
fn example_fleet_validates() {
    fleet(&crate_root())
        .arg("validate")
        .assert()
        .code(0)
        .stdout(predicate::str::contains("5 nodes, 9 roles, 1 playbook,"));
}

#[test]
fn nodes_json_lists_the_reference_fleet() {
    let out = fleet(&crate_root())
        .args(["nodes", "--json"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let names: Vec<&str> = v["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["bob", "maestro", "stagehand", "virtuoso", "forge"]);
    let maestro = &v["nodes"][1];
    assert_eq!(maestro["priority"], 40);
    assert_eq!(maestro["priority_source"], "inventory");
    assert_eq!(
        maestro["models"],
        serde_json::json!(["llama3.1:8b", "llama3.1:70b", "mistral:7b"])
    );
    assert_eq!(v["nodes"][0]["hq"], true);
    assert_eq!(v["nodes"][4]["priority"], 85, "RTX 4090 24 GB derives 85");
}

#[test]
fn nodes_table_has_every_node() {
    fleet(&crate_root()).arg("nodes").assert().success().stdout(
        predicate::str::contains("maestro").and(predicate::str::contains("RTX 4090 24 GB")),
    );
}

#[test]
fn plan_of_the_example_fleet() {
    let out = fleet(&crate_root())
        .args(["plan", "playbooks/site.yaml"])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    insta::assert_snapshot!("plan_site_human", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn plan_json_is_stable() {
    let out = fleet(&crate_root())
        .args(["plan", "playbooks/site.yaml", "--json", "--limit", "forge"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    insta::assert_json_snapshot!("plan_site_forge_json", v);
}

#[test]
fn plan_limit_and_extra_vars() {
    let out = fleet(&crate_root())
        .args([
            "plan",
            "playbooks/site.yaml",
            "--limit",
            "forge",
            "-e",
            "ollama_port=11500",
            "--json",
        ])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let targets: Vec<&str> = v["plays"]
        .as_array()
        .expect("plays")
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .expect("t")
                .iter()
                .map(|t| t["node"].as_str().expect("n"))
        })
        .collect();
    assert_eq!(targets, ["forge"]);
    let text = serde_json::to_string(&v).expect("s");
    assert!(
        // forge's Ollama listens on its fleet address (its `address`), where the node waits for it.
        text.contains("http://192.168.1.20:11500/api/version"),
        "-e overrides every layer"
    );
    assert!(!text.contains(":11434/"), "no task keeps the default port");
}

#[test]
fn plan_diff_shows_rendered_files() {
    fleet(&crate_root())
        .args(["plan", "playbooks/site.yaml", "--limit", "forge", "--diff"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("+ Environment=\"OLLAMA_HOST=192.168.1.20:11434\"").and(
                predicate::str::contains("+ Environment=\"OLLAMA_NUM_PARALLEL=4\""),
            ),
        );
}

#[test]
fn plan_names_host_task_location_and_variable() {
    let case = parse_case(
        "undefined",
        "--- roles/common/role.yaml\ndescription: x\ntasks:\n  - name: app directory\n    file: { path: \"{{ app_root }}/x\", state: directory }\n",
    );
    let repo = build_repo(&crate_root().join("tests/corpus/base"), &case);
    fleet(repo.path())
        .args(["plan", "playbooks/site.yaml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "roles/common/role.yaml:4:19: error: undefined variable `app_root` for host `hq1` in task `app directory`",
        ));
}

#[test]
fn unknown_limit_and_playbook_are_usage_errors() {
    fleet(&crate_root())
        .args(["plan", "playbooks/site.yaml", "--limit", "maestr"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("`maestr` matches no node, group or role")
                .and(predicate::str::contains("did you mean `maestro`?")),
        );
    fleet(&crate_root())
        .args(["plan", "playbooks/nope.yaml"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("no playbook at `playbooks/nope.yaml`")
                .and(predicate::str::contains("playbooks/site.yaml")),
        );
}

#[test]
fn no_repo_is_a_clear_usage_error() {
    let dir = tempfile::tempdir().expect("tmp");
    fleet(dir.path()).arg("validate").assert().code(2).stderr(
        predicate::str::contains("no fleet repo here").and(predicate::str::contains("fleet init")),
    );
}

#[test]
fn init_scaffolds_a_repo_that_validates() {
    let dir = tempfile::tempdir().expect("tmp");
    fleet(dir.path())
        .args([
            "init",
            "myfleet",
            "--non-interactive",
            "--hq",
            "conductor",
            "--provider",
            "groq",
        ])
        .assert()
        .success();
    let repo = dir.path().join("myfleet");
    let inv = std::fs::read_to_string(repo.join("inventory/fleet.yaml")).expect("inventory");
    assert!(inv.contains("api_key_env: GROQ_API_KEY"), "{inv}");
    assert!(inv.contains("hq: conductor"));
    fleet(&repo).arg("validate").assert().code(0);
    fleet(&repo)
        .args(["plan", "playbooks/site.yaml"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("conductor"));
    // A second init does not clobber the inventory.
    fleet(dir.path())
        .args(["init", "myfleet", "--non-interactive"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("already has an inventory"));
}

#[test]
fn init_never_writes_a_secret() {
    let dir = tempfile::tempdir().expect("tmp");
    fleet(dir.path())
        .args([
            "init",
            "f",
            "--non-interactive",
            "--api-key-env",
            "sk-ant-api03-verysecret",
        ])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("NAME of an environment variable")
                .and(predicate::str::contains("verysecret").not()),
        );
    assert!(!dir.path().join("f/inventory/fleet.yaml").exists());
}

#[test]
fn modules_doc_is_generated_from_the_registry() {
    let doc =
        std::fs::read_to_string(crate_root().join("docs/modules.md")).expect("docs/modules.md");
    assert_eq!(
        doc,
        fleet::modules::markdown(),
        "regenerate with `cargo run -q -- docs modules > docs/modules.md`"
    );
}

#[test]
fn completions_and_help_cover_every_command() {
    let out = fleet(&crate_root())
        .args(["completions", "bash"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // The script asks fleet itself for completions.
    assert!(text.contains("COMPLETE=\"bash\""), "{text}");
    assert!(text.contains("complete -o nospace"), "{text}");
    let words = |line: &[&str]| -> Vec<String> {
        let out = fleet(&crate_root())
            .env("COMPLETE", "bash")
            .env("_CLAP_IFS", "\n")
            .env("_CLAP_COMPLETE_INDEX", (line.len() - 1).to_string())
            .env("_CLAP_COMPLETE_COMP_TYPE", "9")
            .env("_CLAP_COMPLETE_SPACE", "true")
            .arg("--")
            .args(line)
            .output()
            .expect("runs");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    for cmd in [
        "validate",
        "plan",
        "apply",
        "provision",
        "render",
        "check",
        "serve",
        "agent",
        "token",
        "man",
    ] {
        assert!(words(&["fleet", ""]).contains(&cmd.to_string()), "{cmd}");
    }
    // Values from the repo: nodes, groups, roles, playbooks, task types.
    let nodes = words(&["fleet", "provision", ""]);
    for n in ["bob", "maestro", "stagehand", "virtuoso", "forge"] {
        assert!(nodes.contains(&n.to_string()), "{n}: {nodes:?}");
    }
    assert_eq!(words(&["fleet", "route", "rea"]), vec!["reason"]);
    assert_eq!(
        words(&["fleet", "plan", "playbooks/s"]),
        vec!["playbooks/site.yaml"]
    );
    assert_eq!(
        words(&["fleet", "apply", "playbooks/site.yaml", "--limit", "gp"]),
        vec!["gpu"]
    );
    assert_eq!(
        words(&["fleet", "provision", "x", "--role", "full_"]),
        vec!["full_worker"]
    );
    fleet(&crate_root())
        .args(["completions", "tcsh"])
        .assert()
        .code(2);
}

/// Output cut short by the reader (`| head -1`) ends the command quietly, never a panic.
#[test]
fn a_closed_pipe_is_never_a_panic() {
    for args in [
        &["completions", "bash"][..],
        &["completions", "zsh"],
        &["man"],
        &["nodes"],
        &["plan", "playbooks/site.yaml"],
        &["--help"],
    ] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("fleet"))
            .args(args)
            .current_dir(crate_root())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        // Close the read end before fleet writes: every write sees EPIPE.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {err}");
    }
}

#[test]
fn version_names_the_commit_and_man_pages_are_written() {
    let out = fleet(&crate_root())
        .arg("--version")
        .output()
        .expect("runs");
    let v = String::from_utf8_lossy(&out.stdout);
    let commit = v
        .trim()
        .strip_prefix(&format!("fleet {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{v}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{v}"
    );
    let dir = tempfile::tempdir().expect("tmp");
    fleet(&crate_root())
        .args(["man", "--out"])
        .arg(dir.path())
        .assert()
        .success();
    for page in [
        "fleet.1",
        "fleet-apply.1",
        "fleet-provision.1",
        "fleet-serve.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).expect(page);
        assert!(text.contains(".TH"), "{page}");
    }
    assert!(!dir.path().join("fleet-help.1").exists());
    assert!(
        !dir.path().join("fleet-docs.1").exists(),
        "hidden commands have no page"
    );
    let help = fleet(&crate_root())
        .args(["plan", "--help"])
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&help.stdout);
    let (own, global) = help
        .split_once("Global options:")
        .expect("a heading of its own");
    assert!(
        own.contains("--limit") && !own.contains("--inventory"),
        "{help}"
    );
    assert!(
        global.contains("--inventory") && global.contains("--quiet"),
        "{help}"
    );
}

#[test]
fn apply_lists_hosts_tasks_and_tags_and_refuses_unknown_tags() {
    let r = support::build_repo(
        &crate_root().join("tests/corpus/base"),
        &support::parse_case(
            "lists",
            "--- inventory/fleet.yaml\nfleet: { name: t }\nvars: { app_dir: /opt/app }\ngroups:\n  g: [b]\nnodes:\n  a: { host: a.invalid, role: common }\n  b: { host: b.invalid, role: common }\n--- playbooks/tagged.yaml\n- name: tagged\n  hosts: all\n  tasks:\n    - name: one\n      debug: { msg: one }\n      tags: [web]\n    - name: two\n      debug: { msg: two }\n      tags: [db, always]\n    - name: three\n      debug: { msg: three }\n",
        ),
    );
    let out = |args: &[&str]| -> (i32, String, String) {
        let o = fleet(r.path())
            .args(["apply", "playbooks/tagged.yaml"])
            .args(args)
            .output()
            .expect("runs");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert_eq!(out(&["--list-tags"]).1, "always, db, web\n");
    assert_eq!(
        out(&["--list-hosts", "--limit", "g"]).1,
        "play tagged (1 host): b\n",
        "nothing contacted: the hosts do not resolve"
    );
    let (code, tasks, _) = out(&["--list-tasks", "--tags", "web"]);
    assert_eq!(code, 0);
    assert_eq!(
        tasks, "play tagged:\n  one  [web]\n  two  [db, always]\n",
        "`always` runs whatever --tags says"
    );
    let (code, _, err) = out(&["--tags", "webb"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no task of this playbook has the tag `webb`"),
        "{err}"
    );
    assert!(err.contains("did you mean `web`?"), "{err}");
    assert_eq!(out(&["--skip-tags", "nope"]).0, 2);
}

#[test]
fn group_vars_and_host_vars_directories() {
    let files = "--- inventory/fleet.yaml\nfleet: { name: t, hq: a, hq_url: \"http://127.0.0.1:9\" }\nvars: { app_dir: /opt/app, who: fleet }\ngroups:\n  pair: { nodes: [a, b], vars: { who: inline } }\nnodes:\n  a: { host: a.invalid, role: common }\n  b: { host: b.invalid, role: common, vars: { port: 1 } }\n--- inventory/group_vars/pair/who.yaml\nwho: group-file\n--- inventory/group_vars/all.yml\ngreeting: hello\n--- inventory/host_vars/b.yaml\nport: 2\n--- playbooks/show.yaml\n- name: show\n  hosts: all\n  tasks:\n    - name: say\n      debug: { msg: \"{{ who }} {{ greeting }} {{ port | default('none') }}\" }\n";
    let r = support::build_repo(
        &crate_root().join("tests/corpus/base"),
        &support::parse_case("vars", files),
    );
    let out = fleet(r.path())
        .args(["plan", "playbooks/show.yaml", "--json"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let msg = |node: &str| {
        plan["plays"][0]["targets"]
            .as_array()
            .expect("targets")
            .iter()
            .find(|t| t["node"] == node)
            .map(|t| t["tasks"][0]["args"]["msg"].clone())
            .expect("node")
    };
    assert_eq!(msg("a"), "group-file hello none");
    assert_eq!(
        msg("b"),
        "group-file hello 2",
        "host_vars beat the inline node vars"
    );
    // A file for a node or group the inventory does not have is a located error.
    std::fs::write(r.path().join("inventory/host_vars/c.yaml"), "x: 1\n").expect("w");
    fleet(r.path())
        .arg("validate")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "inventory/host_vars/c.yaml:1:1: error: host_vars for `c`, which is not a node of the inventory",
        ));
}

#[test]
fn vars_files_are_read_relative_to_the_playbook() {
    let files = "--- inventory/fleet.yaml\nfleet: { name: t, hq: a, hq_url: \"http://127.0.0.1:9\" }\nvars: { app_dir: /opt/app }\nnodes:\n  a: { host: a.invalid, role: common }\n--- playbooks/vars/common.yaml\nport: 8080\nwho: file\n--- playbooks/show.yaml\n- name: show\n  hosts: all\n  vars: { who: play, other: kept }\n  vars_files: [vars/common.yaml]\n  tasks:\n    - name: say\n      debug: { msg: \"{{ who }} {{ port }} {{ other }}\" }\n";
    let r = support::build_repo(
        &crate_root().join("tests/corpus/base"),
        &support::parse_case("vf", files),
    );
    let out = fleet(r.path())
        .args(["plan", "playbooks/show.yaml", "--json"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        plan["plays"][0]["targets"][0]["tasks"][0]["args"]["msg"],
        "file 8080 kept"
    );
    let pb = r.path().join("playbooks/show.yaml");
    let text = std::fs::read_to_string(&pb).expect("read");
    std::fs::write(&pb, text.replace("vars/common.yaml", "vars/missing.yaml")).expect("w");
    fleet(r.path())
        .args(["plan", "playbooks/show.yaml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("error: `vars_files`: no file"));
}
