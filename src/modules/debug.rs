//! `debug`: print a message on the controller; nothing runs on the host.

use crate::facts::Facts;
use crate::modules::{ArgError, ArgReader, Inputs, Module, Step};
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct Debug;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "debug",
    summary: "Print a message (templated); never changes anything.",
    free_form: Some("msg"),
    args: &[arg(
        "msg",
        ArgKind::Any,
        true,
        "the message (a value is printed as JSON)",
    )],
    exactly_one_of: &[],
};

/// The message as printers may show it (`***` when it read a secret).
#[derive(Debug, Clone)]
pub struct Args {
    shown: String,
}

impl Module for Debug {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, _: &Inputs<'_>) -> Result<Args, ArgError> {
        if a.any("msg").is_none() {
            return Err(ArgError::arg("msg", "module `debug`: `msg` is required"));
        }
        Ok(Args {
            shown: a.shown("msg"),
        })
    }

    fn script(&self, _: &Args, _facts: &Facts) -> Result<Step, ArgError> {
        Err(ArgError::task("`debug` runs nothing on the host"))
    }

    fn batchable(&self, _: &Args) -> bool {
        false
    }

    fn local(&self, a: &Args) -> Option<String> {
        Some(a.shown.clone())
    }
}
