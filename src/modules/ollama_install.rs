//! `ollama_install`: Ollama on Linux through its install script, at the version asked for.
//! `version: ""` installs it when missing and never touches an installed one; `0.5.7` pins
//! it (a different installed version is replaced, up or down); `latest` upgrades when the
//! release API names a newer release than the installed one. The installed version is what
//! `ollama --version` says. The version reaches the installer as `OLLAMA_VERSION` in its
//! environment (Ollama's install.sh downloads exactly that release), never as shell text.
//!
//! The installer writes, enables and starts its own systemd unit; the role places fleet's and
//! manages the service. So the unit and the service's state are put back as they were before
//! the installer ran (a running service restarted on the new binary, under fleet's unit), and
//! the role's later tasks find what `--check` predicted.

use crate::facts::Facts;
use crate::modules::{ArgError, ArgReader, Inputs, Judged, Mode, Module, Reported, Step, values};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct OllamaInstall;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "ollama_install",
    summary: "Install Ollama on Linux with its install script: when missing, at a pinned version (replacing another), or the latest release.",
    free_form: None,
    args: &[
        arg(
            "version",
            ArgKind::Str,
            false,
            "\"\" (default: install when missing, keep an installed one), a version such as `0.5.7` or `0.6.0-rc1` (exactly it), or `latest` (upgrade when a newer release exists)",
        ),
        arg(
            "install_url",
            ArgKind::Str,
            false,
            "Ollama's install script (default https://ollama.com/install.sh)",
        ),
        arg(
            "release_url",
            ArgKind::Str,
            false,
            "for `latest`: the release API whose `tag_name` names the newest release (default https://api.github.com/repos/ollama/ollama/releases/latest)",
        ),
        arg(
            "binary",
            ArgKind::Str,
            false,
            "where the installer puts `ollama` (default /usr/local/bin/ollama)",
        ),
        arg(
            "unit",
            ArgKind::Str,
            false,
            "the systemd unit the installer overwrites: it and its service's state are put back after it (default /etc/systemd/system/ollama.service; \"\": none)",
        ),
    ],
    exactly_one_of: &[],
};

/// Which version is wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// Any: install when missing.
    Any,
    /// Exactly this one.
    Pin(String),
    /// The newest release.
    Latest,
}

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    want: Want,
    install_url: String,
    release_url: String,
    binary: String,
    unit: String,
}

/// Whether `v` is a version Ollama releases carry: digits and dots (`0.5.7`), optionally
/// `-rcN`.
pub fn is_version(v: &str) -> bool {
    let (base, rc) = match v.split_once("-rc") {
        Some((b, n)) => (b, Some(n)),
        None => (v, None),
    };
    let parts_ok = !base.is_empty()
        && base
            .split('.')
            .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()));
    let rc_ok =
        rc.is_none_or(|n| !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()));
    parts_ok && rc_ok
}

/// What `ollama_version` asks for, or why it is not a version.
pub fn parse_want(v: &str) -> Result<Want, &'static str> {
    match v {
        "" => Ok(Want::Any),
        "latest" => Ok(Want::Latest),
        v if is_version(v.strip_prefix('v').unwrap_or(v)) => {
            Ok(Want::Pin(v.strip_prefix('v').unwrap_or(v).to_string()))
        }
        _ => Err(
            "\"\" (install when missing), `latest`, or a version: digits and dots such as `0.5.7`, optionally `-rcN`",
        ),
    }
}

