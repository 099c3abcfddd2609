//! Placing content at a path, atomically: the new content is written to a temp file beside
//! the target (random name, `O_EXCL`, removed by a trap when anything fails or the connection
//! drops), given its mode and owner, then renamed over the target. Nothing is written when the
//! content is already there.
//!
//! Small text travels inside the script, bound to a variable. Large or binary content is
//! compared by sha256 first; only when it differs does a second exec stream it on stdin, and
//! the host checks the announced length and sha256 before the rename, so a transfer cut short
//! (fleet killed, connection lost) never replaces the target.

use std::sync::Arc;

use crate::modules::attrs::Attrs;
use crate::modules::{Effects, FileContent, Need, Step};
use crate::script::Script;

/// Largest content that travels inside a script.
pub const INLINE_MAX: usize = 48 * 1024;

/// Largest new content whose old version `--diff` fetches.
const DIFF_MAX: usize = 1024 * 1024;

/// Content, a destination and attributes.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The path on the host.
    pub dest: String,
    /// The content.
    pub content: FileContent,
    /// Mode, owner, group.
    pub attrs: Attrs,
}

/// Whether `content` can travel inside a script: text without NUL bytes, small.
pub fn inlinable(content: &[u8]) -> bool {
    content.len() <= INLINE_MAX && !content.contains(&0) && std::str::from_utf8(content).is_ok()
}

/// `D`, the directory of `$P`, without running `dirname`; a missing directory is a change in
/// check mode (an earlier task may create it), an error otherwise.
pub const DIR_OF_P: &str = concat!(
    "case \"$P\" in */*) D=${P%/*}; D=${D:-/};; *) D=.;; esac\n",
    "if [ ! -d \"$D\" ]; then [ \"$CHECK\" = 1 ] && { missing=1; changed=1; finish 0; }; fail \"directory $D does not exist (create it with a file task first)\"; fi\n",
    "[ -d \"$P\" ] && fail \"$P is a directory\"\n",
    "t=\"$D/.fleet.$FN.$FU\"; A=$t\n",
);

