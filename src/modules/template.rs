//! `template`: render a minijinja template with the host's variables and place it atomically.

use crate::facts::Facts;
use crate::modules::attrs::Attrs;
use crate::modules::place::Placement;
use crate::modules::{
    ArgError, ArgReader, Effects, FileContent, Inputs, Module, Reported, Step, values,
};
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct Template;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
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

impl Module for Template {
    type Args = Placement;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, inputs: &Inputs<'_>) -> Result<Placement, ArgError> {
        let dest = values::path(a, "dest")?;
        let src = a.req_nonempty("src")?;
        let mut content = inputs.files.template(&src, &[]).map_err(|e| {
            if a.is_secret("src") {
                e.hiding(&src)
            } else {
                e
            }
        })?;
        content.secret |= a.is_secret("src");
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
