//! Ad-hoc commands against real sshd test hosts: `fleet sh PATTERN CMD` and
//! `fleet run PATTERN -m MODULE -a ARGS` — each host's output, check mode that predicts the
//! real run, a second run that changes nothing, values that stay data, the recap's exit codes.

mod support;

use support::{Hosts, build_repo, crate_root, fleet, parse_case};

fn repo(hosts: &Hosts) -> tempfile::TempDir {
    let mut inv = format!(
        "fleet: {{ name: t, hq: h1, hq_url: \"http://127.0.0.1:1\", ssh_config: \"{}\" }}\nvars: {{ app_dir: /opt/app }}\ngroups:\n  pair: [h1, h2]\nnodes:\n",
        hosts.ssh_config().display()
    );
    for k in 1..=2 {
        inv.push_str(&format!(
            "  h{k}: {{ host: 127.0.0.1, role: common, vars: {{ ssh_port: {} }} }}\n",
            hosts.port(k)
        ));
    }
    build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case("adhoc", &format!("--- inventory/fleet.yaml\n{inv}")),
    )
}

fn json_run(repo: &std::path::Path, args: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    let out = fleet(repo).args(args).arg("--json").output().expect("runs");
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (
        out.status.code().unwrap_or(-1),
        events,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tasks(events: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    events.iter().filter(|e| e["event"] == "task").collect()
}

#[test]
fn sh_shows_each_hosts_output_and_run_is_exact_and_idempotent() {
    let hosts = Hosts::up(2);
    let r = repo(&hosts);

    // Each host's stdout, stderr and rc, grouped under its line.
    let out = fleet(r.path())
        .args(["sh", "pair", "echo $((6*7)); echo warn >&2"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for h in ["h1", "h2"] {
        let at = text
            .find(&format!(" {h}: shell"))
            .unwrap_or_else(|| panic!("{text}"));
        let block = &text[at..];
        assert!(block.contains("| 42") && block.contains("! warn"), "{text}");
    }
    let (code, events, err) = json_run(r.path(), &["sh", "h2", "printf '%s' \"$0\"; exit 4"]);
    assert_eq!(code, 1, "{err}");
    let t = tasks(&events);
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0]["host"].as_str(), t[0]["rc"].as_i64()),
        (Some("h2"), Some(4))
    );
    assert_eq!(t[0]["status"], "failed");

    // A module with k=v arguments: check predicts, the real run does it, then nothing.
    let dir = "/srv/adhoc dir $(touch /tmp/adhoc-MARK)";
    let a = format!("path='{dir}' state=directory mode=0750");
    let (code, events, err) =
        json_run(r.path(), &["run", "all", "-m", "file", "-a", &a, "--check"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        tasks(&events).iter().all(|e| e["status"] == "changed"),
        "{events:?}"
    );
    assert_eq!(
        hosts.sh(1, &format!("test -e '{dir}' && echo yes || echo no")),
        "no\n"
    );
    let (code, events, err) = json_run(r.path(), &["run", "all", "-m", "file", "-a", &a]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(tasks(&events).len(), 2);
    assert!(tasks(&events).iter().all(|e| e["status"] == "changed"));
    assert_eq!(hosts.sh(1, &format!("stat -c %a '{dir}'")), "750\n");
    let (_, events, _) = json_run(r.path(), &["run", "all", "-m", "file", "-a", &a]);
    assert!(
        tasks(&events).iter().all(|e| e["status"] == "ok"),
        "{events:?}"
    );
    // The value was data: nothing ran.
    assert_eq!(
        hosts.sh(1, "test -e /tmp/adhoc-MARK && echo yes || echo no"),
        "no\n"
    );

    // A mapping works too; a bad argument is a config error before anything runs.
    let (code, _, err) = json_run(
        r.path(),
        &[
            "run",
            "h1",
            "-m",
            "file",
            "-a",
            "{path: /srv/adhoc2, state: directory}",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(hosts.sh(1, "test -d /srv/adhoc2 && echo yes"), "yes\n");
    fleet(r.path())
        .args(["run", "all", "-m", "file", "-a", "path=/x state=sideways"])
        .assert()
        .code(2);
    fleet(r.path())
        .args(["run", "all", "-m", "fiel", "-a", "path=/x"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("did you mean `file`?"));
    fleet(r.path())
        .args(["sh", "nosuchhost", "true"])
        .assert()
        .code(2);
}
