//! `unarchive`: unpack a tar (plain, gzip, bzip2, xz) or zip archive into a directory on the
//! host. An archive on the controller is read there first (`archive`): a member that would
//! land outside `dest` fails the task before any host is touched, and the host compares each
//! member's type, sha256 and link target with what `dest` holds — the archive travels (a
//! second exec, checked by length and sha256) only when something differs. An archive
//! already on the host (`remote_src`) is listed and checked by the same rules there, unpacked
//! into a private temporary directory and compared file by file; `dest` is only written in a
//! real run, and only when something differs.

use std::sync::Arc;

use crate::facts::Facts;
use crate::modules::archive::{self, Kind};
use crate::modules::{ArgError, ArgReader, Effects, Inputs, Module, Need, Reported, Step, values};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct Unarchive;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "unarchive",
    summary: "Unpack a tar (plain, .gz, .bz2, .xz) or zip archive into a directory; members escaping it are refused.",
    free_form: None,
    args: &[
        arg(
            "src",
            ArgKind::Str,
            true,
            "the archive: in the role's `files/`, the repo's `files/` or the repo by its path; with `remote_src`, a path on the host",
        ),
        arg(
            "dest",
            ArgKind::Str,
            true,
            "the directory to unpack in (it must exist)",
        ),
        arg(
            "remote_src",
            ArgKind::Bool,
            false,
            "`src` is already on the host",
        ),
        arg(
            "creates",
            ArgKind::Str,
            false,
            "skip when this path exists on the host",
        ),
    ],
    exactly_one_of: &[],
};

/// Where the archive is.
#[derive(Debug, Clone)]
enum Source {
    /// Read on the controller: its bytes, how it is packed, its members.
    Controller {
        bytes: Arc<[u8]>,
        format: archive::Format,
        members: Vec<archive::Member>,
    },
    /// A path on the host.
    Host(String),
}

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    source: Source,
    dest: String,
    creates: Option<String>,
}

/// `D` missing is a change in check mode (an earlier task may create it), else an error.
const DEST: &str = concat!(
    "if [ -n \"$CR\" ] && [ -e \"$CR\" ]; then finish 0; fi\n",
    "if [ ! -d \"$D\" ]; then [ \"$CHECK\" = 1 ] && [ ! -e \"$D\" ] && { missing=1; changed=1; finish 0; }; fail \"$D is not a directory (create it with a file task first)\"; fi\n",
);

/// `fleet_unpack FORMAT ARCHIVE DIR`: the host's own tools, owners not taken from the
/// archive. tar recognises the compression itself.
const UNPACK: &str = concat!(
    "fleet_unpack() { case $1 in\n",
    "  zip) command -v unzip >/dev/null || fail \"unzip is not installed on the host\"; out=$(unzip -q -o -- \"$2\" -d \"$3\" 2>&1) || fail \"unzip of $2 into $3 failed: $out\";;\n",
    "  *) out=$(tar --no-same-owner -xf \"$2\" -C \"$3\" 2>&1) || fail \"tar of $2 into $3 failed: $out\";;\n",
    "esac; }\n",
);

/// For an archive on the host: its format, its member names checked (no absolute path, no
/// `..`), unpacked into `$X`, its links checked (`archive::link_stays_inside`'s rule), and
/// `$X` compared with `$D` (each differing member printed).
const REMOTE: &str = concat!(
    "[ -f \"$S\" ] || fail \"$S does not exist on the host or is not a regular file\"\n",
    "FMT=tar; command -v unzip >/dev/null && unzip -Z1 -- \"$S\" >/dev/null 2>&1 && FMT=zip\n",
    "if [ \"$FMT\" = zip ]; then names=$(unzip -Z1 -- \"$S\" 2>&1); else names=$(tar -tf \"$S\" 2>&1); fi || fail \"$S is not an archive fleet can unpack: $names\"\n",
    "bad=$(printf '%s\\n' \"$names\" | awk '{ if ($0 ~ /^\\//) { print; exit } n = split($0, c, \"/\"); for (i = 1; i <= n; i++) if (c[i] == \"..\") { print; exit } }')\n",
    "[ -z \"$bad\" ] || fail \"$S: member $bad would land outside $D (an absolute path or a .. component); nothing was unpacked\"\n",
    "X=$(mktemp -d \"${TMPDIR:-/tmp}/fleet.XXXXXXXX\") || fail \"cannot make a temporary directory\"\n",
    "trap 'rm -rf -- \"$X\"' EXIT; trap 'exit 1' HUP INT TERM PIPE\n",
    "fleet_unpack \"$FMT\" \"$S\" \"$X\"\n",
    "export X D\n",
    "FLEET_LINKCHK='BEGIN { m = ENVIRON[\"FL\"]; t = ENVIRON[\"FT\"]; if (t == \"\" || t ~ /^\\//) { print m; exit } d = split(m, c, \"/\") - 1; k = split(t, c, \"/\"); u = 0; named = 0; for (i = 1; i <= k; i++) { if (c[i] == \"..\") { if (named) { print m; exit } u++ } else if (c[i] != \"\" && c[i] != \".\") named = 1 } if (u > d) print m }'\n",
    "FLEET_CMP='for f; do r=${f#\"$X\"/}; q=$D/$r; if [ -L \"$f\" ]; then [ -L \"$q\" ] && [ \"$(readlink -- \"$q\")\" = \"$(readlink -- \"$f\")\" ]; elif [ -d \"$f\" ]; then [ -d \"$q\" ] && [ ! -L \"$q\" ]; else [ -f \"$q\" ] && [ ! -L \"$q\" ] && cmp -s -- \"$f\" \"$q\"; fi || printf \"%s\\n\" \"$r\"; done'\n",
    "export FLEET_LINKCHK FLEET_CMP\n",
    "bad=$(find \"$X\" -type l -exec sh -c 'for l; do FL=${l#\"$X\"/} FT=$(readlink -- \"$l\") awk \"$FLEET_LINKCHK\" </dev/null; done' sh {} + | head -n 1)\n",
    "[ -z \"$bad\" ] || fail \"$S: member $bad is a link that leads outside $D; nothing was unpacked\"\n",
    "diffs=$(find \"$X\" -mindepth 1 -exec sh -c \"$FLEET_CMP\" sh {} +)\n",
    "if [ -n \"$diffs\" ]; then changed=1; printf '%s\\n' \"$diffs\"; [ \"$CHECK\" = 1 ] || fleet_unpack \"$FMT\" \"$S\" \"$D\"; fi\n",
    "finish 0\n",
);

