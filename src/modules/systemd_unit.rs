//! `systemd_unit`: a systemd unit file, placed atomically (from a template or inline content)
//! or removed, and `daemon_reload: true`, the task that makes systemd read changed unit files.
//! The reload is meant as a handler the unit tasks notify: it runs once, at the end of the
//! play, however many units changed, and not at all when none did — in check mode too, where
//! the notified handler predicts the reload a real run would do.

use crate::facts::Facts;
use crate::modules::attrs::Attrs;
use crate::modules::place::Placement;
use crate::modules::{
    ArgError, ArgReader, Effects, FileContent, Inputs, Module, Reported, Step, values,
};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct SystemdUnit;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "systemd_unit",
    summary: "Place or remove a systemd unit file; `daemon_reload: true` (as a handler the unit tasks notify) reloads systemd once.",
    free_form: None,
    args: &[
        arg(
            "name",
            ArgKind::Str,
            false,
            "the unit (`ollama.service`, `backup.timer`; `.service` when no type is given)",
        ),
        arg(
            "src",
            ArgKind::Str,
            false,
            "a template for the unit (the role's `templates/` …)",
        ),
        arg("content", ArgKind::Str, false, "the unit's text"),
        arg(
            "state",
            ArgKind::OneOf(&["present", "absent"]),
            false,
            "default `present`",
        ),
        arg(
            "dir",
            ArgKind::Str,
            false,
            "where unit files go (default `/etc/systemd/system`)",
        ),
        arg(
            "daemon_reload",
            ArgKind::Bool,
            false,
            "instead of a unit: `systemctl daemon-reload` (always a change; use it as a handler)",
        ),
    ],
    exactly_one_of: &[],
};

/// The unit types systemd knows by file suffix.
const TYPES: &[&str] = &[
    "service",
    "socket",
    "timer",
    "path",
    "mount",
    "automount",
    "swap",
    "target",
    "slice",
    "device",
    "scope",
];

/// The unit file name for `name`: as given when it has a unit type, else `NAME.service`.
pub fn unit_file_name(name: &str) -> String {
    match name.rsplit_once('.') {
        Some((_, t)) if TYPES.contains(&t) => name.to_string(),
        _ => format!("{name}.service"),
    }
}

/// Decoded arguments.
#[derive(Debug, Clone)]
pub enum Args {
    /// Place a unit file.
    Place(Placement),
    /// Remove a unit file.
    Remove(String),
    /// `systemctl daemon-reload`.
    Reload,
}

impl Module for SystemdUnit {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, inputs: &Inputs<'_>) -> Result<Args, ArgError> {
        if a.bool("daemon_reload")?.unwrap_or(false) {
            if ["name", "src", "content", "state", "dir"]
                .iter()
                .any(|k| a.any(k).is_some())
            {
                return Err(ArgError::task(
                    "module `systemd_unit`: `daemon_reload: true` takes no other argument (it is a task of its own, best a handler the unit tasks notify)",
                ));
            }
            return Ok(Args::Reload);
        }
        let name = values::service(a, "name")?;
        if name.contains('/') {
            return Err(a.invalid("name", "a unit name without `/`"));
        }
        let dir = a
            .str("dir")?
            .unwrap_or_else(|| "/etc/systemd/system".to_string());
        if dir.is_empty() {
            return Err(a.invalid("dir", "a directory"));
        }
        let dest = format!("{}/{}", dir.trim_end_matches('/'), unit_file_name(&name));
        if a.one_of("state", &["present", "absent"])? == Some("absent") {
            return Ok(Args::Remove(dest));
        }
        let content = match (a.str("content")?, a.str("src")?) {
            (Some(c), None) => FileContent {
                bytes: std::sync::Arc::from(c.into_bytes()),
                secret: a.is_secret("content"),
            },
            (None, Some(src)) => {
                let mut c = inputs.files.template(&src, &[]).map_err(|e| {
                    if a.is_secret("src") {
                        e.hiding(&src)
                    } else {
                        e
                    }
                })?;
                c.secret |= a.is_secret("src");
                c
            }
            _ => {
                return Err(ArgError::task(
                    "module `systemd_unit` needs `src` or `content` (not both) for a unit that is present",
                ));
            }
        };
        Ok(Args::Place(Placement {
            dest,
            content,
            attrs: Attrs {
                mode: Some(0o644),
                ..Attrs::default()
            },
        }))
    }

    fn script(&self, a: &Args, facts: &Facts) -> Result<Step, ArgError> {
        if facts.init.as_deref().is_some_and(|i| i != "systemd") {
            return Err(ArgError::task(format!(
                "module `systemd_unit`: the host runs {}, not systemd",
                facts.init.as_deref().unwrap_or("another init")
            )));
        }
        match a {
            Args::Place(p) => Ok(p.step()),
            Args::Remove(path) => {
                let mut s = Script::new();
                s.set("P", path.as_str()).code(concat!(
                    "[ -e \"$P\" ] || [ -L \"$P\" ] || finish 0\n",
                    "[ -d \"$P\" ] && [ ! -L \"$P\" ] && fail \"$P is a directory\"\n",
                    "changed=1\n",
                    "[ \"$DIFF\" = 1 ] && [ -f \"$P\" ] && fleet_old \"$P\"\n",
                    "[ \"$CHECK\" = 1 ] && finish 0\n",
                    "rm -f -- \"$P\" || fail \"cannot remove $P\"\n",
                    "finish 0\n",
                ));
                Ok(Step::of(s))
            }
            Args::Reload => {
                let mut s = Script::new();
                s.code(concat!(
                    "command -v systemctl >/dev/null || fail \"systemctl not found\"\n",
                    "changed=1\n",
                    "[ \"$CHECK\" = 1 ] && finish 0\n",
                    "out=$(systemctl daemon-reload 2>&1) || fail \"systemctl daemon-reload failed: $out\"\n",
                    "finish 0\n",
                ));
                Ok(Step::of(s))
            }
        }
    }

    fn followup(&self, a: &Args, _: &Facts, first: &Reported) -> Result<Option<Step>, ArgError> {
        Ok(match a {
            Args::Place(p) if first.more => Some(p.transfer()),
            _ => None,
        })
    }

    fn effects(&self, a: &Args) -> Effects {
        match a {
            Args::Place(p) => p.effects(),
            _ => Effects::default(),
        }
    }

    fn batchable(&self, a: &Args) -> bool {
        match a {
            Args::Place(p) => p.inline(),
            _ => true,
        }
    }

    fn file<'a>(&self, a: &'a Args) -> Option<(&'a str, &'a FileContent)> {
        match a {
            Args::Place(p) => Some((&p.dest, &p.content)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_file_names() {
        assert_eq!(unit_file_name("ollama"), "ollama.service");
        assert_eq!(unit_file_name("ollama.service"), "ollama.service");
        assert_eq!(unit_file_name("backup.timer"), "backup.timer");
        assert_eq!(unit_file_name("getty@tty1.service"), "getty@tty1.service");
        assert_eq!(unit_file_name("app.v2"), "app.v2.service");
    }
}
