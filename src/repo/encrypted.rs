//! Encrypted files read at load time, in memory: `*.yaml.age` variables files (in
//! `group_vars/`, `host_vars/` and a play's `vars_files`) and `secrets/*.age`. Every value
//! they hold is secret-typed (as if written `{ secret: true, value: … }`) and remembered, so
//! every printer shows `***`; the plain text is never written anywhere.
//!
//! A file that cannot be decrypted is an error naming it (exit 2 before anything runs);
//! under `fleet validate` a missing identity is a warning instead ([`set_lenient`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::error::{Diagnostic, Diagnostics, Loc};
use crate::repo::shown;
use crate::spec::decode::{Decoder, VarMap};
use crate::spec::yaml::{Node, Value};
use crate::vault::Locked;

/// `fleet validate` reads a repo without the identity as far as it can.
static LENIENT: AtomicBool = AtomicBool::new(false);

/// How many encrypted files stayed locked under [`set_lenient`].
static SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// The number of encrypted files that could not be read for want of an identity (only
/// counted under [`set_lenient`]): what they define is unknown.
pub fn skipped() -> usize {
    SKIPPED.load(Ordering::Relaxed)
}

/// A missing identity becomes a warning (`fleet validate`), not an error.
pub fn set_lenient(on: bool) {
    LENIENT.store(on, Ordering::Relaxed);
}

/// The diagnostic for a file that stays locked.
fn locked(file: &std::sync::Arc<str>, why: &Locked) -> Diagnostic {
    let msg = format!("cannot decrypt this file: {why}");
    let d = if *why == Locked::NoIdentity && LENIENT.load(Ordering::Relaxed) {
        SKIPPED.fetch_add(1, Ordering::Relaxed);
        Diagnostic::warning(
            Loc::file_start(file),
            format!("{msg}; its variables are not checked (and are unknown to what uses them)"),
        )
    } else {
        Diagnostic::error(Loc::file_start(file), msg)
    };
    d.with_help(why.help())
}

/// Decrypts a file to text, or records why it cannot be.
fn decrypt_text(path: &Path, diags: &mut Diagnostics) -> Option<String> {
    let file = shown(path);
    match crate::vault::decrypt_file(path) {
        Ok(bytes) => match String::from_utf8(bytes.expose().clone()) {
            Ok(t) => Some(t),
            Err(_) => {
                diags.push(Diagnostic::error(
                    Loc::file_start(&file),
                    "the decrypted file is not UTF-8 text",
                ));
                None
            }
        },
        Err(why) => {
            diags.push(locked(&file, &why));
            None
        }
    }
}

/// `node` as a variable written `{ secret: true, value: node }`.
fn secret_node(node: Node) -> Node {
    let loc = node.loc.clone();
    let scalar = |text: &str, plain: bool| Node {
        value: Value::Scalar {
            text: text.to_string(),
            plain,
        },
        loc: loc.clone(),
    };
    Node {
        value: Value::Map(vec![
            (scalar("secret", true), scalar("true", true)),
            (scalar("value", true), node),
        ]),
        loc: loc.clone(),
    }
}

/// The variables of an encrypted YAML file, each secret. A parse error keeps its place but
/// not the parser's words, which may quote the secret text.
pub fn read_vars(path: &Path, d: &mut Decoder, diags: &mut Diagnostics) -> VarMap {
    let Some(text) = decrypt_text(path, diags) else {
        return VarMap::new();
    };
    let file = shown(path);
    let node = match crate::spec::yaml::parse(&file, &text) {
        Ok(n) => n,
        Err(e) => {
            diags.push(
                Diagnostic::error(
                    e.loc,
                    "the decrypted file is not valid YAML (the parser's message is not shown: it may quote the secret)",
                )
                .with_help(format!("fix it with `fleet secret edit {file}`")),
            );
            return VarMap::new();
        }
    };
    // Known before anything can quote them.
    crate::inventory::vars::remember_strings(&node.to_json());
    if node.as_map().is_none() && !node.is_null() {
        diags.push(Diagnostic::error(
            node.loc.clone(),
            format!("variables file `{file}`: expected a mapping of variable names to values"),
        ));
        return VarMap::new();
    }
    d.vars(&node, &format!("variables file `{file}`"))
        .into_iter()
        .map(|(k, v)| {
            // Already `{ secret: …, value: … }`: its value is secret all the same.
            let v = match crate::inventory::vars::secret_var(&v) {
                Some((inner, _)) => inner.clone(),
                None => v,
            };
            (k, secret_node(v))
        })
        .collect()
}

/// `secrets/NAME.age` files: the `secrets` variable, `{NAME: text}`, secret as a whole.
/// `None` when the repo has none.
pub fn secrets_dir(root: &Path, diags: &mut Diagnostics) -> Option<(String, Node)> {
    let dir = root.join("secrets");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && crate::vault::is_encrypted(p))
        .collect();
    if files.is_empty() {
        return None;
    }
    files.sort();
    let file = shown(&dir);
    let loc = Loc::file_start(&file);
    let mut entries = Vec::new();
    for p in files {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".age").to_string())
            .unwrap_or_default();
        if !crate::spec::decode::is_identifier(&name) {
            diags.push(
                Diagnostic::error(
                    Loc::file_start(&shown(&p)),
                    format!("secret `{name}`: its name is not an identifier"),
                )
                .with_help("name it so templates can use it: `secrets/NAME.age` is `{{ secrets.NAME }}` (letters, digits, `_`)"),
            );
            continue;
        }
        let Some(text) = decrypt_text(&p, diags) else {
            continue;
        };
        crate::secret::remember(&text);
        let at = Loc::file_start(&shown(&p));
        let scalar = |t: &str, plain: bool, loc: &Loc| Node {
            value: Value::Scalar {
                text: t.to_string(),
                plain,
            },
            loc: loc.clone(),
        };
        entries.push((scalar(&name, true, &at), scalar(&text, false, &at)));
    }
    Some((
        "secrets".to_string(),
        secret_node(Node {
            value: Value::Map(entries),
            loc,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_wrapped_as_secret() {
        let n = crate::spec::yaml::parse(&"f".into(), "a: 1\nb: { secret: true, value: x }\n")
            .expect("yaml");
        let w = secret_node(n.get("a").expect("a").clone());
        let (inner, secret) = crate::inventory::vars::secret_var(&w).expect("wrapped");
        assert!(secret);
        assert_eq!(inner.to_json(), serde_json::json!(1));
    }
}
