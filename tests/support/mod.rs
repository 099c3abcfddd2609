//! Helpers shared by the integration tests: scratch fleet repos built from a base plus an
//! overlay, and the real `fleet` binary.
#![allow(dead_code)]

pub mod chat;
pub mod cloud;
pub mod hq_fleet;
pub mod mac;
pub mod ollama;

use std::path::{Path, PathBuf};

/// The crate's root (the example fleet repo).
pub fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies a directory tree.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A `.case` file: expected lines, and files that replace (or with `@delete`, remove)
/// files of the base repo.
#[derive(Debug)]
pub struct Case {
    pub name: String,
    pub expect: Vec<String>,
    pub files: Vec<(String, String)>,
}

pub fn parse_case(name: &str, text: &str) -> Case {
    let mut expect = Vec::new();
    let mut files: Vec<(String, String)> = Vec::new();
    for line in text.split_inclusive('\n') {
        if let Some(path) = line.strip_prefix("--- ") {
            files.push((path.trim().to_string(), String::new()));
        } else if let Some((_, body)) = files.last_mut() {
            body.push_str(line);
        } else if let Some(e) = line.strip_prefix("# expect: ") {
            expect.push(e.trim_end_matches('\n').to_string());
        }
    }
    Case {
        name: name.to_string(),
        expect,
        files,
    }
}

/// Builds a scratch repo: the base, then the case's files.
pub fn build_repo(base: &Path, case: &Case) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(base, dir.path());
    for (rel, body) in &case.files {
        let p = dir.path().join(rel);
        if body.trim() == "@delete" {
            std::fs::remove_file(&p).expect("delete");
            continue;
        }
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, body).expect("write");
    }
    dir
}

/// The `fleet` binary under test, run in `dir` with colors off.
pub fn fleet(dir: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("fleet").expect("binary");
    c.current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("FLEET_REPO");
    c
}

/// Makes sure a command-line tool a test needs is installed: installs the Debian package
/// when running as root with apt-get (as CI does), else fails with what to install.
pub fn ensure_tool(tool: &str, package: &str) {
    let have = |t: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if have(tool) {
        return;
    }
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root && have("apt-get") {
        let status = std::process::Command::new("sh")
            .args(["-c", &format!("(apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 {package} >/dev/null")])
            .status()
            .expect("apt-get runs");
        assert!(status.success(), "apt-get install {package} failed");
    }
    assert!(
        have(tool),
        "this test needs `{tool}` (Debian package `{package}`); run scripts/install-test-deps"
    );
}

/// A tiny HTTP server on loopback that answers every request with one JSON body; returns
/// its base URL. It serves until the test process ends.
pub fn json_server(body: String) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                body.len(),
                body
            );
            let _ = s.write_all(resp.as_bytes());
        }
    });
    format!("http://{addr}")
}

/// A free TCP port on 127.0.0.1 (bound, then released for the caller to use).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A small HTTP server on loopback: `routes` maps a path to a JSON body; other paths get 404.
pub fn http_routes(routes: Vec<(&'static str, String)>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 8192];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (code, body) = match routes.iter().find(|(p, _)| *p == path) {
                Some((_, b)) => ("200 OK", b.clone()),
                None => ("404 Not Found", "{\"error\":\"not found\"}".to_string()),
            };
            let resp = format!(
                "HTTP/1.1 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                body.len(),
                body
            );
            let _ = s.write_all(resp.as_bytes());
        }
    });
    format!("http://{addr}")
}

/// A `fleet` child process that is killed when dropped.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the `fleet` binary with arguments, in `dir`, output to `log`.
pub fn spawn_fleet(dir: &Path, args: &[&str], log: &Path) -> Child {
    let f = std::fs::File::create(log).expect("log");
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("fleet"));
    if args.first() == Some(&"serve") {
        // HQ keeps the conductor's routing table under `~/.symphony/` by default (the hq
        // role's `conductor_routing_file`): the test's directory, not the tester's home.
        cmd.env("HOME", dir);
    }
    let child = cmd
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdout(f.try_clone().expect("clone"))
        .stderr(f)
        .spawn()
        .expect("spawn fleet");
    Child(child)
}

/// Polls `check` every 20 ms until it returns Some, or panics after `secs` with `what`.
pub fn wait_for<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A minimal blocking HTTP/1.1 request (connection: close); returns status and body.
pub fn http(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<&[u8]>,
) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or("http only")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = std::net::TcpStream::connect(host).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    if let Some(t) = bearer {
        req.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or(b"");
    if method == "POST" {
        req.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    s.write_all(body).map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let code: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // Chunked bodies (axum streams some answers): join the chunks.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        return Ok((code, out));
    }
    Ok((code, body.to_string()))
}

/// A port that accepts connections and never answers (a black-holed service).
pub fn black_hole() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    port
}

/// A webhook receiver: returns its URL and the bodies it received.
pub fn webhook() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut data = Vec::new();
            let mut buf = [0u8; 65536];
            // Read headers, then exactly content-length bytes of body.
            loop {
                let n = s.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&data).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        sink.lock().expect("lock").push(body[..len].to_string());
                        break;
                    }
                }
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (format!("http://{addr}/hook"), got)
}

/// Real sshd test hosts from `tests/hosts/fleet-hosts` (root, namespaces); stopped on drop.
pub struct Hosts {
    /// Their state directory (ssh_config, key, per-host overlays).
    pub dir: tempfile::TempDir,
    /// Port of host K is `base + K`.
    pub base: u16,
}

impl Hosts {
    /// Starts `n` hosts.
    pub fn up(n: u16) -> Hosts {
        Hosts::up_with(n, &[])
    }

