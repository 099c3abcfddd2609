//! What a task module takes: its name and argument specs. Each module (`src/modules/<name>.rs`)
//! declares one [`ModuleSpec`]; task decoding checks a task's arguments against it here, and
//! `docs/modules.md` is generated from the same specs.

use crate::spec::decode::Decoder;
use crate::spec::yaml::{Node, Resolved, Value};

/// The type an argument takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// Any string.
    Str,
    /// A whole number.
    Int,
    /// `true` / `false`.
    Bool,
    /// A quoted octal file mode.
    Mode,
    /// One string or a list of strings.
    StrList,
    /// A mapping (headers, environment …).
    Map,
    /// Anything (request bodies …).
    Any,
    /// One of a fixed set of words.
    OneOf(&'static [&'static str]),
}

/// One argument of a module.
#[derive(Debug, Clone, Copy)]
pub struct ArgSpec {
    /// Its key.
    pub name: &'static str,
    /// Its type.
    pub kind: ArgKind,
    /// Whether a task must give it.
    pub required: bool,
    /// One line for the docs.
    pub doc: &'static str,
}

/// A module: what it is for and what it takes.
#[derive(Debug, Clone, Copy)]
pub struct ModuleSpec {
    /// The key that names it in a task.
    pub name: &'static str,
    /// One line for the docs.
    pub summary: &'static str,
    /// The argument that a bare string sets (`command: uname -a`), if the module has one.
    pub free_form: Option<&'static str>,
    /// Its arguments.
    pub args: &'static [ArgSpec],
    /// Groups of arguments of which exactly one must be given.
    pub exactly_one_of: &'static [&'static [&'static str]],
}

/// An argument spec, for the `const` tables of the modules.
pub const fn arg(name: &'static str, kind: ArgKind, required: bool, doc: &'static str) -> ArgSpec {
    ArgSpec {
        name,
        kind,
        required,
        doc,
    }
}

fn is_templated(node: &Node) -> bool {
    matches!(&node.value, Value::Scalar { text, .. } if text.contains("{{"))
}

impl ModuleSpec {
    /// Checks a task's arguments against this spec, recording every problem.
    pub fn check_args(&self, args: &Node, d: &mut Decoder) {
        let what = format!("module `{}`", self.name);
        if let Value::Scalar { .. } = &args.value {
            if self.free_form.is_none() {
                d.error_help(
                    &args.loc,
                    format!(
                        "{what} takes a mapping of arguments, found {}",
                        args.describe()
                    ),
                    format!("arguments: {}", self.arg_list()),
                );
            } else if args.is_null() {
                d.error(&args.loc, format!("{what} needs a command"));
            }
            return;
        }
        let known: Vec<&str> = self.args.iter().map(|a| a.name).collect();
        let Some(fields) = d.fields(args, &format!("{what} arguments"), &known) else {
            return;
        };
        for spec in self.args {
            let Some(v) = fields.get(spec.name) else {
                if spec.required && !self.exactly_one_of.iter().any(|g| g.contains(&spec.name)) {
                    d.error(
                        &args.loc,
                        format!("{what} needs the argument `{}`", spec.name),
                    );
                }
                continue;
            };
            if is_templated(v) && spec.kind != ArgKind::Mode {
                continue;
            }
            let label = format!("{what}: `{}`", spec.name);
            match spec.kind {
                ArgKind::Str => {
                    if !matches!(v.resolve(), Some(Resolved::Str(_))) {
                        // Numbers are fine where a string is wanted in module args (ports in URLs
                        // are templated anyway); only collections are wrong.
                        if !matches!(v.value, Value::Scalar { .. }) {
                            d.expected(v, &label, "a string");
                        }
                    }
                }
                ArgKind::Int => {
                    d.uint(v, &label);
                }
                ArgKind::Bool => {
                    d.boolean(v, &label);
                }
                ArgKind::Mode => {
                    d.mode(v, &label);
                }
                ArgKind::StrList => {
                    d.string_list(v, &label);
                }
                ArgKind::Map => {
                    d.map(v, &label);
                }
                ArgKind::Any => {}
                ArgKind::OneOf(options) => {
                    let got = v.key_text();
                    if !options.contains(&got) {
                        let help = crate::error::did_you_mean(got, options.iter().copied())
                            .unwrap_or_else(|| {
                                format!(
                                    "one of: {}",
                                    options
                                        .iter()
                                        .map(|o| format!("`{o}`"))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                            });
                        d.error_help(
                            &v.loc,
                            format!(
                                "{label}: expected one of {}, found `{got}`",
                                options.join("/")
                            ),
                            help,
                        );
                    }
                }
            }
        }
        for group in self.exactly_one_of {
            let given: Vec<&str> = group
                .iter()
                .copied()
                .filter(|g| fields.get(g).is_some())
                .collect();
            if given.len() != 1 {
                let names = group
                    .iter()
                    .map(|g| format!("`{g}`"))
                    .collect::<Vec<_>>()
                    .join(" or ");
                let msg = if given.is_empty() {
                    format!("{what} needs {names}")
                } else {
                    format!("{what} takes only one of {names}")
                };
                d.error(&args.loc, msg);
            }
        }
    }

    fn arg_list(&self) -> String {
        self.args
            .iter()
            .map(|a| format!("`{}`", a.name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Renders `docs/modules.md` from the modules' specs, so the docs cannot drift from the code.
pub fn markdown(modules: &[&ModuleSpec]) -> String {
    let mut out = String::from(
        "# Modules\n\n<!-- generated by `fleet docs modules` from the specs in src/modules/; do not edit -->\n\n\
         A task names exactly one module. Every string argument is a minijinja template rendered with the host's variables.\n",
    );
    for m in modules {
        out.push_str(&format!("\n## `{}`\n\n{}\n\n", m.name, m.summary));
        if let Some(f) = m.free_form {
            out.push_str(&format!("A bare string sets `{f}`: `{}: …`.\n\n", m.name));
        }
        out.push_str("| argument | type | required | meaning |\n|---|---|---|---|\n");
        for a in m.args {
            let kind = match a.kind {
                ArgKind::Str => "string".to_string(),
                ArgKind::Int => "integer".to_string(),
                ArgKind::Bool => "boolean".to_string(),
                ArgKind::Mode => "mode".to_string(),
                ArgKind::StrList => "string or list".to_string(),
                ArgKind::Map => "mapping".to_string(),
                ArgKind::Any => "any".to_string(),
                ArgKind::OneOf(o) => o.join(" \\| "),
            };
            let req = if a.required && !m.exactly_one_of.iter().any(|g| g.contains(&a.name)) {
                "yes"
            } else {
                ""
            };
            out.push_str(&format!("| `{}` | {kind} | {req} | {} |\n", a.name, a.doc));
        }
        for g in m.exactly_one_of {
            out.push_str(&format!(
                "\nExactly one of {} is required.\n",
                g.iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::yaml::parse;
    use std::sync::Arc;

    const FILE: ModuleSpec = ModuleSpec {
        name: "file",
        summary: "",
        free_form: None,
        args: &[
            arg("path", ArgKind::Str, true, ""),
            arg(
                "state",
                ArgKind::OneOf(&["file", "directory", "link", "absent", "touch"]),
                false,
                "",
            ),
            arg("mode", ArgKind::Mode, false, ""),
        ],
        exactly_one_of: &[],
    };
    const COPY: ModuleSpec = ModuleSpec {
        name: "copy",
        summary: "",
        free_form: None,
        args: &[
            arg("src", ArgKind::Str, false, ""),
            arg("content", ArgKind::Str, false, ""),
            arg("dest", ArgKind::Str, true, ""),
            arg("mode", ArgKind::Mode, false, ""),
        ],
        exactly_one_of: &[&["src", "content"]],
    };
    const COMMAND: ModuleSpec = ModuleSpec {
        name: "command",
        summary: "",
        free_form: Some("cmd"),
        args: &[arg("cmd", ArgKind::Str, true, "")],
        exactly_one_of: &[],
    };

    fn check(spec: &ModuleSpec, src: &str) -> Vec<String> {
        let n = parse(&Arc::from("t.yaml"), src).expect("yaml");
        let mut d = Decoder::default();
        spec.check_args(&n, &mut d);
        d.diags.sorted().iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn valid_args_pass() {
        assert!(check(&FILE, "path: /opt/x\nstate: directory\nmode: \"0755\"\n").is_empty());
        assert!(check(&COMMAND, "echo hi").is_empty());
        assert!(check(&COPY, "content: x\ndest: /y\n").is_empty());
    }

    #[test]
    fn bad_args_are_reported() {
        let e = check(&FILE, "path: /x\nstate: dir\n");
        assert!(
            e[0].contains("expected one of file/directory/link/absent/touch, found `dir`"),
            "{e:?}"
        );
        let e = check(&COPY, "dest: /y\n");
        assert!(e[0].contains("needs `src` or `content`"), "{e:?}");
        let e = check(&COPY, "src: a\ndest: b\nmod: \"0644\"\n");
        assert!(e[0].contains("did you mean `mode`?"), "{e:?}");
        let e = check(&FILE, "state: file\n");
        assert!(e[0].contains("needs the argument `path`"), "{e:?}");
    }
}
