//! What `command` and `shell` share: `creates`/`removes` guards, `chdir`, extra environment
//! variables, and running the program in a subshell that ends the unit with its exit status.

use crate::modules::{ArgError, ArgReader, Judged, Reported, values};
use crate::script::Script;
use crate::spec::module::{ArgKind, ArgSpec, arg};

/// The arguments both modules take besides the command itself.
pub const COMMON_ARGS: [ArgSpec; 4] = [
    arg("chdir", ArgKind::Str, false, "directory to run in"),
    arg("creates", ArgKind::Str, false, "skip when this path exists"),
    arg(
        "removes",
        ArgKind::Str,
        false,
        "skip unless this path exists",
    ),
    arg("env", ArgKind::Map, false, "extra environment variables"),
];

/// Guards, directory and environment of a command.
#[derive(Debug, Clone, Default)]
pub struct Run {
    creates: Option<String>,
    removes: Option<String>,
    chdir: Option<String>,
    env: Vec<(String, String)>,
}

impl Run {
    /// Reads `creates`, `removes`, `chdir` and `env`.
    pub fn decode(a: &ArgReader<'_>) -> Result<Run, ArgError> {
        let env = a.str_map("env")?;
        for (k, _) in &env {
            values::env_name(a, "env", k)?;
        }
        Ok(Run {
            creates: values::opt_path(a, "creates")?,
            removes: values::opt_path(a, "removes")?,
            chdir: values::opt_path(a, "chdir")?,
            env,
        })
    }

    /// The guards (the task is skipped, unchanged, when they say so), then a subshell that
    /// changes directory and runs what `exec` adds, given the `NAME=VALUE` words of the extra
    /// environment (it must `exec` the program, through `env` when there are any, so no
    /// variable of the script is touched); the unit ends with the program's status. Nothing
    /// runs in check mode.
    pub fn script(&self, s: &mut Script, exec: impl FnOnce(&mut Script, Vec<String>)) {
        if let Some(c) = &self.creates {
            s.set("CR", c.as_str()).code("[ -e \"$CR\" ] && finish 0\n");
        }
        if let Some(r) = &self.removes {
            s.set("RM", r.as_str()).code("[ -e \"$RM\" ] || finish 0\n");
        }
        s.code("changed=1\n[ \"$CHECK\" = 1 ] && finish 0\n(\n");
        if let Some(d) = &self.chdir {
            s.set("W", d.as_str()).code(
                "case $W in /*) ;; *) W=./$W;; esac\ncd -- \"$W\" || fail \"cannot change to the directory $W\"\n",
            );
        }
        exec(
            s,
            self.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        );
        s.code(")\nfinish $?\n");
    }

    /// A command failed when it exited with a status other than 0.
    pub fn judge(r: &Reported) -> Judged {
        Judged {
            changed: r.changed,
            failed: (r.rc != 0)
                .then(|| format!("exit {}: {}", r.rc, last_line(&r.stderr, &r.stdout))),
            note: None,
        }
    }
}

/// The last non-empty line of `a`, else of `b`.
pub fn last_line(a: &str, b: &str) -> String {
    a.lines()
        .rev()
        .chain(b.lines().rev())
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}
