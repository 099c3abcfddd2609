//! `copy`: place a file from the repo (`src`) or inline `content` on the host, atomically.

use std::sync::Arc;

use crate::facts::Facts;
use crate::modules::attrs::Attrs;
use crate::modules::place::Placement;
use crate::modules::{
    ArgError, ArgReader, Effects, FileContent, Inputs, Module, Reported, Step, values,
};
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct Copy;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "copy",
    summary: "Place a file from the repo (`src`, under the role's `files/`) or inline `content`, atomically.",
    free_form: None,
    args: &[
        arg(
            "src",
            ArgKind::Str,
            false,
            "file in the role's `files/`, the repo's `files/`, or the repo by its path",
        ),
        arg(
            "content",
            ArgKind::Str,
            false,
            "the file's contents (templated)",
        ),
        arg("dest", ArgKind::Str, true, "destination path on the host"),
        arg(
            "mode",
            ArgKind::Mode,
            false,
            "file mode as a quoted octal string, e.g. \"0644\"",
        ),
        arg("owner", ArgKind::Str, false, "owning user"),
        arg("group", ArgKind::Str, false, "owning group"),
    ],
    exactly_one_of: &[&["src", "content"]],
};

impl Module for Copy {
    type Args = Placement;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, inputs: &Inputs<'_>) -> Result<Placement, ArgError> {
        let dest = values::path(a, "dest")?;
        let content = match (a.str("content")?, a.str("src")?) {
            (Some(c), None) => FileContent {
                bytes: Arc::from(c.into_bytes()),
                secret: a.is_secret("content"),
            },
            (None, Some(src)) => FileContent {
                bytes: Arc::from(inputs.files.repo_file(&src).map_err(|e| {
                    if a.is_secret("src") {
                        e.hiding(&src)
                    } else {
                        e
                    }
                })?),
                secret: a.is_secret("src"),
            },
            _ => {
                return Err(ArgError::task(
                    "module `copy` needs `src` or `content`, not both",
                ));
            }
        };
        Ok(Placement {
            dest,
            content,
            attrs: Attrs::decode(a)?,
        })
    }

    fn script(&self, p: &Placement, _facts: &Facts) -> Result<Step, ArgError> {
        Ok(p.step())
    }

    fn followup(
        &self,
        p: &Placement,
        _: &Facts,
        first: &Reported,
    ) -> Result<Option<Step>, ArgError> {
        Ok(first.more.then(|| p.transfer()))
    }

    fn effects(&self, p: &Placement) -> Effects {
        p.effects()
    }

    fn batchable(&self, p: &Placement) -> bool {
        p.inline()
    }

    fn file<'a>(&self, p: &'a Placement) -> Option<(&'a str, &'a FileContent)> {
        Some((&p.dest, &p.content))
    }
}
