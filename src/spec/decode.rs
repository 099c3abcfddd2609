//! Helpers that turn YAML [`Node`]s into typed values while collecting every error,
//! each with its location, "expected X, found Y", and a "did you mean" for unknown keys.

use indexmap::IndexMap;

use crate::error::{Diagnostic, Diagnostics, Loc, did_you_mean};
use crate::spec::yaml::{Node, Resolved, Value};

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub loc: Loc,
}

impl<T> Spanned<T> {
    /// Pairs a value with a location.
    pub fn new(value: T, loc: Loc) -> Self {
        Spanned { value, loc }
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// Variables as written in a file: name → value (kept as a node so templates inside keep their location).
pub type VarMap = IndexMap<String, Node>;

/// Collects diagnostics while decoding one or more files.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Everything found so far.
    pub diags: Diagnostics,
    /// The modules a task may name (empty: files without tasks).
    pub modules: &'static [&'static crate::spec::module::ModuleSpec],
    /// Where `import_tasks`/`include_tasks` paths start: the role's `tasks/` or the
    /// playbook's directory (`None`: nothing to include from, e.g. an ad-hoc run).
    pub task_dir: Option<std::path::PathBuf>,
    /// The task files being read, outermost first (an include cycle is an error).
    pub task_files: Vec<std::path::PathBuf>,
}

impl Decoder {
    /// A decoder for files that hold tasks naming these modules.
    pub fn with_modules(modules: &'static [&'static crate::spec::module::ModuleSpec]) -> Decoder {
        Decoder {
            diags: Diagnostics::default(),
            modules,
            task_dir: None,
            task_files: Vec::new(),
        }
    }

    /// The module a task key names.
    pub fn module(&self, name: &str) -> Option<&'static crate::spec::module::ModuleSpec> {
        self.modules.iter().copied().find(|m| m.name == name)
    }

    fn module_names(&self) -> impl Iterator<Item = &'static str> + Clone {
        self.modules.iter().map(|m| m.name)
    }

    /// Names of the modules, for help lines.
    pub fn module_list(&self) -> String {
        self.module_names().collect::<Vec<_>>().join(", ")
    }

    /// "did you mean" for an unknown task key.
    pub fn suggest_task_key(&self, key: &str, common: &[&'static str]) -> Option<String> {
        did_you_mean(key, self.module_names().chain(common.iter().copied()))
    }
}

/// The fields of a mapping after the unknown-key check.
#[derive(Debug)]
pub struct Fields<'n> {
    entries: &'n [(Node, Node)],
    /// Where the mapping starts (for "missing key" errors).
    pub loc: Loc,
}

impl<'n> Fields<'n> {
    /// The value of a key, when present.
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.key_text() == key)
            .map(|(_, v)| v)
    }

    /// The key node of a key, when present.
    pub fn key(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.key_text() == key)
            .map(|(k, _)| k)
    }

    /// All entries in source order.
    pub fn entries(&self) -> &'n [(Node, Node)] {
        self.entries
    }
}

