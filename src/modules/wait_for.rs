//! `wait_for`: wait until a TCP port accepts connections or an HTTP URL answers 2xx, as seen
//! from the node. The host and port reach the probe as positional parameters.

use crate::facts::Facts;
use crate::modules::{ArgError, ArgReader, Inputs, Module, Step, values};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct WaitFor;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
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
};

/// What to wait for.
#[derive(Debug, Clone)]
pub enum Target {
    /// A URL answering 2xx.
    Url(String),
    /// A TCP port accepting connections.
    Port(String, u16),
}

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    target: Target,
    secs: u64,
}

impl Module for WaitFor {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, _: &Inputs<'_>) -> Result<Args, ArgError> {
        let secs = a.duration_secs("timeout")?.unwrap_or(60);
        let target = match (a.str("url")?, a.uint("port")?) {
            (Some(_), None) => Target::Url(values::url(a, "url")?),
            (None, Some(p)) => {
                let port = u16::try_from(p)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| a.invalid("port", "a TCP port (1-65535)"))?;
                let host = values::host(a, "host")?.unwrap_or_else(|| "127.0.0.1".into());
                Target::Port(host, port)
            }
            _ => {
                return Err(ArgError::task(
                    "module `wait_for` needs `port` or `url`, not both",
                ));
            }
        };
        Ok(Args { target, secs })
    }

    fn script(&self, a: &Args, _facts: &Facts) -> Result<Step, ArgError> {
        let mut s = Script::new();
        s.set("SECS", a.secs)
            .code("[ \"$CHECK\" = 1 ] && finish 0\nend=$(( $(date +%s) + SECS ))\n");
        match &a.target {
            Target::Url(u) => {
                s.set("U", u.as_str()).code(concat!(
                    "until curl -fsS -g --proto '=http,https' -o /dev/null --max-time 2 \"$U\" 2>/dev/null; do ",
                    "[ \"$(date +%s)\" -ge \"$end\" ] && fail \"$U did not answer within ${SECS}s\"; sleep 0.25; done\n",
                ));
            }
            Target::Port(h, p) => {
                s.set("H", h.as_str()).set("PT", *p).code(concat!(
                    "until bash -c 'exec 3<>\"/dev/tcp/$1/$2\"' sh \"$H\" \"$PT\" 2>/dev/null || nc -z \"$H\" \"$PT\" 2>/dev/null; do ",
                    "[ \"$(date +%s)\" -ge \"$end\" ] && fail \"port $PT on $H did not open within ${SECS}s\"; sleep 0.25; done\n",
                ));
            }
        }
        s.code("finish 0\n");
        Ok(Step::of(s))
    }

    fn batchable(&self, _: &Args) -> bool {
        false
    }
}
