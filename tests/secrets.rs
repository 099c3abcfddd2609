//! Secrets never reach any output: canary values given through `env()` (multi-line, with
//! quotes and backslashes, transformed by a filter, short), a `secret: true` variable and the
//! routing table's `api_key_env` are searched for in everything `plan`, `plan --diff`,
//! `plan --json`, `validate`, `apply -v --diff` (human and JSON) and their error messages
//! print, and in `fleet serve`'s log. The host still gets the real values.

mod support;

use support::{Hosts, build_repo, crate_root, fleet, parse_case};

const ENV: &str = "sk-canary-\"q\\uote'$x";
const PEM: &str = "-----BEGIN CANARY KEY-----\nAAAAcanarylineNUMBERone\nBBBBcanarylineNUMBERtwo\n-----END CANARY KEY-----";
const KEY: &str = "sk-ant-CANARYapikey0123456789";
const SHORT: &str = "Zq9";

fn canaries() -> [&'static str; 6] {
    [
        "sk-canary",
        "canarylineNUMBERone",
        "canarylineNUMBERtwo",
        "CANARYapikey",
        SHORT,
        "SK-CANARY",
    ]
}

fn assert_clean(what: &str, out: &std::process::Output) {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for c in canaries() {
        assert!(!all.contains(c), "{what}: `{c}` leaked:\n{all}");
    }
}

fn inventory(extra: &str) -> String {
    format!(
        "fleet: {{ name: t, hq: h1, hq_url: \"http://127.0.0.1:1\" }}\nvars:\n  token: {{ secret: true, value: \"{SHORT}\" }}\n  from_env: \"{{{{ env('FLEET_CANARY_ENV') }}}}\"\nnodes:\n  h1: {{ host: 127.0.0.1, role: worker, models: [\"llama3.2:3b\"]{extra} }}\nrouting:\n  cloud_fallback: {{ provider: anthropic, model: claude-haiku, api_key_env: FLEET_CANARY_KEY }}\n  rules:\n    - {{ task: t, model: \"llama3.2:3b\", fallback: [cloud_api] }}\n"
    )
}

const PLAYBOOK: &str = concat!(
    "- name: secrets\n  hosts: all\n  tasks:\n",
    "    - { name: pem, copy: { content: \"{{ env('FLEET_CANARY_PEM') }}\\n\", dest: /etc/canary.pem, mode: \"0600\" } }\n",
    "    - { name: upper, debug: { msg: \"{{ env('FLEET_CANARY_ENV') | upper }}\" } }\n",
    "    - { name: \"looped {{ item }}\", debug: { msg: \"item is {{ item }}\" }, loop: [\"{{ from_env }}\", plain] }\n",
    "    - { name: short, copy: { content: \"t={{ token }}\\n\", dest: /etc/canary.short } }\n",
    "    - { name: concat, shell: \"test -n {{ (from_env ~ 'x') | shquote }}\" }\n",
    "    - { name: api key, copy: { content: \"{{ env('FLEET_CANARY_KEY') }}\", dest: /etc/canary.key } }\n",
    "    - { name: rendered, template: { src: canary.j2, dest: /etc/canary.conf } }\n",
    "    - { name: echo it, shell: \"echo {{ from_env | shquote }}; echo {{ token }} >&2\", register: said }\n",
    "    - { name: said, debug: { msg: \"{{ said.stdout }}\" } }\n",
    // A file of the host that holds a secret, read back: only its value can be searched for.
    "    - { name: read back, command: cat /etc/canary.pem, register: pem, changed_when: false }\n",
    "    - { name: show it, debug: { msg: \"{{ pem.stdout }}\" } }\n",
    "    - { name: one line, debug: { msg: \"{{ pem.stdout_lines[1] }}\" }, when: \"pem.stdout_lines | length > 1\" }\n",
    "    - { name: edit, lineinfile: { path: /etc/canary.pem, regexp: \"^BBBB\", line: \"CCCC\" } }\n",
);

fn repo(inv: &str, playbook: &str) -> tempfile::TempDir {
    build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "s",
            &format!(
                "--- inventory/fleet.yaml\n{inv}--- playbooks/site.yaml\n{playbook}--- templates/canary.j2\nkey = {{{{ from_env }}}}\nshort = {{{{ token }}}}\n"
            ),
        ),
    )
}

fn with_env(mut c: assert_cmd::Command) -> assert_cmd::Command {
    c.env("FLEET_CANARY_ENV", ENV)
        .env("FLEET_CANARY_PEM", PEM)
        .env("FLEET_CANARY_KEY", KEY);
    c
}

