//! `file`: a path is a file, a directory, a symlink, or absent, with its mode and owner.

use crate::facts::Facts;
use crate::modules::attrs::Attrs;
use crate::modules::{ArgError, ArgReader, Effects, Inputs, Module, Need, Step, values};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct File;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
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
        arg(
            "mode",
            ArgKind::Mode,
            false,
            "file mode as a quoted octal string, e.g. \"0644\"",
        ),
        arg("owner", ArgKind::Str, false, "owning user"),
        arg("group", ArgKind::Str, false, "owning group"),
    ],
    exactly_one_of: &[],
};

/// What the path should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// An existing regular file (only its attributes are managed).
    File,
    /// A directory, created with its parents.
    Directory,
    /// A symlink to `src`.
    Link,
    /// Nothing (removed, recursively).
    Absent,
    /// A file, created empty when missing.
    Touch,
}

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    /// The path, without trailing slashes.
    pub path: String,
    /// What it should be.
    pub state: State,
    /// The link target.
    pub src: Option<String>,
    /// Mode, owner, group.
    pub attrs: Attrs,
}

const CURRENT: &str = "if [ -L \"$P\" ]; then cur=link; elif [ -d \"$P\" ]; then cur=directory; elif [ -e \"$P\" ]; then cur=file; else cur=absent; fi\n";

impl Module for File {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, _: &Inputs<'_>) -> Result<Args, ArgError> {
        let raw = values::path(a, "path")?;
        let trimmed = raw.trim_end_matches('/');
        let path = if trimmed.is_empty() { "/" } else { trimmed }.to_string();
        let state = match a.one_of("state", &["file", "directory", "link", "absent", "touch"])? {
            Some("directory") => State::Directory,
            Some("link") => State::Link,
            Some("absent") => State::Absent,
            Some("touch") => State::Touch,
            _ => State::File,
        };
        if state == State::Absent
            && path
                .split('/')
                .all(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(a.invalid("path", "a path to remove, not the root directory"));
        }
        let src = values::opt_path(a, "src")?;
        if state == State::Link && src.is_none() {
            return Err(ArgError::arg(
                "src",
                "module `file`: `state: link` needs `src`",
            ));
        }
        Ok(Args {
            path,
            state,
            src,
            attrs: Attrs::decode(a)?,
        })
    }

    fn script(&self, a: &Args, _facts: &Facts) -> Result<Step, ArgError> {
        let mut s = Script::new();
        s.set("P", a.path.as_str());
        a.attrs.bind(&mut s);
        s.code(CURRENT);
        match a.state {
            State::Directory => {
                s.code("if [ \"$cur\" != directory ]; then [ \"$cur\" = absent ] || fail \"$P exists and is not a directory\"; changed=1; [ \"$CHECK\" = 1 ] && finish 0\n");
                if a.attrs.mode.is_some() {
                    s.code("mkdir -p -m \"$M\" -- \"$P\" || fail \"cannot create $P\"\n");
                } else {
                    s.code("mkdir -p -- \"$P\" || fail \"cannot create $P\"\n");
                }
                s.code("A=$P\n");
                a.attrs.fresh(&mut s, true);
                s.code("finish 0\nfi\n");
            }
            State::Absent => {
                s.code("if [ \"$cur\" != absent ]; then changed=1; [ \"$CHECK\" = 1 ] || rm -rf -- \"$P\" || fail \"cannot remove $P\"; fi\nfinish 0\n");
            }
            State::Touch => {
                s.code(
                    "if [ \"$cur\" = absent ]; then changed=1; [ \"$CHECK\" = 1 ] && finish 0\n",
                );
                match a.attrs.umask() {
                    Some(um) => {
                        s.set("UM", um).code(
                            "umask \"$UM\"; set -C; : > \"$P\" || fail \"cannot create $P\"; set +C\n",
                        );
                    }
                    None => {
                        s.code("set -C; : > \"$P\" || fail \"cannot create $P\"; set +C\n");
                    }
                }
                s.code("A=$P\n");
                a.attrs.fresh(&mut s, a.attrs.umask().is_some());
                s.code("finish 0\nfi\n");
            }
            State::File => {
                s.code(concat!(
                    "if [ \"$cur\" = absent ] && [ \"$CHECK\" = 1 ]; then missing=1; changed=1; finish 0; fi\n",
                    "[ \"$cur\" = file ] || fail \"$P does not exist or is not a regular file (use state: touch to create it)\"\n",
                ));
            }
            State::Link => {
                s.set("S", a.src.as_deref().unwrap_or_default()).code(concat!(
                    "if [ \"$cur\" = absent ]; then changed=1; [ \"$CHECK\" = 1 ] || ln -s -- \"$S\" \"$P\" || fail \"cannot link $P\"; finish 0; fi\n",
                    "now=; if [ \"$cur\" = link ]; then now=$(readlink -- \"$P\"; printf .); now=${now%.}; now=${now%\"\n\"}; fi\n",
                    "if [ \"$cur\" != link ] || [ \"$now\" != \"$S\" ]; then [ \"$cur\" = directory ] && fail \"$P is a directory\"; changed=1\n",
                    "if [ \"$CHECK\" != 1 ]; then case \"$P\" in */*) D=${P%/*}; D=${D:-/};; *) D=.;; esac; t=\"$D/.fleet.$FN.$FU\"; fleet_tmp_trap\n",
                    "ln -s -- \"$S\" \"$t\" || fail \"cannot link $P\"\n",
                    "mv -fT -- \"$t\" \"$P\" 2>/dev/null || mv -fh -- \"$t\" \"$P\" || fail \"cannot replace $P\"; trap - EXIT; fi; fi\n",
                    "finish 0\n",
                ));
                return Ok(Step::of(s));
            }
        }
        a.attrs.converge(&mut s);
        s.code("finish 0\n");
        Ok(Step {
            script: s,
            stdin: None,
            stat_path: (!a.attrs.is_empty() && a.state != State::Absent).then(|| a.path.clone()),
            // `absent` removes what is below the path too.
            own_path: a.state != State::Absent,
        })
    }

    fn effects(&self, a: &Args) -> Effects {
        match a.state {
            State::Directory => Effects {
                creates: Some((a.path.clone(), true)),
                needs: None,
            },
            State::Touch | State::Link => Effects {
                creates: Some((a.path.clone(), false)),
                needs: None,
            },
            State::File => Effects {
                creates: None,
                needs: Some(Need::File(a.path.clone())),
            },
            State::Absent => Effects::default(),
        }
    }
}
