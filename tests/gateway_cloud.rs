//! The gateway's cloud fallback with real processes: `fleet serve`, an agent, an Ollama chat
//! stand-in for the node, and the cloud-provider stand-in (tests/standins/cloud) playing
//! OpenAI-, Anthropic- and Gemini-shaped providers: cloud last and in order, translation,
//! cost in the ledger (surviving kill -9), the warn alert once, the daily cap (429), the
//! concurrency bound, and a canary key that never shows.

mod support;

use std::time::Duration;

use support::chat::Mode;
use support::cloud::CloudStandin;
use support::hq_fleet::{Fleet, Node, chat_body, request};
use support::{fleet, wait_for};

const KEY: &str = "sk-CANARY-7f3c9e1d5b2a48e6";

/// A fleet whose `chat` rule has one local worker (w1) and whose `big` rule's only worker (w9)
/// refuses connections, so its requests go to the cloud after one failed attempt; with the
/// providers given (YAML list items) and routing settings.
fn fleet_with_cloud(providers: &str, extra: &str, serve: &[&str]) -> Fleet {
    let rules = format!(
        "    - {{ task: chat, model: m:8b }}\n    - {{ task: big, model: big:70b }}\n  cloud_fallback:\n{providers}{extra}"
    );
    Fleet::new(
        &[
            Node {
                name: "w1",
                priority: 90,
                max_concurrent: 2,
                models: &["m:8b"],
            },
            Node {
                name: "w9",
                priority: 50,
                max_concurrent: 8,
                models: &["big:70b"],
            },
        ],
        &["w9"],
        &rules,
        &[&["--breaker-failures", "1000"], serve].concat(),
    )
}

fn key_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("key");
    std::fs::write(&path, format!("{KEY}\n")).expect("key");
    let shown = path.display().to_string();
    (dir, shown)
}

/// $1 per token, so costs are token counts.
const DOLLAR_A_TOKEN: &str = "  prices:\n    \"openai/gpt-4o-mini\": { input: 1000000, output: 1000000 }\n    \"anthropic/claude-3-5-haiku-latest\": { input: 1000000, output: 1000000 }\n    \"gemini/gemini-2.0-flash\": { input: 1000000, output: 1000000 }\n";

fn spend(f: &Fleet) -> serde_json::Value {
    let out = fleet(f.repo.path())
        .args(["spend", "--json"])
        .output()
        .expect("spend");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn the_cloud_comes_last_in_order_translated_and_costed() {
    let cloud = CloudStandin::start(&["--key", KEY, "--reply", "cloud says hi"]);
    let (_k, key) = key_file();
    let providers = format!(
        "    - {{ provider: anthropic, model: claude-3-5-haiku-latest, api_key_file: {key}, base_url: \"{a}\" }}\n    - {{ provider: gemini, model: gemini-2.0-flash, api_key_file: {key}, base_url: \"{g}\" }}\n",
        a = cloud.base_url("anthropic"),
        g = cloud.base_url("gemini"),
    );
    let f = fleet_with_cloud(&providers, DOLLAR_A_TOKEN, &[]);
    // A local worker first: nothing goes to the cloud.
    let a = f.chat("task:chat", false);
    assert_eq!((a.status, a.header("x-fleet-worker")), (200, "w1"));
    assert_eq!(a.header("x-fleet-cost-usd"), "");
    assert!(cloud.requests().is_empty());
    // The local worker failing: the first provider, in OpenAI's shape, with its cost.
    f.stand_ins["w1"].set(Mode::Status(500));
    let a = f.chat("task:chat", false);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        (a.header("x-fleet-worker"), a.header("x-fleet-attempts")),
        ("cloud:anthropic", "2")
    );
    let v = a.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "cloud says hi");
    let usage = (
        v["usage"]["prompt_tokens"].as_u64().expect("in"),
        v["usage"]["completion_tokens"].as_u64().expect("out"),
    );
    let cost: f64 = a.header("x-fleet-cost-usd").parse().expect("cost header");
    assert_eq!(cost, (usage.0 + usage.1) as f64, "$1 a token");
    let sent = cloud.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["path"], "/v1/messages");
    assert_eq!(sent[0]["body"]["model"], "claude-3-5-haiku-latest");
    // The first provider failing: the second.
    cloud.control(
        serde_json::json!({"mode": "status", "status": 529, "path": "/v1/messages", "count": 1}),
    );
    let a = f.chat("task:big", false);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        (a.header("x-fleet-worker"), a.header("x-fleet-attempts")),
        ("cloud:gemini", "3"),
        "w9, anthropic, gemini"
    );
    // A translated stream: OpenAI chunks, [DONE] last.
    let a = f.chat("task:big", true);
    assert_eq!(
        (a.status, a.header("x-fleet-worker")),
        (200, "cloud:anthropic")
    );
    assert!(
        a.complete && a.body.ends_with("data: [DONE]\n\n"),
        "{}",
        a.body
    );
    let text: String = a
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "cloud says hi");
    // The ledger has every cloud answer, by provider.
    let s = spend(&f);
    assert_eq!(s["today"]["total"]["requests"], 3);
    assert!(
        s["today"]["by_provider"]["anthropic"]["usd"]
            .as_f64()
            .expect("usd")
            > 0.0
    );
    assert_eq!(s["today"]["by_provider"]["gemini"]["requests"], 1);
    assert_eq!(s["today"]["by_client"]["ci"]["requests"], 3);
}