/// `installed`: the version `ollama --version` reports for the installed binary (the client
/// line when the server runs another version), empty when there is none. `vkey V`: a key
/// that sorts as versions do (an `-rcN` before its release). `newer A B`: A is newer than B.
const VERSIONS: &str = concat!(
    "installed() { [ -x \"$BIN\" ] || return 0\n",
    "  out=$(\"$BIN\" --version 2>&1)\n",
    "  v=$(printf '%s\\n' \"$out\" | sed -n 's/.*client version is \\([0-9][0-9.]*\\(-rc[0-9]*\\)\\{0,1\\}\\).*/\\1/p' | head -n1)\n",
    "  [ -n \"$v\" ] || v=$(printf '%s\\n' \"$out\" | sed -n 's/.*ollama version is \\([0-9][0-9.]*\\(-rc[0-9]*\\)\\{0,1\\}\\).*/\\1/p' | head -n1)\n",
    "  [ -n \"$v\" ] || v=unknown; printf '%s' \"$v\"; }\n",
    "vkey() { printf '%s\\n' \"$1\" | awk '{ rc = 999999999; b = $0; if (b ~ /-rc[0-9]+$/) { rc = b; sub(/.*-rc/, \"\", rc); sub(/-rc[0-9]+$/, \"\", b) }\n",
    "  n = split(b, p, \".\"); k = \"v\"; for (i = 1; i <= 4; i++) k = k sprintf(\"%09d\", (i <= n ? p[i] : 0)); printf \"%s%09d\\n\", k, rc }'; }\n",
    "newer() { awk -v a=\"$(vkey \"$1\")\" -v b=\"$(vkey \"$2\")\" 'BEGIN { exit !(a > b) }'; }\n",
);

/// Decides the version to install (`want`, empty: the installer's default), runs the
/// installer with it, checks the result.
const INSTALL: &str = concat!(
    "have=$(installed)\n",
    "case $MODE in\n",
    "  any) [ -n \"$have\" ] && { echo \"Ollama $have is installed\"; finish 0; }; want=;;\n",
    "  pin) [ \"$have\" = \"$V\" ] && { echo \"Ollama $have is installed\"; finish 0; }; want=$V;;\n",
    "  latest)\n",
    "    rel=$(curl -fsSL -g --proto '=http,https' --max-time 30 \"$REL\") || fail \"cannot read the newest Ollama release from $REL\"\n",
    "    want=$(printf '%s\\n' \"$rel\" | sed -n 's/.*\"tag_name\" *: *\"v\\{0,1\\}\\([0-9][0-9.]*\\(-rc[0-9]*\\)\\{0,1\\}\\)\".*/\\1/p' | head -n1)\n",
    "    [ -n \"$want\" ] || fail \"$REL names no release version (no \\\"tag_name\\\": \\\"vX.Y.Z\\\")\"\n",
    "    if [ -n \"$have\" ] && [ \"$have\" != unknown ] && ! newer \"$want\" \"$have\"; then echo \"Ollama $have is installed; the newest release is $want\"; finish 0; fi;;\n",
    "esac\n",
    "changed=1\n",
    "if [ \"$CHECK\" = 1 ]; then echo \"Ollama ${have:-(none)} -> ${want:-the installer's}\"; finish 0; fi\n",
    "d=$(mktemp -d) || fail \"cannot make a temporary directory\"; trap 'rm -rf -- \"$d\"' EXIT\n",
    "curl -fsSL -g --proto '=http,https' --max-time 300 -o \"$d/install.sh\" \"$URL\" || fail \"cannot download Ollama's installer from $URL\"\n",
    "sd=0; [ -n \"$UNIT\" ] && command -v systemctl >/dev/null 2>&1 && sd=1; SVC=${UNIT##*/}; SVC=${SVC%.service}\n",
    "active=0; enabled=0\n",
    "if [ \"$sd\" = 1 ]; then systemctl is-active -- \"$SVC\" >/dev/null 2>&1 && active=1; systemctl is-enabled -- \"$SVC\" >/dev/null 2>&1 && enabled=1; fi\n",
    "[ -n \"$UNIT\" ] && [ -f \"$UNIT\" ] && { cp -p -- \"$UNIT\" \"$d/unit\" || fail \"cannot keep $UNIT\"; }\n",
    "if [ -n \"$want\" ]; then OLLAMA_VERSION=$want sh \"$d/install.sh\" >&2; else sh \"$d/install.sh\" >&2; fi || fail \"Ollama's installer ($URL) failed\"\n",
    // The installer writes, enables and (re)starts its own service: the role manages the
    // service, so the unit and the service's state are put back as they were (a running
    // service restarted on the new binary under fleet's unit), and the tasks after this one
    // find what --check predicted.
    "if [ -f \"$d/unit\" ]; then cp -p -- \"$d/unit\" \"$UNIT.fleet-tmp\" && mv -f -- \"$UNIT.fleet-tmp\" \"$UNIT\" || fail \"cannot put $UNIT back\"\n",
    "elif [ -n \"$UNIT\" ]; then rm -f -- \"$UNIT\"; fi\n",
    "if [ \"$sd\" = 1 ]; then systemctl daemon-reload >/dev/null 2>&1\n",
    "  if [ \"$active\" = 1 ]; then systemctl restart -- \"$SVC\" || fail \"systemctl restart $SVC failed\"; else systemctl stop -- \"$SVC\" >/dev/null 2>&1; fi\n",
    "  [ \"$enabled\" = 1 ] || systemctl disable -- \"$SVC\" >/dev/null 2>&1; fi\n",
    "now=$(installed)\n",
    "[ -n \"$now\" ] || fail \"the installer left no Ollama at $BIN\"\n",
    "[ -z \"$want\" ] || [ \"$now\" = \"$want\" ] || fail \"the installer left Ollama $now at $BIN, not $want\"\n",
    "echo \"Ollama ${have:-(none)} -> $now\"\n",
    "finish 0\n",
);

