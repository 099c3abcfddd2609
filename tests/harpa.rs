//! The `browser` role force-installs the HARPA AI extension (and any extra extensions)
//! through Chrome's managed policies, on a Linux test host (Chrome's and Chromium's policy
//! directories) and on a host that answers like a Mac (`/Library/Managed Preferences`):
//! files valid, root-owned 0644, `--check` predicting exactly the real run, a second run
//! changing nothing; a bad extension ID stops `fleet validate` and `fleet apply` before any
//! host is touched.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use support::{Hosts, build_repo, crate_root, fleet, parse_case};

const HARPA: &str =
    "eanggfilgoajaocelnaflolkadkeghjp;https://clients2.google.com/service/update2/crx";
const PLIST: &str = "/Library/Managed Preferences/com.google.Chrome.plist";

/// A repo with the shipped `browser` role (its templates are built into fleet, as for a repo
/// `fleet init` made), and `playbooks/browser.yaml` running it on `n1`.
fn browser_repo(inventory: &str) -> tempfile::TempDir {
    let r = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "harpa",
            &format!(
                "--- inventory/fleet.yaml\n{inventory}--- playbooks/browser.yaml\n- name: a browser node\n  hosts: n1\n  roles: [browser]\n"
            ),
        ),
    );
    let role = r.path().join("roles/browser");
    std::fs::create_dir_all(&role).expect("role dir");
    std::fs::copy(
        crate_root().join("roles/browser/role.yaml"),
        role.join("role.yaml"),
    )
    .expect("role");
    r
}

fn apply(repo: &Path, args: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    support::apply_json(repo, "playbooks/browser.yaml", args)
}