impl Decoder {
    /// Records an error.
    pub fn error(&mut self, loc: &Loc, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(loc.clone(), msg));
    }

    /// Records an error with advice.
    pub fn error_help(&mut self, loc: &Loc, msg: impl Into<String>, help: impl Into<String>) {
        self.diags
            .push(Diagnostic::error(loc.clone(), msg).with_help(help));
    }

    /// Records a ready-made diagnostic.
    pub fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// "expected X, found Y" at the node.
    pub fn expected(&mut self, node: &Node, what: &str, expected: &str) {
        self.error(
            &node.loc,
            format!("{what}: expected {expected}, found {}", node.describe()),
        );
    }

    /// A mapping's fields; unknown keys are errors with a "did you mean". Null reads as empty.
    pub fn fields<'n>(&mut self, node: &'n Node, what: &str, known: &[&str]) -> Option<Fields<'n>> {
        let entries: &'n [(Node, Node)] = match &node.value {
            Value::Map(m) => m,
            _ if node.is_null() => &[],
            _ => {
                self.expected(node, what, "a mapping");
                return None;
            }
        };
        for (k, _) in entries {
            let name = k.key_text();
            if !known.contains(&name) {
                let help = did_you_mean(name, known.iter().copied()).unwrap_or_else(|| {
                    format!(
                        "known keys here: {}",
                        known
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
                self.error_help(&k.loc, format!("unknown key `{name}` in {what}"), help);
            }
        }
        Some(Fields {
            entries,
            loc: node.loc.clone(),
        })
    }

    /// A mapping with free-form keys (node names, variables …); null reads as empty.
    pub fn map<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [(Node, Node)]> {
        match &node.value {
            Value::Map(m) => Some(m),
            _ if node.is_null() => Some(&[]),
            _ => {
                self.expected(node, what, "a mapping");
                None
            }
        }
    }

    /// A required key: an error naming it when missing.
    pub fn require<'n>(&mut self, f: &Fields<'n>, key: &str, what: &str) -> Option<&'n Node> {
        let v = f.get(key);
        if v.is_none() {
            self.error(
                &f.loc,
                format!("{what} is missing the required key `{key}`"),
            );
        }
        v
    }

    /// A string. Numbers and booleans written plain are rejected with a hint to quote them,
    /// so `version: 1.10` never silently becomes `1.1`.
    pub fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match node.resolve() {
            Some(Resolved::Str(s)) => Some(s.to_string()),
            Some(Resolved::Int(_) | Resolved::Float(_) | Resolved::Bool(_)) => {
                let text = node.key_text();
                self.error_help(
                    &node.loc,
                    format!("{what}: expected a string, found {}", node.describe()),
                    format!("quote it: \"{text}\""),
                );
                None
            }
            _ => {
                self.expected(node, what, "a string");
                None
            }
        }
    }

    /// A string with its location.
    pub fn spanned_string(&mut self, node: &Node, what: &str) -> Option<Spanned<String>> {
        self.string(node, what)
            .map(|s| Spanned::new(s, node.loc.clone()))
    }

    /// A non-negative integer.
    pub fn uint(&mut self, node: &Node, what: &str) -> Option<u64> {
        match node.resolve() {
            Some(Resolved::Int(i)) if i >= 0 => Some(i as u64),
            Some(Resolved::Float(f)) if f >= 0.0 && f.fract() == 0.0 && f < 1e15 => Some(f as u64),
            _ => {
                self.expected(node, what, "a whole number ≥ 0");
                None
            }
        }
    }

    /// A non-negative number (integer or decimal), e.g. RAM in GB.
    pub fn number(&mut self, node: &Node, what: &str) -> Option<f64> {
        match node.resolve() {
            Some(Resolved::Int(i)) if i >= 0 => Some(i as f64),
            Some(Resolved::Float(f)) if f >= 0.0 && f.is_finite() => Some(f),
            _ => {
                self.expected(node, what, "a number ≥ 0");
                None
            }
        }
    }

    /// A boolean; `yes`/`no`/`on`/`off` get a hint, since YAML 1.2 reads them as strings.
    pub fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node.resolve() {
            Some(Resolved::Bool(b)) => Some(b),
            Some(Resolved::Str(s))
                if matches!(
                    s.to_ascii_lowercase().as_str(),
                    "yes" | "no" | "on" | "off" | "y" | "n"
                ) =>
            {
                let b = matches!(s.to_ascii_lowercase().as_str(), "yes" | "on" | "y");
                self.error_help(
                    &node.loc,
                    format!("{what}: expected `true` or `false`, found `{s}`"),
                    format!("write `{b}`: fleet reads YAML 1.2, where `{s}` is a string"),
                );
                None
            }
            _ => {
                self.expected(node, what, "`true` or `false`");
                None
            }
        }
    }

    /// A list of strings; a single string is accepted as a one-element list.
    pub fn string_list(&mut self, node: &Node, what: &str) -> Vec<Spanned<String>> {
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .filter_map(|i| self.spanned_string(i, what))
                .collect(),
            _ if node.is_null() => Vec::new(),
            Value::Scalar { .. } => self.spanned_string(node, what).into_iter().collect(),
            Value::Map(_) => {
                self.expected(node, what, "a list of strings");
                Vec::new()
            }
        }
    }

    /// A list of nodes; null is an empty list.
    pub fn list<'n>(&mut self, node: &'n Node, what: &str) -> &'n [Node] {
        match &node.value {
            Value::Seq(items) => items,
            _ if node.is_null() => &[],
            _ => {
                self.expected(node, what, "a list");
                &[]
            }
        }
    }

    /// Variables: a mapping of names to values.
    pub fn vars(&mut self, node: &Node, what: &str) -> VarMap {
        let mut out = VarMap::new();
        if let Some(entries) = self.map(node, what) {
            for (k, v) in entries {
                let name = k.key_text();
                if !is_identifier(name) {
                    self.error_help(
                        &k.loc,
                        format!("variable name `{name}` is not an identifier"),
                        "use letters, digits and `_`, not starting with a digit, so templates can name it",
                    );
                    continue;
                }
                out.insert(name.to_string(), v.clone());
            }
        }
        out
    }

    /// A file mode such as `"0644"`: an unquoted number is an error, because YAML reads
    /// `755` as decimal seven hundred fifty-five, not as octal.
    pub fn mode(&mut self, node: &Node, what: &str) -> Option<u32> {
        match &node.value {
            Value::Scalar { text, plain: true } if !text.contains("{{") => {
                let shown = if text.starts_with('0') {
                    text.clone()
                } else {
                    format!("0{text}")
                };
                self.error_help(
                    &node.loc,
                    format!(
                        "{what}: the file mode `{text}` is an unquoted number, which YAML reads as decimal, not octal"
                    ),
                    format!("quote it: `mode: \"{shown}\"`"),
                );
                None
            }
            Value::Scalar { text, .. } => {
                if text.contains("{{") {
                    return Some(0);
                }
                let t = text.strip_prefix("0o").unwrap_or(text);
                match u32::from_str_radix(t, 8) {
                    Ok(m) if m <= 0o7777 && !t.is_empty() => Some(m),
                    _ => {
                        self.error_help(
                            &node.loc,
                            format!("{what}: expected an octal file mode, found `{text}`"),
                            "write it as a quoted octal string, e.g. \"0644\"",
                        );
                        None
                    }
                }
            }
            _ => {
                self.expected(node, what, "a quoted octal file mode such as \"0644\"");
                None
            }
        }
    }
}

