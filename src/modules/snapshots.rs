//! The script each module builds, for fixed arguments and facts, as insta snapshots: a change
//! to what runs on hosts shows in review. Hostile values show how they are bound as data.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value as J, json};

use crate::facts::Facts;
use crate::modules::{Action, ArgError, ArgReader, FileContent, Files, Inputs};

struct Fixed;

impl Files for Fixed {
    fn template(&self, src: &str, _: &[(&str, J)]) -> Result<FileContent, ArgError> {
        Ok(FileContent {
            bytes: Arc::from(format!("rendered {src}\nport = 8080\n").into_bytes()),
            secret: false,
        })
    }
    fn repo_file(&self, src: &str) -> Result<Vec<u8>, ArgError> {
        if src.ends_with(".tar") {
            // A small archive: a directory, a file, a link.
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, "app/", &b""[..]).expect("dir");
            let mut h = tar::Header::new_gnu();
            h.set_size(3);
            b.append_data(&mut h, "app/run", &b"hi\n"[..])
                .expect("file");
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "app/cur", "run").expect("link");
            return Ok(b.into_inner().expect("tar"));
        }
        Ok(format!("file {src}\n").into_bytes())
    }
    fn repo_root(&self) -> &Path {
        Path::new("/repo")
    }
    fn var(&self, _: &str) -> Option<J> {
        None
    }
}

fn action(module: &str, args: J) -> Box<dyn Action> {
    let m = crate::modules::lookup(module).expect("module");
    let reader = ArgReader::new(m.spec().name, &args, &args);
    let inputs = Inputs {
        node: "h1",
        files: &Fixed,
    };
    m.bind(&reader, &inputs).expect("arguments decode")
}

fn linux() -> Facts {
    Facts {
        os: Some("linux".into()),
        arch: Some("x86_64".into()),
        init: Some("systemd".into()),
        package_manager: Some("apt".into()),
        user: Some("root".into()),
        ..Facts::default()
    }
}

fn macos() -> Facts {
    Facts {
        os: Some("macos".into()),
        arch: Some("aarch64".into()),
        init: Some("launchd".into()),
        package_manager: Some("brew".into()),
        user: Some("admin".into()),
        ..Facts::default()
    }
}

fn script(module: &str, args: J, facts: &Facts) -> String {
    action(module, args)
        .script(facts)
        .expect("script")
        .script
        .text()
        .to_string()
}

const HOSTILE: &str = "x'$(touch /tmp/MARK)`id`\"\\\n;*";

#[test]
fn command_and_shell() {
    insta::assert_snapshot!(
        "command_words",
        script(
            "command",
            json!({ "cmd": "echo 'a b' c", "chdir": "/srv/app", "creates": "/srv/done" }),
            &linux()
        )
    );
    insta::assert_snapshot!(
        "command_argv_env",
        script(
            "command",
            json!({ "argv": ["printf", "%s", HOSTILE], "env": { "V": HOSTILE } }),
            &linux()
        )
    );
    insta::assert_snapshot!(
        "shell",
        script(
            "shell",
            json!({ "cmd": "echo hi | wc -c", "removes": HOSTILE }),
            &linux()
        )
    );
}

#[test]
fn files() {
    insta::assert_snapshot!(
        "copy_inline",
        script(
            "copy",
            json!({ "content": HOSTILE, "dest": "/etc/app/x.conf", "mode": "0640", "owner": "app", "group": "app" }),
            &linux()
        )
    );
    let big = "y".repeat(crate::modules::place::INLINE_MAX + 1);
    let a = action(
        "copy",
        json!({ "content": big, "dest": "/srv/big", "mode": "0755" }),
    );
    let first = a.script(&linux()).expect("script");
    assert!(first.stdin.is_none());
    insta::assert_snapshot!("copy_large_compare", first.script.text());
    let reported = crate::modules::Reported {
        more: true,
        ..Default::default()
    };
    let second = a
        .followup(&linux(), &reported)
        .expect("followup")
        .expect("a transfer");
    assert_eq!(second.stdin.as_deref().map(<[u8]>::len), Some(big.len()));
    insta::assert_snapshot!("copy_large_transfer", second.script.text());
    insta::assert_snapshot!(
        "template",
        script(
            "template",
            json!({ "src": "app.j2", "dest": "/etc/app.conf" }),
            &linux()
        )
    );
    for state in ["file", "directory", "link", "absent", "touch"] {
        insta::assert_snapshot!(
            format!("file_{state}"),
            script(
                "file",
                json!({ "path": format!("/srv/{HOSTILE}"), "state": state, "src": HOSTILE, "mode": "0750", "owner": "1000" }),
                &linux()
            )
        );
    }
    insta::assert_snapshot!(
        "lineinfile",
        script(
            "lineinfile",
            json!({ "path": "/etc/environment", "regexp": "^OLLAMA_HOST=", "line": "OLLAMA_HOST=0.0.0.0", "create": true, "mode": "0644" }),
            &linux()
        )
    );
    insta::assert_snapshot!(
        "get_url",
        script(
            "get_url",
            json!({ "url": "https://example.com/a?b=$(id)", "dest": "/usr/local/bin/tool", "sha256": "a".repeat(64), "mode": "0755" }),
            &linux()
        )
    );
}