fn changed(events: &[serde_json::Value]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e["status"] == "changed")
        .map(|e| {
            format!(
                "{} | {}",
                e["task"].as_str().unwrap_or(""),
                e["item"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `--check`, the real run (the same changes, `expect`), and a second run changing nothing.
fn converge(repo: &Path, expect: &[&str]) {
    let (code, check, err) = apply(repo, &["--check"]);
    assert_eq!(code, 0, "{err}\n{check:?}");
    let (code, real, err) = apply(repo, &[]);
    assert_eq!(code, 0, "{err}\n{real:?}");
    assert_eq!(
        changed(&check),
        changed(&real),
        "--check predicted other changes"
    );
    assert_eq!(changed(&real), set(expect));
    let (code, again, err) = apply(repo, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        changed(&again).is_empty(),
        "second run changed {:?}",
        changed(&again)
    );
    let (_, check_again, _) = apply(repo, &["--check"]);
    assert!(changed(&check_again).is_empty());
}

/// The forcelist of a JSON policy file on host 1.
fn json_forcelist(hosts: &Hosts, path: &str) -> Vec<String> {
    let text = hosts.sh(1, &format!("cat {path}"));
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {text}"));
    assert_eq!(
        v.as_object().map(|o| o.len()),
        Some(1),
        "only the forcelist: {text}"
    );
    v["ExtensionInstallForcelist"]
        .as_array()
        .unwrap_or_else(|| panic!("no ExtensionInstallForcelist list: {text}"))
        .iter()
        .map(|e| e.as_str().expect("a string").to_string())
        .collect()
}

#[test]
fn linux_browser_nodes_get_harpa_through_chrome_and_chromium_policies() {
    let hosts = Hosts::up(1);
    hosts.install_standins(1);
    let inv = |vars: &str| {
        format!(
            "fleet: {{ name: t, hq: n1, hq_url: \"http://127.0.0.1:1\", ssh_config: \"{}\" }}\nvars: {{ app_dir: /opt/app, fleet_user: root{vars} }}\nnodes:\n  n1: {{ host: 127.0.0.1, role: common, hardware: {{ os: linux, arch: x86_64, ram_gb: 8 }}, vars: {{ ssh_port: {} }} }}\n",
            hosts.ssh_config().display(),
            hosts.port(1)
        )
    };
    let r = browser_repo(&inv(""));
    let chrome = "/etc/opt/chrome/policies/managed";
    let chromium = "/etc/chromium/policies/managed";
    // A stale, world-writable policy file of ours is replaced, with its mode fixed.
    hosts.sh(
        1,
        &format!("mkdir -p {chromium} && echo '{{}}' > {chromium}/fleet-extensions.json && chmod 666 {chromium}/fleet-extensions.json"),
    );
    converge(
        r.path(),
        &[
            "install Chromium (apt) | ",
            "browser profile directory | ",
            &format!("Chrome policy directories | {chrome}"),
            &format!("force-install HARPA (Chrome policy) | {chrome}"),
            &format!("force-install HARPA (Chrome policy) | {chromium}"),
        ],
    );
    for dir in [chrome, chromium] {
        let file = format!("{dir}/fleet-extensions.json");
        assert_eq!(json_forcelist(&hosts, &file), vec![HARPA.to_string()]);
        assert_eq!(
            hosts.sh(1, &format!("stat -c '%a %U %G' {dir} {file}")),
            "755 root root\n644 root root\n"
        );
        let left = hosts.sh(1, &format!("ls -a {dir}"));
        assert_eq!(
            left, ".\n..\nfleet-extensions.json\n",
            "no temporary files left behind"
        );
    }

    // Extra extensions, and another update URL: only the two policy files change.
    let extra = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbp";
    let own = "ccccccccccccccccccccccccccccccca;https://ext.example/updates.xml";
    std::fs::write(
        r.path().join("inventory/fleet.yaml"),
        inv(&format!(
            ", harpa_update_url: \"https://harpa.example/crx\", browser_extensions: [{extra}, \"{own}\"]"
        )),
    )
    .expect("inventory");
    converge(
        r.path(),
        &[
            &format!("force-install HARPA (Chrome policy) | {chrome}"),
            &format!("force-install HARPA (Chrome policy) | {chromium}"),
        ],
    );
    assert_eq!(
        json_forcelist(&hosts, &format!("{chromium}/fleet-extensions.json")),
        vec![
            "eanggfilgoajaocelnaflolkadkeghjp;https://harpa.example/crx".to_string(),
            extra.to_string(),
            own.to_string()
        ]
    );
    // Without HARPA: the extra extensions only.
    std::fs::write(
        r.path().join("inventory/fleet.yaml"),
        inv(&format!(", harpa: false, browser_extensions: [{extra}]")),
    )
    .expect("inventory");
    converge(
        r.path(),
        &[
            &format!("force-install HARPA (Chrome policy) | {chrome}"),
            &format!("force-install HARPA (Chrome policy) | {chromium}"),
        ],
    );
    assert_eq!(
        json_forcelist(&hosts, &format!("{chrome}/fleet-extensions.json")),
        vec![extra.to_string()]
    );
}

#[test]
fn a_bad_extension_id_stops_validate_and_apply_before_any_host_is_touched() {
    let hosts = Hosts::up(1);
    let inv = |vars: &str| {
        format!(
            "fleet: {{ name: t, hq: n1, hq_url: \"http://127.0.0.1:1\", ssh_config: \"{}\" }}\nvars: {{ app_dir: /opt/app, fleet_user: root{vars} }}\nnodes:\n  n1: {{ host: 127.0.0.1, role: common, hardware: {{ os: linux, arch: x86_64, ram_gb: 8 }}, vars: {{ ssh_port: {} }} }}\n",
            hosts.ssh_config().display(),
            hosts.port(1)
        )
    };
    for (vars, bad) in [
        // An uppercase letter, a letter past `p`, 31 letters, a non-string, a non-list.
        (
            ", harpa_extension_id: Eanggfilgoajaocelnaflolkadkeghjp",
            "\"Eanggfilgoajaocelnaflolkadkeghjp\"",
        ),
        (
            ", browser_extensions: [\"zbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb;https://x.example/u\"]",
            "\"zbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb;https://x.example/u\"",
        ),
        (
            ", browser_extensions: [bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb]",
            "\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"",
        ),
        (
            ", browser_extensions: [{ id: x }]",
            "browser extension {\"id\": \"x\"} is not an extension ID (32 letters a-p",
        ),
        (
            ", browser_extensions: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            "browser_extensions must be a list",
        ),
    ] {
        let r = browser_repo(&inv(vars));
        let out = fleet(r.path()).arg("validate").output().expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{vars}: {err}");
        assert!(
            err.contains("<built-in>/browser/extensions-policy.json.j2:1:1: error")
                && err.contains(bad),
            "{vars}: {err}"
        );
        let (code, ev, err) = apply(r.path(), &[]);
        assert_eq!(code, 2, "{vars}: {err}");
        assert!(ev.is_empty(), "{ev:?}");
        assert!(err.contains(bad), "{err}");
    }
    // The test host's /etc starts as the machine's, which has /etc/chromium once
    // install-test-deps installed Chromium (the dashboard test): fleet's own writes are what
    // must be absent.
    assert_eq!(
        hosts.sh(
            1,
            "ls /etc/opt/chrome /etc/chromium/policies /var/lib/fleet 2>&1 | grep -c 'No such file'"
        ),
        "3\n",
        "nothing was touched"
    );
}

/// A host that answers like a Mac (as tests/macos.rs makes one): Darwin `uname`, `sw_vers`,
/// Homebrew under /opt/homebrew, a private /Library, an admin user with passwordless sudo.
fn a_mac() -> Hosts {
    support::ensure_tool("sudo", "sudo");
    let hosts = Hosts::up_with(1, &["Library", "Users"]);
    hosts.sh(
        1,
        "useradd -m -s /bin/sh -p '*' symphony && mkdir -p /home/symphony/.ssh && cp /root/.ssh/authorized_keys /home/symphony/.ssh/ && chown -R symphony: /home/symphony/.ssh && chmod 700 /home/symphony/.ssh && mkdir -p /etc/sudoers.d && echo 'symphony ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/symphony && chmod 440 /etc/sudoers.d/symphony",
    );
    for (src, dest) in [
        ("tests/standins/macos/uname", "/usr/local/bin/uname"),
        ("tests/standins/macos/sw_vers", "/usr/local/bin/sw_vers"),
        ("tests/standins/macos/launchctl", "/usr/local/bin/launchctl"),
        ("tests/standins/macos/brew", "/opt/homebrew/bin/brew"),
    ] {
        hosts.install(1, src, dest);
    }
    hosts.sh(1, "chown -R symphony: /opt/homebrew");
    hosts
}

#[test]
fn mac_browser_nodes_get_harpa_through_managed_preferences() {
    let hosts = a_mac();
    let inv = |vars: &str| {
        format!(
            "fleet: {{ name: t, hq: n1, hq_url: \"http://127.0.0.1:1\", ssh_config: \"{}\" }}\nvars: {{ ssh_user: symphony, fleet_user: symphony{vars} }}\nnodes:\n  n1: {{ host: 127.0.0.1, role: common, hardware: {{ os: macos, arch: aarch64, ram_gb: 8 }}, vars: {{ ssh_port: {} }} }}\n",
            hosts.ssh_config().display(),
            hosts.port(1)
        )
    };
    let r = browser_repo(&inv(""));
    converge(
        r.path(),
        &[
            "install Google Chrome (Homebrew cask) | ",
            "browser profile directory | ",
            "managed preferences directory | ",
            "force-install HARPA (Chrome managed preferences) | ",
        ],
    );
    assert_eq!(
        hosts.sh(
            1,
            &format!("stat -c '%a %U' '/Library/Managed Preferences' '{PLIST}'")
        ),
        "755 root\n644 root\n"
    );
    let forcelist = || {
        // plistlib when the host has Python (it has: /usr is shared with this machine).
        hosts
            .sh(
                1,
                &format!(
                    "python3 -c 'import plistlib, sys; p = plistlib.load(open(sys.argv[1], \"rb\")); assert list(p) == [\"ExtensionInstallForcelist\"], p; print(\"\\n\".join(p[\"ExtensionInstallForcelist\"]))' '{PLIST}'"
                ),
            )
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(forcelist(), vec![HARPA.to_string()]);
    let text = hosts.sh(1, &format!("cat '{PLIST}'"));
    assert!(
        text.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist"),
        "{text}"
    );
    assert_eq!(
        hosts.sh(1, "ls -a '/Library/Managed Preferences'"),
        ".\n..\ncom.google.Chrome.plist\n"
    );

    // An extension hosted elsewhere, with characters XML must escape in its update URL.
    let own = "ccccccccccccccccccccccccccccccca;https://ext.example/u.xml?a=1&b=<2>";
    std::fs::write(
        r.path().join("inventory/fleet.yaml"),
        inv(&format!(", browser_extensions: [\"{own}\"]")),
    )
    .expect("inventory");
    converge(
        r.path(),
        &["force-install HARPA (Chrome managed preferences) | "],
    );
    assert_eq!(forcelist(), vec![HARPA.to_string(), own.to_string()]);
}
