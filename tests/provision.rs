//! `fleet provision` on real sshd hosts: requirements from gathered facts, the role run, the
//! new node written into the inventory with its comments intact, and the re-render.

mod support;

use predicates::prelude::*;
use support::{Hosts, build_repo, crate_root, fleet, parse_case};

fn repo(hosts: &Hosts) -> tempfile::TempDir {
    let inv = format!(
        "# the test fleet\nfleet: {{ name: t, hq: h1, hq_url: \"http://127.0.0.1:1\", ssh_config: \"{}\" }}\nvars: {{ app_dir: /opt/app }}\n\nnodes:\n  # first node\n  h1: {{ host: host1, role: hq }}   # keep this comment\n\n# no routing yet\n",
        hosts.ssh_config().display()
    );
    let files = format!(
        "--- inventory/fleet.yaml\n{inv}--- roles/huge/role.yaml\ndescription: needs a big machine\nrequires: {{ ram_gb: 4096 }}\ntasks:\n  - {{ name: never, file: {{ path: /opt/never, state: directory }} }}\n"
    );
    build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case("p", &files),
    )
}

#[test]
fn provisions_a_new_node_and_writes_it_into_the_inventory() {
    let hosts = Hosts::up(2);
    let r = repo(&hosts);
    let inv_path = r.path().join("inventory/fleet.yaml");
    let before = std::fs::read_to_string(&inv_path).expect("inventory");
    // Check mode predicts and writes nothing.
    fleet(r.path())
        .args([
            "provision",
            "fresh",
            "--role",
            "common",
            "--host",
            "host2",
            "--check",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("would change"));
    assert_eq!(
        std::fs::read_to_string(&inv_path).expect("inventory"),
        before
    );
    assert!(
        hosts
            .sh(2, "ls -d /opt/app 2>/dev/null || echo none")
            .contains("none")
    );

    let out = fleet(r.path())
        .args(["provision", "fresh", "--role", "common", "--host", "host2"])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{err}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        err.contains("added `fresh` to inventory/fleet.yaml"),
        "{err}"
    );
    assert!(hosts.sh(2, "ls -d /opt/app").contains("/opt/app"));
    let after = std::fs::read_to_string(&inv_path).expect("inventory");
    assert!(
        after.starts_with(&before.replace("\n# no routing yet\n", "")),
        "the user's text is kept:\n{after}"
    );
    assert!(after.contains("  h1: { host: host1, role: hq }   # keep this comment\n"));
    assert!(
        after.contains("  fresh:\n    host: host2\n    role: common\n    hardware: { "),
        "{after}"
    );
    assert!(
        after.contains("os: linux, arch: x86_64, ram_gb: "),
        "{after}"
    );
    assert!(after.ends_with("\n# no routing yet\n"), "{after}");
    fleet(r.path()).arg("validate").assert().success();
    let registry = std::fs::read_to_string(r.path().join("generated/registry/nodes_registry.json"))
        .expect("rendered registry");
    assert!(registry.contains("\"name\": \"fresh\""), "{registry}");
    // Provisioning it again changes nothing and leaves the inventory alone.
    let again = fleet(r.path())
        .args(["provision", "fresh", "--json"])
        .output()
        .expect("runs");
    assert!(again.status.success());
    assert!(!String::from_utf8_lossy(&again.stdout).contains("\"status\":\"changed\""));
    assert_eq!(
        std::fs::read_to_string(&inv_path).expect("inventory"),
        after
    );
}

#[test]
fn refuses_a_machine_that_misses_the_role_requirements() {
    let hosts = Hosts::up(1);
    let r = repo(&hosts);
    let before = std::fs::read_to_string(r.path().join("inventory/fleet.yaml")).expect("inventory");
    fleet(r.path())
        .args(["provision", "big", "--role", "huge", "--host", "host1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "refusing to provision: role `huge` needs 4096 GB RAM; `big` has",
        ));
    assert!(
        hosts
            .sh(1, "ls -d /opt/never 2>/dev/null || echo none")
            .contains("none")
    );
    assert_eq!(
        std::fs::read_to_string(r.path().join("inventory/fleet.yaml")).expect("inventory"),
        before
    );
    fleet(r.path())
        .args(["provision", "h1", "--role", "worker"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "`h1` has role `hq` in the inventory",
        ));
    fleet(r.path())
        .args(["provision", "newbie"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "a new node needs --role and --host",
        ));
}

#[test]
fn a_role_whose_service_does_not_answer_fails_verification() {
    let hosts = Hosts::up(1);
    let r = repo(&hosts);
    let o = support::ollama::start(&[]);
    // The worker role promises Ollama: with the stand-in answering on the node's address
    // (the test hosts share the loopback network) verification passes...
    fleet(r.path())
        .args([
            "provision",
            "w1",
            "--role",
            "worker",
            "--host",
            "host1",
            "-e",
            &format!("ollama_port={}", o.port),
        ])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "verified: ollama answers at http://127.0.0.1:{}",
            o.port
        )));
    // ...and with nothing listening it fails, saying what does not answer.
    let closed = support::free_port();
    fleet(r.path())
        .args(["provision", "w1", "--verify-timeout", "2s", "-e", &format!("ollama_port={closed}")])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!("w1 was provisioned but does not answer: ollama does not answer at http://127.0.0.1:{closed}")));
}
