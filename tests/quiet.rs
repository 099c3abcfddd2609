//! `-q` means errors only, for every command: nothing on stdout (unless the command was asked
//! for data: `--json`, completions, docs, a token), no notes or warnings on stderr, the exit
//! code unchanged; errors still say what is wrong.

mod support;

use support::{build_repo, crate_root, fleet, parse_case};

/// Runs `fleet -q ARGS` in `dir`: exit code, stdout, stderr.
fn quiet(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = fleet(dir).arg("-q").args(args).output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A copy of the example fleet (commands that write, write there).
fn example() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    for sub in ["inventory", "roles", "playbooks", "templates", "generated"] {
        support::copy_tree(&crate_root().join(sub), &dir.path().join(sub));
    }
    dir
}

#[test]
fn quiet_commands_print_nothing_when_all_is_well() {
    let r = example();
    for args in [
        vec!["validate"],
        vec!["nodes"],
        vec!["plan", "playbooks/site.yaml"],
        vec!["render", "--check"],
        vec!["render"],
        vec!["route", "reason", "--offline"],
        vec!["eligible"],
        vec!["resources"],
        vec![
            "token",
            "issue",
            "forge",
            "--db",
            "t.sqlite",
            "--out",
            "forge.token",
        ],
        vec!["token", "revoke", "forge", "--db", "t.sqlite"],
    ] {
        let (code, out, err) = quiet(r.path(), &args);
        assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""), "{args:?}");
    }
    let d = tempfile::tempdir().expect("tmp");
    let (code, out, err) = quiet(d.path(), &["init", "new", "--non-interactive"]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""), "init");
}

#[test]
fn quiet_keeps_the_data_a_command_was_asked_for() {
    let r = example();
    for args in [
        vec!["nodes", "--json"],
        vec!["plan", "playbooks/site.yaml", "--json"],
        vec!["route", "reason", "--offline", "--json"],
        vec!["eligible", "--json"],
        vec!["resources", "--json"],
    ] {
        let (code, out, err) = quiet(r.path(), &args);
        assert_eq!((code, err.as_str()), (0, ""), "{args:?}");
        assert!(
            serde_json::from_str::<serde_json::Value>(&out).is_ok(),
            "{args:?}: {out}"
        );
    }
    let (code, out, err) = quiet(r.path(), &["completions", "bash"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(out.contains("_fleet"), "{out}");
    let (code, out, err) = quiet(r.path(), &["token", "issue", "forge", "--db", "t.sqlite"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(!out.trim().is_empty(), "the token is the output");
}

#[test]
fn quiet_still_reports_errors_and_failures() {
    // A warning (the hq node's role) is dropped; an error is not.
    let r = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "q",
            "--- inventory/fleet.yaml\nfleet: { name: t, hq: n1, hq_url: \"http://127.0.0.1:1\" }\nvars: { app_dir: /opt/app }\nnodes:\n  n1: { host: 127.0.0.1, role: common }\n",
        ),
    );
    let loud = fleet(r.path()).arg("validate").output().expect("runs");
    assert!(
        String::from_utf8_lossy(&loud.stderr).contains("warning"),
        "the repo has a warning to drop"
    );
    let (code, out, err) = quiet(r.path(), &["validate"]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
    let (code, out, err) = quiet(r.path(), &["plan", "playbooks/nope.yaml"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(
        err.contains("error: no playbook at `playbooks/nope.yaml`"),
        "{err}"
    );

    // A sweep that finds a node down: exit 1, and nothing printed.
    let (code, out, err) = quiet(r.path(), &["check", "--timeout", "300ms"]);
    assert_eq!((code, out.as_str(), err.as_str()), (1, "", ""));

    // A failing task is an error: on stderr, with the host and why; nothing on stdout.
    let (code, out, err) = quiet(
        r.path(),
        &[
            "apply",
            "playbooks/site.yaml",
            "-e",
            "ssh_port=1",
            "--limit",
            "n1",
        ],
    );
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(
        err.contains("unreachable n1") && err.contains("1 host failed or unreachable: n1"),
        "{err}"
    );
}
