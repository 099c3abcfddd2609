//! The files of a worker catalog (`catalog/`) that its package manifests are rendered from:
//! found here, below the render module, so the repo can list them for roles that copy the
//! catalog (the hq role ships it to HQ, which serves the manifests).

use std::path::{Path, PathBuf};

/// Finds `worker.toml` files below `root`, sorted, skipping `target/`, hidden directories and
/// links to directories (a link back up would walk forever).
pub fn worker_files(root: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    let mut entries: Vec<(PathBuf, std::fs::FileType)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.path(), e.file_type().ok()?)))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, kind) in entries {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if kind.is_dir() {
            if !name.starts_with('.') && name != "target" {
                worker_files(&p, out);
            }
        } else if name == "worker.toml" {
            out.push(p);
        }
    }
}

/// Every file rendering reads, relative to `root`, sorted: each `worker.toml`, the
/// `Cargo.toml` beside it and in every directory above it up to `root` (the workspace's),
/// and `catalog.toml` at the root.
pub fn source_files(root: &Path) -> Vec<PathBuf> {
    let mut workers = Vec::new();
    worker_files(root, &mut workers);
    let mut out = std::collections::BTreeSet::new();
    for w in &workers {
        out.insert(w.clone());
        let mut dir = w.parent();
        while let Some(d) = dir {
            let cargo = d.join("Cargo.toml");
            if cargo.is_file() {
                out.insert(cargo);
            }
            if d == root {
                break;
            }
            dir = d.parent();
        }
    }
    let settings = root.join("catalog.toml");
    if settings.is_file() {
        out.insert(settings);
    }
    out.into_iter()
        .filter_map(|p| p.strip_prefix(root).ok().map(Path::to_path_buf))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_monorepo_needs_its_workers_their_crates_and_the_workspace() {
        let d = tempfile::tempdir().expect("tmp");
        let w = d.path().join("bin/a");
        std::fs::create_dir_all(&w).expect("mkdir");
        std::fs::create_dir_all(d.path().join("target/x")).expect("mkdir");
        for (p, t) in [
            ("Cargo.toml", "[workspace]"),
            ("catalog.toml", "repository = \"x\""),
            ("bin/a/Cargo.toml", "[package]"),
            ("bin/a/worker.toml", "[worker]"),
            ("bin/a/src.rs", ""),
            ("target/x/worker.toml", ""),
        ] {
            std::fs::write(d.path().join(p), t).expect("write");
        }
        std::os::unix::fs::symlink("..", w.join("up")).expect("link");
        let got: Vec<String> = source_files(d.path())
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            got,
            vec![
                "Cargo.toml",
                "bin/a/Cargo.toml",
                "bin/a/worker.toml",
                "catalog.toml"
            ]
        );
    }
}
