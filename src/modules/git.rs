//! `git`: a checkout of a repository at a version (a branch, a tag, a full commit hash or the
//! remote's `HEAD`). The version is resolved against the remote with `git ls-remote` — a
//! read, so check mode asks the same question a real run does — and compared with the
//! checkout's `HEAD`; a real run that differs fetches just that ref and checks it out. A
//! fresh checkout is `git init` + the same fetch, so clone and update are one path.

use crate::facts::Facts;
use crate::modules::{ArgError, ArgReader, Effects, Inputs, Module, Step, values};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct Git;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "git",
    summary: "Check out a git repository at a branch, tag or commit (clone, or fetch and check out).",
    free_form: None,
    args: &[
        arg(
            "repo",
            ArgKind::Str,
            true,
            "the repository's URL (`https://`, `ssh://`, `git@host:path`, `file://` or a path on the host)",
        ),
        arg(
            "dest",
            ArgKind::Str,
            true,
            "the checkout's directory on the host",
        ),
        arg(
            "version",
            ArgKind::Str,
            false,
            "a branch, a tag, a full 40-hex commit hash, or `HEAD` (the default: the remote's default branch)",
        ),
        arg(
            "force",
            ArgKind::Bool,
            false,
            "discard local modifications of tracked files (else they fail the task)",
        ),
        arg(
            "depth",
            ArgKind::Int,
            false,
            "fetch only this many commits (a shallow checkout)",
        ),
    ],
    exactly_one_of: &[],
};

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    repo: String,
    dest: String,
    version: String,
    force: bool,
    depth: Option<u64>,
}

/// The transports a checkout may use: never `ext::` (which runs a command) or `fd::`.
const PROTOCOLS: &str = "file:git:http:https:ssh";

/// True for a full commit hash (40 hex digits, SHA-1 repositories).
pub fn is_commit_hash(v: &str) -> bool {
    v.len() == 40 && v.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Why `v` cannot name a branch, tag or commit, by git's ref-name rules
/// (`git check-ref-format`) plus no leading `-`, so no git command reads it as an option.
pub fn version_problem(v: &str) -> Option<&'static str> {
    if v.is_empty() {
        return Some("must not be empty");
    }
    if v.starts_with('-') || v.starts_with('/') || v.ends_with('/') || v.ends_with('.') {
        return Some("must not start with `-` or `/`, nor end with `/` or `.`");
    }
    if v.contains("..") || v.contains("@{") || v.contains("//") || v.ends_with(".lock") {
        return Some("must not contain `..`, `@{` or `//`, nor end with `.lock`");
    }
    if v.chars()
        .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        return Some("must not contain spaces, control characters or any of ~^:?*[\\");
    }
    None
}

/// Why `r` cannot be a repository URL or path: empty, read as an option, or holding a control
/// character (git would refuse it anyway; this says so before the run).
pub fn repo_problem(r: &str) -> Option<&'static str> {
    if r.is_empty() {
        return Some("must not be empty");
    }
    if r.starts_with('-') {
        return Some("must not start with `-`");
    }
    if r.chars().any(char::is_control) {
        return Some("must not contain control characters or line breaks");
    }
    None
}

