//! The repo's recipients: `secrets/recipients.txt`, one age public key (`age1…`) a line, with
//! `#` comments. Every encrypted file of the repo is encrypted to all of them; it is in git,
//! so adding a person is a reviewed change.

use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where a repo lists its recipients.
pub fn path(root: &Path) -> PathBuf {
    root.join("secrets").join("recipients.txt")
}

/// The recipients of the repo; an error names the file and line (or says there are none).
pub fn load(root: &Path) -> Result<Vec<age::x25519::Recipient>, String> {
    let p = path(root);
    let shown = crate::repo::shown(&p);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "no recipients: `{shown}` does not exist\n  help: `fleet secret init` creates an identity and adds its recipient"
            ));
        }
        Err(e) => return Err(format!("cannot read `{shown}`: {e}")),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let word = line.split('#').next().unwrap_or("").trim();
        if word.is_empty() {
            continue;
        }
        let r = age::x25519::Recipient::from_str(word).map_err(|e| {
            format!(
                "{shown}:{}:1: `{word}` is not an age recipient (`age1…`): {e}",
                i + 1
            )
        })?;
        out.push(r);
    }
    if out.is_empty() {
        return Err(format!(
            "no recipients in `{shown}`\n  help: add an `age1…` public key a line, or run `fleet secret init`"
        ));
    }
    Ok(out)
}

/// Adds a recipient (with a comment line) unless the file lists it already; true when added.
pub fn add(root: &Path, recipient: &str, comment: &str) -> crate::error::Result<bool> {
    let p = path(root);
    let old = std::fs::read_to_string(&p).unwrap_or_default();
    if old
        .lines()
        .any(|l| l.split('#').next().unwrap_or("").trim() == recipient)
    {
        return Ok(false);
    }
    let mut text = if old.is_empty() {
        "# age recipients: every encrypted file of this repo is encrypted to each of them\n# (`fleet secret rekey` after a change)\n".to_string()
    } else {
        old
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("# {comment}\n{recipient}\n"));
    crate::util::write_atomic(&p, text.as_bytes())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_once_and_load_with_comments() {
        let d = tempfile::tempdir().expect("tmp");
        assert!(load(d.path()).expect_err("none").contains("does not exist"));
        let (_, public) = crate::vault::generate();
        assert!(add(d.path(), &public, "me").expect("adds"));
        assert!(!add(d.path(), &public, "me").expect("no-op"));
        assert_eq!(load(d.path()).expect("loads").len(), 1);
        std::fs::write(path(d.path()), "# c\nage1nope # bad\n").expect("w");
        let e = load(d.path()).expect_err("bad");
        assert!(
            e.contains("recipients.txt:2:1") && e.contains("age1nope"),
            "{e}"
        );
    }
}
