//! The README's demo, as CI runs it: `scripts/demo` provisions four real SSH hosts with the
//! four roles, sweeps them, renders, routes, loses one node and sees it go. With
//! DEMO_VERIFY=1 it also checks, for every example role, that `--check` predicted exactly the
//! changes of the real run and that a second run changes nothing.

mod support;

#[test]
fn the_readme_demo_runs_end_to_end() {
    let out = std::process::Command::new(support::crate_root().join("scripts/demo"))
        .env("FLEET_BIN", assert_cmd::cargo::cargo_bin("fleet"))
        .env("NO_COLOR", "1")
        .env("DEMO_VERIFY", "1")
        .output()
        .expect("scripts/demo runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    for want in [
        "ok: 4 nodes, 9 roles, 1 playbook,",
        "changes of provision bob",
        "changes of provision maestro",
        "changes of provision stagehand",
        "changes of provision virtuoso",
        "a second provision of virtuoso changed nothing",
        "4 online, 0 degraded, 0 offline",
        "reason → maestro",
        "HQ says maestro is offline",
        "3 online, 0 degraded, 1 offline",
        "reason → virtuoso",
        "no longer routes to maestro; what the conductor read:",
    ] {
        assert!(
            text.contains(want),
            "missing `{want}` in the demo's output:\n{text}"
        );
    }
}