/// True for names usable as template variables.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::yaml::parse;
    use std::sync::Arc;

    fn node(src: &str) -> Node {
        parse(&Arc::from("t.yaml"), src).expect("valid yaml")
    }

    #[test]
    fn unknown_keys_get_suggestions() {
        let n = node("host: a\nrol: b\n");
        let mut d = Decoder::default();
        d.fields(&n, "node `x`", &["host", "role"]);
        let msgs: Vec<String> = d.diags.sorted().iter().map(|d| d.to_string()).collect();
        assert_eq!(
            msgs,
            vec!["t.yaml:2:1: error: unknown key `rol` in node `x`\n  help: did you mean `role`?"]
        );
    }

    #[test]
    fn unquoted_modes_are_rejected() {
        let mut d = Decoder::default();
        assert_eq!(d.mode(&node("\"0644\""), "mode"), Some(0o644));
        assert_eq!(d.mode(&node("'755'"), "mode"), Some(0o755));
        assert!(!d.diags.has_errors());
        assert_eq!(d.mode(&node("755"), "mode"), None);
        assert_eq!(d.mode(&node("0755"), "mode"), None);
        assert_eq!(d.mode(&node("\"0955\""), "mode"), None);
        assert_eq!(d.diags.error_count(), 3);
    }

    #[test]
    fn yes_no_get_a_hint() {
        let mut d = Decoder::default();
        assert_eq!(d.boolean(&node("yes"), "become"), None);
        let msg = d.diags.sorted()[0].to_string();
        assert!(msg.contains("write `true`"), "{msg}");
    }

    #[test]
    fn strings_reject_plain_numbers() {
        let mut d = Decoder::default();
        assert_eq!(d.string(&node("1.10"), "version"), None);
        assert_eq!(
            d.string(&node("\"1.10\""), "version").as_deref(),
            Some("1.10")
        );
    }
}