#[test]
fn packages_services_users() {
    insta::assert_snapshot!(
        "package_apt",
        script(
            "package",
            json!({ "name": ["docker.io", "python@3.12"], "update_cache": true }),
            &linux()
        )
    );
    insta::assert_snapshot!(
        "package_brew_latest",
        script(
            "package",
            json!({ "name": "ollama", "state": "latest" }),
            &macos()
        )
    );
    insta::assert_snapshot!(
        "service_systemd",
        script(
            "service",
            json!({ "name": "ollama", "state": "started", "enabled": true }),
            &linux()
        )
    );
    insta::assert_snapshot!(
        "service_launchd",
        script(
            "service",
            json!({ "name": "com.fleet.ollama", "state": "restarted", "enabled": false }),
            &macos()
        )
    );
    insta::assert_snapshot!(
        "user",
        script(
            "user",
            json!({ "name": "ollama", "system": true, "home": "/var/lib/ollama", "shell": "/usr/sbin/nologin", "groups": ["video", "render"] }),
            &linux()
        )
    );
}

#[test]
fn network() {
    insta::assert_snapshot!(
        "wait_for_port",
        script(
            "wait_for",
            json!({ "host": "10.0.0.2", "port": 11434, "timeout": "30s" }),
            &linux()
        )
    );
    insta::assert_snapshot!(
        "wait_for_url",
        script(
            "wait_for",
            json!({ "url": "http://127.0.0.1:11434/api/version" }),
            &linux()
        )
    );
    // The version reaches the installer as data; a hostile URL path stays one word.
    insta::assert_snapshot!(
        "ollama_install_pin",
        script(
            "ollama_install",
            json!({ "version": "0.5.7", "install_url": "http://10.0.0.1:8000/install.sh?x=$(id)" }),
            &linux()
        )
    );
    // No binary on the controller for this source: check mode compares with the node's file.
    insta::assert_snapshot!(
        "fleet_hq_binary",
        script(
            "fleet_hq_binary",
            json!({ "url": "https://10.0.0.1:8765/healthz", "path": format!("/opt/{HOSTILE}"), "ca": "/etc/fleet/ca.pem", "source": "/nonexistent/fleet", "timeout": "20s" }),
            &linux()
        )
    );
    insta::assert_snapshot!(
        "http",
        script(
            "http",
            json!({ "url": "http://127.0.0.1:8765/api", "method": "POST", "body": { "a": HOSTILE }, "headers": { "X-A": "@/etc/passwd" }, "status": 201 }),
            &linux()
        )
    );
    insta::assert_snapshot!(
        "ollama_model",
        script(
            "ollama_model",
            json!({ "name": "llama3.1:8b", "url": "http://127.0.0.1:11434/" }),
            &linux()
        )
    );
}

