//! `get_url`: download a file on the host, verified by sha256, placed atomically.

use crate::facts::Facts;
use crate::modules::attrs::Attrs;
use crate::modules::{ArgError, ArgReader, Effects, Inputs, Module, Need, Step, values};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct GetUrl;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "get_url",
    summary: "Download a file on the host, verified by sha256, placed atomically.",
    free_form: None,
    args: &[
        arg(
            "url",
            ArgKind::Str,
            true,
            "what to download (http:// or https://)",
        ),
        arg("dest", ArgKind::Str, true, "destination path on the host"),
        arg(
            "sha256",
            ArgKind::Str,
            false,
            "expected checksum; without it an existing file is kept",
        ),
        arg(
            "mode",
            ArgKind::Mode,
            false,
            "file mode as a quoted octal string, e.g. \"0644\"",
        ),
        arg("owner", ArgKind::Str, false, "owning user"),
        arg("group", ArgKind::Str, false, "owning group"),
    ],
    exactly_one_of: &[],
};

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    url: String,
    dest: String,
    sha256: Option<String>,
    attrs: Attrs,
}

impl Module for GetUrl {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, _: &Inputs<'_>) -> Result<Args, ArgError> {
        Ok(Args {
            url: values::url(a, "url")?,
            dest: values::path(a, "dest")?,
            sha256: values::sha256(a, "sha256")?,
            attrs: Attrs::decode(a)?,
        })
    }

    fn script(&self, a: &Args, _facts: &Facts) -> Result<Step, ArgError> {
        let mut s = Script::new();
        s.set("P", a.dest.as_str())
            .set("U", a.url.as_str())
            .set_opt("WANT", a.sha256.as_deref());
        a.attrs.bind(&mut s);
        s.code(concat!(
            "case \"$P\" in */*) D=${P%/*}; D=${D:-/};; *) D=.;; esac\n",
            "[ -d \"$P\" ] && fail \"$P is a directory\"\n",
            "need=0\nif [ ! -e \"$P\" ]; then need=1; elif [ -n \"$WANT\" ]; then fleet_sum \"$P\"; [ \"$sum\" = \"$WANT\" ] || need=1; fi\n",
            "if [ \"$need\" = 1 ]; then changed=1\n",
            "if [ ! -d \"$D\" ]; then [ \"$CHECK\" = 1 ] && { missing=1; finish 0; }; fail \"directory $D does not exist (create it with a file task first)\"; fi\n",
            "[ \"$CHECK\" = 1 ] && finish 0\n",
            "t=\"$D/.fleet.$FN.$FU\"; A=$t; fleet_tmp_trap\n",
            "umask 077; set -C; : > \"$t\" || fail \"cannot write in $D\"; set +C\n",
            "curl -fsSL -g --proto '=http,https' --retry 2 -o \"$t\" \"$U\" || fail \"download of $U failed\"\n",
            "if [ -n \"$WANT\" ]; then fleet_sum \"$t\"; [ \"$sum\" = \"$WANT\" ] || fail \"checksum mismatch for $U: got $sum\"; fi\n",
        ));
        if a.attrs.mode.is_none() {
            s.code("chmod 644 \"$t\" || fail \"cannot set the mode of $t\"\n");
        }
        a.attrs.fresh(&mut s, false);
        s.code("mv -f -- \"$t\" \"$P\" || fail \"cannot replace $P\"; trap - EXIT\nfinish 0\nfi\n");
        a.attrs.converge(&mut s);
        s.code("finish 0\n");
        Ok(Step {
            script: s,
            stdin: None,
            stat_path: (!a.attrs.is_empty()).then(|| a.dest.clone()),
            own_path: true,
        })
    }

    fn effects(&self, a: &Args) -> Effects {
        let dir = match a.dest.rsplit_once('/') {
            Some(("", _)) => "/".to_string(),
            Some((d, _)) => d.to_string(),
            None => ".".to_string(),
        };
        Effects {
            creates: Some((a.dest.clone(), false)),
            needs: Some(Need::Dir(dir)),
        }
    }
}
