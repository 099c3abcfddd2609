//! The one registry of task modules: their names and argument specs. Validation, `fleet plan`
//! and `docs/modules.md` all read this table, so adding a module is adding one entry here.

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

const fn arg(name: &'static str, kind: ArgKind, required: bool, doc: &'static str) -> ArgSpec {
    ArgSpec {
        name,
        kind,
        required,
        doc,
    }
}

const OWNERSHIP: [ArgSpec; 3] = [
    arg(
        "mode",
        ArgKind::Mode,
        false,
        "file mode as a quoted octal string, e.g. \"0644\"",
    ),
    arg("owner", ArgKind::Str, false, "owning user"),
    arg("group", ArgKind::Str, false, "owning group"),
];

/// Every module fleet knows, in documentation order.
pub const MODULES: &[ModuleSpec] = &[
    ModuleSpec {
        name: "command",
        summary: "Run a program with arguments (no shell). Always reports changed unless guarded.",
        free_form: Some("cmd"),
        args: &[
            arg(
                "cmd",
                ArgKind::Str,
                true,
                "the command line, split like a shell would but without expansion",
            ),
            arg("chdir", ArgKind::Str, false, "directory to run in"),
            arg("creates", ArgKind::Str, false, "skip when this path exists"),
            arg(
                "removes",
                ArgKind::Str,
                false,
                "skip unless this path exists",
            ),
            arg("env", ArgKind::Map, false, "extra environment variables"),
        ],
        exactly_one_of: &[],
    },
    ModuleSpec {
        name: "shell",
        summary: "Run a command through `/bin/sh -c`. Always reports changed unless guarded.",
        free_form: Some("cmd"),
        args: &[
            arg("cmd", ArgKind::Str, true, "the shell command"),
            arg("chdir", ArgKind::Str, false, "directory to run in"),
            arg("creates", ArgKind::Str, false, "skip when this path exists"),
            arg(
                "removes",
                ArgKind::Str,
                false,
                "skip unless this path exists",
            ),
            arg("env", ArgKind::Map, false, "extra environment variables"),
        ],
        exactly_one_of: &[],
    },
    ModuleSpec {
        name: "copy",
        summary: "Place a file from the repo (`src`, under the role's `files/`) or inline `content`, atomically.",
        free_form: None,
        args: &[
            arg(
                "src",
                ArgKind::Str,
                false,
                "file in the role's `files/` or the repo's `files/`",
            ),
            arg(
                "content",
                ArgKind::Str,
                false,
                "the file's contents (templated)",
            ),
            arg("dest", ArgKind::Str, true, "destination path on the host"),
            OWNERSHIP[0],
            OWNERSHIP[1],
            OWNERSHIP[2],
        ],
        exactly_one_of: &[&["src", "content"]],
    },
    ModuleSpec {
        name: "template",
        summary: "Render a minijinja template with the host's variables and place it atomically.",
        free_form: None,
        args: &[
            arg(
                "src",
                ArgKind::Str,
                true,
                "template in the role's `templates/` or the repo's `templates/`",
            ),
            arg("dest", ArgKind::Str, true, "destination path on the host"),
            OWNERSHIP[0],
            OWNERSHIP[1],
            OWNERSHIP[2],
        ],
        exactly_one_of: &[],
    },
    ModuleSpec {
        name: "file",
        summary: "Ensure a path is a file, directory, symlink, or absent, with mode and owner.",
        free_form: None,
        args: &[
            arg("path", ArgKind::Str, true, "the path on the host"),
            arg(
                "state",
                ArgKind::OneOf(&["file", "directory", "link", "absent", "touch"]),
                false,
                "what the path should be (default `file`)",
            ),
            arg("src", ArgKind::Str, false, "link target, for `state: link`"),
            OWNERSHIP[0],
            OWNERSHIP[1],
            OWNERSHIP[2],
        ],
        exactly_one_of: &[],
    },
    ModuleSpec {
        name: "lineinfile",
        summary: "Ensure a line is present in (or absent from) a text file; `regexp` picks the line to replace.",
        free_form: None,
        args: &[
            arg("path", ArgKind::Str, true, "the file on the host"),
            arg("line", ArgKind::Str, false, "the line that should be there"),
            arg(
                "regexp",
                ArgKind::Str,
                false,
                "the line to replace or remove",
            ),
            arg(
                "state",
                ArgKind::OneOf(&["present", "absent"]),
                false,
                "default `present`",
            ),
            arg(
                "create",
                ArgKind::Bool,
                false,
                "create the file when missing",
            ),
            OWNERSHIP[0],
        ],
        exactly_one_of: &[],
    },
    ModuleSpec {
        name: "package",
        summary: "Install or remove packages with the host's manager (apt, dnf, pacman, brew).",
        free_form: None,
        args: &[
            arg(
                "name",
                ArgKind::StrList,
                true,
                "package name or list of names",
            ),
            arg(
                "state",
                ArgKind::OneOf(&["present", "absent", "latest"]),
                false,
                "default `present`",
            ),
            arg(
                "manager",
                ArgKind::OneOf(&["auto", "apt", "dnf", "pacman", "brew"]),
                false,
                "default `auto` (from facts)",
            ),
            arg("cask", ArgKind::Bool, false, "Homebrew cask (macOS apps)"),
            arg(
                "update_cache",
                ArgKind::Bool,
                false,
                "refresh the package index first",
            ),
        ],
        exactly_one_of: &[],
    },
    ModuleSpec {
        name: "service",
        summary: "Start, stop, restart or enable a service (systemd on Linux, launchd on macOS).",
        free_form: None,
        args: &[
            arg(
                "name",
                ArgKind::Str,
                true,
                "unit name (systemd) or label (launchd)",
            ),
            arg(
                "state",
                ArgKind::OneOf(&["started", "stopped", "restarted", "reloaded"]),
                false,
                "desired run state",
            ),
            arg("enabled", ArgKind::Bool, false, "start at boot"),
            arg(
                "manager",
                ArgKind::OneOf(&["auto", "systemd", "launchd"]),
                false,
                "default `auto` (from facts)",
            ),
        ],
        exactly_one_of: &[],
    },
    ModuleSpec {
        name: "get_url",
        summary: "Download a file on the host, verified by sha256, placed atomically.",
        free_form: None,
        args: &[
            arg("url", ArgKind::Str, true, "what to download"),
            arg("dest", ArgKind::Str, true, "destination path on the host"),
            arg(
                "sha256",
                ArgKind::Str,
                false,
                "expected checksum; without it an existing file is kept",
            ),
            OWNERSHIP[0],
            OWNERSHIP[1],
            OWNERSHIP[2],
        ],
        exactly_one_of: &[],
    },
    ModuleSpec {
        name: "wait_for",
        summary: "Wait until a TCP port accepts connections or an HTTP URL answers 2xx.",
        free_form: None,
        args: &[
            arg("port", ArgKind::Int, false, "TCP port on `host`"),
            arg(
                "host",
                ArgKind::Str,
                false,
                "default 127.0.0.1 (as seen from the node)",
            ),
            arg("url", ArgKind::Str, false, "HTTP URL that must answer 2xx"),
            arg(
                "timeout",
                ArgKind::Str,
                false,
                "how long to wait, e.g. `30s` (default 60s)",
            ),
        ],
        exactly_one_of: &[&["port", "url"]],
    },
    ModuleSpec {
        name: "http",
        summary: "Make an HTTP request from the node and check the answer.",
        free_form: None,
        args: &[
            arg("url", ArgKind::Str, true, "the URL"),
            arg(
                "method",
                ArgKind::OneOf(&["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]),
                false,
                "default GET",
            ),
            arg(
                "body",
                ArgKind::Any,
                false,
                "request body; a mapping is sent as JSON",
            ),
            arg("headers", ArgKind::Map, false, "request headers"),
            arg(
                "status",
                ArgKind::Int,
                false,
                "expected status (default 200)",
            ),
            arg("timeout", ArgKind::Str, false, "e.g. `10s`"),
        ],
        exactly_one_of: &[],
    },
    ModuleSpec {
        name: "ollama_model",
        summary: "Ensure an Ollama model is present (or absent) through the node's Ollama API.",
        free_form: None,
        args: &[
            arg("name", ArgKind::Str, true, "model name, e.g. `llama3.1:8b`"),
            arg(
                "state",
                ArgKind::OneOf(&["present", "absent"]),
                false,
                "default `present`",
            ),
            arg(
                "url",
                ArgKind::Str,
                false,
                "Ollama base URL as seen from the node (default http://127.0.0.1:{{ ollama_port }})",
            ),
        ],
        exactly_one_of: &[],
    },
    ModuleSpec {
        name: "fleet_agent",
        summary: "Install the fleet agent with its token (0600) and service unit, and start it.",
        free_form: None,
        args: &[
            arg(
                "hq_url",
                ArgKind::Str,
                true,
                "HQ registry URL the agent reports to",
            ),
            arg(
                "token_file",
                ArgKind::Str,
                false,
                "where the node's token is placed (default /etc/fleet/agent.token)",
            ),
            arg(
                "interval",
                ArgKind::Str,
                false,
                "heartbeat interval (default 60s)",
            ),
            arg(
                "binary",
                ArgKind::Str,
                false,
                "where the agent binary goes (default /usr/local/bin/fleet)",
            ),
            arg(
                "source",
                ArgKind::Str,
                false,
                "the fleet binary to install, built for the node's OS and arch (default: this controller's own, when they match; empty means the default)",
            ),
            arg(
                "token_source",
                ArgKind::Str,
                false,
                "the node's token on the controller (default .fleet/tokens/NODE.token)",
            ),
            arg(
                "user",
                ArgKind::Str,
                false,
                "the account the agent runs as, owner of its token and log directory (default: the `fleet_user` variable, else root)",
            ),
        ],
        exactly_one_of: &[],
    },
    ModuleSpec {
        name: "user",
        summary: "Ensure a local user account exists (or not).",
        free_form: None,
        args: &[
            arg("name", ArgKind::Str, true, "user name"),
            arg("system", ArgKind::Bool, false, "a system account"),
            arg("home", ArgKind::Str, false, "home directory"),
            arg("shell", ArgKind::Str, false, "login shell"),
            arg(
                "groups",
                ArgKind::StrList,
                false,
                "supplementary groups the user must be in (others are kept)",
            ),
            arg(
                "state",
                ArgKind::OneOf(&["present", "absent"]),
                false,
                "default `present`",
            ),
        ],
        exactly_one_of: &[],
    },
    ModuleSpec {
        name: "debug",
        summary: "Print a message (templated); never changes anything.",
        free_form: Some("msg"),
        args: &[arg("msg", ArgKind::Str, true, "the message")],
        exactly_one_of: &[],
    },
];

/// Finds a module by name.
pub fn lookup(name: &str) -> Option<&'static ModuleSpec> {
    MODULES.iter().find(|m| m.name == name)
}

/// All module names.
pub fn names() -> impl Iterator<Item = &'static str> {
    MODULES.iter().map(|m| m.name)
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

/// Renders `docs/modules.md` from the registry, so the docs cannot drift from the code.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Modules\n\n<!-- generated by `fleet docs modules` from src/modules/registry.rs; do not edit -->\n\n\
         A task names exactly one module. Every string argument is a minijinja template rendered with the host's variables.\n",
    );
    for m in MODULES {
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

    fn check(module: &str, src: &str) -> Vec<String> {
        let n = parse(&Arc::from("t.yaml"), src).expect("yaml");
        let mut d = Decoder::default();
        lookup(module).expect("module").check_args(&n, &mut d);
        d.diags.sorted().iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn valid_args_pass() {
        assert!(check("file", "path: /opt/x\nstate: directory\nmode: \"0755\"\n").is_empty());
        assert!(check("command", "echo hi").is_empty());
        assert!(check("copy", "content: x\ndest: /y\n").is_empty());
    }

    #[test]
    fn bad_args_are_reported() {
        let e = check("file", "path: /x\nstate: dir\n");
        assert!(
            e[0].contains("expected one of file/directory/link/absent/touch, found `dir`"),
            "{e:?}"
        );
        let e = check("copy", "dest: /y\n");
        assert!(e[0].contains("needs `src` or `content`"), "{e:?}");
        let e = check("template", "src: a\n");
        assert!(e[0].contains("needs the argument `dest`"), "{e:?}");
        let e = check("copy", "src: a\ndest: b\nmod: \"0644\"\n");
        assert!(e[0].contains("did you mean `mode`?"), "{e:?}");
    }

    #[test]
    fn names_are_unique() {
        let mut n: Vec<_> = names().collect();
        n.sort();
        n.dedup();
        assert_eq!(n.len(), MODULES.len());
    }
}