#[test]
fn the_cap_warns_once_then_blocks_the_cloud_and_survives_kill_9() {
    let cloud = CloudStandin::start(&["--key", KEY, "--reply", "one two three four five"]);
    let (_k, key) = key_file();
    let (hook, posts) = support::webhook();
    let providers = format!(
        "    - {{ provider: openai, model: gpt-4o-mini, api_key_file: {key}, base_url: \"{}\" }}\n",
        cloud.base_url("openai")
    );
    // Each answer costs (prompt words + 5) dollars: a few requests reach the warning, then the cap.
    let extra = format!("{DOLLAR_A_TOKEN}  cost: {{ max_daily_spend: 20, warn_at: 10 }}\n");
    let mut f = fleet_with_cloud(&providers, &extra, &["--webhook-url", &hook]);
    let mut total = 0.0;
    let mut capped = None;
    for _ in 0..10 {
        let a = f.chat("task:big", false);
        if a.status == 429 {
            capped = Some(a);
            break;
        }
        assert_eq!(a.status, 200, "{}", a.body);
        total += a.header("x-fleet-cost-usd").parse::<f64>().expect("cost");
    }
    let capped = capped.expect("the cap stops the cloud");
    assert!(total >= 20.0, "spent {total} before the cap");
    let e = capped.json();
    assert_eq!(e["error"]["code"], "spend_cap_reached");
    assert!(
        e["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("max_daily_spend $20.00"),
        "{e}"
    );
    let before = cloud.requests().len();
    // The warning went out once, in the alert's format.
    wait_for(10, "the spend warning", || {
        (!posts.lock().expect("lock").is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let got = posts.lock().expect("lock").clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let alert: serde_json::Value = serde_json::from_str(&got[0]).expect("json");
    assert!(
        alert["text"]
            .as_str()
            .expect("text")
            .contains("reached warn_at $10.00 (cap $20.00)"),
        "{alert}"
    );
    // A local worker still answers under the cap.
    assert_eq!(f.chat("task:chat", false).header("x-fleet-worker"), "w1");
    // ... but when it cannot, the cap is the answer: 429, nothing sent to the cloud.
    f.stand_ins["w1"].set(Mode::Status(500));
    let a = f.chat("task:chat", false);
    assert_eq!(a.status, 429, "{}", a.body);
    assert_eq!(cloud.requests().len(), before);
    // kill -9: the ledger is on disk; the cap still holds and the warning is not sent again.
    f.restart_hq();
    f.wait_in_gateway("w1", "online");
    let s = spend(&f);
    assert_eq!(s["today"]["total"]["usd"].as_f64(), Some(total));
    assert_eq!(f.chat("task:big", false).status, 429);
    assert_eq!(cloud.requests().len(), before);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(posts.lock().expect("lock").len(), 1);
}

#[test]
fn max_concurrent_api_bounds_cloud_calls() {
    let cloud = CloudStandin::start(&["--key", KEY, "--latency", "0.3"]);
    let (_k, key) = key_file();
    let providers = format!(
        "    - {{ provider: openai, model: gpt-4o-mini, api_key_file: {key}, base_url: \"{}\" }}\n",
        cloud.base_url("openai")
    );
    let f = fleet_with_cloud(&providers, "  max_concurrent_api: 2\n", &[]);
    let url = format!("{}/v1/chat/completions", f.url);
    let handles: Vec<_> = (0..12)
        .map(|_| {
            let (url, token) = (url.clone(), f.client.clone());
            std::thread::spawn(move || {
                request(
                    "POST",
                    &url,
                    Some(&token),
                    &chat_body("task:big", false, "x"),
                )
                .status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&200) && statuses.contains(&503),
        "{statuses:?}"
    );
    let (_, stats) =
        support::http("GET", &format!("{}/_stats", cloud.url), None, None).expect("stats");
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("json");
    assert!(
        stats["max_in_flight"].as_u64().expect("max") <= 2,
        "{stats}"
    );
}

#[test]
fn a_canary_key_never_shows() {
    let cloud = CloudStandin::start(&["--key", "the-right-key"]);
    let (_k, key) = key_file();
    let providers = format!(
        "    - {{ provider: openai, model: gpt-4o-mini, api_key_file: {key}, base_url: \"{}\" }}\n",
        cloud.base_url("openai")
    );
    let f = fleet_with_cloud(&providers, "", &[]);
    // The provider refuses the key and quotes it in its error, as careless providers do.
    let a = f.chat("task:big", false);
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(
        !a.body.contains(KEY) && !a.body.contains("7f3c9e1d"),
        "{}",
        a.body
    );
    let sent = cloud.requests();
    assert_eq!(
        sent[0]["headers"]["authorization"],
        format!("Bearer {KEY}"),
        "the key was sent"
    );
    let mut seen = vec![("serve log", f.log())];
    for cmd in [
        &["status", "--json"][..],
        &["peers", "--json"],
        &["spend", "--json"],
        &["route", "big", "--json"],
    ] {
        let out = fleet(f.repo.path()).args(cmd).output().expect("run");
        seen.push((
            cmd[0],
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    let scrape = {
        let out = fleet(f.repo.path())
            .args(["token", "issue", "--scrape", "prom", "--db"])
            .arg(&f.db)
            .output()
            .expect("issue");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    seen.push((
        "metrics",
        request("GET", &format!("{}/metrics", f.url), Some(&scrape), b"").body,
    ));
    seen.push((
        "api/gateway",
        request(
            "GET",
            &format!("{}/api/gateway", f.url),
            Some(&f.client),
            b"",
        )
        .body,
    ));
    seen.push((
        "api/routing",
        request(
            "GET",
            &format!("{}/api/routing", f.url),
            Some(&f.client),
            b"",
        )
        .body,
    ));
    for (what, text) in seen {
        assert!(
            !text.contains(KEY) && !text.contains("7f3c9e1d"),
            "the key in {what}: {text}"
        );
    }
}
