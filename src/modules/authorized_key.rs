//! `authorized_key`: SSH public keys in a user's `authorized_keys`. Each key is checked on the
//! controller (a known type, base64 whose blob names the same type), so a typo fails before
//! any host is touched. A key is known on the host by its type and blob: a line with other
//! options or another comment is replaced in place, a missing one appended; `exclusive`
//! leaves exactly the given keys. Whenever the file is written, the user's `~/.ssh` is made
//! 0700 and the file 0600, both owned by the user, and the file is replaced atomically. (A
//! file whose keys are right is left alone, modes included: so check mode predicts exactly,
//! even when several tasks edit the same file.) The edit runs in awk, which reads
//! the keys from its environment.

use base64::Engine;

use crate::facts::Facts;
use crate::modules::{ArgError, ArgReader, Effects, Inputs, Module, Need, Step, values};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct AuthorizedKey;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "authorized_key",
    summary: "Add or remove SSH public keys in a user's authorized_keys (~/.ssh 0700, the file 0600).",
    free_form: None,
    args: &[
        arg("user", ArgKind::Str, true, "whose keys"),
        arg(
            "key",
            ArgKind::Str,
            true,
            "one public key per line (`ssh-ed25519 AAAA… comment`); options go in `key_options`",
        ),
        arg(
            "state",
            ArgKind::OneOf(&["present", "absent"]),
            false,
            "default `present`",
        ),
        arg(
            "exclusive",
            ArgKind::Bool,
            false,
            "remove every other key (and line) of the file",
        ),
        arg(
            "key_options",
            ArgKind::Str,
            false,
            "options put before each key (`from=\"10.0.0.0/8\",no-pty`)",
        ),
        arg(
            "path",
            ArgKind::Str,
            false,
            "the file (default `~USER/.ssh/authorized_keys`, whose directory fleet manages); its directory must exist",
        ),
    ],
    exactly_one_of: &[],
};

/// The key types OpenSSH accepts in `authorized_keys`.
const TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
];

/// A public key: its type, its base64 blob, its comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// `ssh-ed25519` …
    pub kind: String,
    /// The base64 text.
    pub blob: String,
    /// What follows, if anything.
    pub comment: Option<String>,
}

/// Reads one public key line, or says what is wrong with it.
pub fn parse_key(line: &str) -> Result<PublicKey, String> {
    let mut words = line.split_whitespace();
    let kind = words.next().unwrap_or_default();
    if !TYPES.contains(&kind) {
        return Err(format!(
            "`{}` is not a public key type (expected one of ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256 …; options go in `key_options`)",
            kind.chars().take(40).collect::<String>()
        ));
    }
    let blob = words
        .next()
        .ok_or_else(|| format!("the {kind} key has no key data after its type"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|_| format!("the {kind} key's data is not base64"))?;
    // The blob starts with its own type as an SSH string: a 4-byte length, then the name.
    let named = bytes
        .get(..4)
        .and_then(|l| {
            let n = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
            bytes.get(4..4 + n)
        })
        .is_some_and(|name| name == kind.as_bytes());
    if !named {
        return Err(format!(
            "the {kind} key's data is not a {kind} key (cut short, or of another type)"
        ));
    }
    let rest: Vec<&str> = words.collect();
    Ok(PublicKey {
        kind: kind.to_string(),
        blob: blob.to_string(),
        comment: (!rest.is_empty()).then(|| rest.join(" ")),
    })
}

/// Why `o` cannot be the options of a key line: it must stay one word of the line (spaces
/// only inside double quotes, as sshd reads them) on one line.
pub fn options_problem(o: &str) -> Option<&'static str> {
    if o.chars().any(char::is_control) {
        return Some("on one line, without control characters");
    }
    let mut quoted = false;
    let mut escaped = false;
    for c in o.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ' ' | '\t' if !quoted => return Some("spaces only inside double quotes"),
            _ => {}
        }
    }
    quoted.then_some("a double quote is not closed")
}

/// The `authorized_keys` line of a key with options.
pub fn key_line(k: &PublicKey, options: Option<&str>) -> String {
    let mut s = String::new();
    if let Some(o) = options {
        s.push_str(o);
        s.push(' ');
    }
    s.push_str(&k.kind);
    s.push(' ');
    s.push_str(&k.blob);
    if let Some(c) = &k.comment {
        s.push(' ');
        s.push_str(c);
    }
    s
}

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    user: String,
    lines: Vec<String>,
    present: bool,
    exclusive: bool,
    path: Option<String>,
}

