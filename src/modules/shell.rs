//! `shell`: run a command line through `/bin/sh -c`. The command line is shell code by
//! definition: quote values templated into it with the `shquote` filter.

use crate::facts::Facts;
use crate::modules::run::{COMMON_ARGS, Run};
use crate::modules::{ArgError, ArgReader, Inputs, Judged, Mode, Module, Reported, Step};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct Shell;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "shell",
    summary: "Run a command through `/bin/sh -c`. Always reports changed unless guarded.",
    free_form: Some("cmd"),
    args: &[
        arg("cmd", ArgKind::Str, true, "the shell command"),
        COMMON_ARGS[0],
        COMMON_ARGS[1],
        COMMON_ARGS[2],
        COMMON_ARGS[3],
    ],
    exactly_one_of: &[],
};

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    cmd: String,
    run: Run,
}

impl Module for Shell {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, _: &Inputs<'_>) -> Result<Args, ArgError> {
        Ok(Args {
            cmd: a.req("cmd")?,
            run: Run::decode(a)?,
        })
    }

    fn script(&self, a: &Args, _facts: &Facts) -> Result<Step, ArgError> {
        let mut s = Script::new();
        s.set("CMD", a.cmd.as_str());
        a.run.script(&mut s, |s, env| {
            if env.is_empty() {
                s.code("exec sh -c \"$CMD\"\n");
            } else {
                s.args(env).code("exec env \"$@\" sh -c \"$CMD\"\n");
            }
        });
        Ok(Step::of(s))
    }

    fn judge(&self, _: &Args, r: &Reported, _: Mode) -> Judged {
        Run::judge(r)
    }

    fn output_in_check(&self, _: &Args) -> bool {
        false
    }
}
