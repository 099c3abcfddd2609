//! The only code that touches the YAML parser: turns a YAML file into a tree of [`Node`]s
//! that remember where they came from and whether a scalar was quoted.
//!
//! We read parser events (granit-parser, the parser behind serde-saphyr) rather than deserialize
//! with serde because fleet must report *every* error with its location, tell `mode: 755` from
//! `mode: "755"`, and resolve scalars by YAML 1.2's core schema (`no` stays a string).

use std::collections::HashMap;
use std::sync::Arc;

use granit_parser::{Event, Parser, ScalarStyle};

use crate::error::{Diagnostic, Loc};

/// Most values aliases may add to one document: stops "billion laughs" inputs.
const MAX_NODES: usize = 200_000;

/// A YAML value with its location.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it starts.
    pub loc: Loc,
}

/// The shapes a YAML value can take.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar: its text, and whether it was written plain (unquoted, not a block scalar).
    Scalar {
        /// The text after escape processing.
        text: String,
        /// Plain scalars are the ones YAML resolves to null, booleans and numbers.
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order (duplicate keys are rejected while parsing).
    Map(Vec<(Node, Node)>),
}

/// What a scalar resolves to under YAML 1.2's core schema.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved<'a> {
    /// `~`, `null`, or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Anything else, or anything quoted.
    Str(&'a str),
}

impl Node {
    /// Resolves a scalar's type; `None` for collections.
    pub fn resolve(&self) -> Option<Resolved<'_>> {
        let Value::Scalar { text, plain } = &self.value else {
            return None;
        };
        if !*plain {
            return Some(Resolved::Str(text));
        }
        Some(resolve_plain(text))
    }

    /// True for a null scalar (`~`, `null`, or an empty value).
    pub fn is_null(&self) -> bool {
        matches!(self.resolve(), Some(Resolved::Null))
    }

    /// A short description for "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
            Value::Scalar { text, .. } => match self.resolve() {
                Some(Resolved::Null) => "nothing (null)".into(),
                Some(Resolved::Bool(_)) => format!("the boolean `{text}`"),
                Some(Resolved::Int(_)) | Some(Resolved::Float(_)) => format!("the number `{text}`"),
                _ => format!("the string `{}`", shorten(text)),
            },
        }
    }

    /// Converts to a JSON value (the form variables and module arguments take at run time).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.key_text().to_string(), v.to_json()))
                    .collect(),
            ),
            Value::Scalar { .. } => match self.resolve() {
                Some(Resolved::Null) | None => J::Null,
                Some(Resolved::Bool(b)) => J::Bool(b),
                Some(Resolved::Int(i)) => J::from(i),
                Some(Resolved::Float(f)) => {
                    serde_json::Number::from_f64(f).map_or(J::Null, J::Number)
                }
                Some(Resolved::Str(s)) => J::String(s.to_string()),
            },
        }
    }

    /// The text of a mapping key (collections as keys are shown as their description).
    pub fn key_text(&self) -> &str {
        match &self.value {
            Value::Scalar { text, .. } => text,
            Value::Seq(_) => "<list>",
            Value::Map(_) => "<mapping>",
        }
    }

    /// The entries when this is a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Looks a key up in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.key_text() == key)
            .map(|(_, v)| v)
    }
}