impl Placement {
    /// True when the content travels inside the script.
    pub fn inline(&self) -> bool {
        inlinable(&self.content.bytes)
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.content.bytes).unwrap_or_default()
    }

    /// The step that compares and, for inline content, writes.
    pub fn step(&self) -> Step {
        let mut s = Script::new();
        s.set("P", self.dest.as_str());
        self.attrs.bind(&mut s);
        if self.inline() {
            s.set("C", self.text());
            self.inline_body(&mut s);
            s.code("finish 0\n");
        } else {
            s.set("SUM", crate::util::sha256_hex(&self.content.bytes));
            s.code(DIR_OF_P).code(concat!(
                "existed=0; [ -e \"$P\" ] && existed=1\n",
                "same=0; if [ \"$existed\" = 1 ]; then fleet_sum \"$P\"; [ \"$sum\" = \"$SUM\" ] && same=1; fi\n",
                "if [ \"$same\" = 0 ]; then changed=1\n",
            ));
            if self.diffable() {
                s.code("[ \"$existed\" = 1 ] && [ \"$DIFF\" = 1 ] && fleet_old \"$P\"\n");
            }
            s.code("[ \"$CHECK\" = 1 ] || more=1\nfinish 0\nfi\n");
            self.attrs.converge(&mut s);
            s.code("finish 0\n");
        }
        Step {
            script: s,
            stdin: None,
            stat_path: (!self.attrs.is_empty()).then(|| self.dest.clone()),
            own_path: true,
        }
    }

    /// The code that places inline content `$C` at `$P` (`changed=1` when it did, or would),
    /// and brings its attributes right. Ends with `finish 0` when it wrote; falls through
    /// otherwise.
    pub fn inline_body(&self, s: &mut Script) {
        s.code(DIR_OF_P).code(concat!(
            "existed=0; [ -e \"$P\" ] && existed=1\n",
            "same=0; [ \"$existed\" = 1 ] && printf '%s' \"$C\" | cmp -s - \"$P\" && same=1\n",
            "if [ \"$same\" = 0 ]; then changed=1\n",
            "[ \"$existed\" = 1 ] && [ \"$DIFF\" = 1 ] && fleet_old \"$P\"\n",
            "if [ \"$CHECK\" != 1 ]; then fleet_tmp_trap\n",
        ));
        // The unit is a subshell and creates no other file after this one: the umask and
        // `set -C` need no subshell of their own.
        match self.attrs.umask() {
            Some(um) => {
                s.set("UM", um)
                    .code("umask \"$UM\"; set -C; printf '%s' \"$C\" > \"$t\" || fail \"cannot write in $D\"; set +C\n");
            }
            None => {
                s.code("umask 077; set -C; printf '%s' \"$C\" > \"$t\" || fail \"cannot write in $D\"; set +C\n");
            }
        }
        self.finish_temp(s, self.attrs.umask().is_some());
        s.code("fi\nfinish 0\nfi\n");
        self.attrs.converge(s);
    }

    /// Mode, owner and the rename of the temp file `$t` over `$P`.
    fn finish_temp(&self, s: &mut Script, mode_done: bool) {
        if self.attrs.mode.is_none() {
            // No mode asked: keep the old file's, else 644.
            s.code("if [ \"$existed\" = 1 ]; then fleet_stat \"$P\"; set -- $st; m=${1:-644}; else m=644; fi; chmod -- \"$m\" \"$t\" || fail \"cannot set the mode of $t\"\n");
        }
        self.attrs.fresh(s, mode_done);
        s.code("mv -f -- \"$t\" \"$P\" || fail \"cannot replace $P\"; trap - EXIT\n");
    }

    fn diffable(&self) -> bool {
        self.content.bytes.len() <= DIFF_MAX && std::str::from_utf8(&self.content.bytes).is_ok()
    }

    /// The second exec for large content: streamed on stdin into a temp file, checked against
    /// the announced length and sha256, then renamed over the target.
    pub fn transfer(&self) -> Step {
        let mut s = Script::new();
        self.transfer_body(&mut s);
        s.code("changed=1; finish 0\n");
        Step {
            script: s,
            stdin: Some(Arc::clone(&self.content.bytes)),
            stat_path: None,
            own_path: true,
        }
    }

    /// The code of [`Placement::transfer`], without its end.
    pub fn transfer_body(&self, s: &mut Script) {
        s.set("P", self.dest.as_str())
            .set("SUM", crate::util::sha256_hex(&self.content.bytes))
            .set("LEN", self.content.bytes.len());
        self.attrs.bind(s);
        s.code(DIR_OF_P).code(concat!(
            "existed=0; [ -e \"$P\" ] && existed=1\n",
            "fleet_tmp_trap\n",
            "umask 077; set -C; cat > \"$t\" || fail \"cannot write in $D\"; set +C\n",
            "n=$(wc -c < \"$t\"); n=$((n))\n",
            "[ \"$n\" = \"$LEN\" ] || fail \"the new content of $P arrived cut short ($n of $LEN bytes); $P is unchanged\"\n",
            "fleet_sum \"$t\"; [ \"$sum\" = \"$SUM\" ] || fail \"the new content of $P arrived damaged (sha256 $sum, expected $SUM); $P is unchanged\"\n",
        ));
        self.finish_temp(s, false);
    }

    /// It creates the destination and needs its directory.
    pub fn effects(&self) -> Effects {
        let dir = match self.dest.rsplit_once('/') {
            Some(("", _)) => "/".to_string(),
            Some((d, _)) => d.to_string(),
            None => ".".to_string(),
        };
        Effects {
            creates: Some((self.dest.trim_end_matches('/').to_string(), false)),
            needs: Some(Need::Dir(dir)),
        }
    }
}
