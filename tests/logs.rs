//! Logs for every command: `-v` info, `-vv` debug (each exec on a host with its time),
//! `-q` errors only, `--log-format json` one object a line; secrets never in them.

mod support;

use support::{build_repo, crate_root, fleet, parse_case};

const CANARY: &str = "log-canary-7Q2x9";

fn repo() -> tempfile::TempDir {
    build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "logs",
            "--- inventory/fleet.yaml\nfleet: { name: t }\nvars: { app_dir: /tmp/fleet-logs-test-app }\nnodes:\n  me: { host: 127.0.0.1, role: common, vars: { connection: local } }\n--- playbooks/canary.yaml\n- name: canary\n  hosts: all\n  tasks:\n    - name: secret argument\n      command: { argv: [\"true\", \"{{ env('FLEET_LOG_CANARY') }}\"] }\n",
        ),
    )
}

fn run(r: &tempfile::TempDir, args: &[&str]) -> (i32, String, String) {
    let out = fleet(r.path())
        .env("FLEET_LOG_CANARY", CANARY)
        .env_remove("FLEET_LOG")
        .env_remove("RUST_LOG")
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn verbosity_levels_and_formats() {
    let r = repo();
    let (code, _, err) = run(&r, &["apply", "playbooks/canary.yaml"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains(" INFO ") && !err.contains("DEBUG"), "{err}");

    let (code, _, err) = run(&r, &["-v", "apply", "playbooks/canary.yaml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("INFO repo loaded"), "{err}");
    assert!(err.contains("host{node=me}: connected"), "{err}");
    assert!(!err.contains("DEBUG"), "{err}");

    let (code, out, err) = run(&r, &["-vv", "apply", "playbooks/canary.yaml"]);
    assert_eq!(code, 0, "{err}");
    let execs: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("DEBUG") && l.contains(" exec "))
        .collect();
    assert!(!execs.is_empty(), "{err}");
    for l in &execs {
        assert!(l.contains("node=me") && l.contains("ms="), "{l}");
    }
    assert!(
        !err.contains(CANARY) && !out.contains(CANARY),
        "the secret leaked:\n{err}\n{out}"
    );

    let (code, _, err) = run(
        &r,
        &[
            "-vv",
            "--log-format",
            "json",
            "apply",
            "playbooks/canary.yaml",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let mut json_lines = 0;
    for l in err.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object a line");
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{l}"
        );
        json_lines += 1;
    }
    assert!(json_lines >= 3, "{err}");
    assert!(!err.contains(CANARY));

    let (code, out, err) = run(&r, &["-q", "-vv", "apply", "playbooks/canary.yaml"]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
}