#[test]
fn ansible_favourites() {
    insta::assert_snapshot!(
        "git",
        script(
            "git",
            json!({ "repo": "file:///srv/repo.git", "dest": "/opt/app", "version": "v1.2", "depth": 1 }),
            &linux()
        )
    );
    let a = action("unarchive", json!({ "src": "app.tar", "dest": "/opt/app" }));
    insta::assert_snapshot!(
        "unarchive_compare",
        a.script(&linux()).expect("script").script.text()
    );
    let more = crate::modules::Reported {
        more: true,
        ..Default::default()
    };
    let second = a
        .followup(&linux(), &more)
        .expect("followup")
        .expect("a transfer");
    assert!(second.stdin.is_some());
    insta::assert_snapshot!("unarchive_transfer", second.script.text());
    insta::assert_snapshot!(
        "unarchive_remote",
        script(
            "unarchive",
            json!({ "src": "/srv/app.tar.gz", "dest": "/opt/app", "remote_src": true, "creates": HOSTILE }),
            &linux()
        )
    );
    insta::assert_snapshot!(
        "cron",
        script(
            "cron",
            json!({ "name": HOSTILE.replace('\n', " "), "job": HOSTILE.replace('\n', " "), "minute": "*/5", "hour": 3, "user": "app" }),
            &linux()
        )
    );
    insta::assert_snapshot!(
        "authorized_key",
        script(
            "authorized_key",
            json!({ "user": "app", "key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINLmsPu4QhDy2LXaWCxuBN4bcZAg5M8FswK2snhyG7eu x'$(id)", "key_options": "no-pty,command=\"$(id) `x`\"", "exclusive": true }),
            &linux()
        )
    );
    insta::assert_snapshot!(
        "systemd_unit",
        script(
            "systemd_unit",
            json!({ "name": "ollama", "content": "[Service]\nExecStart=/usr/local/bin/ollama serve\n" }),
            &linux()
        )
    );
    insta::assert_snapshot!(
        "systemd_unit_absent",
        script(
            "systemd_unit",
            json!({ "name": "old.timer", "state": "absent" }),
            &linux()
        )
    );
    insta::assert_snapshot!(
        "systemd_daemon_reload",
        script("systemd_unit", json!({ "daemon_reload": true }), &linux())
    );
    insta::assert_snapshot!(
        "docker_container",
        script(
            "docker_container",
            json!({ "name": "web", "image": "nginx:1.27", "ports": ["8080:80", "127.0.0.1:8443:443"], "env": { "TOKEN": HOSTILE }, "volumes": ["/srv/www:/usr/share/nginx/html:ro"], "restart_policy": "unless-stopped", "command": ["nginx", "-g", "daemon off;"], "bind_address": "10.0.0.5" }),
            &linux()
        )
    );
    insta::assert_snapshot!(
        "docker_compose",
        script(
            "docker_compose",
            json!({ "project_src": "/srv/app", "files": ["compose.yaml", "compose.prod.yaml"], "project_name": "app", "pull": true }),
            &linux()
        )
    );
    insta::assert_snapshot!(
        "pip",
        script(
            "pip",
            json!({ "name": ["rich", "httpx>=0.27,<1"], "virtualenv": "/opt/tools/venv", "state": "latest", "find_links": "/srv/wheels" }),
            &linux()
        )
    );
    insta::assert_snapshot!(
        "uv",
        script(
            "uv",
            json!({ "name": "ruff", "state": "latest", "index_url": "https://pypi.example/simple" }),
            &linux()
        )
    );
    insta::assert_snapshot!(
        "sysctl",
        script(
            "sysctl",
            json!({ "name": "net.ipv4.ip_forward", "value": 1, "sysctl_file": "/etc/sysctl.d/60-net.conf" }),
            &linux()
        )
    );
}

#[test]
fn the_frame_around_units() {
    let a = action(
        "file",
        json!({ "path": "/srv/a", "state": "directory", "mode": "0755" }),
    );
    let b = action("copy", json!({ "content": "x\n", "dest": "/srv/a/x" }));
    let (sa, sb) = (
        a.script(&linux()).expect("a"),
        b.script(&linux()).expect("b"),
    );
    let units = [
        crate::script::frame::Unit {
            script: &sa.script,
            stat_path: sa.stat_path.as_deref(),
            ignore_errors: false,
            own_path: sa.own_path,
        },
        crate::script::frame::Unit {
            script: &sb.script,
            stat_path: sb.stat_path.as_deref(),
            ignore_errors: true,
            own_path: sb.own_path,
        },
    ];
    let text = crate::script::frame::compose(
        &units,
        crate::script::frame::Mode::default(),
        crate::script::frame::HostKind::default(),
        &crate::script::frame::Nonce::new(),
        false,
    )
    .text()
    .to_string();
    // The nonce is random: show it as a placeholder.
    let nonce = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("FN="))
        .unwrap_or("")
        .to_string();
    insta::assert_snapshot!("frame", text.replace(&nonce, "NONCE"));
}

#[test]
fn refused_values_are_typed_errors() {
    let m = crate::modules::lookup("package").expect("package");
    let args = json!({ "name": ["ok", "-oops"] });
    let shown = json!({ "name": "***" });
    let inputs = Inputs {
        node: "h1",
        files: &Fixed,
    };
    let e = m
        .bind(&ArgReader::new("package", &args, &shown), &inputs)
        .err()
        .expect("refused");
    assert_eq!(e.key, Some("name"));
    assert!(e.message.contains("`***` is not a package name"), "{e}");
}

#[test]
fn fleet_agent_from_a_release_url() {
    // A Mac whose binary comes from a release: downloaded on the node, checked, moved into
    // place; the URL (a hostile path) and the sum are bound as data.
    let sum = "ab".repeat(32);
    insta::assert_snapshot!(
        "fleet_agent_download",
        script(
            "fleet_agent",
            json!({
                "hq_url": "http://10.0.0.1:8765",
                "url": "https://example.com/$(id)/fleet-{os}-{arch}",
                "sha256": { "macos-arm64": sum },
                "token_source": "/nonexistent",
            }),
            &macos()
        )
    );
}