fn shorten(s: &str) -> String {
    let first = s.lines().next().unwrap_or("");
    if first.chars().count() > 40 || first.len() != s.len() {
        let cut: String = first.chars().take(40).collect();
        format!("{cut}…")
    } else {
        first.to_string()
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
pub fn resolve_plain(text: &str) -> Resolved<'_> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = text.parse::<i64>()
    {
        return Resolved::Int(i);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Resolved::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Resolved::Int(i);
    }
    let looks_float = digits.bytes().any(|b| b.is_ascii_digit())
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if looks_float && let Ok(f) = text.parse::<f64>() {
        return Resolved::Float(f);
    }
    match digits {
        ".inf" | ".Inf" | ".INF" => {
            return Resolved::Float(if text.starts_with('-') {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            });
        }
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        _ => {}
    }
    Resolved::Str(text)
}

/// Parses one YAML document. An empty file is a null node.
pub fn parse(file: &Arc<str>, src: &str) -> Result<Node, Diagnostic> {
    let mut builder = Builder {
        anchors: Vec::new(),
        stack: Vec::new(),
        root: None,
        nodes: 0,
        documents: 0,
    };
    let parser = Parser::new_from_str(src);
    for ev in parser {
        match ev {
            Ok((event, span)) => {
                let loc = Loc {
                    file: file.clone(),
                    line: u32::try_from(span.start.line()).unwrap_or(u32::MAX),
                    col: u32::try_from(span.start.col() + 1).unwrap_or(u32::MAX),
                };
                builder.event(event, loc)?;
            }
            Err(e) => {
                let m = e.marker();
                let loc = Loc {
                    file: file.clone(),
                    line: u32::try_from(m.line()).unwrap_or(u32::MAX),
                    col: u32::try_from(m.col() + 1).unwrap_or(u32::MAX),
                };
                return Err(
                    Diagnostic::error(loc, format!("invalid YAML: {}", e.info())).with_help(
                        "check the indentation and quoting on this line and the one before",
                    ),
                );
            }
        }
    }
    Ok(builder.root.unwrap_or(Node {
        value: Value::Scalar {
            text: String::new(),
            plain: true,
        },
        loc: Loc::file_start(file),
    }))
}

enum Frame {
    Seq(Node, usize),
    /// A mapping, its anchor, the key waiting for its value, and the keys seen so far (with
    /// their line) so duplicate detection stays linear in the mapping's size.
    Map(Node, usize, Option<Node>, HashMap<String, u32>),
}

struct Builder {
    anchors: Vec<(usize, Node)>,
    stack: Vec<Frame>,
    root: Option<Node>,
    nodes: usize,
    documents: usize,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, loc: Loc) -> Result<(), Diagnostic> {
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => Ok(()),
            Event::DocumentStart(..) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(Diagnostic::error(
                        loc,
                        "a second YAML document (`---`) in one file",
                    )
                    .with_help("fleet reads one document per file; split it into two files"));
                }
                Ok(())
            }
            Event::Scalar(text, style, anchor, tag) => {
                let tagged_str = tag
                    .as_ref()
                    .is_some_and(|t| t.to_string().ends_with(":str"));
                let plain = matches!(style, ScalarStyle::Plain) && !tagged_str;
                let node = Node {
                    value: Value::Scalar {
                        text: text.into_owned(),
                        plain,
                    },
                    loc,
                };
                self.finish(node, anchor)
            }
            Event::SequenceStart(_, anchor, _) => {
                self.stack.push(Frame::Seq(
                    Node {
                        value: Value::Seq(Vec::new()),
                        loc,
                    },
                    anchor,
                ));
                Ok(())
            }
            Event::MappingStart(_, anchor, _) => {
                self.stack.push(Frame::Map(
                    Node {
                        value: Value::Map(Vec::new()),
                        loc,
                    },
                    anchor,
                    None,
                    HashMap::new(),
                ));
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq(node, anchor)) | Some(Frame::Map(node, anchor, None, _)) => {
                    self.finish(node, anchor)
                }
                Some(Frame::Map(_, _, Some(key), _)) => {
                    Err(Diagnostic::error(key.loc, "a mapping key without a value"))
                }
                None => Ok(()),
            },
            Event::Alias(id) => {
                let Some((_, target)) = self.anchors.iter().rev().find(|(a, _)| *a == id) else {
                    return Err(Diagnostic::error(loc, "an alias to an unknown anchor"));
                };
                let mut node = target.clone();
                // Only what aliases add counts: a large plain file is fine, a file whose
                // aliases multiply it ("billion laughs") is not.
                self.nodes += count_nodes(&node);
                if self.nodes > MAX_NODES {
                    return Err(Diagnostic::error(
                        loc,
                        format!("aliases expand this file past {MAX_NODES} values"),
                    )
                    .with_help("fleet caps alias expansion; write the repeated data out or use fewer nested aliases"));
                }
                node.loc = loc;
                self.finish(node, 0)
            }
            _ => Ok(()),
        }
    }

    fn finish(&mut self, node: Node, anchor: usize) -> Result<(), Diagnostic> {
        if anchor != 0 {
            self.anchors.push((anchor, node.clone()));
        }
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq(seq, _)) => {
                if let Value::Seq(items) = &mut seq.value {
                    items.push(node);
                }
                Ok(())
            }
            Some(Frame::Map(map, _, pending, seen)) => match pending.take() {
                None => {
                    if let Some(first_line) = seen.get(node.key_text()) {
                        return Err(Diagnostic::error(
                            node.loc.clone(),
                            format!("duplicate key `{}`", node.key_text()),
                        )
                        .with_help(format!(
                            "it is first defined at line {first_line}; remove or rename one of them"
                        )));
                    }
                    seen.insert(node.key_text().to_string(), node.loc.line);
                    *pending = Some(node);
                    Ok(())
                }
                Some(key) => {
                    if let Value::Map(entries) = &mut map.value {
                        entries.push((key, node));
                    }
                    Ok(())
                }
            },
        }
    }
}

