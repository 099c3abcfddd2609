//! `cron`: one named entry in a user's crontab, through the `crontab` command (`-l` to read,
//! `crontab FILE` to install, so cron checks the whole table before it takes it). An entry is
//! the job line after a marker comment `#fleet: NAME`; an entry Ansible made (`#Ansible:
//! NAME`) is taken over under fleet's marker. With `env: true` the entry is a variable line
//! `NAME=job` near the top instead, as in Ansible. The edit runs in awk, which reads the name
//! and the line from its environment: no value is ever part of a program.

use crate::facts::Facts;
use crate::modules::{ArgError, ArgReader, Inputs, Module, Step, values};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct Cron;

const SPECIAL: &[&str] = &[
    "reboot", "yearly", "annually", "monthly", "weekly", "daily", "hourly",
];

/// The time fields, in crontab order.
const FIELDS: [&str; 5] = ["minute", "hour", "day", "month", "weekday"];

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "cron",
    summary: "Manage a named entry (or an environment variable) in a user's crontab.",
    free_form: None,
    args: &[
        arg(
            "name",
            ArgKind::Str,
            true,
            "the entry's name (its marker comment `#fleet: NAME`); with `env`, the variable",
        ),
        arg(
            "job",
            ArgKind::Str,
            false,
            "the command (cron reads `%` as a line break: write `\\%`); with `env`, the value",
        ),
        arg("minute", ArgKind::Str, false, "default `*`"),
        arg("hour", ArgKind::Str, false, "default `*`"),
        arg("day", ArgKind::Str, false, "day of the month, default `*`"),
        arg("month", ArgKind::Str, false, "default `*`"),
        arg(
            "weekday",
            ArgKind::Str,
            false,
            "day of the week, default `*`",
        ),
        arg(
            "special_time",
            ArgKind::OneOf(SPECIAL),
            false,
            "instead of the time fields: `@reboot`, `@daily` …",
        ),
        arg(
            "user",
            ArgKind::Str,
            false,
            "whose crontab (default: the connecting or `become` user's)",
        ),
        arg(
            "state",
            ArgKind::OneOf(&["present", "absent"]),
            false,
            "default `present`",
        ),
        arg(
            "disabled",
            ArgKind::Bool,
            false,
            "keep the entry, commented out",
        ),
        arg(
            "env",
            ArgKind::Bool,
            false,
            "the entry is an environment variable `name=job`",
        ),
    ],
    exactly_one_of: &[],
};

/// When a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timing {
    /// The five fields: minute, hour, day of month, month, day of week.
    Fields([String; 5]),
    /// `@reboot`, `@daily` …
    Special(&'static str),
}

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    user: Option<String>,
    present: bool,
    /// The marker line, or empty for a variable.
    marker: String,
    /// The variable's name, for `env`.
    env: Option<String>,
    /// The crontab line.
    line: String,
}

/// Why `f` cannot be a crontab time field (`*/5`, `1-5`, `mon,wed`, `0`).
pub fn field_problem(f: &str) -> Option<&'static str> {
    if f.is_empty() {
        return Some("must not be empty");
    }
    if !f
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "*,/-".contains(c))
    {
        return Some("takes digits, names, `*`, `,`, `/` and `-` only");
    }
    None
}

/// The crontab line of a job: its timing, the command, commented out when disabled.
pub fn job_line(timing: &Timing, job: &str, disabled: bool) -> String {
    let when = match timing {
        Timing::Fields(f) => f.join(" "),
        Timing::Special(s) => format!("@{s}"),
    };
    format!("{}{when} {job}", if disabled { "#" } else { "" })
}

/// The marker comment above a job.
pub fn marker(name: &str) -> String {
    format!("#fleet: {name}")
}

/// The edit: the crontab on stdin, the new one on stdout. A marked entry (fleet's marker, or
/// Ansible's, taken over) is the marker and the line after it; a variable is its `NAME=`
/// line. The first one found is replaced (or dropped), any other copies dropped; a missing
/// one is added at the end (a variable: at the top).
const EDIT: &str = concat!(
    "FLEET_AWK='BEGIN { mark = ENVIRON[\"FLEET_MARK\"]; alt = ENVIRON[\"FLEET_ALT\"]; line = ENVIRON[\"FLEET_LINE\"]; en = ENVIRON[\"FLEET_ENV\"]; present = ENVIRON[\"FLEET_STATE\"] == \"present\"; n = 0; done = 0; skip = 0 }\n",
    "skip { skip = 0; next }\n",
    "en == \"\" && ($0 == mark || $0 == alt) { if (present && !done) { l[n++] = mark; l[n++] = line } done = 1; skip = 1; next }\n",
    "en != \"\" && index($0, en \"=\") == 1 { if (present && !done) l[n++] = line; done = 1; next }\n",
    "{ l[n++] = $0 }\n",
    "END { if (present && !done && en != \"\") print line; for (i = 0; i < n; i++) print l[i]; if (present && !done && en == \"\") { print mark; print line } }'\n",
);