impl Module for Git {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, _: &Inputs<'_>) -> Result<Args, ArgError> {
        let repo = a.req("repo")?;
        if let Some(why) = repo_problem(&repo) {
            return Err(a.invalid("repo", &format!("a repository URL or path ({why})")));
        }
        let version = a.str("version")?.unwrap_or_else(|| "HEAD".to_string());
        if let Some(why) = version_problem(&version) {
            return Err(a.invalid("version", &format!("a branch, tag or commit hash ({why})")));
        }
        let depth = a.uint("depth")?;
        if depth == Some(0) {
            return Err(a.invalid("depth", "a number of commits, at least 1"));
        }
        Ok(Args {
            repo,
            dest: values::path(a, "dest")?,
            version,
            force: a.bool("force")?.unwrap_or(false),
            depth,
        })
    }

    fn script(&self, a: &Args, _facts: &Facts) -> Result<Step, ArgError> {
        let mut s = Script::new();
        s.set("R", a.repo.as_str())
            .set("P", a.dest.as_str())
            .set("FLEET_V", a.version.as_str())
            .set("FORCE", a.force)
            .set_opt("DEPTH", a.depth)
            .set("GIT_ALLOW_PROTOCOL", PROTOCOLS)
            .set_opt(
                "SHA",
                is_commit_hash(&a.version).then(|| a.version.to_ascii_lowercase()),
            )
            .code(concat!(
                "command -v git >/dev/null || fail \"git is not installed on the host\"\n",
                "GIT_TERMINAL_PROMPT=0; export GIT_TERMINAL_PROMPT GIT_ALLOW_PROTOCOL FLEET_V\n",
                // The commit the version names now, and how to fetch it.
                "if [ -n \"$SHA\" ]; then want=$SHA; kind=commit; ref=$SHA\n",
                "else\n",
                "  refs=$(git ls-remote -- \"$R\" 2>&1) || fail \"git ls-remote $R failed: $refs\"\n",
                "  sel=$(printf '%s\\n' \"$refs\" | awk -F '\\t' 'BEGIN { v = ENVIRON[\"FLEET_V\"] }\n",
                "    v == \"HEAD\" && $2 == \"HEAD\" { h = $1 }\n",
                "    $2 == \"refs/tags/\" v \"^{}\" { p = $1 }\n",
                "    $2 == \"refs/tags/\" v { t = $1 }\n",
                "    $2 == \"refs/heads/\" v { b = $1 }\n",
                "    END { if (h != \"\") print h \" head\"; else if (p != \"\") print p \" tag\"; else if (t != \"\") print t \" tag\"; else if (b != \"\") print b \" branch\" }')\n",
                "  [ -n \"$sel\" ] || fail \"$R has no branch or tag $FLEET_V\"\n",
                "  want=${sel% *}; kind=${sel#* }\n",
                "  case $kind in head) ref=HEAD;; tag) ref=refs/tags/$FLEET_V;; *) ref=refs/heads/$FLEET_V;; esac\n",
                "fi\n",
                // What is there.
                "have=; dirty=\n",
                "if [ -e \"$P/.git\" ]; then\n",
                "  have=$(git -C \"$P\" rev-parse --verify -q 'HEAD^{commit}' 2>/dev/null)\n",
                "  dirty=$(git -C \"$P\" status --porcelain --untracked-files=no 2>/dev/null)\n",
                "elif [ -e \"$P\" ]; then\n",
                "  { [ -d \"$P\" ] && [ -z \"$(ls -A -- \"$P\")\" ]; } || fail \"$P exists and is not a git checkout\"\n",
                "fi\n",
                "if [ \"$have\" = \"$want\" ] && [ -z \"$dirty\" ]; then printf '%s\\n' \"$want\"; finish 0; fi\n",
                "[ -z \"$dirty\" ] || [ \"$FORCE\" = 1 ] || fail \"$P has local modifications (force: true discards them)\"\n",
                "changed=1\n",
                "if [ \"$CHECK\" = 1 ]; then printf '%s\\n' \"$want\"; finish 0; fi\n",
                "if [ ! -e \"$P/.git\" ]; then\n",
                "  out=$(git init -q -- \"$P\" 2>&1) || fail \"git init $P failed: $out\"\n",
                "  git -C \"$P\" remote add origin -- \"$R\" 2>/dev/null\n",
                "fi\n",
                "if ! git -C \"$P\" cat-file -e \"$want^{commit}\" 2>/dev/null; then\n",
                "  set -- -q; [ -n \"$DEPTH\" ] && set -- -q \"--depth=$DEPTH\"\n",
                "  out=$(git -C \"$P\" fetch \"$@\" -- \"$R\" \"$ref\" 2>&1) || { [ \"$kind\" = commit ] && out=$(git -C \"$P\" fetch \"$@\" -- \"$R\" '+refs/heads/*:refs/remotes/origin/*' '+refs/tags/*:refs/tags/*' 2>&1); } || fail \"git fetch from $R failed: $out\"\n",
                "  git -C \"$P\" cat-file -e \"$want^{commit}\" 2>/dev/null || fail \"$R has no commit $want\"\n",
                "fi\n",
                "set -- -q; [ \"$FORCE\" = 1 ] && set -- -q --force\n",
                "if [ \"$kind\" = branch ]; then out=$(git -C \"$P\" checkout \"$@\" -B \"$FLEET_V\" \"$want\" 2>&1)\n",
                "else out=$(git -C \"$P\" checkout \"$@\" --detach \"$want\" 2>&1); fi || fail \"git checkout of $FLEET_V in $P failed: $out\"\n",
                "printf '%s\\n' \"$want\"\n",
                "finish 0\n",
            ));
        Ok(Step::of(s))
    }

    fn effects(&self, a: &Args) -> Effects {
        Effects {
            creates: Some((a.dest.trim_end_matches('/').to_string(), true)),
            needs: None,
        }
    }

    fn batchable(&self, _: &Args) -> bool {
        // A clone or fetch can take long: its own exec, like a download.
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_git_ref_rules() {
        for ok in ["main", "v1.2.3", "release/2026-12", "HEAD", "feature_x+y@z"] {
            assert_eq!(version_problem(ok), None, "{ok}");
        }
        for bad in [
            "", "-b", "/x", "x/", "a..b", "a b", "a:b", "x^", "x~1", "x.lock", "a@{1}", "x\n",
        ] {
            assert!(version_problem(bad).is_some(), "{bad:?}");
        }
        assert!(is_commit_hash(&"a".repeat(40)) && !is_commit_hash("abc123"));
        assert!(!is_commit_hash(&"g".repeat(40)));
    }

    #[test]
    fn repos_cannot_be_options() {
        assert_eq!(repo_problem("file:///srv/repo.git"), None);
        assert_eq!(repo_problem("git@github.com:o/r.git"), None);
        assert!(repo_problem("--upload-pack=touch /x").is_some());
        assert!(repo_problem("").is_some() && repo_problem("a\nb").is_some());
    }
}
