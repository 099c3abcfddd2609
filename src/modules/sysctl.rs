//! `sysctl`: a kernel parameter kept in a file under `/etc/sysctl.d/` (so it holds after a
//! reboot) and, with `reload` (the default), set in the running kernel when its value there
//! differs (`sysctl -n` to read, `sysctl -w` to set). The file is edited by awk, which reads
//! the name and value from its environment, and replaced atomically.

use crate::facts::Facts;
use crate::modules::{ArgError, ArgReader, Effects, Inputs, Module, Need, Step, values};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct Sysctl;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "sysctl",
    summary: "Set a kernel parameter in a sysctl.d file and (with `reload`) in the running kernel.",
    free_form: None,
    args: &[
        arg(
            "name",
            ArgKind::Str,
            true,
            "the parameter (`net.ipv4.ip_forward`, `vm.swappiness`)",
        ),
        arg(
            "value",
            ArgKind::Str,
            false,
            "its value; required unless `state: absent`",
        ),
        arg(
            "state",
            ArgKind::OneOf(&["present", "absent"]),
            false,
            "default `present`; `absent` removes it from the file (the kernel keeps its value)",
        ),
        arg(
            "sysctl_file",
            ArgKind::Str,
            false,
            "default `/etc/sysctl.d/99-fleet.conf`",
        ),
        arg(
            "reload",
            ArgKind::Bool,
            false,
            "also set the running kernel's value when it differs (default true)",
        ),
    ],
    exactly_one_of: &[],
};

/// The file a parameter goes to unless the task says.
pub const DEFAULT_FILE: &str = "/etc/sysctl.d/99-fleet.conf";

/// Why `n` is not a sysctl name (dotted words; `/` as a separator is read as `.`).
pub fn name_problem(n: &str) -> Option<&'static str> {
    let ok = !n.is_empty()
        && !n.starts_with(['-', '.', '/'])
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
    (!ok).then_some("a parameter name such as `net.ipv4.ip_forward`")
}

/// A value as the kernel prints it back: words separated by single spaces (`sysctl -n`
/// separates the fields of `net.ipv4.tcp_rmem` with tabs).
pub fn normalize_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    name: String,
    value: String,
    present: bool,
    file: String,
    reload: bool,
}

/// The edit of the file: every line that sets the parameter is replaced by (or, absent, drops
/// for) one `name = value` line; a missing one is appended.
const EDIT: &str = concat!(
    "FLEET_AWK='BEGIN { k = ENVIRON[\"K\"]; line = k \" = \" ENVIRON[\"V\"]; present = ENVIRON[\"ST\"] == \"present\"; done = 0 }\n",
    "{ s = $0; sub(/^[ \\t]+/, \"\", s) }\n",
    "s !~ /^[#;]/ && index(s, \"=\") > 0 { n = substr(s, 1, index(s, \"=\") - 1); sub(/[ \\t]+$/, \"\", n); gsub(/\\//, \".\", n); if (n == k) { if (present && !done) print line; done = 1; next } }\n",
    "{ print }\n",
    "END { if (present && !done) print line }'\n",
);

impl Module for Sysctl {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, _: &Inputs<'_>) -> Result<Args, ArgError> {
        let name = a.req("name")?;
        if let Some(why) = name_problem(&name) {
            return Err(a.invalid("name", why));
        }
        let present = a.one_of("state", &["present", "absent"])? != Some("absent");
        let value = a.str("value")?.map(|v| normalize_value(&v));
        if present && value.as_deref().is_none_or(str::is_empty) {
            return Err(ArgError::arg(
                "value",
                "module `sysctl`: `state: present` needs `value`",
            ));
        }
        Ok(Args {
            name: name.replace('/', "."),
            value: value.unwrap_or_default(),
            present,
            file: values::opt_path(a, "sysctl_file")?.unwrap_or_else(|| DEFAULT_FILE.to_string()),
            reload: a.bool("reload")?.unwrap_or(true),
        })
    }

    fn script(&self, a: &Args, _facts: &Facts) -> Result<Step, ArgError> {
        let mut s = Script::new();
        s.set("K", a.name.as_str())
            .set("V", a.value.as_str())
            .set("ST", if a.present { "present" } else { "absent" })
            .set("P", a.file.as_str())
            .set("RL", a.reload)
            .code(EDIT)
            .code(concat!(
                "export K V ST\n",
                "command -v sysctl >/dev/null || fail \"sysctl is not installed on the host\"\n",
                // The running kernel first: a name it does not know fails before the file
                // is written.
                "if [ \"$ST\" = present ] && [ \"$RL\" = 1 ]; then\n",
                "  cur=$(sysctl -n \"$K\" 2>&1) || fail \"the kernel has no parameter $K: $cur\"\n",
                "  cur=$(printf '%s' \"$cur\" | tr -s ' \\t\\n' '   ' | sed 's/^ //; s/ $//')\n",
                "  if [ \"$cur\" != \"$V\" ]; then changed=1; printf 'kernel: %s -> %s\\n' \"$cur\" \"$V\"\n",
                "    [ \"$CHECK\" = 1 ] || { out=$(sysctl -w \"$K=$V\" 2>&1) || fail \"sysctl -w $K failed: $out\"; }\n",
                "  fi\n",
                "fi\n",
                "case \"$P\" in */*) D=${P%/*}; D=${D:-/};; *) D=.;; esac\n",
                "if [ ! -d \"$D\" ]; then [ \"$CHECK\" = 1 ] && [ ! -e \"$D\" ] && { missing=1; changed=1; finish 0; }; fail \"directory $D does not exist (create it with a file task first)\"; fi\n",
                "o=$(mktemp) && n=$(mktemp) || fail \"cannot make temporary files\"; t=\"$D/.fleet.$FN.$FU\"\n",
                "trap 'rm -f -- \"$o\" \"$n\" \"$t\"' EXIT; trap 'exit 1' HUP INT TERM PIPE\n",
                "[ -f \"$P\" ] && { cat -- \"$P\" > \"$o\" || fail \"cannot read $P\"; }\n",
                "awk \"$FLEET_AWK\" < \"$o\" > \"$n\" || fail \"cannot edit $P\"\n",
                "if [ ! -e \"$P\" ] && [ ! -s \"$n\" ]; then finish 0; fi\n",
                "cmp -s \"$o\" \"$n\" && finish 0\n",
                "changed=1\n",
                "[ \"$DIFF\" = 1 ] && { fleet_old \"$o\"; fleet_new \"$n\"; }\n",
                "[ \"$CHECK\" = 1 ] && finish 0\n",
                "(umask 022; set -C; cat \"$n\" > \"$t\") || fail \"cannot write in $D\"\n",
                "mv -f -- \"$t\" \"$P\" || fail \"cannot replace $P\"\n",
                "finish 0\n",
            ));
        Ok(Step {
            own_path: false,
            ..Step::of(s)
        })
    }

    fn effects(&self, a: &Args) -> Effects {
        let dir = match a.file.rsplit_once('/') {
            Some(("", _)) => "/".to_string(),
            Some((d, _)) => d.to_string(),
            None => ".".to_string(),
        };
        Effects {
            creates: None,
            needs: Some(Need::Dir(dir)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values() {
        assert_eq!(name_problem("net.ipv4.ip_forward"), None);
        assert_eq!(name_problem("net/ipv4/conf/eth0/rp_filter"), None);
        for bad in ["", "-w", "a b", "x=1", "$(id)", ".a"] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
        assert_eq!(
            normalize_value(" 4096\t87380  6291456\n"),
            "4096 87380 6291456"
        );
    }
}