/// The edit: the file on stdin, the new one on stdout. A line's key is the key type and
/// blob found in it, whatever options precede it.
const EDIT: &str = concat!(
    "FLEET_AWK='function kid(s,   f, n, i) { n = split(s, f, /[ \\t]+/); for (i = 1; i < n; i++) if (f[i] ~ /^(ssh-|ecdsa-|sk-)/ && f[i + 1] ~ /^[A-Za-z0-9+\\/]+=*$/) return f[i] \" \" f[i + 1]; return \"\" }\n",
    "BEGIN { nw = split(ENVIRON[\"FLEET_KEYS\"], w, \"\\n\"); for (j = 1; j <= nw; j++) want[kid(w[j])] = w[j]; present = ENVIRON[\"FLEET_STATE\"] == \"present\"; ex = ENVIRON[\"FLEET_EX\"] == \"1\"; n = 0 }\n",
    "ex && present { next }\n",
    "{ id = kid($0) }\n",
    "id != \"\" && (id in want) { if (present && !(id in done)) { l[n++] = want[id]; done[id] = 1 } next }\n",
    "{ l[n++] = $0 }\n",
    "END { if (ex && present) { for (j = 1; j <= nw; j++) print w[j]; exit } for (i = 0; i < n; i++) print l[i]; if (present) for (j = 1; j <= nw; j++) if (!(kid(w[j]) in done)) { print w[j]; done[kid(w[j])] = 1 } }'\n",
);

