//! `fleet check --deep` checks Docker over SSH on real sshd test hosts; Docker's engine cannot
//! run here, so one host gets a `docker` stand-in that answers `docker info` as Docker does.

mod support;

use support::{Hosts, build_repo, crate_root, fleet, parse_case};

#[test]
fn deep_checks_docker_over_ssh() {
    let hosts = Hosts::up(2);
    hosts.sh(1, "mkdir -p /usr/local/bin && printf '#!/bin/sh\\n[ \"$1\" = info ] && echo 27.3.1\\n' > /usr/local/bin/docker && chmod +x /usr/local/bin/docker");
    let inv = format!(
        "fleet: {{ name: t, hq: hq1, hq_url: \"http://127.0.0.1:1\", ssh_config: \"{}\" }}\nvars: {{ app_dir: /opt/app }}\nnodes:\n  hq1: {{ host: 127.0.0.1, role: common, vars: {{ ssh_port: {} }} }}\n  d1: {{ host: 127.0.0.1, role: dockerish, vars: {{ ssh_port: {} }} }}\n  d2: {{ host: 127.0.0.1, role: dockerish, vars: {{ ssh_port: {} }} }}\n",
        hosts.ssh_config().display(),
        hosts.port(1),
        hosts.port(1),
        hosts.port(2)
    );
    let case = parse_case(
        "deep",
        &format!(
            "--- inventory/fleet.yaml\n{inv}--- roles/dockerish/role.yaml\ndescription: docker\ncapabilities: [docker]\ntasks: []\n"
        ),
    );
    let repo = build_repo(&crate_root().join("tests/corpus/base"), &case);
    let out = fleet(repo.path())
        .args([
            "check",
            "--deep",
            "--json",
            "--limit",
            "d1,d2",
            "--timeout",
            "5s",
        ])
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let node = |n: &str| {
        v["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|x| x["node"] == n)
            .cloned()
            .expect("node")
    };
    // With --deep the listening sockets are audited too; the test hosts share this machine's
    // network namespace, so whatever this machine listens on beyond loopback shows as open
    // ports (tests/bind.rs tests that audit): only the other reasons are this test's.
    let others = |n: &str| -> Vec<String> {
        node(n)["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .filter_map(|r| r.as_str())
            .filter(|r| {
                !(r.starts_with("port ") && r.contains(" is open beyond the fleet network: "))
            })
            .map(str::to_string)
            .collect()
    };
    assert!(others("d1").is_empty(), "{v}");
    assert!(node("d1")["checks"]["listeners"].is_object(), "{v}");
    assert_eq!(node("d1")["checks"]["docker"]["detail"], "docker 27.3.1");
    assert_eq!(node("d2")["state"], "degraded");
    // /usr is shared with this machine: where its Docker CLI is installed (without an
    // engine) the CLI's own complaint comes through; otherwise the command is missing.
    let reason = others("d2")[0].clone();
    assert!(
        reason == "docker is down on d2: docker is not installed"
            || reason.starts_with("docker is down on d2: Cannot connect to the Docker daemon"),
        "{reason}"
    );
    assert_eq!(out.status.code(), Some(1));
}
