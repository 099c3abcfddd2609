//! A controller learns before anything runs that a node's platform has no fleet agent binary:
//! `validate` and `plan` warn (they describe the repo, whatever controller applies it),
//! `apply` and `provision` refuse (exit 2) without touching the node.

mod support;

use support::{build_repo, crate_root, fleet, parse_case};

fn repo(nodes: &str) -> tempfile::TempDir {
    let inv = format!(
        "fleet: {{ name: t, hq: hq1, hq_url: \"http://127.0.0.1:9\" }}\nvars: {{ app_dir: /opt/app, fleet_user: root }}\nnodes:\n  hq1: {{ host: 127.0.0.1, role: common }}\n{nodes}"
    );
    // Ollama first, then the agent: a run that failed at the agent would have changed the node.
    let role = "description: a worker with an agent\ntasks:\n  - name: ollama first\n    command: { argv: [\"true\"] }\n  - name: agent\n    fleet_agent: { hq_url: \"{{ fleet.hq_url }}\", source: \"{{ agent_source | default('') }}\" }\n";
    build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "p",
            &format!(
                "--- inventory/fleet.yaml\n{inv}--- roles/agentworker/role.yaml\n{role}--- playbooks/agents.yaml\n- hosts: all\n  roles: [agentworker]\n"
            ),
        ),
    )
}

fn other_platform() -> (&'static str, &'static str) {
    if std::env::consts::OS == "macos" {
        ("linux", "x86_64")
    } else {
        ("macos", "aarch64")
    }
}

#[test]
fn a_node_of_another_platform_without_a_binary_is_refused_before_anything_runs() {
    let (os, arch) = other_platform();
    let r = repo(&format!(
        "  mac: {{ host: unreachable.invalid, role: agentworker, hardware: {{ os: {os}, arch: {arch} }} }}\n"
    ));
    let v = fleet(r.path()).arg("validate").output().expect("validate");
    let err = String::from_utf8_lossy(&v.stderr);
    assert_eq!(v.status.code(), Some(0), "{err}");
    assert!(
        err.contains("warning: `mac` (") && err.contains("no fleet binary for"),
        "{err}"
    );
    let p = fleet(r.path())
        .args(["plan", "playbooks/agents.yaml"])
        .output()
        .expect("plan");
    let err = String::from_utf8_lossy(&p.stderr);
    assert_eq!(p.status.code(), Some(0), "{err}");
    assert!(err.contains("warning: `mac` ("), "{err}");
    assert!(err.contains("agent_source"), "{err}");
    let a = fleet(r.path())
        .args(["apply", "playbooks/agents.yaml"])
        .output()
        .expect("apply");
    let err = String::from_utf8_lossy(&a.stderr);
    assert_eq!(a.status.code(), Some(2), "{err}");
    assert!(err.contains("error: `mac` ("), "{err}");
    // provision stops while planning: it never tries to reach the host.
    let out = fleet(r.path())
        .args(["provision", "mac"])
        .output()
        .expect("provision");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no fleet binary for"), "{err}");
    assert!(!err.contains("unreachable.invalid:"), "{err}");
}

#[test]
fn the_controllers_platform_or_a_configured_binary_is_fine() {
    let (os, arch) = other_platform();
    let here_os = std::env::consts::OS;
    let here_arch = std::env::consts::ARCH;
    let r = repo(&format!(
        "  same: {{ host: a.invalid, role: agentworker, hardware: {{ os: {here_os}, arch: {here_arch} }} }}\n  built: {{ host: b.invalid, role: agentworker, hardware: {{ os: {os}, arch: {arch} }}, vars: {{ agent_source: /bin/true }} }}\n  unknown: {{ host: c.invalid, role: agentworker }}\n"
    ));
    let p = fleet(r.path())
        .args(["plan", "playbooks/agents.yaml"])
        .output()
        .expect("plan");
    let err = String::from_utf8_lossy(&p.stderr);
    assert_eq!(p.status.code(), Some(0), "{err}");
    assert!(!err.contains("no fleet binary"), "{err}");
}

#[test]
fn a_mistyped_agent_source_is_reported_before_anything_runs() {
    let r = repo(
        "  typo: { host: unreachable.invalid, role: agentworker, vars: { agent_source: build/flet } }\n",
    );
    let v = fleet(r.path()).arg("validate").output().expect("validate");
    let err = String::from_utf8_lossy(&v.stderr);
    assert!(
        err.contains("warning: `typo`") && err.contains("build/flet is not a file"),
        "{err}"
    );
    let a = fleet(r.path())
        .args(["apply", "playbooks/agents.yaml"])
        .output()
        .expect("apply");
    let err = String::from_utf8_lossy(&a.stderr);
    assert_eq!(a.status.code(), Some(2), "{err}");
    assert!(err.contains("error: `typo`"), "{err}");
    assert!(!err.contains("unreachable.invalid:"), "{err}");
}
