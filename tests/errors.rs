//! Clearer errors: one located error for a malformed `routing.cloud_fallback` (no second
//! "not set" error), the `api_key` help naming the provider's own variable and never the key,
//! counts that agree with their number, and a host name that does not resolve named as such
//! by every command that talks to HQ (names under `.invalid` never resolve, RFC 6761).

mod support;

use support::{build_repo, crate_root, fleet, parse_case};

/// The base repo with `cloud_fallback: <value>` (on line 3) and a rule falling back to it.
fn with_cloud(value: &str) -> tempfile::TempDir {
    let inv = format!(
        "fleet: {{ name: test, hq: hq1, hq_url: \"http://hq1.lan:8765\" }}\nrouting:\n  cloud_fallback: {value}\n  rules:\n    - {{ task: classify, model: \"small:1b\", fallback: [cloud_api] }}\nvars: {{ app_dir: /opt/app }}\nnodes:\n  hq1: {{ host: hq1.lan, role: hq, models: [\"small:1b\"] }}\n"
    );
    build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case("cloud", &format!("--- inventory/fleet.yaml\n{inv}")),
    )
}

fn validate(repo: &tempfile::TempDir) -> (i32, String) {
    let out = fleet(repo.path()).arg("validate").output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains(": error: ")).collect()
}

