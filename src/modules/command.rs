//! `command`: run a program with arguments, no shell. `cmd` is split into words like a shell
//! would but without expansion; `argv` gives the words as a list, each passed byte for byte.

use crate::facts::Facts;
use crate::modules::run::{COMMON_ARGS, Run};
use crate::modules::{ArgError, ArgReader, Inputs, Judged, Mode, Module, Reported, Step};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct Command;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "command",
    summary: "Run a program with arguments (no shell). Always reports changed unless guarded.",
    free_form: Some("cmd"),
    args: &[
        arg(
            "cmd",
            ArgKind::Str,
            false,
            "the command line, split like a shell would but without expansion",
        ),
        arg(
            "argv",
            ArgKind::StrList,
            false,
            "the program and its arguments as a list, each word as given",
        ),
        COMMON_ARGS[0],
        COMMON_ARGS[1],
        COMMON_ARGS[2],
        COMMON_ARGS[3],
    ],
    exactly_one_of: &[&["cmd", "argv"]],
};

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    words: Vec<String>,
    run: Run,
}

impl Module for Command {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, _: &Inputs<'_>) -> Result<Args, ArgError> {
        let words = match a.str("cmd")? {
            Some(cmd) => shlex::split(&cmd)
                .ok_or_else(|| a.invalid("cmd", "a command line with balanced quotes"))?,
            None => a.str_list("argv")?,
        };
        if words.first().is_none_or(String::is_empty) {
            return Err(ArgError::task("module `command`: the command is empty"));
        }
        Ok(Args {
            words,
            run: Run::decode(a)?,
        })
    }

    fn script(&self, a: &Args, _facts: &Facts) -> Result<Step, ArgError> {
        let mut s = Script::new();
        a.run.script(&mut s, |s, env| {
            if env.is_empty() {
                s.args(a.words.iter()).code("exec \"$@\"\n");
            } else {
                // env sets the variables and runs `sh`, which runs the words: a first word
                // with `=` in it is still the program.
                let inner = ["sh", "-c", "exec \"$@\"", "sh"].map(String::from);
                s.args(env.into_iter().chain(inner).chain(a.words.iter().cloned()))
                    .code("exec env \"$@\"\n");
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
