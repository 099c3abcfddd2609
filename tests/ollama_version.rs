//! `ollama_version` in the ollama role, end to end on real sshd test hosts. Linux: Ollama's
//! install script (a stand-in served by a real HTTP server, with a stand-in release API)
//! installs the Ollama stand-in at the version asked for; `""` installs once and never
//! touches it again, `latest` upgrades when the release API names a newer one, a pin replaces
//! another version up or down; each change restarts Ollama, `--check` predicts exactly, a
//! second run changes nothing, and a version that is not one is refused at its place. macOS
//! (the Mac-like host): `latest` is `brew upgrade`, a pin is refused with the reason.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use support::{Hosts, build_repo, crate_root, free_port, http, parse_case, wait_for};

fn changed(events: &[serde_json::Value]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e["status"] == "changed")
        .map(|e| e["task"].as_str().unwrap_or("").to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Serves the install-script stand-in at `/install.sh` (installing `latest` by default) and
/// `{"tag_name": "v<latest>"}` at `/releases/latest`; returns the base URL.
fn release_server(latest: Arc<Mutex<String>>) -> String {
    use std::io::{Read, Write};
    let script = std::fs::read_to_string(crate_root().join("tests/standins/ollama-install.sh"))
        .expect("install script stand-in");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 8192];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
            let v = latest.lock().expect("lock").clone();
            let (code, body) = match path.as_str() {
                "/install.sh" => ("200 OK", script.replace("@LATEST@", &v)),
                // As GitHub's API answers: pretty-printed, the tag with a `v`.
                "/releases/latest" => (
                    "200 OK",
                    format!(
                        "{{\n  \"url\": \"x\",\n  \"tag_name\": \"v{v}\",\n  \"name\": \"v{v}\"\n}}\n"
                    ),
                ),
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let _ = s.write_all(
                format!(
                    "HTTP/1.1 {code}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    format!("http://{addr}")
}

fn apply(repo: &Path, args: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    support::apply_json(repo, "playbooks/site.yaml", args)
}

/// `--check`, then the real run: both change `expect`; then a run that changes nothing.
fn three_ways(repo: &Path, args: &[&str], expect: &[&str]) {
    let check_args: Vec<&str> = args.iter().copied().chain(["--check"]).collect();
    let (code, check, err) = apply(repo, &check_args);
    assert_eq!(code, 0, "{err}\n{check:?}");
    let (code, real, err) = apply(repo, args);
    assert_eq!(code, 0, "{err}\n{real:?}");
    assert_eq!(changed(&real), set(expect), "{real:?}");
    assert_eq!(
        changed(&check),
        changed(&real),
        "--check predicted the real run"
    );
    let (code, again, err) = apply(repo, args);
    assert_eq!(code, 0, "{err}");
    assert!(
        changed(&again).is_empty(),
        "second run: {:?}",
        changed(&again)
    );
}

fn api_version(port: u16) -> Option<String> {
    let (_, body) = http(
        "GET",
        &format!("http://127.0.0.1:{port}/api/version"),
        None,
        None,
    )
    .ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["version"].as_str().map(str::to_string)
}

fn repo_for(inv: &str) -> tempfile::TempDir {
    let r = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "ollama",
            &format!(
                "--- inventory/fleet.yaml\n{inv}--- playbooks/site.yaml\n- name: Ollama\n  hosts: n1\n  roles: [ollama]\n"
            ),
        ),
    );
    let to = r.path().join("roles/ollama");
    std::fs::create_dir_all(&to).expect("role dir");
    std::fs::copy(
        crate_root().join("roles/ollama/role.yaml"),
        to.join("role.yaml"),
    )
    .expect("role");
    r
}

#[test]
fn linux_installs_pins_and_upgrades_ollama_with_its_install_script() {
    let hosts = Hosts::up(1);
    hosts.install_standins(1);
    hosts.install(1, "tests/standins/ollama", "/usr/local/lib/standins/ollama");
    hosts.sh(
        1,
        "useradd -r -s /bin/false -U -m -d /var/lib/ollama ollama",
    );
    let latest = Arc::new(Mutex::new("0.6.1".to_string()));
    let base = release_server(latest.clone());
    let port = free_port();
    let inv = format!(
        "fleet: {{ name: t, hq: n1, hq_url: \"http://127.0.0.1:1\", ssh_config: \"{cfg}\" }}\nvars: {{ ollama_bind: 127.0.0.1, ollama_install_url: \"{base}/install.sh\", ollama_release_url: \"{base}/releases/latest\" }}\nnodes:\n  n1: {{ host: 127.0.0.1, role: ollama, hardware: {{ os: linux, arch: x86_64, ram_gb: 16 }}, vars: {{ ssh_port: {ssh}, ollama_port: {port} }} }}\n",
        cfg = hosts.ssh_config().display(),
        ssh = hosts.port(1),
    );
    let r = repo_for(&inv);
    let installed = || {
        hosts
            .sh(1, "/usr/local/bin/ollama --version")
            .trim()
            .to_string()
    };
    let installs = || hosts.sh(1, "cat /var/log/ollama-install.log 2>/dev/null || true");

    // "": installed when missing (the installer's newest), with fleet's unit, not the installer's.
    three_ways(
        r.path(),
        &[],
        &[
            "install Ollama (Linux installer)",
            "Ollama systemd unit",
            "start Ollama",
            "restart ollama",
        ],
    );
    assert_eq!(installed(), "ollama version is 0.6.1");
    assert_eq!(installs(), "install 0.6.1\n");
    let unit = hosts.sh(1, "cat /etc/systemd/system/ollama.service");
    assert!(!unit.contains("(installer)"), "{unit}");

    // A newer release: "" leaves the installed one alone.
    *latest.lock().expect("lock") = "0.7.0".into();
    three_ways(r.path(), &[], &[]);
    assert_eq!(installed(), "ollama version is 0.6.1");

    // latest: upgraded to what the release API names, Ollama restarted on it, and the
    // installer's unit does not stay (fleet's is put back, so that task changes nothing).
    three_ways(
        r.path(),
        &["-e", "ollama_version=latest"],
        &["install Ollama (Linux installer)", "restart ollama"],
    );
    assert_eq!(installed(), "ollama version is 0.7.0");
    assert_eq!(api_version(port).as_deref(), Some("0.7.0"));
    assert_eq!(hosts.sh(1, "cat /etc/systemd/system/ollama.service"), unit);

    // A pin: down to exactly it, then up again to another.
    for (pin, answer) in [("0.5.7", "0.5.7"), ("v0.6.0-rc2", "0.6.0-rc2")] {
        three_ways(
            r.path(),
            &["-e", &format!("ollama_version={pin}")],
            &["install Ollama (Linux installer)", "restart ollama"],
        );
        assert_eq!(installed(), format!("ollama version is {answer}"));
        wait_for(20, "Ollama to answer with the pinned version", || {
            (api_version(port)? == answer).then_some(())
        });
    }
    // latest from a release candidate newer than nothing released: 0.7.0 is newer, upgraded.
    three_ways(
        r.path(),
        &["-e", "ollama_version=latest"],
        &["install Ollama (Linux installer)", "restart ollama"],
    );
    assert_eq!(
        installs(),
        "install 0.6.1\ninstall 0.7.0\ninstall 0.5.7\ninstall 0.6.0-rc2\ninstall 0.7.0\n"
    );

    // Not a version: refused at its place before anything runs.
    let (code, ev, err) = apply(r.path(), &["-e", "ollama_version=0.7.0;touch /tmp/x"]);
    assert_eq!(code, 2, "{err}\n{ev:?}");
    assert!(
        err.contains("roles/ollama/role.yaml:")
            && err.contains(
                "`version`: expected \"\" (install when missing), `latest`, or a version"
            ),
        "{err}"
    );
    assert!(ev.iter().all(|e| e["event"] != "task"), "{ev:?}");
}

#[test]
fn macos_upgrades_ollama_with_homebrew_and_refuses_a_pin() {
    let hosts = support::mac::a_mac();
    let port = free_port();
    let inv = format!(
        "fleet: {{ name: t, hq: n1, hq_url: \"http://127.0.0.1:1\", ssh_config: \"{cfg}\" }}\nvars: {{ ssh_user: symphony, fleet_user: symphony, ollama_bind: 127.0.0.1 }}\nnodes:\n  n1: {{ host: 127.0.0.1, role: ollama, hardware: {{ cpu: apple_silicon, os: macos, arch: aarch64, ram_gb: 24 }}, vars: {{ ssh_port: {ssh}, ollama_port: {port} }} }}\n",
        cfg = hosts.ssh_config().display(),
        ssh = hosts.port(1),
    );
    let r = repo_for(&inv);
    three_ways(
        r.path(),
        &[],
        &[
            "install Ollama (Homebrew)",
            "Ollama launchd daemon",
            "start Ollama",
            "restart ollama",
        ],
    );
    assert_eq!(api_version(port).as_deref(), Some("0.5.7"));

    // Homebrew's index names a newer ollama: "" keeps the installed one, latest upgrades.
    hosts.sh(
        1,
        "mkdir -p /opt/homebrew/.standin/available && echo 0.7.0 > /opt/homebrew/.standin/available/ollama",
    );
    three_ways(r.path(), &[], &[]);
    three_ways(
        r.path(),
        &["-e", "ollama_version=latest"],
        &["upgrade Ollama (Homebrew)", "restart ollama"],
    );
    wait_for(20, "Ollama to answer as 0.7.0", || {
        (api_version(port)? == "0.7.0").then_some(())
    });
    let brew = hosts.sh(1, "cat /opt/homebrew/.standin/brew.log");
    assert!(brew.contains("brew install ollama"), "{brew}");

    // A pin: Homebrew has no versioned ollama formula, refused when planned.
    let (code, ev, err) = apply(r.path(), &["-e", "ollama_version=0.5.7"]);
    assert_eq!(code, 2, "{err}\n{ev:?}");
    assert!(
        err.contains("roles/ollama/role.yaml:")
            && err.contains("Homebrew has no versioned ollama formula"),
        "{err}"
    );
}
