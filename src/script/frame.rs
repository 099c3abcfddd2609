//! What one exec on a host runs: a prelude (the run mode, the helpers every module script
//! uses), then one or more module scripts ("units"), each in its own subshell, in order; the
//! exec stops at the first unit that fails unless that unit ignores errors.
//!
//! Every marker the frame prints carries a nonce drawn fresh for each exec, so no output of a
//! task (a `cat` of a file that holds fleet's markers, say) can end a unit early, forge its
//! result or claim another unit's.

use crate::script::Script;

/// Exit status of a unit that changed something (the batch then stops trusting the mode and
/// owner it looked up before running; see [`compose`]); reported as 0.
pub const CHANGED_RC: i32 = 96;
/// Exit status of `fail`: the unit could not do its job; its message is on stderr.
pub const FAIL_RC: i32 = 97;

/// A random token for one exec's markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nonce(String);

impl Nonce {
    /// A fresh nonce: 128 random bits as hex.
    pub fn new() -> Nonce {
        let mut b = [0u8; 16];
        if getrandom::fill(&mut b).is_err() {
            // No system randomness: mix the time and an address, still unknown to the host.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let here = &b as *const _ as usize as u128;
            b = (t ^ here.rotate_left(64)).to_le_bytes();
        }
        Nonce(b.iter().map(|x| format!("{x:02x}")).collect())
    }

    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn unit(&self) -> String {
        format!("__FLEET_UNIT_{}__ ", self.0)
    }

    fn end(&self) -> String {
        format!("\n__FLEET_END_{}__", self.0)
    }

    fn mark(&self) -> String {
        format!("\n__FLEET_{}__ ", self.0)
    }

    fn old(&self) -> String {
        format!("__FLEET_OLD_{}__", self.0)
    }

    fn new_mark(&self) -> String {
        format!("__FLEET_NEW_{}__", self.0)
    }
}

impl Default for Nonce {
    fn default() -> Self {
        Nonce::new()
    }
}

/// A fresh name for a temp file beside a target: random, so it cannot be predicted, and
/// created with `set -C` (O_EXCL), so an existing path is never followed or reused.
pub fn temp_name() -> String {
    format!(".fleet.{}", &Nonce::new().0[..16])
}

/// How the units of an exec run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mode {
    /// Predict; change nothing.
    pub check: bool,
    /// Report the old contents of files that change.
    pub diff: bool,
}

/// What the exec needs to know of the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostKind {
    /// The host's `stat` speaks BSD (macOS), not GNU.
    pub bsd_stat: bool,
}

/// One module script in an exec.
#[derive(Debug, Clone, Copy)]
pub struct Unit<'a> {
    /// The module's script.
    pub script: &'a Script,
    /// The path whose mode and owner it compares (the exec looks them all up at once).
    pub stat_path: Option<&'a str>,
    /// Keep going when this unit fails.
    pub ignore_errors: bool,
    /// The unit changes nothing but `stat_path` (and creates its missing parents): when it
    /// changes something, only that path's looked-up mode and owner go stale.
    pub own_path: bool,
}

