//! The broken-input corpus: every `tests/corpus/cases/*.case` is a small change to a valid
//! base repo. `fleet validate` must exit 2, print each expected line exactly (location,
//! message, help), and never panic.

mod support;

use support::{build_repo, crate_root, fleet, parse_case};

#[test]
fn base_repo_is_valid() {
    let base = crate_root().join("tests/corpus/base");
    let out = fleet(&base).arg("validate").output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn every_broken_input_is_reported_exactly() {
    let base = crate_root().join("tests/corpus/base");
    let mut dir: Vec<_> = std::fs::read_dir(crate_root().join("tests/corpus/cases"))
        .expect("cases")
        .map(|e| e.expect("entry").path())
        .collect();
    dir.sort();
    assert!(
        dir.len() >= 25,
        "the corpus must hold at least 25 cases, found {}",
        dir.len()
    );
    let mut failures = Vec::new();
    for path in dir {
        let name = path
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .to_string();
        let case = parse_case(&name, &std::fs::read_to_string(&path).expect("read"));
        assert!(!case.expect.is_empty(), "{name}: no `# expect:` line");
        let repo = build_repo(&base, &case);
        let out = fleet(repo.path()).arg("validate").output().expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let lines: Vec<&str> = stderr.lines().collect();
        let mut problems = Vec::new();
        if out.status.code() != Some(2) {
            problems.push(format!("exit code {:?}, expected 2", out.status.code()));
        }
        if stderr.contains("panicked") {
            problems.push("panicked".to_string());
        }
        for e in &case.expect {
            if !lines.contains(&e.as_str()) {
                problems.push(format!("missing line: {e}"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "== {name}\n{}\n-- stderr:\n{stderr}",
                problems.join("\n")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
