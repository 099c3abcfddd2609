//! The fuzzer's findings (`tests/fuzz-crashes/`, see docs/fuzzing.md), replayed with the real
//! binary: each must now end in time with a status scripts can use (0, 1, 2), no panic or
//! abort, and every error it reports located at a line that exists in an existing file.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{copy_tree, crate_root};

fn check_locations(repo: &Path, output: &str) -> Result<(), String> {
    for line in output.lines() {
        let Some((place, _)) = line.split_once(": error: ") else {
            continue;
        };
        let mut parts = place.rsplitn(3, ':');
        let (Some(_col), Some(l), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("an error without a place: {line}"));
        };
        let Ok(l) = l.parse::<usize>() else {
            return Err(format!("not a line number: {line}"));
        };
        let text = std::fs::read_to_string(repo.join(file))
            .map_err(|e| format!("{line}: the file it names: {e}"))?;
        if l == 0 || l > text.lines().count().max(1) {
            return Err(format!(
                "{line}: line {l} of a {}-line file",
                text.lines().count()
            ));
        }
    }
    Ok(())
}

#[test]
fn every_fuzz_finding_now_ends_well() {
    let cases = crate_root().join("tests/fuzz-crashes");
    let mut failures = Vec::new();
    let mut n = 0;
    for entry in std::fs::read_dir(&cases).expect("cases") {
        let dir = entry.expect("entry").path();
        if !dir.join("setup").is_file() {
            continue;
        }
        n += 1;
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let repo = tempfile::tempdir().expect("tmp");
        for part in ["inventory", "roles", "playbooks", "templates"] {
            copy_tree(&crate_root().join(part), &repo.path().join(part));
        }
        let ok = std::process::Command::new("bash")
            .arg(dir.join("setup"))
            .current_dir(repo.path())
            .status()
            .expect("setup");
        assert!(ok.success(), "{name}: setup failed");
        let command = std::fs::read_to_string(dir.join("command")).expect("command");
        let started = Instant::now();
        let out = std::process::Command::new("timeout")
            .arg("30")
            .arg(assert_cmd::cargo::cargo_bin("fleet"))
            .args(command.split_whitespace())
            .current_dir(repo.path())
            .env("NO_COLOR", "1")
            .output()
            .expect("fleet");
        let took = started.elapsed();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let code = out.status.code();
        if !matches!(code, Some(0..=2)) {
            failures.push(format!(
                "{name}: ended with {:?} after {took:?}\n{text}",
                out.status
            ));
        } else if took > Duration::from_secs(20) {
            failures.push(format!("{name}: took {took:?}"));
        } else if text.contains("panicked") {
            failures.push(format!("{name}: {text}"));
        } else if let Err(e) = check_locations(repo.path(), &text) {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(n >= 8, "the reproducers are missing: {n}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