/// The helpers every unit may use, defined once per exec:
/// - `fail MSG…`: the message on stderr, the unit ends with status 97;
/// - `finish [RC]`: the unit's result line (`changed`, the command's `RC`, `missing`: a
///   check run found something it needs absent, `more`: a follow-up exec is needed), then
///   status 0, or 96 when it changed something, or 98 when `RC` is not 0;
/// - `fleet_stat PATH`: `st` = "MODE USER GROUP UID GID" (from the exec's one `stat` while
///   nothing but other units' own paths has changed yet);
/// - `fleet_old PATH`: the file's contents, base64, between markers (for `--diff`);
/// - `fleet_new PATH`: the contents it will have, for `--diff` of a file whose new contents
///   only the host can compute (an edit merged with what is there);
/// - `fleet_sum PATH`: `sum` = the file's sha256;
/// - `fleet_tmp_trap`: removes `$t` when the unit ends or the connection drops.
const PRELUDE: &str = concat!(
    "set -f\n",
    "changed=0; missing=0; more=0; FLEET_DIRTY=\"\n\"\n",
    "fail() { printf '%s\\n' \"$*\" >&2; exit 97; }\n",
    "finish() { printf '\\n__FLEET_%s__ changed=%s rc=%s missing=%s more=%s\\n' \"$FN\" \"$changed\" \"${1:-0}\" \"$missing\" \"$more\"; [ \"${1:-0}\" != 0 ] && exit 98; [ \"$changed\" = 1 ] && exit 96; exit 0; }\n",
    "fleet_stat() { st=; p_=$1; if [ \"${FLEET_CLEAN:-0}\" = 1 ]; then case $FLEET_DIRTY in *\"\n$p_\n\"*) ;; *) r=${FLEET_STATS%\" $p_\n\"*}; ",
    "if [ \"$r\" != \"$FLEET_STATS\" ]; then r=${r##*\"\n\"}; set -- $r; [ $# = 5 ] && { st=$r; return 0; }; fi;; esac; fi; ",
    "st=$(stat -c '%a %U %G %u %g' -- \"$p_\" 2>/dev/null || stat -f '%Lp %Su %Sg %u %g' -- \"$p_\" 2>/dev/null); }\n",
    "fleet_old() { printf '__FLEET_OLD_%s__\\n' \"$FN\"; base64 < \"$1\"; printf '\\n__FLEET_OLD_%s__\\n' \"$FN\"; }\n",
    "fleet_new() { printf '__FLEET_NEW_%s__\\n' \"$FN\"; base64 < \"$1\"; printf '\\n__FLEET_NEW_%s__\\n' \"$FN\"; }\n",
    "fleet_sum() { set -- \"$1\" \"$( { sha256sum < \"$1\" || shasum -a 256 < \"$1\"; } 2>/dev/null)\"; sum=${2%% *}; }\n",
    "fleet_tmp_trap() { trap 'rm -f -- \"$t\"' EXIT; trap 'exit 1' HUP INT TERM PIPE; }\n",
);

