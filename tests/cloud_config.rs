//! `routing.cloud_fallback` as an ordered list, `routing.cost`, `max_concurrent_api` and
//! `prices` through the real binary: `validate` accepts them and warns about spend it could
//! not count, `render` keeps the table's `cloud` (the first provider) for conductors that know
//! one and adds `cloud_providers`, `route` names the chain, and no key is ever printed.

mod support;

use support::{build_repo, crate_root, fleet, parse_case};

const INVENTORY: &str = "--- inventory/fleet.yaml\nfleet: { name: test, hq: hq1, hq_url: \"http://hq1.lan:8765\" }\nvars: { app_dir: /opt/app }\nnodes:\n  hq1: { host: hq1.lan, address: 10.0.0.1, role: hq, models: [\"small:1b\"] }\nrouting:\n  cloud_fallback:\n    - { provider: groq, model: llama-3.1-8b-instant, api_key_env: FLEET_TEST_GROQ_KEY }\n    - { provider: anthropic, model: claude-3-5-haiku-latest, api_key_file: .fleet/anthropic.key }\n    - { provider: local-vllm, model: qwen3, api_key_env: FLEET_TEST_VLLM_KEY, base_url: \"http://127.0.0.1:8000/v1\" }\n  cost: { max_daily_spend: 5, warn_at: 4 }\n  max_concurrent_api: 4\n  prices:\n    \"groq/llama-3.1-8b-instan\": { input: 0.05, output: 0.08 }\n  rules:\n    - { task: classify, model: \"small:1b\", fallback: [cloud_api] }\n";

const CANARY: &str = "sk-canary-config-51c0ffee";

fn repo() -> tempfile::TempDir {
    let dir = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case("cloud", INVENTORY),
    );
    std::fs::create_dir_all(dir.path().join(".fleet")).expect("mkdir");
    std::fs::write(
        dir.path().join(".fleet/anthropic.key"),
        format!("{CANARY}\n"),
    )
    .expect("key");
    dir
}

#[test]
fn an_ordered_cloud_fallback_validates_renders_and_routes() {
    let dir = repo();
    let out = fleet(dir.path())
        .env("FLEET_TEST_GROQ_KEY", CANARY)
        .arg("validate")
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    // The custom provider has no price, and the inventory's price has a typo: both said,
    // where they are written.
    assert!(
        err.contains("inventory/fleet.yaml:9:7: warning: no price is known for `local-vllm/qwen3`: its spend cannot count against `routing.cost`"),
        "{err}"
    );
    assert!(
        err.contains("inventory/fleet.yaml:13:5: warning: a price for `groq/llama-3.1-8b-instan`, which no `routing.cloud_fallback` entry uses")
            && err.contains("groq/llama-3.1-8b-instant"),
        "{err}"
    );

    let generated = tempfile::tempdir().expect("dir");
    let out = fleet(dir.path())
        .args(["render", "routing", "--out"])
        .arg(generated.path())
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(generated.path().join("routing/openclaw_workers.json"))
        .expect("table");
    assert!(!text.contains(CANARY));
    let table: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        table["cloud"],
        serde_json::json!({ "name": "cloud_api", "kind": "cloud", "provider": "groq", "model": "llama-3.1-8b-instant", "api_key_env": "FLEET_TEST_GROQ_KEY" })
    );
    let providers: Vec<&str> = table["cloud_providers"]
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["provider"].as_str().expect("provider"))
        .collect();
    assert_eq!(providers, ["groq", "anthropic", "local-vllm"]);
    assert_eq!(
        table["cloud_providers"][1]["api_key_file"],
        ".fleet/anthropic.key"
    );
    assert_eq!(
        table["cloud_providers"][2]["base_url"],
        "http://127.0.0.1:8000/v1"
    );
    assert_eq!(
        table["rules"][0]["fallback"],
        serde_json::json!(["cloud_api"])
    );

    let out = fleet(dir.path())
        .args(["route", "classify", "--offline"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cloud_api (groq llama-3.1-8b-instant, key from $FLEET_TEST_GROQ_KEY; then anthropic claude-3-5-haiku-latest, key from .fleet/anthropic.key; then local-vllm qwen3, key from $FLEET_TEST_VLLM_KEY)"),
        "{text}"
    );
}

#[test]
fn bad_cloud_settings_fail_validate_with_located_errors_and_no_key() {
    let dir = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "bad",
            &INVENTORY
                .replace(
                    "api_key_file: .fleet/anthropic.key",
                    &format!("api_key: {CANARY}"),
                )
                .replace("max_concurrent_api: 4", "max_concurrent_api: many")
                .replace("warn_at: 4", "warn_at: 6"),
        ),
    );
    let out = fleet(dir.path()).arg("validate").output().expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for expected in [
        "inventory/fleet.yaml:8:62: error: a literal API key in the inventory (`api_key`)",
        "inventory/fleet.yaml:10:40: error: `routing.cost.warn_at` (6) is above `max_daily_spend` (5)",
        "inventory/fleet.yaml:11:23: error: `routing.max_concurrent_api`: expected a whole number ≥ 0, found the string `many`",
    ] {
        assert!(err.contains(expected), "missing {expected}\n{err}");
    }
    assert!(!err.contains(CANARY), "{err}");
}
