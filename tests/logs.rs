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

/// Runs `fleet [pre] agent --once [args]` against a closed port, its stderr to a file; with
/// `journal`, JOURNAL_STREAM names that file's device:inode, as systemd names the journal's
/// stream (or, `Some(false)`, another stream: a variable inherited by a child whose stderr
/// went elsewhere). Returns the exit code and what went to stderr.
fn agent_once(
    dir: &std::path::Path,
    pre: &[&str],
    args: &[&str],
    journal: Option<bool>,
) -> (i32, String) {
    use std::os::unix::fs::MetadataExt;
    let token = dir.join("agent.token");
    std::fs::write(&token, "t0ken\n").expect("token");
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let err = dir.join("stderr");
    let file = std::fs::File::create(&err).expect("stderr file");
    let m = file.metadata().expect("stat");
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("fleet"));
    cmd.current_dir(dir)
        .env_remove("FLEET_LOG")
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .args(pre)
        .args(["agent", "--once", "--node", "n1", "--hq"])
        .arg(format!("http://127.0.0.1:{}", support::free_port()))
        .arg("--token-file")
        .arg(&token)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(file);
    match journal {
        Some(true) => cmd.env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino())),
        Some(false) => cmd.env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino() + 1)),
        None => &mut cmd,
    };
    let status = cmd.status().expect("runs");
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&err).expect("stderr"),
    )
}

#[test]
fn on_the_journal_each_line_has_its_priority_and_no_timestamp() {
    let dir = tempfile::tempdir().expect("tmp");
    let (code, err) = agent_once(dir.path(), &[], &[], Some(true));
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with("<6>INFO agent for `n1` reporting to http://127.0.0.1:"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("<4>WARN heartbeat 1 failed (1 in a row): "),
        "{err}"
    );
    // The error the agent stops with is an error entry too (`journalctl -p err`).
    assert!(lines[2].starts_with("<3>error: "), "{err}");

    // JSON: the priority, then the object (journald strips the prefix).
    let (_, err) = agent_once(dir.path(), &["--log-format", "json"], &[], Some(true));
    let mut levels = Vec::new();
    for l in err.lines().filter(|l| !l.starts_with("<3>error: ")) {
        let (prio, json) = l.split_at(3);
        let v: serde_json::Value = serde_json::from_str(json).expect("JSON after the priority");
        levels.push((
            prio.to_string(),
            v["level"].as_str().unwrap_or("").to_string(),
        ));
    }
    assert_eq!(
        levels,
        [("<6>", "INFO"), ("<4>", "WARN")].map(|(p, l)| (p.to_string(), l.to_string()))
    );

    // JOURNAL_STREAM inherited, stderr elsewhere: the usual lines, with their time.
    let (_, err) = agent_once(dir.path(), &[], &[], Some(false));
    assert!(!err.contains("<6>") && !err.contains("<3>"), "{err}");
    assert!(err.contains("Z  INFO agent for `n1`"), "{err}");
}

#[test]
fn with_a_log_file_stderr_keeps_only_the_last_words() {
    // What launchd does: stderr is a file of its own (StandardErrorPath), the log --log-file.
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("logs/agent.log");
    let (code, err) = agent_once(
        dir.path(),
        &[],
        &["--log-file", log.to_str().expect("utf-8")],
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.lines().count() == 1,
        "{err}"
    );
    let text = std::fs::read_to_string(&log).expect("the log file");
    let levels: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(levels, ["INFO", "WARN", "ERROR"], "{text}");
    // Why it stopped is in the log too, once ("ERROR …", not "ERROR error: …").
    assert!(!text.contains("ERROR error:"), "{text}");
}