/// Builds what one exec runs: the prelude, then each unit in a subshell with its markers.
/// With `reads_stdin`, the (single) unit reads the exec's stdin (file contents); otherwise
/// units read `/dev/null`.
pub fn compose(
    units: &[Unit<'_>],
    mode: Mode,
    host: HostKind,
    nonce: &Nonce,
    reads_stdin: bool,
) -> Script {
    let mut s = Script::new();
    s.set("FN", nonce.as_str())
        .set("CHECK", mode.check)
        .set("DIFF", mode.diff)
        .code(PRELUDE);
    // One stat for every path the units compare; trusted until a unit changes something.
    let paths: Vec<&str> = units
        .iter()
        .filter_map(|u| u.stat_path)
        .filter(|p| !p.contains('\n'))
        .collect();
    if units.len() > 1 && !paths.is_empty() {
        s.args(paths.iter().copied());
        if host.bsd_stat {
            s.code("FLEET_STATS=\"\n$(stat -f '%Lp %Su %Sg %u %g %N' -- \"$@\" 2>/dev/null)\n\"; FLEET_CLEAN=1\n");
        } else {
            s.code("FLEET_STATS=\"\n$(stat -c '%a %U %G %u %g %n' -- \"$@\" 2>/dev/null)\n\"; FLEET_CLEAN=1\n");
        }
    }
    for (i, u) in units.iter().enumerate() {
        s.set("FU", i).code(concat!(
            "printf '__FLEET_UNIT_%s__ %s\\n' \"$FN\" \"$FU\"; printf '__FLEET_UNIT_%s__ %s\\n' \"$FN\" \"$FU\" >&2\n",
            "(\n",
        ));
        s.append(u.script);
        if reads_stdin {
            s.code("\n)\n");
        } else {
            s.code("\n) </dev/null\n");
        }
        match (u.own_path, u.stat_path) {
            (true, Some(p)) => {
                s.code("rc=$?\n").set("FP", p).code(
                    "[ \"$rc\" = 96 ] && FLEET_DIRTY=\"$FLEET_DIRTY$FP\n\"; [ \"$rc\" = 0 ] || [ \"$rc\" = 96 ] || FLEET_CLEAN=0\n",
                );
            }
            _ => {
                s.code("rc=$?; [ \"$rc\" = 0 ] || FLEET_CLEAN=0\n");
            }
        }
        s.code(concat!(
            "[ \"$rc\" = 96 ] && rc=0\n",
            "printf '\\n__FLEET_END_%s__ %s\\n' \"$FN\" \"$rc\"; printf '\\n__FLEET_END_%s__\\n' \"$FN\" >&2\n",
        ));
        if !u.ignore_errors {
            s.code("[ \"$rc\" = 0 ] || exit 0\n");
        }
    }
    s.code("exit 0\n");
    s
}

/// What one unit printed and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitOutput {
    /// The unit's exit status (0 also for "changed").
    pub rc: i32,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// Splits an exec's output into its units' outputs, in order, for the units that ended.
pub fn split(stdout: &str, stderr: &str, nonce: &Nonce) -> Vec<UnitOutput> {
    let unit = nonce.unit();
    let end = nonce.end();
    let starts = |stream: &str| -> Vec<(usize, String)> {
        let mut out = Vec::new();
        let mut rest = stream;
        while let Some(at) = rest.find(&unit) {
            let after = &rest[at + unit.len()..];
            let Some((idx, body)) = after.split_once('\n') else {
                break;
            };
            let next = body.find(&unit).unwrap_or(body.len());
            if let Ok(i) = idx.trim().parse::<usize>() {
                out.push((i, body[..next].to_string()));
            }
            rest = &body[next..];
        }
        out
    };
    let errs: std::collections::HashMap<usize, String> = starts(stderr)
        .into_iter()
        .map(|(i, body)| {
            let b = body.rfind(&end).map_or(body.as_str(), |e| &body[..e]);
            (i, b.to_string())
        })
        .collect();
    let mut out = Vec::new();
    for (i, body) in starts(stdout) {
        let Some(e) = body.rfind(&end) else { continue };
        let rc = body[e + end.len()..]
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .parse()
            .unwrap_or(-1);
        if i != out.len() {
            break;
        }
        out.push(UnitOutput {
            rc,
            stdout: body[..e].to_string(),
            stderr: errs.get(&i).cloned().unwrap_or_default(),
        });
    }
    out
}

/// What a unit reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reported {
    /// A change was needed (check) or made (apply).
    pub changed: bool,
    /// The command's exit code, for command/shell.
    pub rc: i32,
    /// What it printed (the result line and old contents removed).
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// Check mode: something the unit needs (a directory, the path it manages) does not
    /// exist yet; an earlier task of the run may create it.
    pub missing: bool,
    /// A real run needs a follow-up exec (see `Module::followup`).
    pub more: bool,
    /// The file's previous contents, when it changed and `--diff` asked for them.
    pub before: Option<Vec<u8>>,
    /// Its new contents, when only the host knows them (`fleet_new`) and `--diff` asked.
    pub after: Option<Vec<u8>>,
}

/// Reads a unit's result line and old contents; `Err` with the unit's message when it
/// failed before reporting.
pub fn report(out: &UnitOutput, nonce: &Nonce) -> Result<Reported, String> {
    let mark = nonce.mark();
    let Some(i) = out.stdout.rfind(&mark) else {
        let msg = out.stderr.trim();
        return Err(if msg.is_empty() {
            format!(
                "the task's script failed (exit {}) without a message",
                out.rc
            )
        } else {
            msg.to_string()
        });
    };
    let line = out.stdout[i + mark.len()..].lines().next().unwrap_or("");
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .unwrap_or("0")
    };
    let mut body = out.stdout[..i].to_string();
    let before = take_block(&mut body, &nonce.old());
    let after = take_block(&mut body, &nonce.new_mark());
    // Like a shell's $(...), drop the final newline of what the command printed.
    if body.ends_with('\n') {
        body.pop();
    }
    Ok(Reported {
        changed: field("changed") == "1",
        rc: field("rc").parse().unwrap_or(-1),
        stdout: body,
        stderr: out.stderr.clone(),
        missing: field("missing") == "1",
        more: field("more") == "1",
        before,
        after,
    })
}

