//! Helpers shared by the integration tests: scratch fleet repos built from a base plus an
//! overlay, and the real `fleet` binary.
#![allow(dead_code)]

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