impl Module for AuthorizedKey {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, _: &Inputs<'_>) -> Result<Args, ArgError> {
        let user = values::account(a, "user")?
            .ok_or_else(|| ArgError::arg("user", "module `authorized_key`: `user` is required"))?;
        let options = a.str("key_options")?.filter(|o| !o.is_empty());
        if let Some(why) = options.as_deref().and_then(options_problem) {
            return Err(a.invalid("key_options", &format!("key options ({why})")));
        }
        let text = a.req("key")?;
        let mut lines = Vec::new();
        for l in text.lines().map(str::trim) {
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let k = parse_key(l).map_err(|why| {
                let e = ArgError::arg("key", format!("module `authorized_key`: `key`: {why}"));
                if a.is_secret("key") { e.hiding(l) } else { e }
            })?;
            if k.comment
                .as_deref()
                .is_some_and(|c| c.chars().any(char::is_control))
            {
                return Err(a.invalid("key", "a comment without control characters"));
            }
            lines.push(key_line(&k, options.as_deref()));
        }
        if lines.is_empty() {
            return Err(a.invalid("key", "at least one public key"));
        }
        Ok(Args {
            user,
            lines,
            present: a.one_of("state", &["present", "absent"])? != Some("absent"),
            exclusive: a.bool("exclusive")?.unwrap_or(false),
            path: values::opt_path(a, "path")?,
        })
    }

    fn script(&self, a: &Args, _facts: &Facts) -> Result<Step, ArgError> {
        let mut s = Script::new();
        s.set("U", a.user.as_str())
            .set_opt("P", a.path.as_deref())
            .set("FLEET_KEYS", a.lines.join("\n"))
            .set("FLEET_STATE", if a.present { "present" } else { "absent" })
            .set("FLEET_EX", a.exclusive)
            .code(EDIT)
            .code(concat!(
                "export FLEET_KEYS FLEET_STATE FLEET_EX\n",
                "H=$(getent passwd \"$U\" 2>/dev/null | cut -d: -f6)\n",
                "[ -n \"$H\" ] || H=$(dscl . -read \"/Users/$U\" NFSHomeDirectory 2>/dev/null | awk '{ print $2 }')\n",
                "if [ -z \"$H\" ] || ! id -u \"$U\" >/dev/null 2>&1; then [ \"$CHECK\" = 1 ] && { missing=1; changed=1; finish 0; }; fail \"user $U does not exist\"; fi\n",
                "G=$(id -g \"$U\")\n",
                "MD=0; if [ -z \"$P\" ]; then P=$H/.ssh/authorized_keys; MD=1; fi\n",
                "case \"$P\" in */*) D=${P%/*}; D=${D:-/};; *) D=.;; esac\n",
                "if [ \"$MD\" = 0 ] && [ ! -d \"$D\" ]; then [ \"$CHECK\" = 1 ] && { missing=1; changed=1; finish 0; }; fail \"directory $D does not exist (create it with a file task first)\"; fi\n",
                "[ -d \"$P\" ] && fail \"$P is a directory\"\n",
                "o=$(mktemp) && n=$(mktemp) || fail \"cannot make temporary files\"; t=\n",
                "trap 'rm -f -- \"$o\" \"$n\" $t' EXIT; trap 'exit 1' HUP INT TERM PIPE\n",
                "[ -f \"$P\" ] && { cat -- \"$P\" > \"$o\" || fail \"cannot read $P\"; }\n",
                "awk \"$FLEET_AWK\" < \"$o\" > \"$n\" || fail \"cannot edit the keys\"\n",
                "same=1; if [ -e \"$P\" ] || [ -s \"$n\" ]; then cmp -s \"$o\" \"$n\" || same=0; fi\n",
                "[ \"$same\" = 1 ] && finish 0\n",
                "changed=1\n",
                "[ \"$DIFF\" = 1 ] && { fleet_old \"$o\"; fleet_new \"$n\"; }\n",
                "[ \"$CHECK\" = 1 ] && finish 0\n",
                // ~/.ssh: 0700, the user's.
                "if [ \"$MD\" = 1 ]; then\n",
                "  if [ ! -d \"$D\" ]; then { mkdir -m 700 -- \"$D\" && chown \"$U:$G\" \"$D\"; } || fail \"cannot create $D\"\n",
                "  else fleet_stat \"$D\"; set -- $st\n",
                "    if [ \"$1\" != 700 ] || { [ \"$2\" != \"$U\" ] && [ \"$4\" != \"$U\" ]; }; then { chmod 700 \"$D\" && chown \"$U:$G\" \"$D\"; } || fail \"cannot make $D 0700 and $U's\"; fi\n",
                "  fi\n",
                "fi\n",
                "t=\"$D/.fleet.$FN.$FU\"; trap 'rm -f -- \"$o\" \"$n\" \"$t\"' EXIT\n",
                "(umask 077; set -C; cat \"$n\" > \"$t\") || fail \"cannot write in $D\"\n",
                "{ chown \"$U:$G\" \"$t\" && chmod 600 \"$t\"; } || fail \"cannot give $t to $U\"\n",
                "mv -f -- \"$t\" \"$P\" || fail \"cannot replace $P\"\n",
                "finish 0\n",
            ));
        Ok(Step::of(s))
    }

    fn effects(&self, a: &Args) -> Effects {
        Effects {
            creates: None,
            needs: a.path.as_ref().map(|p| {
                Need::Dir(match p.rsplit_once('/') {
                    Some(("", _)) => "/".to_string(),
                    Some((d, _)) => d.to_string(),
                    None => ".".to_string(),
                })
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINLmsPu4QhDy2LXaWCxuBN4bcZAg5M8FswK2snhyG7eu";

    #[test]
    fn keys_are_checked_and_rendered() {
        let k = parse_key(&format!("{ED} ops@bob  laptop")).expect("key");
        assert_eq!(k.kind, "ssh-ed25519");
        assert_eq!(k.comment.as_deref(), Some("ops@bob laptop"));
        assert_eq!(
            key_line(&k, Some("from=\"10.0.0.0/8\",no-pty")),
            format!("from=\"10.0.0.0/8\",no-pty {ED} ops@bob laptop")
        );
        assert_eq!(key_line(&parse_key(ED).expect("bare"), None), ED);
    }

    #[test]
    fn bad_keys_say_why() {
        assert!(
            parse_key("ssh-foo AAAA")
                .expect_err("an error")
                .contains("not a public key type")
        );
        assert!(
            parse_key("no-pty ssh-ed25519 AAAA")
                .expect_err("an error")
                .contains("options go in")
        );
        assert!(
            parse_key("ssh-ed25519")
                .expect_err("an error")
                .contains("no key data")
        );
        assert!(
            parse_key("ssh-ed25519 !!!")
                .expect_err("an error")
                .contains("not base64")
        );
        // An ed25519 blob presented as RSA.
        let blob = ED.split(' ').nth(1).expect("blob");
        assert!(
            parse_key(&format!("ssh-rsa {blob}"))
                .expect_err("an error")
                .contains("not a ssh-rsa key")
        );
        assert!(parse_key("ssh-ed25519 AAAAC3Nz").is_err(), "cut short");
    }

    #[test]
    fn options_stay_one_word() {
        assert_eq!(options_problem("no-pty,from=\"10.0.0.1\""), None);
        assert_eq!(options_problem("command=\"echo a b\",no-pty"), None);
        assert!(options_problem("no-pty ssh-rsa AAAA").is_some());
        assert!(options_problem("command=\"x").is_some());
        assert!(options_problem("no-pty\nssh-rsa AAAA").is_some());
    }
}
