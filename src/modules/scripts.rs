//! Each module as one POSIX sh script per task: it inspects the host, decides whether a change
//! is needed, and makes it unless `CHECK=1`. The decision and the change share the same code,
//! so `--check` reports exactly what a real run changes. The script ends with a marker line
//! (`__FLEET__ changed=0|1 rc=N`); file contents travel on stdin in the same exec.

use serde_json::Value as J;

use crate::command::{Cmd, shquote};
use crate::facts::Facts;

/// What to run for one task on one host.
#[derive(Debug, Clone, Default)]
pub struct Built {
    /// The script.
    pub script: String,
    /// Its stdin (file contents).
    pub stdin: Option<Vec<u8>>,
    /// Never runs anything on the host (`debug`).
    pub local_only: Option<String>,
    /// The path whose mode and owner the script compares (a batch looks them up up front).
    pub stat_path: Option<String>,
}

/// What a task's script reported.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Reported {
    /// A change was needed (check) or made (apply).
    pub changed: bool,
    /// The command's exit code, for command/shell.
    pub rc: i32,
    /// What it printed (marker removed).
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// Check mode: the destination's directory does not exist (yet).
    pub missing_dir: bool,
    /// Check mode: the path a `file` task manages does not exist (yet).
    pub missing_path: bool,
    /// The file's previous contents, when it differed and `--diff` asked for it.
    #[serde(skip)]
    pub before: Option<String>,
}

const MARK: &str = "__FLEET__ ";

/// Exit status of a batched task that changed something (the batch then stops trusting what
/// it looked up before; see [`batch`]); reported as 0.
const CHANGED_RC: i32 = 96;

/// `fleet_stat PATH` sets `st` to "MODE USER GROUP". In a batch where nothing has changed
/// yet, the answer comes from the one `stat` the batch ran for all its paths up front
/// (`FLEET_STATS`), so an idempotent run costs one `stat` per host instead of one per task.
const STAT_FN: &str = concat!(
    "fleet_stat() { st=; if [ \"${FLEET_CLEAN:-0}\" = 1 ]; then r=${FLEET_STATS%\" $1\n\"*}; ",
    "if [ \"$r\" != \"$FLEET_STATS\" ]; then r=${r##*\"\n\"}; set -- $r; [ $# = 3 ] && { st=$r; return 0; }; fi; fi; ",
    "st=$(stat -c '%a %U %G' \"$1\" 2>/dev/null || stat -f '%Lp %Su %Sg' \"$1\" 2>/dev/null); }\n"
);
const OLD: &str = "__FLEET_OLD__";

fn preamble(check: bool, diff: bool) -> String {
    format!(
        "CHECK={}; DIFF={}; changed=0\nfail() {{ printf '%s\\n' \"$*\" >&2; exit 97; }}\nfinish() {{ printf '\\n{MARK}changed=%s rc=%s\\n' \"$changed\" \"${{1:-0}}\"; if [ \"${{FLEET_BATCH:-0}}\" = 1 ]; then [ \"${{1:-0}}\" != 0 ] && exit 98; [ \"$changed\" = 1 ] && exit {CHANGED_RC}; fi; exit 0; }}\n{STAT_FN}",
        u8::from(check),
        u8::from(diff)
    )
}

fn s<'a>(args: &'a J, key: &str) -> Option<&'a str> {
    args.get(key).and_then(J::as_str)
}