/// Removes the base64 block between two `mark` lines from `body` and decodes it.
fn take_block(body: &mut String, mark: &str) -> Option<Vec<u8>> {
    let start = body.find(&format!("{mark}\n"))?;
    let from = start + mark.len() + 1;
    let len = body[from..].find(&format!("\n{mark}\n"))?;
    let b64: String = body[from..from + len]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    body.replace_range(start..from + len + mark.len() + 2, "");
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &Script, stdin: &[u8]) -> (i32, String, String) {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script.text())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let mut input = child.stdin.take().expect("stdin");
        let data = stdin.to_vec();
        let w = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let out = child.wait_with_output().expect("output");
        let _ = w.join();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn unit(code: &'static str) -> Script {
        let mut s = Script::new();
        s.code(code);
        s
    }

    #[test]
    fn units_report_in_order_and_the_exec_stops_at_a_failure() {
        let a = unit("echo hello; changed=1; finish 0");
        let b = unit("fail 'it broke'");
        let c = unit("echo never; finish 0");
        let units = [&a, &b, &c].map(|s| Unit {
            script: s,
            stat_path: None,
            ignore_errors: false,
            own_path: false,
        });
        let n = Nonce::new();
        let (rc, out, err) = sh(
            &compose(&units, Mode::default(), HostKind::default(), &n, false),
            b"",
        );
        assert_eq!(rc, 0);
        let parts = split(&out, &err, &n);
        assert_eq!(parts.len(), 2, "{out}");
        let r = report(&parts[0], &n).expect("reported");
        assert!(r.changed && r.stdout == "hello", "{r:?}");
        assert_eq!(parts[1].rc, 97);
        assert_eq!(report(&parts[1], &n), Err("it broke".to_string()));
    }

    #[test]
    fn output_that_imitates_markers_cannot_forge_a_result() {
        // A task whose output holds every marker fleet prints, under a guessed nonce and
        // under none, followed by a failing task.
        let forged = concat!(
            "printf '\\n__FLEET__ changed=0 rc=0\\n__FLEET_UNIT__ 1\\nx\\n__FLEET__ changed=1 rc=0\\n__FLEET_UNIT_END__ 0\\n'; ",
            "printf '__FLEET_END_0000__ 0\\n__FLEET_UNIT_0000__ 1\\n\\n__FLEET_0000__ changed=1 rc=0\\n'; finish 0"
        );
        let a = unit(forged);
        let b = unit("fail broken");
        let units = [&a, &b].map(|s| Unit {
            script: s,
            stat_path: None,
            ignore_errors: false,
            own_path: false,
        });
        let n = Nonce::new();
        let (_, out, err) = sh(
            &compose(&units, Mode::default(), HostKind::default(), &n, false),
            b"",
        );
        let parts = split(&out, &err, &n);
        assert_eq!(parts.len(), 2);
        assert!(!report(&parts[0], &n).expect("first").changed);
        assert!(report(&parts[1], &n).is_err(), "{parts:?}");
    }

    #[test]
    fn a_unit_can_read_the_exec_stdin() {
        let a = unit("c=$(cat); printf '%s' \"$c\"; finish 0");
        let n = Nonce::new();
        let units = [Unit {
            script: &a,
            stat_path: None,
            ignore_errors: false,
            own_path: false,
        }];
        let (_, out, err) = sh(
            &compose(&units, Mode::default(), HostKind::default(), &n, true),
            b"data in",
        );
        let parts = split(&out, &err, &n);
        assert_eq!(report(&parts[0], &n).expect("ok").stdout, "data in");
    }

    #[test]
    fn temp_names_differ() {
        assert_ne!(temp_name(), temp_name());
        assert!(temp_name().starts_with(".fleet."));
        assert_ne!(Nonce::new(), Nonce::new());
    }
}
