//! `pip`: Python packages in a virtualenv (created when missing) or a Python's own
//! site-packages. What is installed is read by the host's Python itself — its installed
//! distributions against each requirement's version specifier, with the `packaging` that pip
//! carries — and for `latest` by `pip install --dry-run --upgrade --report`, which resolves
//! without installing: check mode asks the same questions a real run does.

use crate::facts::Facts;
use crate::modules::{ArgError, ArgReader, Inputs, Module, Step, values};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct Pip;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "pip",
    summary: "Install, upgrade or remove Python packages, in a virtualenv (created when missing) or a Python's site-packages.",
    free_form: None,
    args: &[
        arg(
            "name",
            ArgKind::StrList,
            true,
            "requirements: `rich`, `requests==2.32.3`, `httpx>=0.27,<1`",
        ),
        arg(
            "state",
            ArgKind::OneOf(&["present", "absent", "latest"]),
            false,
            "default `present`",
        ),
        arg(
            "virtualenv",
            ArgKind::Str,
            false,
            "the virtualenv's directory (made with `python3 -m venv` when missing)",
        ),
        arg(
            "python",
            ArgKind::Str,
            false,
            "the Python that makes the virtualenv, or whose packages these are (default `python3`)",
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

/// Why `r` is not a requirement pip takes by name (`name[extra]` and version specifiers): a
/// path, a URL, an option or anything with spaces is refused.
pub fn requirement_problem(r: &str) -> Option<&'static str> {
    let name_end = r
        .find(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
        .unwrap_or(r.len());
    if name_end == 0 || r.starts_with(['-', '.', '_']) {
        return Some("a requirement starts with a package name");
    }
    let rest = &r[name_end..];
    if !rest
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "[],.<>=!~*+_-".contains(c))
    {
        return Some(
            "a package name with extras and version specifiers only (no spaces, paths or URLs)",
        );
    }
    None
}

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    reqs: Vec<String>,
    state: &'static str,
    venv: Option<String>,
    python: String,
    index_url: Option<String>,
    find_links: Option<String>,
}

/// Prints the requirements that need an action (`absent`: the names installed), reading
/// `STATE` then the requirements from argv and the index options (`IU`, `FL`) from the
/// environment.
const CHECKER: &str = concat!(
    "FLEET_PY='import json, os, subprocess, sys\n",
    "from importlib.metadata import version, PackageNotFoundError\n",
    "from pip._vendor.packaging.requirements import Requirement\n",
    "from pip._vendor.packaging.utils import canonicalize_name\n",
    "state, reqs = sys.argv[1], sys.argv[2:]\n",
    "def have(n):\n",
    "    try:\n",
    "        return version(n)\n",
    "    except PackageNotFoundError:\n",
    "        return None\n",
    "todo = []\n",
    "for r in reqs:\n",
    "    q = Requirement(r)\n",
    "    v = have(q.name)\n",
    "    if state == \"absent\":\n",
    "        if v is not None:\n",
    "            todo.append(q.name)\n",
    "    elif v is None or (q.specifier and not q.specifier.contains(v, prereleases=True)):\n",
    "        todo.append(r)\n",
    "if state == \"latest\":\n",
    "    iu, fl = os.environ.get(\"IU\", \"\"), os.environ.get(\"FL\", \"\")\n",
    "    idx = ([\"--index-url\", iu] if iu else []) + ([\"--find-links\", fl] + ([] if iu else [\"--no-index\"]) if fl else [])\n",
    "    out = subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"--dry-run\", \"--upgrade\", \"--no-deps\", \"--quiet\", \"--report\", \"-\"] + idx + reqs, capture_output=True, text=True)\n",
    "    if out.returncode != 0:\n",
    "        sys.stderr.write(out.stderr)\n",
    "        sys.exit(3)\n",
    "    newer = {canonicalize_name(i[\"metadata\"][\"name\"]) for i in json.loads(out.stdout or \"{}\").get(\"install\", [])}\n",
    "    todo = [r for r in reqs if r in todo or canonicalize_name(Requirement(r).name) in newer]\n",
    "print(\"\\n\".join(todo))\n",
    "'\n",
);