#[test]
fn offline_commands_and_their_errors_show_no_secret() {
    let r = repo(&inventory(""), PLAYBOOK);
    for args in [
        vec!["plan", "playbooks/site.yaml"],
        vec!["plan", "playbooks/site.yaml", "--diff"],
        vec!["plan", "playbooks/site.yaml", "--json"],
        vec!["validate"],
        vec!["route", "t"],
        vec!["render", "routing", "--check"],
    ] {
        let out = with_env(fleet(r.path()))
            .args(&args)
            .output()
            .expect("runs");
        assert_clean(&args.join(" "), &out);
        if args[0] == "plan" {
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("***"), "{text}");
        }
    }
    // Error messages that would quote a value.
    let bad = concat!(
        "- name: errors\n  hosts: all\n  tasks:\n",
        "    - { name: not a list, debug: { msg: x }, loop: \"{{ env('FLEET_CANARY_ENV') }}\" }\n",
        "    - { name: no template, template: { src: \"{{ env('FLEET_CANARY_ENV') }}\", dest: /x } }\n",
        "    - { name: no file, copy: { src: \"{{ from_env }}\", dest: /x } }\n",
        "    - { name: bad mode, file: { path: /x, mode: \"{{ token }}\" } }\n",
        "    - { name: bad state, file: { path: /x, state: \"{{ env('FLEET_CANARY_PEM') }}\" } }\n",
        "    - { name: bad url, get_url: { url: \"{{ env('FLEET_CANARY_KEY') }}\", dest: /x } }\n",
    );
    let r = repo(&inventory(""), bad);
    for args in [vec!["plan", "playbooks/site.yaml"], vec!["validate"]] {
        let out = with_env(fleet(r.path()))
            .args(&args)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2));
        assert_clean(&format!("errors of {}", args.join(" ")), &out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("expected a list, found ***"), "{err}");
        assert!(err.contains("template `***` not found"), "{err}");
    }
}

#[test]
fn apply_shows_no_secret_and_the_host_gets_the_values() {
    let hosts = Hosts::up(1);
    let inv = inventory(&format!(", vars: {{ ssh_port: {} }}", hosts.port(1))).replace(
        "fleet: { name: t,",
        &format!(
            "fleet: {{ ssh_config: \"{}\", name: t,",
            hosts.ssh_config().display()
        ),
    );
    let r = repo(&inv, PLAYBOOK);
    for args in [
        vec!["apply", "playbooks/site.yaml", "--check", "--diff", "-v"],
        vec!["apply", "playbooks/site.yaml", "-v", "--diff", "--json"],
        vec!["apply", "playbooks/site.yaml", "-v", "--diff"],
    ] {
        let out = with_env(fleet(r.path()))
            .args(&args)
            .output()
            .expect("runs");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_clean(&args.join(" "), &out);
    }
    // The last task of each run edits the placed PEM.
    assert_eq!(
        hosts.sh(1, "cat /etc/canary.pem"),
        format!("{PEM}\n").replace("BBBBcanarylineNUMBERtwo", "CCCC")
    );
    assert_eq!(hosts.sh(1, "cat /etc/canary.short"), format!("t={SHORT}\n"));
    assert_eq!(hosts.sh(1, "cat /etc/canary.key"), KEY);
    assert_eq!(
        hosts.sh(1, "cat /etc/canary.conf"),
        format!("key = {ENV}\nshort = {SHORT}\n")
    );
}

#[test]
fn the_hq_log_shows_no_secret() {
    let r = repo(&inventory(""), PLAYBOOK);
    let port = support::free_port();
    let log = r.path().join("serve.log");
    let db = r.path().join("hq.sqlite");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("fleet"));
    child
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db"])
        .arg(&db)
        .current_dir(r.path())
        .env("HOME", r.path())
        .env("NO_COLOR", "1")
        .env("FLEET_LOG", "debug")
        .env("FLEET_CANARY_ENV", ENV)
        .env("FLEET_CANARY_PEM", PEM)
        .env("FLEET_CANARY_KEY", KEY)
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(
            std::fs::File::options()
                .append(true)
                .open(&log)
                .expect("log"),
        );
    let child = support::Child(child.spawn().expect("serve"));
    let url = format!("http://127.0.0.1:{port}");
    support::wait_for(20, "fleet serve", || {
        support::http("GET", &format!("{url}/healthz"), None, None).ok()
    });
    let _ = support::http("GET", &format!("{url}/api/routing"), None, None);
    let _ = support::http(
        "POST",
        &format!("{url}/api/heartbeat"),
        Some(KEY),
        Some(b"{}"),
    );
    drop(child);
    let text = std::fs::read_to_string(&log).expect("log");
    for c in canaries() {
        assert!(!text.contains(c), "`{c}` in the HQ log:\n{text}");
    }
}
