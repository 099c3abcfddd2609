//! `package`: install or remove packages with the host's manager (apt, dnf, pacman, brew).
//! The names are the positional parameters of the script; the ones that need work are kept
//! there (`for n do shift; … set -- "$@" "$n"; done`) and handed to the manager as `"$@"`.

use crate::facts::Facts;
use crate::modules::{ArgError, ArgReader, Inputs, Module, Step, values};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct Package;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "package",
    summary: "Install or remove packages with the host's manager (apt, dnf, pacman, brew).",
    free_form: None,
    args: &[
        arg(
            "name",
            ArgKind::StrList,
            true,
            "package name or list of names",
        ),
        arg(
            "state",
            ArgKind::OneOf(&["present", "absent", "latest"]),
            false,
            "default `present`",
        ),
        arg(
            "manager",
            ArgKind::OneOf(&["auto", "apt", "dnf", "pacman", "brew"]),
            false,
            "default `auto` (from facts)",
        ),
        arg("cask", ArgKind::Bool, false, "Homebrew cask (macOS apps)"),
        arg(
            "update_cache",
            ArgKind::Bool,
            false,
            "refresh the package index first (apt)",
        ),
    ],
    exactly_one_of: &[],
};

/// What the packages should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Installed.
    Present,
    /// Not installed.
    Absent,
    /// Installed at the newest version.
    Latest,
}

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    names: Vec<String>,
    state: State,
    manager: Option<&'static str>,
    cask: bool,
    update_cache: bool,
}

/// `has NAME`, `outdated NAME`, install and remove for one manager.
struct Manager {
    has: &'static str,
    outdated: &'static str,
    install: &'static str,
    remove: &'static str,
}

const APT: Manager = Manager {
    has: "has() { dpkg-query -W -f='${Status}' \"$1\" 2>/dev/null | grep -q 'install ok installed'; }\n",
    outdated: "outdated() { apt-get -s install --only-upgrade \"$1\" 2>/dev/null | grep -q '^Inst'; }\n",
    install: "DEBIAN_FRONTEND=noninteractive apt-get install -y -q \"$@\" >&2 || fail \"apt-get could not install: $*\"\n",
    remove: "DEBIAN_FRONTEND=noninteractive apt-get remove -y -q \"$@\" >&2 || fail \"apt-get could not remove: $*\"\n",
};
const DNF: Manager = Manager {
    has: "has() { rpm -q \"$1\" >/dev/null 2>&1; }\n",
    outdated: "outdated() { dnf -q check-update \"$1\" >/dev/null 2>&1; [ $? = 100 ]; }\n",
    install: "dnf install -y -q \"$@\" >&2 || fail \"dnf could not install: $*\"\n",
    remove: "dnf remove -y -q \"$@\" >&2 || fail \"dnf could not remove: $*\"\n",
};
const PACMAN: Manager = Manager {
    has: "has() { pacman -Q \"$1\" >/dev/null 2>&1; }\n",
    outdated: "outdated() { pacman -Qu \"$1\" >/dev/null 2>&1; }\n",
    install: "pacman -S --noconfirm --needed \"$@\" >&2 || fail \"pacman could not install: $*\"\n",
    remove: "pacman -R --noconfirm \"$@\" >&2 || fail \"pacman could not remove: $*\"\n",
};
const BREW: Manager = Manager {
    has: "has() { \"$BREW\" list --formula \"$1\" >/dev/null 2>&1; }\n",
    outdated: "outdated() { [ -n \"$(\"$BREW\" outdated --formula \"$1\" 2>/dev/null)\" ]; }\n",
    install: "\"$BREW\" install \"$@\" >&2 || fail \"brew could not install: $*\"\n",
    remove: "\"$BREW\" uninstall \"$@\" >&2 || fail \"brew could not remove: $*\"\n",
};
const BREW_CASK: Manager = Manager {
    has: "has() { \"$BREW\" list --cask \"$1\" >/dev/null 2>&1; }\n",
    outdated: "outdated() { [ -n \"$(\"$BREW\" outdated --cask \"$1\" 2>/dev/null)\" ]; }\n",
    install: "\"$BREW\" install --cask \"$@\" >&2 || fail \"brew could not install: $*\"\n",
    remove: "\"$BREW\" uninstall --cask \"$@\" >&2 || fail \"brew could not remove: $*\"\n",
};

