//! `lineinfile`: a line is present in (or absent from) a text file; `regexp` picks the line
//! to replace or remove. awk reads the line and the pattern from its environment, so no
//! quoting reaches its program.

use crate::facts::Facts;
use crate::modules::attrs::Attrs;
use crate::modules::{ArgError, ArgReader, Effects, Inputs, Module, Need, Step, values};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct LineInFile;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "lineinfile",
    summary: "Ensure a line is present in (or absent from) a text file; `regexp` picks the line to replace.",
    free_form: None,
    args: &[
        arg("path", ArgKind::Str, true, "the file on the host"),
        arg("line", ArgKind::Str, false, "the line that should be there"),
        arg(
            "regexp",
            ArgKind::Str,
            false,
            "the line to replace or remove (an awk extended regular expression)",
        ),
        arg(
            "state",
            ArgKind::OneOf(&["present", "absent"]),
            false,
            "default `present`",
        ),
        arg(
            "create",
            ArgKind::Bool,
            false,
            "create the file when missing",
        ),
        arg(
            "mode",
            ArgKind::Mode,
            false,
            "mode of a file it creates, as a quoted octal string",
        ),
    ],
    exactly_one_of: &[],
};

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    path: String,
    line: String,
    regexp: String,
    absent: bool,
    create: bool,
    attrs: Attrs,
}

/// Exits 3 when the file already is as wanted; with `FLEET_OUT` set it writes the new
/// contents there.
const EDIT: &str = concat!(
    "edit() { awk 'BEGIN { line = ENVIRON[\"FLEET_LINE\"]; re = ENVIRON[\"FLEET_RE\"]; st = ENVIRON[\"FLEET_STATE\"]; out = ENVIRON[\"FLEET_OUT\"]; last = 0; found = 0; exact = 0 }\n",
    "  { l[NR] = $0; if ($0 == line) exact = 1; if ((re != \"\" && $0 ~ re) || (re == \"\" && $0 == line)) { last = NR; found++; m[NR] = 1 } }\n",
    "  END { if (st == \"absent\") ch = (found > 0); else if (re != \"\" && last > 0) ch = (l[last] != line); else ch = (found == 0 && !exact)\n",
    "        if (!ch) exit 3\n        if (out == \"\") exit 0\n",
    "        for (i = 1; i <= NR; i++) { if (st == \"absent\") { if (!(i in m)) print l[i] > out } else if (i == last && re != \"\") print line > out; else print l[i] > out }\n",
    "        if (st != \"absent\" && found == 0 && !exact) print line > out\n        close(out) }' < \"$P\"; }\n",
);

impl Module for LineInFile {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, _: &Inputs<'_>) -> Result<Args, ArgError> {
        let absent = a.one_of("state", &["present", "absent"])? == Some("absent");
        let line = a.str("line")?;
        if !absent && line.is_none() {
            return Err(ArgError::arg(
                "line",
                "module `lineinfile`: `state: present` needs `line`",
            ));
        }
        let line = line.unwrap_or_default();
        if line.contains('\n') {
            return Err(a.invalid("line", "one line (no line break)"));
        }
        let regexp = a.str("regexp")?.unwrap_or_default();
        if absent && regexp.is_empty() && line.is_empty() {
            return Err(ArgError::task(
                "module `lineinfile`: `state: absent` needs `regexp` or `line`",
            ));
        }
        Ok(Args {
            path: values::path(a, "path")?,
            line,
            regexp,
            absent,
            create: a.bool("create")?.unwrap_or(false),
            attrs: Attrs::decode_mode(a)?,
        })
    }

    fn script(&self, a: &Args, _facts: &Facts) -> Result<Step, ArgError> {
        let mut s = Script::new();
        s.set("P", a.path.as_str())
            .set("FLEET_LINE", a.line.as_str())
            .set("FLEET_RE", a.regexp.as_str())
            .set("FLEET_STATE", if a.absent { "absent" } else { "present" })
            .code(concat!(
                "export FLEET_LINE FLEET_RE FLEET_STATE\n",
                "case \"$P\" in */*) D=${P%/*}; D=${D:-/};; *) D=.;; esac; t=\"$D/.fleet.$FN.$FU\"\n",
            ));
        a.attrs.bind(&mut s);
        if a.create {
            s.code("if [ ! -e \"$P\" ]; then [ \"$FLEET_STATE\" = absent ] && finish 0; changed=1; [ \"$CHECK\" = 1 ] && finish 0; [ -d \"$D\" ] || fail \"directory $D does not exist (create it with a file task first)\"; fleet_tmp_trap\n");
            match a.attrs.umask() {
                Some(um) => {
                    s.set("UM", um).code("umask \"$UM\"; set -C; printf '%s\\n' \"$FLEET_LINE\" > \"$t\" || fail \"cannot create $P\"; set +C\n");
                }
                None => {
                    s.code("umask 022; set -C; printf '%s\\n' \"$FLEET_LINE\" > \"$t\" || fail \"cannot create $P\"; set +C\n");
                    if a.attrs.mode.is_some() {
                        s.code("chmod -- \"$M\" \"$t\" || fail \"cannot set the mode of $t\"\n");
                    }
                }
            }
            s.code(
                "mv -f -- \"$t\" \"$P\" || fail \"cannot create $P\"; trap - EXIT; finish 0; fi\n",
            );
        } else {
            s.code(concat!(
                // As in Ansible: nothing to remove from a file that is not there.
                "[ \"$FLEET_STATE\" = absent ] && [ ! -e \"$P\" ] && finish 0\n",
                "if [ ! -f \"$P\" ]; then [ \"$CHECK\" = 1 ] && [ ! -e \"$P\" ] && { missing=1; changed=1; finish 0; }; ",
                "fail \"$P does not exist or is not a regular file (set create: true to create it)\"; fi\n",
            ));
        }
        s.code(EDIT).code(concat!(
            "FLEET_OUT=; export FLEET_OUT; edit; r=$?\n",
            "[ \"$r\" = 3 ] && finish 0\n",
            "[ \"$r\" = 0 ] || fail \"cannot read $P\"\n",
            "changed=1\n",
            "[ \"$DIFF\" = 1 ] && fleet_old \"$P\"\n",
            "[ \"$CHECK\" = 1 ] && finish 0\n",
            "fleet_tmp_trap\n",
            "umask 077; set -C; : > \"$t\" || fail \"cannot write next to $P\"; set +C\n",
            "FLEET_OUT=$t; edit || fail \"cannot write next to $P\"\n",
            "fleet_stat \"$P\"; set -- $st; chmod -- \"$1\" \"$t\"; chown -- \"$4:$5\" \"$t\" 2>/dev/null\n",
            "mv -f -- \"$t\" \"$P\" || fail \"cannot replace $P\"; trap - EXIT\n",
            "finish 0\n",
        ));
        Ok(Step {
            own_path: true,
            stat_path: Some(a.path.clone()),
            ..Step::of(s)
        })
    }

    fn effects(&self, a: &Args) -> Effects {
        Effects {
            creates: a.create.then(|| (a.path.clone(), false)),
            needs: (!a.create && !a.absent).then(|| Need::File(a.path.clone())),
        }
    }
}