impl Module for Cron {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, _: &Inputs<'_>) -> Result<Args, ArgError> {
        let name = a.req_nonempty("name")?;
        if name.chars().any(char::is_control) {
            return Err(a.invalid("name", "a name on one line"));
        }
        let present = a.one_of("state", &["present", "absent"])? != Some("absent");
        let env = a.bool("env")?.unwrap_or(false);
        let job = a.str("job")?;
        if let Some(j) = &job
            && j.chars().any(|c| c == '\n' || c == '\r')
        {
            return Err(a.invalid("job", "a command on one line"));
        }
        if present && job.as_deref().is_none_or(str::is_empty) {
            return Err(ArgError::arg(
                "job",
                "module `cron`: `state: present` needs `job`",
            ));
        }
        let job = job.unwrap_or_default();
        let disabled = a.bool("disabled")?.unwrap_or(false);
        let special = a.one_of("special_time", SPECIAL)?;
        let mut fields: [String; 5] = Default::default();
        for (slot, key) in fields.iter_mut().zip(FIELDS) {
            let v = a.str(key)?;
            if v.is_some() && (special.is_some() || env) {
                return Err(ArgError::arg(
                    key,
                    format!(
                        "module `cron`: `{key}` cannot go with `{}`",
                        if env { "env" } else { "special_time" }
                    ),
                ));
            }
            let v = v.unwrap_or_else(|| "*".to_string());
            if let Some(why) = field_problem(&v) {
                return Err(a.invalid(key, &format!("a crontab time field ({why})")));
            }
            *slot = v;
        }
        let (marker, env, line) = if env {
            values::env_name(a, "name", &name)?;
            if disabled || special.is_some() {
                return Err(ArgError::task(
                    "module `cron`: `env: true` takes neither `disabled` nor `special_time`",
                ));
            }
            (String::new(), Some(name.clone()), format!("{name}={job}"))
        } else {
            let timing = match special {
                Some(s) => Timing::Special(s),
                None => Timing::Fields(fields),
            };
            (marker(&name), None, job_line(&timing, &job, disabled))
        };
        Ok(Args {
            user: values::account(a, "user")?,
            present,
            marker,
            env,
            line,
        })
    }

    fn script(&self, a: &Args, _facts: &Facts) -> Result<Step, ArgError> {
        let mut s = Script::new();
        s.set_opt("U", a.user.as_deref())
            .set("FLEET_MARK", a.marker.as_str())
            .set(
                "FLEET_ALT",
                a.marker.replacen("#fleet: ", "#Ansible: ", 1).as_str(),
            )
            .set_opt("FLEET_ENV", a.env.as_deref())
            .set("FLEET_LINE", a.line.as_str())
            .set("FLEET_STATE", if a.present { "present" } else { "absent" })
            .code(EDIT)
            .code(concat!(
                "export FLEET_MARK FLEET_ALT FLEET_ENV FLEET_LINE FLEET_STATE\n",
                "command -v crontab >/dev/null || fail \"crontab is not installed on the host (install cron)\"\n",
                "if [ -n \"$U\" ]; then set -- -u \"$U\"; else set --; fi\n",
                "o=$(mktemp) && t=$(mktemp) && e=$(mktemp) || fail \"cannot make temporary files\"\n",
                "trap 'rm -f -- \"$o\" \"$t\" \"$e\"' EXIT; trap 'exit 1' HUP INT TERM PIPE\n",
                "if ! crontab \"$@\" -l > \"$o\" 2> \"$e\"; then grep -q 'no crontab for' \"$e\" || fail \"crontab -l failed: $(cat \"$e\")\"; : > \"$o\"; fi\n",
                "awk \"$FLEET_AWK\" < \"$o\" > \"$t\" || fail \"cannot edit the crontab\"\n",
                "cmp -s \"$o\" \"$t\" && finish 0\n",
                "changed=1\n",
                "[ \"$DIFF\" = 1 ] && { fleet_old \"$o\"; fleet_new \"$t\"; }\n",
                "[ \"$CHECK\" = 1 ] && finish 0\n",
                "out=$(crontab \"$@\" \"$t\" 2>&1) || fail \"crontab refused the new table: $out\"\n",
                "finish 0\n",
            ));
        Ok(Step::of(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_render_like_crontab_wants_them() {
        let f = |v: [&str; 5]| Timing::Fields(v.map(String::from));
        assert_eq!(
            job_line(
                &f(["0", "3", "*", "*", "1-5"]),
                "/usr/bin/backup --all",
                false
            ),
            "0 3 * * 1-5 /usr/bin/backup --all"
        );
        assert_eq!(
            job_line(&Timing::Special("reboot"), "fleet agent", true),
            "#@reboot fleet agent"
        );
        assert_eq!(marker("nightly backup"), "#fleet: nightly backup");
    }

    #[test]
    fn time_fields() {
        for ok in ["*", "*/5", "1-5", "mon,wed", "0", "1,15,30"] {
            assert_eq!(field_problem(ok), None, "{ok}");
        }
        for bad in ["", "* *", "1;reboot", "$(id)", "5\n"] {
            assert!(field_problem(bad).is_some(), "{bad:?}");
        }
    }
}
