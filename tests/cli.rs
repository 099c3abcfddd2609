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
    ] {
        assert!(text.contains(cmd), "{cmd} missing from completions");
    }
    fleet(&crate_root())
        .args(["completions", "tcsh"])
        .assert()
        .code(2);
}
