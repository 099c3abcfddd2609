//! `uv`: a Python command-line tool installed with `uv tool install`, each in its own
//! environment. What is installed is read from `uv tool list`; for `latest`, the newest
//! version is resolved with `uv pip compile`, which installs nothing: check mode asks the same
//! questions a real run does. A tool is its name, optionally pinned (`ruff==0.6.9`); ranges
//! belong to `pip` in a virtualenv, where the installed version can be checked against them.

use crate::facts::Facts;
use crate::modules::{ArgError, ArgReader, Inputs, Module, Step};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct Uv;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "uv",
    summary: "Install, upgrade or remove a Python command-line tool with `uv tool`.",
    free_form: None,
    args: &[
        arg(
            "name",
            ArgKind::Str,
            true,
            "the tool's package, optionally pinned: `ruff`, `ruff==0.6.9`",
        ),
        arg(
            "state",
            ArgKind::OneOf(&["present", "absent", "latest"]),
            false,
            "default `present`",
        ),
        arg(
            "index_url",
            ArgKind::Str,
            false,
            "the package index (`--index-url`)",
        ),
        arg(
            "find_links",
            ArgKind::Str,
            false,
            "a directory (or URL) of wheels; without `index_url`, the only source (`--no-index`)",
        ),
    ],
    exactly_one_of: &[],
};

/// A package name as PEP 503 compares them: lowercase, runs of `-_.` as one `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if "-_.".contains(c) {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Splits `name[==version]`, or says why it is not one.
pub fn parse_tool(s: &str) -> Result<(String, Option<String>), &'static str> {
    let (name, pin) = match s.split_once("==") {
        Some((n, v)) => (n, Some(v)),
        None => (s, None),
    };
    let name_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !name_ok {
        return Err("a package name (letters, digits, `-_.`), optionally `==VERSION`");
    }
    if let Some(v) = pin
        && (v.is_empty()
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+!-".contains(c)))
    {
        return Err("a pinned version such as `==0.6.9` (ranges: use `pip` in a virtualenv)");
    }
    Ok((name.to_string(), pin.map(str::to_string)))
}

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    name: String,
    pin: Option<String>,
    state: &'static str,
    index_url: Option<String>,
    find_links: Option<String>,
}

impl Module for Uv {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, _: &Inputs<'_>) -> Result<Args, ArgError> {
        let raw = a.req("name")?;
        let (name, pin) = parse_tool(&raw).map_err(|why| a.invalid("name", why))?;
        let state = a
            .one_of("state", &["present", "absent", "latest"])?
            .unwrap_or("present");
        if state == "latest" && pin.is_some() {
            return Err(a.invalid("name", "a name without a version for `state: latest`"));
        }
        let one_word = |key: &'static str| -> Result<Option<String>, ArgError> {
            match a.str(key)? {
                Some(v)
                    if v.is_empty()
                        || v.starts_with('-')
                        || v.chars().any(|c| c.is_whitespace() || c.is_control()) =>
                {
                    Err(a.invalid(key, "a path or URL without spaces, not starting with `-`"))
                }
                other => Ok(other),
            }
        };
        Ok(Args {
            name,
            pin,
            state,
            index_url: one_word("index_url")?,
            find_links: one_word("find_links")?,
        })
    }

    fn script(&self, a: &Args, _facts: &Facts) -> Result<Step, ArgError> {
        let mut s = Script::new();
        s.set("N", normalize(&a.name))
            .set("NAME", a.name.as_str())
            .set_opt("PIN", a.pin.as_deref())
            .set("ST", a.state)
            .set_opt("IU", a.index_url.as_deref())
            .set_opt("FL", a.find_links.as_deref())
            .code(concat!(
                "command -v uv >/dev/null || fail \"uv is not installed on the host\"\n",
                "export N\n",
                "list=$(uv tool list 2>&1) || fail \"uv tool list failed: $list\"\n",
                // The installed version of the tool (its line is `name vX.Y`).
                "have=$(printf '%s\\n' \"$list\" | awk '{ n = tolower($1); gsub(/[-_.]+/, \"-\", n) } n == ENVIRON[\"N\"] && $2 ~ /^v/ { print substr($2, 2); exit }')\n",
                "set --\n",
                "if [ -n \"$FL\" ]; then set -- --find-links \"$FL\"; [ -n \"$IU\" ] || set -- --no-index \"$@\"; fi\n",
                "[ -n \"$IU\" ] && set -- --index-url \"$IU\" \"$@\"\n",
                "case $ST in\n",
                "  absent)\n",
                "    [ -n \"$have\" ] || finish 0\n",
                "    changed=1; [ \"$CHECK\" = 1 ] && finish 0\n",
                "    out=$(uv tool uninstall \"$NAME\" 2>&1) || fail \"uv tool uninstall $NAME failed: $out\"; finish 0;;\n",
                "  latest)\n",
                "    new=$(printf '%s\\n' \"$NAME\" | uv pip compile - -q --no-header --no-annotate \"$@\" 2>&1) || fail \"uv cannot resolve $NAME: $new\"\n",
                "    new=$(printf '%s\\n' \"$new\" | awk -F '==' '{ n = tolower($1); gsub(/[-_.]+/, \"-\", n) } n == ENVIRON[\"N\"] { print $2; exit }')\n",
                "    [ -n \"$new\" ] || fail \"uv cannot resolve $NAME\"\n",
                "    [ \"$have\" = \"$new\" ] && finish 0\n",
                "    want=$NAME==$new;;\n",
                "  *)\n",
                "    [ -n \"$have\" ] && { [ -z \"$PIN\" ] || [ \"$have\" = \"$PIN\" ]; } && finish 0\n",
                "    want=$NAME; [ -n \"$PIN\" ] && want=$NAME==$PIN;;\n",
                "esac\n",
                "changed=1; printf '%s -> %s\\n' \"${have:-none}\" \"$want\"\n",
                "[ \"$CHECK\" = 1 ] && finish 0\n",
                "out=$(uv tool install -q \"$@\" \"$want\" 2>&1) || fail \"uv tool install $want failed: $out\"\n",
                "finish 0\n",
            ));
        Ok(Step::of(s))
    }

    fn batchable(&self, _: &Args) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_pins() {
        assert_eq!(normalize("Foo__Bar.baz"), "foo-bar-baz");
        assert_eq!(
            parse_tool("ruff==0.6.9"),
            Ok(("ruff".to_string(), Some("0.6.9".to_string())))
        );
        assert_eq!(parse_tool("httpie"), Ok(("httpie".to_string(), None)));
        for bad in ["-x", "ruff>=1", "ruff==", "a b", "ruff==1 ; x", ""] {
            assert!(parse_tool(bad).is_err(), "{bad:?}");
        }
    }
}
