//! Facts on a real sshd host: `--facts-max-age` uses the cache instead of the probe's round
//! trip (counted in `-vv`'s exec lines), `gather_facts: false` never runs the probe (cached
//! facts when there are some, a clear failure when a task needs facts and there are none),
//! and custom facts from `/etc/fleet/facts.d/*.json` in the same single round trip, a file
//! that is not JSON reported on its own.

mod support;

use support::{Hosts, build_repo, crate_root, fleet, parse_case};

fn repo(hosts: &Hosts, playbook: &str) -> tempfile::TempDir {
    let inv = format!(
        "fleet: {{ name: t, hq: h1, hq_url: \"http://127.0.0.1:1\", ssh_config: \"{}\" }}\nvars: {{ app_dir: /opt/app }}\nnodes:\n  h1: {{ host: 127.0.0.1, role: common, vars: {{ ssh_port: {} }} }}\n",
        hosts.ssh_config().display(),
        hosts.port(1)
    );
    build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "f",
            &format!("--- inventory/fleet.yaml\n{inv}--- playbooks/site.yaml\n{playbook}"),
        ),
    )
}

/// `fleet apply … -vv --json`: exit code, stdout, stderr (the logs), and the execs logged.
fn apply(r: &std::path::Path, args: &[&str]) -> (i32, String, String, usize) {
    let out = fleet(r)
        .args(["apply", "playbooks/site.yaml", "-vv", "--json"])
        .args(args)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let execs = err
        .lines()
        .filter(|l| l.contains(" exec ") && l.contains("script_bytes"))
        .count();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        err,
        execs,
    )
}

fn msgs(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["msg"].as_str().map(str::to_string))
        .collect()
}

const CUSTOM: &str = "mkdir -p /etc/fleet/facts.d && printf '{\"version\": \"2.5\", \"tier\": [\"gold\"]}\\n' > /etc/fleet/facts.d/app.json && printf '{oops\\n' > /etc/fleet/facts.d/broken.json";

#[test]
fn max_age_uses_the_cache_and_custom_facts_ride_the_same_round_trip() {
    let hosts = Hosts::up(1);
    hosts.sh(1, CUSTOM);
    let r = repo(
        &hosts,
        "- name: p\n  hosts: all\n  tasks:\n    - { name: v, debug: { msg: \"app {{ facts.local.app.version }} {{ facts.local.app.tier[0] }} {{ facts.os }}\" } }\n    - { name: noop, command: \"true\", changed_when: false }\n",
    );
    let (code, out, err, gathered) = apply(r.path(), &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        msgs(&out).contains(&"app 2.5 gold linux".to_string()),
        "{out}"
    );
    assert!(err.contains("facts gathered"), "{err}");
    // The file that is not JSON is named; the other facts are there all the same.
    assert!(
        err.contains("custom facts: /etc/fleet/facts.d/broken.json: not valid JSON"),
        "{err}"
    );
    // Young enough: no probe.
    let (code, out, err, cached) = apply(r.path(), &["--facts-max-age", "1h"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        msgs(&out).contains(&"app 2.5 gold linux".to_string()),
        "{out}"
    );
    assert!(err.contains("facts from the cache"), "{err}");
    assert!(!err.contains("facts gathered"), "{err}");
    assert_eq!(
        gathered,
        cached + 1,
        "one exec (the probe, custom facts included) saved"
    );
    // Too old: gathered again (and the cache's time renewed, though its content is the same).
    let cache = r.path().join(".fleet/facts/h1.json");
    let stale = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .append(true)
        .open(&cache)
        .expect("cache")
        .set_modified(stale)
        .expect("touch");
    let (code, _, err, again) = apply(r.path(), &["--facts-max-age", "1h"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("facts gathered"), "{err}");
    assert_eq!(again, gathered);
    let (_, _, err, _) = apply(r.path(), &["--facts-max-age", "1h"]);
    assert!(err.contains("facts from the cache"), "{err}");

    // `fleet facts`: the custom facts, and the broken file named.
    let out = fleet(r.path())
        .args(["facts", "--json"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(j["h1"]["local"]["app"]["tier"][0], "gold");
    assert!(
        j["h1"]["local_errors"]["broken"]
            .as_str()
            .is_some_and(|e| e.contains("not valid JSON")),
        "{j}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.json"));
}

#[test]
fn gather_facts_false_uses_the_cache_or_fails_clearly() {
    let hosts = Hosts::up(1);
    let r = repo(
        &hosts,
        "- name: p\n  hosts: all\n  gather_facts: false\n  tasks:\n    - { name: v, debug: { msg: \"os {{ facts.os }}\" } }\n",
    );
    // No facts anywhere: a task that reads them fails, naming what is missing and why.
    let (code, out, err, execs) = apply(r.path(), &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("facts"), "{out}");
    assert!(out.contains("gather_facts: false"), "{out}");
    assert!(!err.contains("facts gathered"), "{err}");
    assert_eq!(execs, 0, "{err}");
    // A module that needs facts says so too.
    std::fs::write(
        r.path().join("playbooks/site.yaml"),
        "- name: p\n  hosts: all\n  gather_facts: false\n  tasks:\n    - { name: svc, service: { name: x, state: started } }\n",
    )
    .expect("w");
    let (code, out, _, _) = apply(r.path(), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("gather_facts: false"), "{out}");
    // Cached facts (any age) are used, and the host is not asked for them.
    std::fs::write(
        r.path().join("playbooks/site.yaml"),
        "- name: p\n  hosts: all\n  gather_facts: false\n  tasks:\n    - { name: v, debug: { msg: \"os {{ facts.os }}\" } }\n",
    )
    .expect("w");
    let out = fleet(r.path())
        .args(["facts", "h1"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    let (code, out, err, execs) = apply(r.path(), &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(msgs(&out).contains(&"os linux".to_string()), "{out}");
    assert!(!err.contains("facts gathered"), "{err}");
    assert_eq!(execs, 0, "debug runs on the controller; no probe: {err}");
    // A bad value is a located error.
    std::fs::write(
        r.path().join("playbooks/site.yaml"),
        "- name: p\n  hosts: all\n  gather_facts: nope\n  tasks:\n    - { name: v, debug: { msg: x } }\n",
    )
    .expect("w");
    let out = fleet(r.path()).arg("validate").output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("playbooks/site.yaml:3:17"), "{err}");
}
