//! Logs for every command: `-v` info, `-vv` debug (each exec on a host with its time),
//! `-q` errors only, `--log-format json` one object a line; secrets never in them.

mod support;

use support::{build_repo, crate_root, fleet, free_port, http, parse_case, spawn_fleet, wait_for};

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

#[test]
fn hq_logs_to_its_file_and_follows_a_rotation() {
    // As launchd runs it on a Mac: `--log-file`, stderr a file of its own.
    let port = free_port();
    let r = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "hq",
            &format!(
                "--- inventory/fleet.yaml\nfleet: {{ name: t, hq: me, hq_url: \"http://127.0.0.1:{port}\" }}\nvars: {{ app_dir: /tmp/fleet-logs-test-app }}\nnodes:\n  me: {{ host: 127.0.0.1, role: common, vars: {{ connection: local }} }}\n"
            ),
        ),
    );
    let log = r.path().join("log/hq.log");
    let db = r.path().join("hq.sqlite");
    let _hq = spawn_fleet(
        r.path(),
        &[
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--db",
            db.to_str().expect("utf-8"),
            "--log-file",
            log.to_str().expect("utf-8"),
        ],
        &r.path().join("hq.stderr.log"),
    );
    let healthz = || {
        http(
            "GET",
            &format!("http://127.0.0.1:{port}/healthz"),
            None,
            None,
        )
        .ok()
        .filter(|(c, _)| *c == 200)
    };
    wait_for(20, "serve", healthz);
    let access = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("INFO request method=GET route=/healthz status=200"))
            .count()
    };
    wait_for(10, "the access log line", || {
        (access(&log) > 0).then_some(())
    });
    // Renamed away (newsyslog, logrotate): the next request's line is in a new file.
    let rotated = r.path().join("log/hq.log.0");
    std::fs::rename(&log, &rotated).expect("rename");
    let before = access(&rotated);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    healthz().expect("healthz");
    wait_for(10, "a line in the new hq.log", || {
        (access(&log) == 1).then_some(())
    });
    assert_eq!(access(&rotated), before, "nothing more in the rotated file");
    let stderr = std::fs::read_to_string(r.path().join("hq.stderr.log")).expect("stderr");
    assert!(!stderr.contains("INFO"), "log lines on stderr: {stderr}");
}

#[test]
fn the_example_fleet_rotates_mac_logs_and_journals_linux_ones() {
    // bob: macOS, HQ; forge: Linux. What `fleet plan` would place on each.
    let out = fleet(&crate_root())
        .args(["plan", "playbooks/site.yaml", "--diff", "--json"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let files = |node: &str| -> std::collections::BTreeMap<String, String> {
        v["plays"]
            .as_array()
            .expect("plays")
            .iter()
            .flat_map(|p| p["targets"].as_array().expect("targets").iter())
            .filter(|t| t["node"] == node)
            .flat_map(|t| t["tasks"].as_array().expect("tasks").iter())
            .filter_map(|t| {
                Some((
                    t["file"]["dest"].as_str()?.to_string(),
                    t["file"]["content"].as_str().unwrap_or("").to_string(),
                ))
            })
            .collect()
    };
    let bob = files("bob");
    let rules = |f: &str| -> Vec<String> {
        bob.get(f)
            .unwrap_or_else(|| panic!("no {f} for bob"))
            .lines()
            .filter(|l| l.starts_with('/'))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        rules("/etc/newsyslog.d/fleet-hq.conf"),
        [
            "/var/log/fleet/hq.log\tsymphony:\t640\t7\t10240\t*\tJN",
            "/var/log/fleet/hq.stderr.log\tsymphony:\t640\t2\t1024\t*\tJN",
        ]
    );
    assert_eq!(rules("/etc/newsyslog.d/fleet-agent.conf").len(), 2);
    let plist = &bob["/Library/LaunchDaemons/com.fleet.hq.plist"];
    assert!(
        plist.contains("<string>--log-file</string>\n    <string>/var/log/fleet/hq.log</string>")
            && plist.contains(
                "<key>StandardErrorPath</key>\n  <string>/var/log/fleet/hq.stderr.log</string>"
            ),
        "{plist}"
    );
    let forge = files("forge");
    assert!(
        !forge.keys().any(|f| f.starts_with("/etc/newsyslog.d")),
        "{:?}",
        forge.keys()
    );
}
