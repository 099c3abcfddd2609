//! `user`: a local account exists (or not), with its supplementary groups.

use crate::facts::Facts;
use crate::modules::{ArgError, ArgReader, Inputs, Module, Step, values};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct User;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "user",
    summary: "Ensure a local user account exists (or not).",
    free_form: None,
    args: &[
        arg("name", ArgKind::Str, true, "user name"),
        arg("system", ArgKind::Bool, false, "a system account"),
        arg("home", ArgKind::Str, false, "home directory"),
        arg("shell", ArgKind::Str, false, "login shell"),
        arg(
            "groups",
            ArgKind::StrList,
            false,
            "supplementary groups the user must be in (others are kept)",
        ),
        arg(
            "state",
            ArgKind::OneOf(&["present", "absent"]),
            false,
            "default `present`",
        ),
    ],
    exactly_one_of: &[],
};

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    name: String,
    system: bool,
    home: Option<String>,
    shell: Option<String>,
    groups: Vec<String>,
    absent: bool,
}

impl Module for User {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, _: &Inputs<'_>) -> Result<Args, ArgError> {
        let name = a.req("name")?;
        if !crate::spec::task::is_account_name(&name) {
            return Err(a.invalid("name", "an account name (letters, digits, `_`, `.`, `-`)"));
        }
        let groups = a.str_list("groups")?;
        if let Some(bad) = groups
            .iter()
            .find(|g| !crate::spec::task::is_account_name(g))
        {
            let shown = if a.is_secret("groups") {
                crate::secret::MASK
            } else {
                bad.as_str()
            };
            return Err(ArgError::arg(
                "groups",
                format!("module `user`: `groups`: `{shown}` is not a group name"),
            ));
        }
        Ok(Args {
            name,
            system: a.bool("system")?.unwrap_or(false),
            home: values::opt_path(a, "home")?,
            shell: values::opt_path(a, "shell")?,
            groups,
            absent: a.one_of("state", &["present", "absent"])? == Some("absent"),
        })
    }

    fn script(&self, a: &Args, _facts: &Facts) -> Result<Step, ArgError> {
        let mut s = Script::new();
        s.set("U", a.name.as_str());
        if a.absent {
            s.code("if id -u -- \"$U\" >/dev/null 2>&1; then changed=1; [ \"$CHECK\" = 1 ] || { if command -v userdel >/dev/null; then userdel -- \"$U\"; else sysadminctl -deleteUser \"$U\"; fi; } || fail \"cannot remove user $U\"; fi\nfinish 0\n");
            return Ok(Step::of(s));
        }
        // useradd's options as positional parameters, the name last.
        let mut opts: Vec<&str> = Vec::new();
        if a.system {
            opts.push("--system");
        }
        if let Some(h) = &a.home {
            opts.extend(["--home-dir", h, "--create-home"]);
        }
        if let Some(sh) = &a.shell {
            opts.extend(["--shell", sh]);
        }
        s.args(opts).code(concat!(
            "if ! id -u -- \"$U\" >/dev/null 2>&1; then changed=1; if [ \"$CHECK\" != 1 ]; then ",
            "if command -v useradd >/dev/null; then useradd \"$@\" -- \"$U\"; else sysadminctl -addUser \"$U\"; fi || fail \"cannot create user $U\"; fi; fi\n",
        ));
        if !a.groups.is_empty() {
            s.args(a.groups.iter()).code(concat!(
                "have=\" $(id -nG -- \"$U\" 2>/dev/null) \"\n",
                "for g do case $have in *\" $g \"*) ;; *) changed=1; if [ \"$CHECK\" != 1 ]; then ",
                "if command -v usermod >/dev/null; then usermod -aG \"$g\" -- \"$U\"; else dseditgroup -o edit -a \"$U\" -t user \"$g\"; fi || fail \"cannot add $U to group $g\"; fi;; esac; done\n",
            ));
        }
        s.code("finish 0\n");
        Ok(Step::of(s))
    }

    fn stales_facts(&self) -> bool {
        true
    }
}