impl Module for OllamaInstall {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, _: &Inputs<'_>) -> Result<Args, ArgError> {
        let want = parse_want(&a.str("version")?.unwrap_or_default())
            .map_err(|why| a.invalid("version", why))?;
        let install_url = match a.str("install_url")? {
            Some(_) => values::url(a, "install_url")?,
            None => "https://ollama.com/install.sh".into(),
        };
        let release_url = match a.str("release_url")? {
            Some(_) => values::url(a, "release_url")?,
            None => "https://api.github.com/repos/ollama/ollama/releases/latest".into(),
        };
        let binary = a
            .str("binary")?
            .unwrap_or_else(|| "/usr/local/bin/ollama".into());
        if !binary.starts_with('/') {
            return Err(a.invalid("binary", "an absolute path"));
        }
        let unit = a
            .str("unit")?
            .unwrap_or_else(|| "/etc/systemd/system/ollama.service".into());
        if !unit.is_empty() && !unit.starts_with('/') {
            return Err(a.invalid("unit", "an absolute path, or \"\""));
        }
        Ok(Args {
            want,
            install_url,
            release_url,
            binary,
            unit,
        })
    }

    fn script(&self, a: &Args, facts: &Facts) -> Result<Step, ArgError> {
        if facts.os.as_deref().is_some_and(|os| os != "linux") {
            return Err(ArgError::task(
                "module `ollama_install` installs Ollama on Linux; on macOS the ollama role uses Homebrew",
            ));
        }
        let mut s = Script::new();
        let (mode, v) = match &a.want {
            Want::Any => ("any", ""),
            Want::Pin(v) => ("pin", v.as_str()),
            Want::Latest => ("latest", ""),
        };
        s.set("MODE", mode)
            .set("V", v)
            .set("URL", a.install_url.as_str())
            .set("REL", a.release_url.as_str())
            .set("BIN", a.binary.as_str())
            .set("UNIT", a.unit.as_str())
            .code(VERSIONS)
            .code(INSTALL);
        Ok(Step::of(s))
    }

    fn batchable(&self, _: &Args) -> bool {
        // The installer downloads hundreds of megabytes.
        false
    }

    fn stales_facts(&self) -> bool {
        true
    }

    fn judge(&self, _: &Args, r: &Reported, _: Mode) -> Judged {
        Judged {
            changed: r.changed,
            failed: None,
            note: r
                .stdout
                .lines()
                .last()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_digits_and_dots_with_an_optional_rc() {
        for ok in ["0.5.7", "1", "0.6.0-rc1", "v0.5.7", "10.20.30.40"] {
            assert!(parse_want(ok).is_ok(), "{ok}");
        }
        assert_eq!(parse_want("v0.5.7"), Ok(Want::Pin("0.5.7".into())));
        assert_eq!(parse_want(""), Ok(Want::Any));
        assert_eq!(parse_want("latest"), Ok(Want::Latest));
        for bad in [
            "0.5.7;rm -rf /",
            "$(id)",
            "0..7",
            ".5",
            "0.5.7-rc",
            "0.5.7-beta",
            "Latest",
            " 0.5.7",
            "0.5.7\n",
            "-rc1",
        ] {
            assert!(parse_want(bad).is_err(), "{bad:?}");
        }
    }
}