/// For an archive on the controller: each member (`KIND PATH VALUE` in `$@`) compared with
/// `$D`; each differing member printed.
const COMPARE: &str = concat!(
    "while [ $# -ge 3 ]; do q=$D/$2\n",
    "  case $1 in\n",
    "    d) [ -d \"$q\" ] && [ ! -L \"$q\" ];;\n",
    "    f) [ -f \"$q\" ] && [ ! -L \"$q\" ] && fleet_sum \"$q\" && [ \"$sum\" = \"$3\" ];;\n",
    "    *) [ -L \"$q\" ] && [ \"$(readlink -- \"$q\")\" = \"$3\" ];;\n",
    "  esac || { changed=1; printf '%s\\n' \"$2\"; }\n",
    "  shift 3\n",
    "done\n",
    "[ \"$changed\" = 1 ] && [ \"$CHECK\" != 1 ] && more=1\n",
    "finish 0\n",
);

impl Module for Unarchive {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, inputs: &Inputs<'_>) -> Result<Args, ArgError> {
        let src = values::path(a, "src")?;
        let source = if a.bool("remote_src")?.unwrap_or(false) {
            Source::Host(src)
        } else {
            let hide = |e: ArgError| {
                if a.is_secret("src") {
                    e.hiding(&src)
                } else {
                    e
                }
            };
            let bytes = inputs.files.repo_file(&src).map_err(hide)?;
            let (format, members) = archive::list(&bytes).map_err(|why| {
                hide(ArgError::arg(
                    "src",
                    format!("module `unarchive`: `src`: {src}: {why}"),
                ))
                .help("fleet refuses archives whose members would land outside `dest`")
            })?;
            Source::Controller {
                bytes: Arc::from(bytes),
                format,
                members,
            }
        };
        Ok(Args {
            source,
            dest: values::path(a, "dest")?,
            creates: values::opt_path(a, "creates")?,
        })
    }

    fn script(&self, a: &Args, _facts: &Facts) -> Result<Step, ArgError> {
        let mut s = Script::new();
        s.set("D", a.dest.trim_end_matches('/'))
            .set_opt("CR", a.creates.as_deref())
            .code(DEST);
        match &a.source {
            Source::Host(src) => {
                s.set("S", src.as_str()).code(UNPACK).code(REMOTE);
            }
            Source::Controller { members, .. } => {
                s.args(members.iter().flat_map(|m| {
                    let (k, v) = match &m.kind {
                        Kind::Dir => ("d", ""),
                        Kind::File(sum) => ("f", sum.as_str()),
                        Kind::Link(t) => ("l", t.as_str()),
                    };
                    [k, m.path.as_str(), v]
                }))
                .code(COMPARE);
            }
        }
        Ok(Step::of(s))
    }

    /// The archive, streamed on stdin to a private temporary file, checked by length and
    /// sha256, then unpacked into `dest`.
    fn followup(&self, a: &Args, _: &Facts, first: &Reported) -> Result<Option<Step>, ArgError> {
        let Source::Controller { bytes, format, .. } = &a.source else {
            return Ok(None);
        };
        if !first.more {
            return Ok(None);
        }
        let mut s = Script::new();
        s.set("D", a.dest.trim_end_matches('/'))
            .set("FMT", format.word())
            .set("SUM", crate::util::sha256_hex(bytes))
            .set("LEN", bytes.len())
            .code(UNPACK)
            .code(concat!(
                "[ -d \"$D\" ] || fail \"$D is not a directory\"\n",
                "X=$(mktemp -d \"${TMPDIR:-/tmp}/fleet.XXXXXXXX\") || fail \"cannot make a temporary directory\"\n",
                "trap 'rm -rf -- \"$X\"' EXIT; trap 'exit 1' HUP INT TERM PIPE\n",
                "cat > \"$X/a\" || fail \"cannot write the archive in $X\"\n",
                "n=$(wc -c < \"$X/a\"); n=$((n))\n",
                "[ \"$n\" = \"$LEN\" ] || fail \"the archive arrived cut short ($n of $LEN bytes); $D is unchanged\"\n",
                "fleet_sum \"$X/a\"; [ \"$sum\" = \"$SUM\" ] || fail \"the archive arrived damaged (sha256 $sum, expected $SUM); $D is unchanged\"\n",
                "fleet_unpack \"$FMT\" \"$X/a\" \"$D\"\n",
                "changed=1; finish 0\n",
            ));
        Ok(Some(Step {
            script: s,
            stdin: Some(Arc::clone(bytes)),
            stat_path: None,
            own_path: false,
        }))
    }

    fn effects(&self, a: &Args) -> Effects {
        Effects {
            creates: None,
            needs: Some(Need::Dir(a.dest.trim_end_matches('/').to_string())),
        }
    }

    fn batchable(&self, _: &Args) -> bool {
        false
    }
}
