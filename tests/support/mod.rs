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