/// A non-login ssh session on a Mac has no Homebrew on its PATH; Homebrew refuses root.
const FIND_BREW: &str = concat!(
    "BREW=$(command -v brew 2>/dev/null) || for b in /opt/homebrew/bin/brew /usr/local/bin/brew; do [ -x \"$b\" ] && { BREW=$b; break; }; done\n",
    "[ -n \"$BREW\" ] || fail \"Homebrew not found (not on PATH, nor in /opt/homebrew/bin or /usr/local/bin)\"\n",
    "[ \"$(id -u)\" != 0 ] || fail \"Homebrew does not run as root: run this task without become, as the Mac's admin user\"\n",
);

impl Module for Package {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, _: &Inputs<'_>) -> Result<Args, ArgError> {
        let names = a.str_list("name")?;
        if names.is_empty() {
            return Err(a.invalid("name", "a package name or a list of names"));
        }
        for n in &names {
            values::package(a, "name", n)?;
        }
        let state = match a.one_of("state", &["present", "absent", "latest"])? {
            Some("absent") => State::Absent,
            Some("latest") => State::Latest,
            _ => State::Present,
        };
        let manager = match a.one_of("manager", &["auto", "apt", "dnf", "pacman", "brew"])? {
            None | Some("auto") => None,
            Some(m) => Some(m),
        };
        Ok(Args {
            names,
            state,
            manager,
            cask: a.bool("cask")?.unwrap_or(false),
            update_cache: a.bool("update_cache")?.unwrap_or(false),
        })
    }

    fn script(&self, a: &Args, facts: &Facts) -> Result<Step, ArgError> {
        let manager = match a.manager {
            Some(m) => m,
            None => match facts.package_manager.as_deref() {
                Some("apt") => "apt",
                Some("dnf") => "dnf",
                Some("pacman") => "pacman",
                Some("brew") => "brew",
                _ => {
                    return Err(ArgError::task(
                        "no package manager found on the host (apt, dnf, pacman or brew); set `manager:`",
                    ));
                }
            },
        };
        let m = match (manager, a.cask) {
            ("apt", _) => &APT,
            ("dnf", _) => &DNF,
            ("pacman", _) => &PACMAN,
            (_, true) => &BREW_CASK,
            _ => &BREW,
        };
        let mut s = Script::new();
        if manager == "brew" {
            s.code(FIND_BREW);
        }
        if a.update_cache && manager == "apt" {
            s.code("[ \"$CHECK\" = 1 ] || apt-get update -q >/dev/null 2>&1 || fail \"apt-get update failed\"\n");
        }
        s.code(m.has).code(m.outdated).args(a.names.iter());
        s.code(match a.state {
            State::Present => "for n do shift; if ! has \"$n\"; then set -- \"$@\" \"$n\"; fi; done\n",
            State::Absent => "for n do shift; if has \"$n\"; then set -- \"$@\" \"$n\"; fi; done\n",
            State::Latest => "for n do shift; if ! has \"$n\" || outdated \"$n\"; then set -- \"$@\" \"$n\"; fi; done\n",
        });
        s.code("[ $# = 0 ] && finish 0\nchanged=1\n[ \"$CHECK\" = 1 ] && finish 0\n");
        s.code(if a.state == State::Absent {
            m.remove
        } else {
            m.install
        });
        s.code("finish 0\n");
        Ok(Step::of(s))
    }

    fn stales_facts(&self) -> bool {
        true
    }
}
