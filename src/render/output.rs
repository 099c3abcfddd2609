//! A set of generated files: written atomically (only those whose contents change), or
//! compared with what is on disk for the `--check` drift gate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use similar::TextDiff;

use crate::error::Result;
use crate::util::{write_atomic, write_atomic_mode};

/// Files to generate, relative to the output directory, and the directories fleet owns
/// (where a file it no longer generates is stale).
#[derive(Debug, Default)]
pub struct Output {
    /// Relative path → contents.
    pub files: BTreeMap<PathBuf, String>,
    /// Directories whose every file fleet generates.
    pub owned_dirs: Vec<PathBuf>,
    /// The mode files are written with (default: the temporary file's, 0600); a release's
    /// files are read by everyone who downloads them.
    pub mode: Option<u32>,
}

/// How a file on disk differs from what would be rendered.
#[derive(Debug, PartialEq)]
pub enum Drift {
    /// Not on disk.
    Missing(PathBuf),
    /// On disk with other contents; a short unified diff.
    Differs(PathBuf, String),
    /// On disk in an owned directory, no longer generated.
    Stale(PathBuf),
}

/// What a write did to one file.
#[derive(Debug, PartialEq)]
pub enum Written {
    /// Created or replaced.
    Changed(PathBuf),
    /// Already had these contents.
    Unchanged(PathBuf),
    /// Removed as stale.
    Removed(PathBuf),
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

impl Output {
    fn stale(&self, out_dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for d in &self.owned_dirs {
            files_under(&out_dir.join(d), &mut found);
        }
        let mut stale: Vec<PathBuf> = found
            .into_iter()
            .filter_map(|p| p.strip_prefix(out_dir).ok().map(Path::to_path_buf))
            .filter(|rel| !self.files.contains_key(rel))
            .collect();
        stale.sort();
        stale
    }

    /// Compares with the files on disk; writes nothing.
    pub fn check(&self, out_dir: &Path) -> Vec<Drift> {
        let mut drift = Vec::new();
        for (rel, want) in &self.files {
            match std::fs::read_to_string(out_dir.join(rel)) {
                Err(_) => drift.push(Drift::Missing(rel.clone())),
                Ok(have) if &have != want => {
                    drift.push(Drift::Differs(rel.clone(), short_diff(&have, want, rel)))
                }
                Ok(_) => {}
            }
        }
        drift.extend(self.stale(out_dir).into_iter().map(Drift::Stale));
        drift
    }

    /// Writes every file whose contents change (atomically) and removes stale ones.
    pub fn write(&self, out_dir: &Path) -> Result<Vec<Written>> {
        let mut done = Vec::new();
        for (rel, want) in &self.files {
            let path = out_dir.join(rel);
            if std::fs::read_to_string(&path).is_ok_and(|have| &have == want) {
                done.push(Written::Unchanged(rel.clone()));
            } else {
                match self.mode {
                    Some(m) => write_atomic_mode(&path, want.as_bytes(), m)?,
                    None => write_atomic(&path, want.as_bytes())?,
                }
                done.push(Written::Changed(rel.clone()));
            }
        }
        for rel in self.stale(out_dir) {
            std::fs::remove_file(out_dir.join(&rel))
                .map_err(|e| crate::error::Error::io("remove", &out_dir.join(&rel), e))?;
            done.push(Written::Removed(rel));
        }
        Ok(done)
    }
}

/// A unified diff of at most 40 lines (committed → rendered).
pub fn short_diff(have: &str, want: &str, rel: &Path) -> String {
    let diff = TextDiff::from_lines(have, want);
    let text = diff
        .unified_diff()
        .context_radius(2)
        .header(
            &format!("committed/{}", rel.display()),
            &format!("rendered/{}", rel.display()),
        )
        .to_string();
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() > 40 {
        format!(
            "{}\n… ({} more)\n",
            lines[..40].join("\n"),
            crate::util::count((lines.len() - 40) as u64, "line", "lines")
        )
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_then_write_then_clean() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut out = Output::default();
        out.files.insert("pk/a".into(), "one\n".into());
        out.owned_dirs.push("pk".into());
        std::fs::create_dir_all(dir.path().join("pk")).expect("mkdir");
        std::fs::write(dir.path().join("pk/old"), "x").expect("write");
        let drift = out.check(dir.path());
        assert_eq!(
            drift,
            vec![Drift::Missing("pk/a".into()), Drift::Stale("pk/old".into())]
        );
        let w = out.write(dir.path()).expect("write");
        assert_eq!(
            w,
            vec![
                Written::Changed("pk/a".into()),
                Written::Removed("pk/old".into())
            ]
        );
        assert!(out.check(dir.path()).is_empty());
        assert_eq!(
            out.write(dir.path()).expect("write"),
            vec![Written::Unchanged("pk/a".into())]
        );
        std::fs::write(dir.path().join("pk/a"), "two\n").expect("edit");
        match &out.check(dir.path())[0] {
            Drift::Differs(_, d) => assert!(d.contains("-two") && d.contains("+one"), "{d}"),
            other => panic!("expected a diff, got {other:?}"),
        }
    }
}