fn str_of(v: &J) -> String {
    match v {
        J::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn list(args: &J, key: &str) -> Vec<String> {
    match args.get(key) {
        Some(J::Array(a)) => a.iter().map(str_of).collect(),
        Some(J::Null) | None => Vec::new(),
        Some(v) => vec![str_of(v)],
    }
}

fn b(args: &J, key: &str) -> bool {
    match args.get(key) {
        Some(J::Bool(b)) => *b,
        Some(J::String(s)) => s == "true",
        _ => false,
    }
}

/// A mode argument as octal digits (`"0644"` → `644`).
pub fn mode_digits(args: &J) -> Option<String> {
    let m = s(args, "mode")?;
    let t = m.trim_start_matches("0o");
    u32::from_str_radix(t, 8).ok().map(|v| format!("{v:o}"))
}

/// Sets mode/owner/group of `$P` when they differ; counts as a change.
fn attrs(args: &J) -> String {
    let mode = mode_digits(args);
    let owner = s(args, "owner").map(shquote);
    let group = s(args, "group").map(shquote);
    if mode.is_none() && owner.is_none() && group.is_none() {
        return String::new();
    }
    // One stat for all three (GNU, then BSD/macOS syntax), or the batch's.
    let mut out = String::from("fleet_stat \"$P\"; set -- $st\n");
    if let Some(m) = mode {
        out.push_str(&format!("if [ \"$1\" != {m} ]; then changed=1; [ \"$CHECK\" = 1 ] || chmod {m} \"$P\" || fail \"chmod {m} $P failed\"; fi\n"));
    }
    if let Some(o) = owner {
        out.push_str(&format!("if [ \"$2\" != {o} ]; then changed=1; [ \"$CHECK\" = 1 ] || chown {o} \"$P\" || fail \"chown {o} $P failed\"; fi\n"));
    }
    if let Some(g) = group {
        out.push_str(&format!("if [ \"$3\" != {g} ]; then changed=1; [ \"$CHECK\" = 1 ] || chgrp {g} \"$P\" || fail \"chgrp {g} $P failed\"; fi\n"));
    }
    out
}

/// Sets mode/owner/group of a path this task has just created (`$P`): no need to look first.
fn fresh_attrs(args: &J, path: &str) -> String {
    let mut out = String::new();
    if let Some(m) = mode_digits(args) {
        out.push_str(&format!("chmod {m} {path} || fail \"chmod {m} failed\"\n"));
    }
    out.push_str(&chown_line(args, path));
    out
}

/// `chown owner[:group] PATH` (or `chgrp`) for the ones the task names, as one command.
fn chown_line(args: &J, path: &str) -> String {
    match (s(args, "owner"), s(args, "group")) {
        (Some(o), Some(g)) => format!(
            "chown {} {path} || fail \"chown failed\"\n",
            shquote(&format!("{o}:{g}"))
        ),
        (Some(o), None) => format!("chown {} {path} || fail \"chown failed\"\n", shquote(o)),
        (None, Some(g)) => format!("chgrp {} {path} || fail \"chgrp failed\"\n", shquote(g)),
        (None, None) => String::new(),
    }
}

/// The umask under which the shell creates a file with exactly `mode` (`0666 & !umask`), when
/// the mode has no execute or special bits; otherwise `None` (create private, then chmod).
fn umask_for(mode: Option<&str>) -> Option<String> {
    let m = u32::from_str_radix(mode?, 8).ok()?;
    (m & 0o7111 == 0).then(|| format!("{:03o}", 0o777 & !m))
}

/// A fresh name for a temp file beside a target: random, so it cannot be predicted, and
/// created with `set -C` (O_EXCL), so an existing path is never followed or reused.
fn temp_name() -> String {
    let mut b = [0u8; 8];
    // Without randomness the name is still unique per process and task; O_EXCL keeps it safe.
    if getrandom::fill(&mut b).is_err() {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = (n as u64).to_le_bytes();
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(".fleet.{hex}")
}

/// `D`, the directory of `$P`, without running `dirname`.
const DIR_OF_P: &str = "case \"$P\" in */*) D=${P%/*}; D=${D:-/};; *) D=.;; esac\n";

/// Whether `content` can travel inside the script itself (as a shell literal) instead of on
/// stdin: text without NUL bytes, small enough for a batch.
pub fn inlinable(content: &[u8]) -> bool {
    content.len() <= BATCH_STDIN_MAX
        && !content.contains(&0)
        && std::str::from_utf8(content).is_ok()
}

/// Builds the script of one task. `content` is the rendered file for copy/template; it travels
/// on stdin.
pub fn build(
    module: &str,
    args: &J,
    content: Option<Vec<u8>>,
    facts: &Facts,
    check: bool,
    diff: bool,
) -> Result<Built, String> {
    build_with(module, args, content, facts, check, diff, false)
}

/// Builds the script of one task for a batch: file content is part of the script (see
/// [`inlinable`]), so the script must travel on stdin, never on a command line where other
/// users of the host could read it.
pub fn build_for_batch(
    module: &str,
    args: &J,
    content: Option<Vec<u8>>,
    facts: &Facts,
    diff: bool,
) -> Result<Built, String> {
    build_with(module, args, content, facts, false, diff, true)
}

fn build_with(
    module: &str,
    args: &J,
    content: Option<Vec<u8>>,
    facts: &Facts,
    check: bool,
    diff: bool,
    inline: bool,
) -> Result<Built, String> {
    let mut sc = preamble(check, diff);
    let mut stdin = None;
    match module {
        "debug" => {
            return Ok(Built {
                local_only: Some(
                    s(args, "msg")
                        .map(str::to_string)
                        .unwrap_or_else(|| str_of(args)),
                ),
                ..Built::default()
            });
        }
        "command" | "shell" => {
            let (cmd, chdir, creates, removes) = match args {
                J::String(c) => (c.clone(), None, None, None),
                _ => (
                    s(args, "cmd").unwrap_or_default().to_string(),
                    s(args, "chdir"),
                    s(args, "creates"),
                    s(args, "removes"),
                ),
            };
            if let Some(c) = creates {
                sc.push_str(&format!("[ -e {} ] && finish 0\n", shquote(c)));
            }
            if let Some(r) = removes {
                sc.push_str(&format!("[ -e {} ] || finish 0\n", shquote(r)));
            }
            sc.push_str("changed=1\n[ \"$CHECK\" = 1 ] && finish 0\n");
            if let Some(d) = chdir {
                sc.push_str(&format!(
                    "cd {} || fail \"cannot cd to {}\"\n",
                    shquote(d),
                    d.replace('"', "")
                ));
            }
            if let Some(J::Object(env)) = args.get("env") {
                for (k, v) in env {
                    if crate::spec::decode::is_identifier(k) {
                        sc.push_str(&format!("export {k}={}\n", shquote(&str_of(v))));
                    }
                }
            }
            let line = if module == "shell" {
                Cmd::new("sh").arg("-c").arg(&cmd).line()
            } else {
                let words = shlex::split(&cmd).ok_or_else(|| {
                    format!("cannot split the command `{cmd}` into words (unbalanced quotes?)")
                })?;
                if words.is_empty() {
                    return Err("the command is empty".into());
                }
                Cmd::new(&words[0]).args(&words[1..]).line()
            };
            sc.push_str(&format!("{line}\nfinish $?\n"));
        }
        "file" => {
            let path = s(args, "path").ok_or("`path` is required")?;
            let state = s(args, "state").unwrap_or("file");
            sc.push_str(&format!("P={}\n", shquote(path)));
            sc.push_str("if [ -L \"$P\" ]; then cur=link; elif [ -d \"$P\" ]; then cur=directory; elif [ -e \"$P\" ]; then cur=file; else cur=absent; fi\n");
            // A path this task creates gets its attributes right away, without a look first.
            let fresh = fresh_attrs(args, "\"$P\"");
            match state {
                "directory" => {
                    let m = mode_digits(args).map(|m| format!(" -m {m}")).unwrap_or_default();
                    let own = chown_line(args, "\"$P\"");
                    sc.push_str(&format!("if [ \"$cur\" != directory ]; then [ \"$cur\" = absent ] || fail \"$P exists and is not a directory\"; changed=1; [ \"$CHECK\" = 1 ] && finish 0; mkdir -p{m} \"$P\" || fail \"cannot create $P\"\n{own}finish 0; fi\n"));
                }
                "absent" => sc.push_str("if [ \"$cur\" != absent ]; then changed=1; [ \"$CHECK\" = 1 ] || rm -rf \"$P\" || fail \"cannot remove $P\"; fi\nfinish 0\n"),
                "touch" => sc.push_str(&format!("if [ \"$cur\" = absent ]; then changed=1; [ \"$CHECK\" = 1 ] && finish 0; : > \"$P\" || fail \"cannot create $P\"\n{fresh}finish 0; fi\n")),
                "file" => sc.push_str(&format!("if [ \"$cur\" = absent ] && [ \"$CHECK\" = 1 ]; then printf '\\n{MARK}changed=1 rc=0 missing_path=1\\n'; exit 0; fi\n[ \"$cur\" = file ] || fail \"$P does not exist or is not a regular file (use state: touch to create it)\"\n")),
                "link" => {
                    let src = s(args, "src").ok_or("`state: link` needs `src`")?;
                    // A new link is made in place (symlink(2) is atomic and refuses an
                    // existing path); one that replaces something goes through a temp name.
                    sc.push_str(&format!(
                        "S={}\nif [ \"$cur\" = absent ]; then changed=1; [ \"$CHECK\" = 1 ] || ln -s \"$S\" \"$P\" || fail \"cannot link $P\"; finish 0; fi\nif [ \"$cur\" != link ] || [ \"$(readlink \"$P\")\" != \"$S\" ]; then [ \"$cur\" = directory ] && fail \"$P is a directory\"; changed=1; if [ \"$CHECK\" != 1 ]; then {DIR_OF_P_INLINE}t=\"$D/{tmp}\"; ln -s \"$S\" \"$t\" && mv -f \"$t\" \"$P\" || fail \"cannot link $P\"; fi; fi\nfinish 0\n",
                        shquote(src),
                        tmp = temp_name(),
                        DIR_OF_P_INLINE = DIR_OF_P.trim_end().to_string() + "; ",
                    ));
                }
                other => return Err(format!("unknown state `{other}`")),
            }
            sc.push_str(&attrs(args));
            sc.push_str("finish 0\n");
        }
        "copy" | "template" => {
            let dest = s(args, "dest").ok_or("`dest` is required")?;
            let content = content.unwrap_or_default();
            let inline = inline && inlinable(&content);
            sc.push_str(&format!("P={}\n{DIR_OF_P}", shquote(dest)));
            // In check mode a missing directory may be one an earlier task would create: say
            // so, and the engine decides from what that run predicted.
            let drain = if inline { "" } else { "cat > /dev/null; " };
            sc.push_str(&format!("if [ ! -d \"$D\" ]; then [ \"$CHECK\" = 1 ] && {{ {drain}printf '\\n{MARK}changed=1 rc=0 missing_dir=1\\n'; exit 0; }}; fail \"directory $D does not exist (create it with a file task first)\"; fi\n"));
            sc.push_str(&format!(
                "[ -d \"$P\" ] && fail \"$P is a directory\"\nt=\"$D/{}\"\nexisted=0; [ -e \"$P\" ] && existed=1\n",
                temp_name()
            ));
            let mode = mode_digits(args);
            let umask = umask_for(mode.as_deref());
            if inline {
                // The content is a literal of the script: compare first, write only on change.
                let text = std::str::from_utf8(&content).unwrap_or_default();
                sc.push_str(&format!(
                    "src() {{ printf '%s' {}; }}\nsame=0; [ \"$existed\" = 1 ] && src | cmp -s - \"$P\" && same=1\n",
                    if text.is_empty() { "''".to_string() } else { shquote(text) }
                ));
            } else {
                sc.push_str("(umask 077; set -C; cat > \"$t\") || fail \"cannot write in $D\"\ntrap 'rm -f \"$t\"' EXIT\nsame=0; [ \"$existed\" = 1 ] && cmp -s \"$t\" \"$P\" && same=1\n");
            }
            sc.push_str(&format!("if [ \"$same\" = 0 ] && [ \"$existed\" = 1 ] && [ \"$DIFF\" = 1 ]; then printf '{OLD}\\n'; base64 < \"$P\"; printf '\\n{OLD}\\n'; fi\n"));
            // New content: written beside the target with its attributes, then one rename.
            let mut write = String::new();
            if inline {
                let um = umask.clone().unwrap_or_else(|| "077".into());
                write.push_str(&format!(
                    "(umask {um}; set -C; src > \"$t\") || fail \"cannot write in $D\"; trap 'rm -f \"$t\"' EXIT\n"
                ));
            }
            match (&mode, &umask) {
                (Some(_), Some(_)) if inline => {}
                (Some(m), _) => write.push_str(&format!("chmod {m} \"$t\" || fail \"chmod failed\"\n")),
                (None, _) => write.push_str("if [ \"$existed\" = 1 ]; then set -- $(stat -c %a \"$P\" 2>/dev/null || stat -f %Lp \"$P\" 2>/dev/null); m=${1:-644}; else m=644; fi; chmod \"$m\" \"$t\" || fail \"chmod failed\"\n"),
            }
            write.push_str(&chown_line(args, "\"$t\""));
            write.push_str("mv -f \"$t\" \"$P\" || fail \"cannot replace $P\"; trap - EXIT\n");
            let cleanup = if inline {
                ""
            } else {
                "rm -f \"$t\"; trap - EXIT\n"
            };
            sc.push_str(&format!(
                "if [ \"$same\" = 0 ]; then changed=1\nif [ \"$CHECK\" != 1 ]; then\n{write}else\n:; {cleanup}fi\nfinish 0\nfi\n{cleanup}"
            ));
            sc.push_str(&attrs(args));
            sc.push_str("finish 0\n");
            if !inline {
                stdin = Some(content);
            }
        }
        "lineinfile" => {
            let path = s(args, "path").ok_or("`path` is required")?;
            let line = s(args, "line").unwrap_or_default();
            let re = s(args, "regexp").unwrap_or_default();
            let state = s(args, "state").unwrap_or("present");
            if state == "present" && s(args, "line").is_none() {
                return Err("`state: present` needs `line`".into());
            }
            sc.push_str(&format!(
                "P={}\n{DIR_OF_P}t=\"$D/{}\"\nexport FLEET_LINE={} FLEET_RE={} FLEET_STATE={}\n",
                shquote(path),
                temp_name(),
                shquote(line),
                shquote(re),
                shquote(state)
            ));
            if b(args, "create") {
                let mode = mode_digits(args);
                let um = umask_for(mode.as_deref()).unwrap_or_else(|| "022".into());
                let chmod = match (&mode, umask_for(mode.as_deref())) {
                    (Some(m), None) => format!("chmod {m} \"$t\" || fail \"chmod failed\"; "),
                    _ => String::new(),
                };
                sc.push_str(&format!("if [ ! -e \"$P\" ]; then [ \"$FLEET_STATE\" = absent ] && finish 0; changed=1; [ \"$CHECK\" = 1 ] && finish 0; [ -d \"$D\" ] || fail \"directory of $P does not exist\"; (umask {um}; set -C; printf '%s\\n' \"$FLEET_LINE\" > \"$t\") || fail \"cannot create $P\"; {chmod}mv -f \"$t\" \"$P\" || fail \"cannot create $P\"; finish 0; fi\n"));
            } else {
                sc.push_str(
                    "[ -f \"$P\" ] || fail \"$P does not exist (set create: true to create it)\"\n",
                );
            }
            // awk reads the pattern and line from the environment, so no quoting reaches it.
            // It exits 3 when the file already is as wanted; with FLEET_OUT set it writes the
            // new contents there.
            sc.push_str(concat!(
                "edit() { awk 'BEGIN { line = ENVIRON[\"FLEET_LINE\"]; re = ENVIRON[\"FLEET_RE\"]; st = ENVIRON[\"FLEET_STATE\"]; out = ENVIRON[\"FLEET_OUT\"]; last = 0; found = 0; exact = 0 }\n",
                "  { l[NR] = $0; if ($0 == line) exact = 1; if ((re != \"\" && $0 ~ re) || (re == \"\" && $0 == line)) { last = NR; found++; m[NR] = 1 } }\n",
                "  END { if (st == \"absent\") ch = (found > 0); else if (re != \"\" && last > 0) ch = (l[last] != line); else ch = (found == 0 && !exact)\n",
                "        if (!ch) exit 3\n        if (out == \"\") exit 0\n",
                "        for (i = 1; i <= NR; i++) { if (st == \"absent\") { if (!(i in m)) print l[i] > out } else if (i == last && re != \"\") print line > out; else print l[i] > out }\n",
                "        if (st != \"absent\" && found == 0 && !exact) print line > out\n        close(out) }' \"$P\"; }\n",
                "export FLEET_OUT=; edit; r=$?\n[ \"$r\" = 3 ] && finish 0\n[ \"$r\" = 0 ] || fail \"awk failed on $P\"\nchanged=1\n",
                "if [ \"$DIFF\" = 1 ]; then printf '__FLEET_OLD__\\n'; base64 < \"$P\"; printf '\\n__FLEET_OLD__\\n'; fi\n",
                "[ \"$CHECK\" = 1 ] && finish 0\n",
                "(umask 077; set -C; : > \"$t\") || fail \"cannot write next to $P\"; trap 'rm -f \"$t\"' EXIT\n",
                "FLEET_OUT=$t; edit || fail \"awk failed on $P\"\n",
                "set -- $(stat -c '%a %u:%g' \"$P\" 2>/dev/null || stat -f '%Lp %u:%g' \"$P\"); chmod \"$1\" \"$t\"; chown \"$2\" \"$t\" 2>/dev/null\n",
                "mv -f \"$t\" \"$P\" || fail \"cannot replace $P\"; trap - EXIT\nfinish 0\n"
            ));
        }
        "user" => {
            let name = s(args, "name").ok_or("`name` is required")?;
            let state = s(args, "state").unwrap_or("present");
            sc.push_str(&format!("U={}\n", shquote(name)));
            if state == "absent" {
                sc.push_str("if id -u \"$U\" >/dev/null 2>&1; then changed=1; [ \"$CHECK\" = 1 ] || { if command -v userdel >/dev/null; then userdel \"$U\"; else sysadminctl -deleteUser \"$U\"; fi; } || fail \"cannot remove user $U\"; fi\nfinish 0\n");
            } else {
                let mut add = Cmd::new("useradd");
                if b(args, "system") {
                    add = add.arg("--system");
                }
                if let Some(h) = s(args, "home") {
                    add = add.arg("--home-dir").arg(h).arg("--create-home");
                }
                if let Some(sh) = s(args, "shell") {
                    add = add.arg("--shell").arg(sh);
                }
                let add = add.line();
                sc.push_str(&format!(
                    "if ! id -u \"$U\" >/dev/null 2>&1; then changed=1; if [ \"$CHECK\" != 1 ]; then if command -v useradd >/dev/null; then {add} \"$U\"; else sysadminctl -addUser \"$U\"; fi || fail \"cannot create user $U\"; fi; fi\n"
                ));
                for g in list(args, "groups") {
                    let g = shquote(&g);
                    sc.push_str(&format!(
                        "if ! id -nG \"$U\" 2>/dev/null | tr ' ' '\\n' | grep -qx {g}; then changed=1; if [ \"$CHECK\" != 1 ]; then if command -v usermod >/dev/null; then usermod -aG {g} \"$U\"; else dseditgroup -o edit -a \"$U\" -t user {g}; fi || fail \"cannot add $U to group {g}\"; fi; fi\n"
                    ));
                }
                sc.push_str("finish 0\n");
            }
        }
        "package" => {
            let names = list(args, "name");
            if names.is_empty() {
                return Err("`name` is required".into());
            }
            let state = s(args, "state").unwrap_or("present");
            let manager = match s(args, "manager").unwrap_or("auto") {
                "auto" => facts
                    .package_manager
                    .clone()
                    .ok_or("no package manager found on the host (apt, dnf, pacman or brew)")?,
                m => m.to_string(),
            };
            let cask = b(args, "cask");
            let (has, install, remove, outdated) = match manager.as_str() {
                "apt" => (
                    "dpkg-query -W -f='${Status}' \"$1\" 2>/dev/null | grep -q 'install ok installed'",
                    "DEBIAN_FRONTEND=noninteractive apt-get install -y -q",
                    "DEBIAN_FRONTEND=noninteractive apt-get remove -y -q",
                    "apt-get -s install --only-upgrade \"$1\" 2>/dev/null | grep -q '^Inst'",
                ),
                "dnf" => (
                    "rpm -q \"$1\" >/dev/null 2>&1",
                    "dnf install -y -q",
                    "dnf remove -y -q",
                    "dnf -q check-update \"$1\" >/dev/null 2>&1; [ $? = 100 ]",
                ),
                "pacman" => (
                    "pacman -Q \"$1\" >/dev/null 2>&1",
                    "pacman -S --noconfirm --needed",
                    "pacman -R --noconfirm",
                    "pacman -Qu \"$1\" >/dev/null 2>&1",
                ),
                "brew" if cask => (
                    "\"$BREW\" list --cask \"$1\" >/dev/null 2>&1",
                    "\"$BREW\" install --cask",
                    "\"$BREW\" uninstall --cask",
                    "[ -n \"$(\"$BREW\" outdated --cask \"$1\" 2>/dev/null)\" ]",
                ),
                "brew" => (
                    "\"$BREW\" list --formula \"$1\" >/dev/null 2>&1",
                    "\"$BREW\" install",
                    "\"$BREW\" uninstall",
                    "[ -n \"$(\"$BREW\" outdated --formula \"$1\" 2>/dev/null)\" ]",
                ),
                other => return Err(format!("unknown package manager `{other}`")),
            };
            if manager == "brew" {
                // A non-login ssh session on a Mac has no Homebrew on its PATH.
                sc.push_str(concat!(
                    "BREW=$(command -v brew 2>/dev/null) || for b in /opt/homebrew/bin/brew /usr/local/bin/brew; do [ -x \"$b\" ] && { BREW=$b; break; }; done\n",
                    "[ -n \"$BREW\" ] || fail \"Homebrew not found (not on PATH, nor in /opt/homebrew/bin or /usr/local/bin)\"\n",
                    "[ \"$(id -u)\" != 0 ] || fail \"Homebrew does not run as root: run this task without become, as the Mac's admin user\"\n",
                ));
            }
            if b(args, "update_cache") && manager == "apt" {
                sc.push_str("[ \"$CHECK\" = 1 ] || apt-get update -q >/dev/null 2>&1 || fail \"apt-get update failed\"\n");
            }
            sc.push_str(&format!(
                "has() {{ {has}; }}\noutdated() {{ {outdated}; }}\ntodo=''\n"
            ));
            for n in &names {
                let q = shquote(n);
                let cond = match state {
                    "absent" => format!("has {q}"),
                    "latest" => format!("! has {q} || outdated {q}"),
                    _ => format!("! has {q}"),
                };
                sc.push_str(&format!("if {cond}; then todo=\"$todo {q}\"; fi\n"));
            }
            let act = if state == "absent" { remove } else { install };
            sc.push_str(&format!("[ -z \"$todo\" ] && finish 0\nchanged=1\n[ \"$CHECK\" = 1 ] && finish 0\n{act} $todo >&2 || fail \"{manager} could not {} $todo\"\nfinish 0\n", if state == "absent" { "remove" } else { "install" }));
        }
        "service" => {
            let name = s(args, "name").ok_or("`name` is required")?;
            let state = s(args, "state");
            let manager = match s(args, "manager").unwrap_or("auto") {
                "auto" => match facts.init.as_deref() {
                    Some("launchd") => "launchd",
                    Some("systemd") => "systemd",
                    _ => return Err(
                        "the host runs neither systemd nor launchd (set `manager:` to say which)"
                            .into(),
                    ),
                },
                m => m,
            };
            sc.push_str(&format!("N={}\n", shquote(name)));
            if manager == "systemd" {
                sc.push_str("command -v systemctl >/dev/null || fail \"systemctl not found\"\nactive=$(systemctl is-active \"$N\" 2>/dev/null)\n");
                match state {
                    Some("started") => sc.push_str("if [ \"$active\" != active ]; then changed=1; [ \"$CHECK\" = 1 ] || systemctl start \"$N\" || fail \"systemctl start $N failed\"; fi\n"),
                    Some("stopped") => sc.push_str("if [ \"$active\" = active ]; then changed=1; [ \"$CHECK\" = 1 ] || systemctl stop \"$N\" || fail \"systemctl stop $N failed\"; fi\n"),
                    Some("restarted") => sc.push_str("changed=1; [ \"$CHECK\" = 1 ] || systemctl restart \"$N\" || fail \"systemctl restart $N failed\"\n"),
                    Some("reloaded") => sc.push_str("changed=1; [ \"$CHECK\" = 1 ] || systemctl reload \"$N\" || fail \"systemctl reload $N failed\"\n"),
                    _ => {}
                }
                match args.get("enabled") {
                    Some(J::Bool(true)) => sc.push_str("if [ \"$(systemctl is-enabled \"$N\" 2>/dev/null)\" != enabled ]; then changed=1; [ \"$CHECK\" = 1 ] || systemctl enable \"$N\" >/dev/null 2>&1 || fail \"systemctl enable $N failed\"; fi\n"),
                    Some(J::Bool(false)) => sc.push_str("if [ \"$(systemctl is-enabled \"$N\" 2>/dev/null)\" = enabled ]; then changed=1; [ \"$CHECK\" = 1 ] || systemctl disable \"$N\" >/dev/null 2>&1 || fail \"systemctl disable $N failed\"; fi\n"),
                    _ => {}
                }
            } else {
                sc.push_str("PL=\"/Library/LaunchDaemons/$N.plist\"\nloaded=0; launchctl print \"system/$N\" >/dev/null 2>&1 && loaded=1\n");
                match state {
                    Some("started") => sc.push_str("if [ \"$loaded\" = 0 ]; then changed=1; [ \"$CHECK\" = 1 ] || launchctl bootstrap system \"$PL\" || fail \"launchctl bootstrap $PL failed\"; fi\n"),
                    Some("stopped") => sc.push_str("if [ \"$loaded\" = 1 ]; then changed=1; [ \"$CHECK\" = 1 ] || launchctl bootout \"system/$N\" || fail \"launchctl bootout $N failed\"; fi\n"),
                    Some("restarted") | Some("reloaded") => sc.push_str("changed=1; if [ \"$CHECK\" != 1 ]; then if [ \"$loaded\" = 1 ]; then launchctl kickstart -k \"system/$N\"; else launchctl bootstrap system \"$PL\"; fi || fail \"restarting $N failed\"; fi\n"),
                    _ => {}
                }
                if let Some(J::Bool(en)) = args.get("enabled") {
                    let (want, verb) = if *en {
                        ("enabled", "enable")
                    } else {
                        ("disabled", "disable")
                    };
                    sc.push_str(&format!("if launchctl print-disabled system 2>/dev/null | grep -q \"\\\"$N\\\" => {}\"; then changed=1; [ \"$CHECK\" = 1 ] || launchctl {verb} \"system/$N\" || fail \"launchctl {verb} $N failed\"; fi\n", if *en { "disabled" } else { "enabled" }));
                    let _ = want;
                }
            }
            sc.push_str("finish 0\n");
        }
        "get_url" => {
            let url = s(args, "url").ok_or("`url` is required")?;
            let dest = s(args, "dest").ok_or("`dest` is required")?;
            let sum = s(args, "sha256").unwrap_or_default().to_ascii_lowercase();
            sc.push_str(&format!(
                "P={}\nU={}\nWANT={}\n",
                shquote(dest),
                shquote(url),
                shquote(&sum)
            ));
            sc.push_str("sum() { sha256sum \"$1\" 2>/dev/null | cut -d' ' -f1 || shasum -a 256 \"$1\" | cut -d' ' -f1; }\n");
            sc.push_str("need=0\nif [ ! -e \"$P\" ]; then need=1; elif [ -n \"$WANT\" ] && [ \"$(sum \"$P\")\" != \"$WANT\" ]; then need=1; fi\n");
            sc.push_str("if [ \"$need\" = 1 ]; then changed=1; if [ \"$CHECK\" != 1 ]; then t=$(mktemp \"$(dirname \"$P\")/.fleet.XXXXXX\") || fail \"cannot write next to $P\"; trap 'rm -f \"$t\"' EXIT; curl -fsSL --retry 2 -o \"$t\" \"$U\" || fail \"download of $U failed\"; if [ -n \"$WANT\" ] && [ \"$(sum \"$t\")\" != \"$WANT\" ]; then fail \"checksum mismatch for $U: got $(sum \"$t\")\"; fi; chmod 644 \"$t\"; mv -f \"$t\" \"$P\" || fail \"cannot replace $P\"; trap - EXIT; fi; fi\n");
            sc.push_str("if [ \"$CHECK\" = 1 ] && [ \"$need\" = 1 ] && [ ! -e \"$P\" ]; then finish 0; fi\n");
            sc.push_str(&attrs(args));
            sc.push_str("finish 0\n");
        }
        "wait_for" => {
            let secs = s(args, "timeout")
                .and_then(crate::spec::task::parse_duration_secs)
                .unwrap_or(60);
            sc.push_str("[ \"$CHECK\" = 1 ] && finish 0\n");
            if let Some(url) = s(args, "url") {
                sc.push_str(&format!(
                    "end=$(( $(date +%s) + {secs} ))\nuntil curl -fsS -o /dev/null --max-time 2 {u}; do [ \"$(date +%s)\" -ge \"$end\" ] && fail \"{u_msg} did not answer within {secs}s\"; sleep 0.25; done\nfinish 0\n",
                    u = shquote(url),
                    u_msg = url.replace('"', "")
                ));
            } else {
                let port = args
                    .get("port")
                    .map(str_of)
                    .ok_or("`port` or `url` is required")?;
                let host = s(args, "host").unwrap_or("127.0.0.1");
                sc.push_str(&format!(
                    "end=$(( $(date +%s) + {secs} ))\nuntil (bash -c 'exec 3<>/dev/tcp/'{h}'/'{p} 2>/dev/null || nc -z {h} {p} 2>/dev/null); do [ \"$(date +%s)\" -ge \"$end\" ] && fail \"port {p} on {hm} did not open within {secs}s\"; sleep 0.25; done\nfinish 0\n",
                    h = shquote(host),
                    p = shquote(&port),
                    hm = host.replace('"', "")
                ));
            }
        }
        "http" => {
            let url = s(args, "url").ok_or("`url` is required")?;
            let method = s(args, "method").unwrap_or("GET");
            let status = args.get("status").and_then(J::as_u64).unwrap_or(200);
            let secs = s(args, "timeout")
                .and_then(crate::spec::task::parse_duration_secs)
                .unwrap_or(30);
            if method != "GET" && method != "HEAD" {
                sc.push_str("[ \"$CHECK\" = 1 ] && finish 0\n");
            }
            let mut c = Cmd::new("curl").args([
                "-sS",
                "-o",
                "/dev/stdout",
                "-w",
                "\n%{http_code}",
                "--max-time",
                &secs.to_string(),
                "-X",
                method,
            ]);
            if let Some(J::Object(h)) = args.get("headers") {
                for (k, v) in h {
                    c = c.arg("-H").arg(format!("{k}: {}", str_of(v)));
                }
            }
            if let Some(body) = args.get("body") {
                let text = match body {
                    J::String(s) => s.clone(),
                    other => {
                        c = c.arg("-H").arg("content-type: application/json");
                        other.to_string()
                    }
                };
                c = c.arg("--data-binary").arg(text);
            }
            let line = c.arg(url).line();
            sc.push_str(&format!("out=$({line}) || fail \"request to {} failed\"\ncode=$(printf '%s' \"$out\" | tail -n1)\nprintf '%s' \"$out\" | sed '$d'\n[ \"$code\" = {status} ] || fail \"{} answered $code, expected {status}\"\nfinish 0\n", url.replace('"', ""), url.replace('"', "")));
            if method != "GET" && method != "HEAD" {
                sc = sc.replace("finish 0\n\nfinish 0", "finish 0");
            }
        }
        "ollama_model" => {
            let name = s(args, "name").ok_or("`name` is required")?;
            let url = s(args, "url")
                .unwrap_or("http://127.0.0.1:11434")
                .trim_end_matches('/');
            let state = s(args, "state").unwrap_or("present");
            let body = serde_json::json!({ "name": name, "model": name }).to_string();
            sc.push_str(&format!(
                "B={}\nM={}\nBODY={}\n",
                shquote(url),
                shquote(name),
                shquote(&body)
            ));
            // In check mode Ollama may not run yet (an earlier task would start it): a model
            // to pull is then a change, one to remove is not.
            let pred = if state == "absent" { 0 } else { 1 };
            sc.push_str(&format!("tags=$(curl -fsS --max-time 10 \"$B/api/tags\") || {{ [ \"$CHECK\" = 1 ] && {{ changed={pred}; finish 0; }}; fail \"Ollama at $B does not answer /api/tags\"; }}\n"));
            // Names in /api/tags are "name:tag"; a bare name means ":latest".
            sc.push_str("case \"$M\" in *:*) W=\"$M\";; *) W=\"$M:latest\";; esac\nhave=0; printf '%s' \"$tags\" | tr ',' '\\n' | grep -q \"\\\"name\\\": *\\\"$W\\\"\" && have=1\n");
            if state == "absent" {
                sc.push_str("if [ \"$have\" = 1 ]; then changed=1; [ \"$CHECK\" = 1 ] || curl -fsS --max-time 60 -X DELETE -d \"$BODY\" \"$B/api/delete\" >/dev/null || fail \"deleting $M failed\"; fi\nfinish 0\n");
            } else {
                sc.push_str("if [ \"$have\" = 0 ]; then changed=1; if [ \"$CHECK\" != 1 ]; then out=$(curl -fsS -N -X POST -d \"$BODY\" \"$B/api/pull\") || fail \"pulling $M from $B failed\"; last=$(printf '%s\\n' \"$out\" | tail -n1); printf '%s\\n' \"$out\" | grep -q '\"status\": *\"success\"' || fail \"pulling $M did not finish: $last\"; printf '%s\\n' \"$out\" | grep -o '\"status\":\"[^\"]*\"' | uniq | sed 's/\"status\":\"//; s/\"$//' >&2; fi; fi\nfinish 0\n");
            }
        }
        "fleet_agent" => return Err("`fleet_agent` runs as several steps in the engine".into()),
        other => return Err(format!("module `{other}` has no implementation")),
    }
    let stat_path = match module {
        "file" => s(args, "path"),
        "copy" | "template" | "get_url" => s(args, "dest"),
        _ => None,
    }
    .filter(|_| !attrs(args).is_empty())
    .map(str::to_string);
    Ok(Built {
        script: sc,
        stdin,
        local_only: None,
        stat_path,
    })
}

/// Markers of a batch: several tasks' scripts in one exec.
pub const UNIT: &str = "__FLEET_UNIT__ ";
const UNIT_END: &str = "__FLEET_UNIT_END__ ";

/// One script of a batch.
#[derive(Debug, Clone)]
pub struct BatchPart<'a> {
    /// The task's script (from [`build_for_batch`]: file contents are inside it).
    pub script: &'a str,
    /// The path whose attributes it compares, if any.
    pub stat_path: Option<&'a str>,
    /// Keep going when this one fails.
    pub ignore_errors: bool,
}

/// Largest file content a task may carry inside a batch.
pub const BATCH_STDIN_MAX: usize = 48 * 1024;

/// Joins several task scripts into one script (`bsd_stat`: the host's `stat` speaks BSD), sent on stdin to `sh -s`: each runs in its own
/// subshell, in order, with stdin from /dev/null (stdin is the rest of the batch), and the
/// batch stops at the first failure (exit 97 from `fail`, 98 from a command that failed)
/// unless that task ignores errors. Markers on both stdout and stderr delimit each task's
/// output, so no temp file is needed to keep their stderr apart.
pub fn batch(parts: &[BatchPart<'_>], bsd_stat: bool) -> String {
    let mut out = String::from("FLEET_BATCH=1; export FLEET_BATCH\n");
    // One stat for every path the tasks will compare; trusted until a task changes something.
    let paths: Vec<String> = parts
        .iter()
        .filter_map(|p| p.stat_path)
        .filter(|p| !p.contains('\n'))
        .map(shquote)
        .collect();
    if !paths.is_empty() {
        let list = paths.join(" ");
        let format = if bsd_stat {
            "-f '%Lp %Su %Sg %N'"
        } else {
            "-c '%a %U %G %n'"
        };
        out.push_str(&format!(
            "FLEET_STATS=\"\n$(stat {format} -- {list} 2>/dev/null)\n\"; FLEET_CLEAN=1\n"
        ));
    }
    for (i, p) in parts.iter().enumerate() {
        out.push_str(&format!(
            "printf '{UNIT}%s\\n' {i}; printf '{UNIT}%s\\n' {i} >&2\n({}\n) </dev/null\nrc=$?; [ \"$rc\" = 0 ] || FLEET_CLEAN=0; [ \"$rc\" = {CHANGED_RC} ] && rc=0\nprintf '\\n{UNIT_END}%s\\n' \"$rc\"; printf '\\n{UNIT_END}\\n' >&2\n",
            p.script
        ));
        if !p.ignore_errors {
            out.push_str("[ \"$rc\" = 0 ] || exit 0\n");
        }
    }
    out
}

/// The text of each unit of a batch's output stream, by unit index.
fn units(stream: &str) -> Vec<(usize, &str)> {
    stream
        .split(UNIT)
        .skip(1)
        .filter_map(|seg| {
            let (idx, rest) = seg.split_once('\n')?;
            Some((idx.trim().parse().ok()?, rest))
        })
        .collect()
}

/// Splits a batch's output into each task's (status, stdout, stderr), for the tasks that ran.
pub fn split_batch(stdout: &str, stderr: &str) -> Vec<(i32, String, String)> {
    let errs: std::collections::HashMap<usize, String> = units(stderr)
        .into_iter()
        .map(|(i, rest)| {
            let body = rest
                .rfind(&format!("\n{}", UNIT_END.trim_end()))
                .map_or(rest, |end| &rest[..end]);
            (i, body.to_string())
        })
        .collect();
    let mut out = Vec::new();
    for (i, rest) in units(stdout) {
        let Some(end) = rest.rfind(&format!("\n{UNIT_END}")) else {
            continue;
        };
        let body = &rest[..end];
        let tail = &rest[end + 1 + UNIT_END.len()..];
        let rc: i32 = tail
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .parse()
            .unwrap_or(-1);
        out.push((
            rc,
            body.to_string(),
            errs.get(&i).cloned().unwrap_or_default(),
        ));
    }
    out
}

/// Reads a script's output: the marker, the command's own output, the old file contents.
pub fn parse_output(status: i32, stdout: &str, stderr: &str) -> Result<Reported, String> {
    let (body, marker) = match stdout.rfind(&format!("\n{MARK}")) {
        Some(i) => (&stdout[..i], stdout[i + 1 + MARK.len()..].trim()),
        None => {
            let msg = stderr.trim();
            return Err(if msg.is_empty() {
                format!("the task's script failed (exit {status}) without a message")
            } else {
                msg.to_string()
            });
        }
    };
    let field = |k: &str| {
        marker
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or("0")
    };
    let mut before = None;
    let mut out = body.to_string();
    if let Some(start) = out.find(&format!("{OLD}\n"))
        && let Some(end) = out[start + OLD.len() + 1..].find(&format!("\n{OLD}\n"))
    {
        let b64: String = out[start + OLD.len() + 1..start + OLD.len() + 1 + end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        use base64::Engine;
        before = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        out.replace_range(start..start + OLD.len() + 1 + end + OLD.len() + 2, "");
    }
    // Like a shell's $(...), drop the final newline of what the command printed.
    if out.ends_with('\n') {
        out.pop();
    }
    Ok(Reported {
        changed: field("changed") == "1",
        rc: field("rc").parse().unwrap_or(0),
        stdout: out,
        stderr: stderr.to_string(),
        missing_dir: field("missing_dir") == "1",
        missing_path: field("missing_path") == "1",
        before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umask_gives_the_mode_only_without_execute_or_special_bits() {
        assert_eq!(umask_for(Some("640")).as_deref(), Some("137"));
        assert_eq!(umask_for(Some("600")).as_deref(), Some("177"));
        assert_eq!(umask_for(Some("644")).as_deref(), Some("133"));
        assert_eq!(umask_for(Some("755")), None);
        assert_eq!(umask_for(Some("4644")), None);
        assert_eq!(umask_for(None), None);
    }

    #[test]
    fn only_small_text_travels_inside_a_script() {
        assert!(inlinable(b"a = 'b'\n"));
        assert!(inlinable(b""));
        assert!(!inlinable(b"a\0b"));
        assert!(!inlinable(&[0xff, 0xfe]));
        assert!(!inlinable(&vec![b'x'; BATCH_STDIN_MAX + 1]));
    }

    #[test]
    fn a_batch_output_splits_into_each_units_streams() {
        let out = "noise\n__FLEET_UNIT__ 0\nhello\n__FLEET__ changed=1 rc=0\n\n__FLEET_UNIT_END__ 0\n__FLEET_UNIT__ 1\n\n__FLEET_UNIT_END__ 97\n";
        let err = "__FLEET_UNIT__ 0\n\n__FLEET_UNIT_END__\n__FLEET_UNIT__ 1\nboom\n\n__FLEET_UNIT_END__\n";
        let units = split_batch(out, err);
        assert_eq!(units.len(), 2);
        assert_eq!(units[0].0, 0);
        assert!(units[0].1.contains("hello") && units[0].2.is_empty());
        assert_eq!((units[1].0, units[1].2.as_str()), (97, "boom\n"));
        // A unit that never reported its end (the host died) is not in the result.
        assert_eq!(split_batch("__FLEET_UNIT__ 0\npartial", "").len(), 0);
    }

    #[test]
    fn temp_names_differ() {
        assert_ne!(temp_name(), temp_name());
        assert!(temp_name().starts_with(".fleet."));
    }
}