    /// Starts `n` hosts with extra private top-level directories (e.g. macOS' `Library`).
    pub fn up_with(n: u16, private_dirs: &[&str]) -> Hosts {
        let dir = tempfile::Builder::new()
            .prefix("fh")
            .tempdir_in("/tmp")
            .expect("tmp");
        // A base whose n ports are free now.
        let base = loop {
            let b = free_port().saturating_sub(n + 1);
            if (1..=n).all(|k| std::net::TcpListener::bind(("127.0.0.1", b + k)).is_ok())
                && b > 1024
            {
                break b;
            }
        };
        let out = std::process::Command::new(crate_root().join("tests/hosts/fleet-hosts"))
            .args(["up", &n.to_string(), "--dir"])
            .arg(dir.path())
            .args(["--port-base", &base.to_string()])
            .args(if private_dirs.is_empty() {
                Vec::new()
            } else {
                vec!["--private-dirs".to_string(), private_dirs.join(" ")]
            })
            .output()
            .expect("fleet-hosts runs");
        assert!(
            out.status.success(),
            "fleet-hosts up failed (needs root):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Hosts { dir, base }
    }

    /// The ssh config file.
    pub fn ssh_config(&self) -> std::path::PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// Port of host `k`.
    pub fn port(&self, k: u16) -> u16 {
        self.base + k
    }

    /// Runs a shell command on host `k` with the system ssh; returns stdout.
    pub fn sh(&self, k: u16, cmd: &str) -> String {
        let out = std::process::Command::new("ssh")
            .arg("-F")
            .arg(self.ssh_config())
            .arg(format!("host{k}"))
            .arg(cmd)
            .output()
            .expect("ssh");
        assert!(
            out.status.success(),
            "ssh host{k} {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kills host `k`'s sshd and everything running in it.
    pub fn kill(&self, k: u16) {
        std::process::Command::new(crate_root().join("tests/hosts/fleet-hosts"))
            .args(["kill", &k.to_string(), "--dir"])
            .arg(self.dir.path())
            .status()
            .expect("kill");
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = std::process::Command::new(crate_root().join("tests/hosts/fleet-hosts"))
            .args(["down", "--dir"])
            .arg(self.dir.path())
            .status();
    }
}

impl Hosts {
    /// Copies `src` (relative to the crate) to `dest` on host `k`, executable.
    pub fn install(&self, k: u16, src: &str, dest: &str) {
        let text = std::fs::read(crate_root().join(src)).expect("stand-in");
        let q = fleet::script::shquote(dest);
        let mut child = std::process::Command::new("ssh")
            .arg("-F")
            .arg(self.ssh_config())
            .arg(format!("host{k}"))
            .arg(format!(
                "mkdir -p \"$(dirname {q})\" && cat > {q} && chmod 755 {q}"
            ))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("ssh");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&text)
            .expect("write");
        assert!(
            child.wait().expect("wait").success(),
            "installing {src} as {dest}"
        );
    }

    /// Copies the local file `src` to `dest` on host `k` (its directory created).
    pub fn copy_to(&self, k: u16, src: &Path, dest: &str) {
        use std::io::Write;
        let q = fleet::script::shquote(dest);
        let mut child = std::process::Command::new("ssh")
            .arg("-F")
            .arg(self.ssh_config())
            .arg(format!("host{k}"))
            .arg(format!("mkdir -p \"$(dirname {q})\" && cat > {q}"))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("ssh");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&std::fs::read(src).expect("read"))
            .expect("write");
        assert!(child.wait().expect("wait").success(), "copying to {dest}");
    }

    /// Puts the systemctl, apt-get and dpkg-query stand-ins on every host (in its private
    /// /usr/local/bin, ahead of /usr/bin) and makes facts see systemd.
    pub fn install_standins(&self, n: u16) {
        for k in 1..=n {
            for tool in ["systemctl", "apt-get", "dpkg-query"] {
                self.install(
                    k,
                    &format!("tests/standins/{tool}"),
                    &format!("/usr/local/bin/{tool}"),
                );
            }
            self.sh(k, "mkdir -p /run/systemd/system");
        }
    }
}

/// `fleet apply PLAYBOOK --json ARGS…` in `repo`: exit code, JSON events, stderr.
pub fn apply_json(
    repo: &Path,
    playbook: &str,
    args: &[&str],
) -> (i32, Vec<serde_json::Value>, String) {
    let out = fleet(repo)
        .args(["apply", playbook, "--json"])
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The identification line the SSH stand-ins send.
pub const SSH_BANNER: &str = "SSH-2.0-OpenSSH_9.6 fleet-test";

/// A port that answers as an SSH server does before key exchange (what `fleet check` reads):
/// every connection gets the `SSH-2.0-` identification line and is then held open.
pub fn ssh_banner() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    serve_ssh_banner(listener);
    port
}

/// Serves the SSH identification line on `listener` until the test process ends.
pub fn serve_ssh_banner(listener: std::net::TcpListener) {
    use std::io::Write;
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut s in listener.incoming().flatten() {
            let _ = s.write_all(format!("{SSH_BANNER}\r\n").as_bytes());
            held.push(s);
        }
    });
}

/// The client token `fleet serve` keeps for its repo in `.fleet/hq.token` (written before
/// it listens), for tests that read HQ's API.
pub fn hq_token(repo: &Path) -> String {
    std::fs::read_to_string(repo.join(".fleet/hq.token"))
        .expect("fleet serve writes .fleet/hq.token")
        .trim()
        .to_string()
}