#[test]
fn a_malformed_cloud_fallback_is_one_located_error() {
    let cases = [
        (
            "anthropic",
            "inventory/fleet.yaml:3:19: error: `routing.cloud_fallback`: expected a mapping, found the string `anthropic`",
        ),
        (
            // A list is an ordered list of providers, each a mapping.
            "[anthropic]",
            "inventory/fleet.yaml:3:20: error: `routing.cloud_fallback[0]`: expected a mapping, found the string `anthropic`",
        ),
        (
            "[{ provider: openai, model: gpt-4o-mini, api_key_env: OPENAI_API_KEY }, { provider: groq }]",
            "inventory/fleet.yaml:3:91: error: `routing.cloud_fallback[1]` is missing the required keys `model` and `api_key_env`",
        ),
        (
            "{ model: claude-haiku, api_key_env: ANTHROPIC_API_KEY }",
            "inventory/fleet.yaml:3:19: error: `routing.cloud_fallback` is missing the required key `provider`",
        ),
        (
            "{ provider: openai }",
            "inventory/fleet.yaml:3:19: error: `routing.cloud_fallback` is missing the required keys `model` and `api_key_env`",
        ),
        (
            "~",
            "inventory/fleet.yaml:3:19: error: `routing.cloud_fallback` is missing the required keys `provider`, `model` and `api_key_env`",
        ),
        (
            "{ provider: anthropic, model: claude-haiku, api_key_env: ANTHROPIC_API_KEY, region: eu }",
            "inventory/fleet.yaml:3:95: error: unknown key `region` in `routing.cloud_fallback`",
        ),
        (
            "{ provider: anthropic, model: [claude-haiku], api_key_env: ANTHROPIC_API_KEY }",
            "inventory/fleet.yaml:3:49: error: `cloud_fallback.model`: expected a string, found a list",
        ),
        (
            "{ provider: anthropic, model: claude-haiku, api_key_env: 7 }",
            "inventory/fleet.yaml:3:76: error: `cloud_fallback.api_key_env`: expected a string, found the number `7`",
        ),
        (
            "{ provider: openai, model: gpt-4o-mini, api_key: sk-proj-secretsecret }",
            "inventory/fleet.yaml:3:59: error: a literal API key in the inventory (`api_key`)",
        ),
    ];
    let mut failures = Vec::new();
    for (value, expected) in cases {
        let (code, err) = validate(&with_cloud(value));
        let errors = error_lines(&err);
        if code != 2
            || errors != [expected]
            || err.contains("not set")
            || err.contains("no fallback")
        {
            failures.push(format!("== cloud_fallback: {value}\nexpected exactly: {expected}\n-- exit {code}, stderr:\n{err}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Without `cloud_fallback:` at all, the rule's fallback is the error, located on it.
    let repo = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "none",
            "--- inventory/fleet.yaml\nfleet: { name: test, hq: hq1, hq_url: \"http://hq1.lan:8765\" }\nrouting:\n  rules:\n    - { task: classify, model: \"small:1b\", fallback: [cloud_api] }\nvars: { app_dir: /opt/app }\nnodes:\n  hq1: { host: hq1.lan, role: hq, models: [\"small:1b\"] }\n",
        ),
    );
    let (code, err) = validate(&repo);
    assert_eq!(code, 2);
    assert_eq!(
        error_lines(&err),
        [
            "inventory/fleet.yaml:4:55: error: routing rule `classify` falls back to `cloud_api`, but `routing.cloud_fallback` is not set"
        ],
        "{err}"
    );
}

#[test]
fn the_api_key_help_names_the_providers_variable_and_never_the_key() {
    let secret = "sk-live-0123456789abcdef";
    for (provider, var) in [
        ("anthropic", "ANTHROPIC_API_KEY"),
        ("openai", "OPENAI_API_KEY"),
        ("gemini", "GEMINI_API_KEY"),
        ("groq", "GROQ_API_KEY"),
        ("together", "TOGETHER_API_KEY"),
        ("openrouter", "OPENROUTER_API_KEY"),
        ("\"Mistral AI\"", "MISTRAL_AI_API_KEY"),
        ("deep-seek.v3", "DEEP_SEEK_V3_API_KEY"),
    ] {
        let (code, err) = validate(&with_cloud(&format!(
            "{{ provider: {provider}, model: m, api_key: \"{secret}\" }}"
        )));
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(&format!(
                "help: remove it, rotate the key, and write `api_key_env: {var}` (the name of the environment variable that holds the key) instead; then `export {var}=…` where fleet runs"
            )),
            "{provider}: {err}"
        );
        assert!(!err.contains(secret), "the key is echoed: {err}");
        assert!(!err.contains("missing the required key"), "{err}");
        for other in [
            "ANTHROPIC",
            "OPENAI",
            "GEMINI",
            "GROQ",
            "TOGETHER",
            "OPENROUTER",
        ] {
            if !var.starts_with(other) {
                assert!(
                    !err.contains(&format!("{other}_API_KEY")),
                    "{provider}: {err}"
                );
            }
        }
    }
    // A variable's name written under `api_key`: rename the key.
    let (_, err) = validate(&with_cloud(
        "{ provider: groq, model: m, api_key: GROQ_API_KEY }",
    ));
    assert!(
        err.contains("rename `api_key` to `api_key_env` (e.g. `api_key_env: GROQ_API_KEY`)"),
        "{err}"
    );
}

#[test]
fn init_counts_files_in_the_singular_and_the_plural() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = fleet(dir.path())
        .args(["init", "f", "--non-interactive"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // The scaffold and the fleet CA (tls/ca.pem).
    assert!(err.contains(" (11 files)"), "{err}");
    // The scaffold's roles and playbook are there: only the inventory is written again.
    std::fs::remove_dir_all(dir.path().join("f/inventory")).expect("rm");
    let out = fleet(dir.path())
        .args(["init", "f", "--non-interactive"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(" (1 file)"), "{err}");
    // And validate counts its one playbook as one.
    fleet(&dir.path().join("f"))
        .arg("validate")
        .assert()
        .code(0)
        .stdout(predicates::str::contains(", 1 playbook, "));
}

/// A repo whose HQ (and one node) are under `.invalid`.
fn unresolvable() -> tempfile::TempDir {
    build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "dns",
            "--- inventory/fleet.yaml\nfleet: { name: test, hq: hq1, hq_url: \"http://hq.fleet-test.invalid:8765\" }\nvars: { app_dir: /opt/app }\nnodes:\n  hq1: { host: hq1.fleet-test.invalid, role: hq, models: [\"small:1b\"] }\nrouting:\n  rules:\n    - { task: classify, model: \"small:1b\" }\n",
        ),
    )
}

const HQ_DNS: &str = "cannot resolve host `hq.fleet-test.invalid`";

#[test]
fn check_names_a_host_that_does_not_resolve() {
    let repo = unresolvable();
    let out = fleet(repo.path())
        .args(["check", "--json", "--timeout", "5s"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let hq = v["hq"]["detail"].as_str().expect("detail");
    assert!(hq.starts_with(HQ_DNS), "{v}");
    let node = &v["nodes"][0];
    let ssh = node["checks"]["ssh"]["detail"].as_str().expect("detail");
    assert!(
        ssh.starts_with("cannot resolve host `hq1.fleet-test.invalid`"),
        "{v}"
    );
    assert!(
        node["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .any(|r| r
                .as_str()
                .is_some_and(|r| r.contains(&format!("does not answer ({HQ_DNS}")))),
        "{v}"
    );
    // The dashboard says the same.
    let out = fleet(repo.path())
        .args(["check", "--timeout", "5s"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("HQ unreachable ({HQ_DNS}")),
        "{text}"
    );
}

#[test]
fn render_route_and_agent_name_a_host_that_does_not_resolve() {
    let repo = unresolvable();
    let out_dir = tempfile::tempdir().expect("tmp");
    let out = fleet(repo.path())
        .args(["render", "--live", "--out"])
        .arg(out_dir.path())
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "HQ is not reachable (http://hq.fleet-test.invalid:8765/api/nodes: {HQ_DNS}"
        )),
        "{err}"
    );

    let out = fleet(repo.path())
        .args(["route", "classify"])
        .output()
        .expect("runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains(HQ_DNS), "{all}");

    let token = repo.path().join("token");
    std::fs::write(&token, "t0ken").expect("token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let out = fleet(repo.path())
        .args([
            "agent",
            "--hq",
            "http://hq.fleet-test.invalid:8765",
            "--node",
            "hq1",
            "--token-file",
        ])
        .arg(&token)
        .args(["--once", "--ollama-url", "http://127.0.0.1:9"])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "error: http://hq.fleet-test.invalid:8765/api/heartbeat: {HQ_DNS}"
        )),
        "{err}"
    );
    assert!(!err.contains("connection refused or unreachable"), "{err}");
}