impl Module for Pip {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, _: &Inputs<'_>) -> Result<Args, ArgError> {
        let reqs = a.str_list("name")?;
        if reqs.is_empty() {
            return Err(a.invalid("name", "at least one requirement"));
        }
        for r in &reqs {
            if let Some(why) = requirement_problem(r) {
                let shown = if a.is_secret("name") {
                    crate::secret::MASK
                } else {
                    r
                };
                return Err(ArgError::arg(
                    "name",
                    format!("module `pip`: `name`: `{shown}` is not a requirement ({why})"),
                ));
            }
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
            reqs,
            state: a
                .one_of("state", &["present", "absent", "latest"])?
                .unwrap_or("present"),
            venv: values::opt_path(a, "virtualenv")?,
            python: one_word("python")?.unwrap_or_else(|| "python3".to_string()),
            index_url: one_word("index_url")?,
            find_links: one_word("find_links")?,
        })
    }

    fn script(&self, a: &Args, _facts: &Facts) -> Result<Step, ArgError> {
        let mut s = Script::new();
        s.set_opt("V", a.venv.as_deref())
            .set("ST", a.state)
            .set("PYI", a.python.as_str())
            .set_opt("IU", a.index_url.as_deref())
            .set_opt("FL", a.find_links.as_deref())
            .args(a.reqs.iter())
            .code(CHECKER)
            .code(concat!(
                "command -v \"$PYI\" >/dev/null || fail \"$PYI is not installed on the host\"\n",
                // The checker reads the index options for `latest`.
                "export IU FL\n",
                "PY=$PYI\n",
                "if [ -n \"$V\" ]; then PY=$V/bin/python\n",
                "  if [ ! -x \"$PY\" ]; then\n",
                "    [ \"$ST\" = absent ] && finish 0\n",
                "    changed=1; printf 'create %s\\n' \"$V\"; printf '%s\\n' \"$@\"\n",
                "    [ \"$CHECK\" = 1 ] && finish 0\n",
                "    out=$(\"$PYI\" -m venv -- \"$V\" 2>&1) || fail \"cannot create the virtualenv $V: $out\"\n",
                "  fi\n",
                "fi\n",
                "todo=$(\"$PY\" -c \"$FLEET_PY\" \"$ST\" \"$@\" 2>&1) || fail \"cannot read what $PY has installed: $todo\"\n",
                "[ -n \"$todo\" ] || finish 0\n",
                "[ \"$changed\" = 1 ] || { changed=1; printf '%s\\n' \"$todo\"; }\n",
                "[ \"$CHECK\" = 1 ] && finish 0\n",
                // Index options for installs (`uninstall` takes none).
                "if [ \"$ST\" != absent ]; then\n",
                "  if [ -n \"$FL\" ]; then set -- --find-links \"$FL\" \"$@\"; [ -n \"$IU\" ] || set -- --no-index \"$@\"; fi\n",
                "  [ -n \"$IU\" ] && set -- --index-url \"$IU\" \"$@\"\n",
                "fi\n",
                "case $ST in\n",
                "  absent) out=$(\"$PY\" -m pip uninstall -y -q \"$@\" 2>&1) ;;\n",
                "  latest) out=$(\"$PY\" -m pip install -q --upgrade \"$@\" 2>&1) ;;\n",
                "  *) out=$(\"$PY\" -m pip install -q \"$@\" 2>&1) ;;\n",
                "esac || fail \"pip failed: $out\"\n",
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
    fn requirements_by_name_only() {
        for ok in [
            "rich",
            "requests==2.32.3",
            "httpx>=0.27,<1",
            "uvicorn[standard]~=0.30",
            "a_b.c-d!=1.*",
        ] {
            assert_eq!(requirement_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "-r",
            "--index-url=x",
            "./pkg",
            "/srv/x.whl",
            "https://x/y.whl",
            "a b",
            "x; rm",
            "pkg @ file:///x",
        ] {
            assert!(requirement_problem(bad).is_some(), "{bad:?}");
        }
    }
}