fn count_nodes(n: &Node) -> usize {
    match &n.value {
        Value::Scalar { .. } => 1,
        Value::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Value::Map(e) => {
            1 + e
                .iter()
                .map(|(k, v)| count_nodes(k) + count_nodes(v))
                .sum::<usize>()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> Result<Node, Diagnostic> {
        parse(&Arc::from("t.yaml"), src)
    }

    #[test]
    fn keeps_locations_and_quoting() {
        let n = p("a:\n  mode: 755\n  other: \"755\"\n").expect("parses");
        let a = n.get("a").expect("a");
        let mode = a.get("mode").expect("mode");
        assert_eq!((mode.loc.line, mode.loc.col), (2, 9));
        assert_eq!(mode.resolve(), Some(Resolved::Int(755)));
        assert_eq!(
            a.get("other").and_then(Node::resolve),
            Some(Resolved::Str("755"))
        );
    }

    #[test]
    fn core_schema_keeps_yes_and_no_as_strings() {
        assert_eq!(resolve_plain("no"), Resolved::Str("no"));
        assert_eq!(resolve_plain("yes"), Resolved::Str("yes"));
        assert_eq!(resolve_plain("0755"), Resolved::Int(755));
        assert_eq!(resolve_plain("1.5"), Resolved::Float(1.5));
        assert_eq!(resolve_plain("llama3.1:8b"), Resolved::Str("llama3.1:8b"));
        assert_eq!(resolve_plain("~"), Resolved::Null);
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = p("a: 1\nb: 2\na: 3\n").expect_err("dup");
        assert_eq!(e.loc.map(|l| (l.line, l.col)), Some((3, 1)));
        assert!(e.message.contains("duplicate key `a`"));
    }

    #[test]
    fn syntax_errors_have_locations() {
        let e = p("a: [1, 2\nb: 3\n").expect_err("bad");
        assert!(e.loc.is_some());
        assert!(e.message.starts_with("invalid YAML"));
    }

    #[test]
    fn aliases_expand_and_are_capped() {
        let n = p("a: &x [1, 2]\nb: *x\n").expect("parses");
        assert_eq!(
            n.get("b").map(Node::to_json),
            Some(serde_json::json!([1, 2]))
        );
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..6 {
            let prev = (b'a' + i) as char;
            let next = (b'a' + i + 1) as char;
            bomb.push_str(&format!(
                "{next}: &{next} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        let e = p(&bomb).expect_err("capped");
        assert!(e.message.contains("aliases expand"));
    }

    #[test]
    fn empty_file_is_null() {
        assert!(p("").expect("parses").is_null());
        assert!(p("# only a comment\n").expect("parses").is_null());
    }
}
