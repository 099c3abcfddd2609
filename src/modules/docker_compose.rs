//! `docker_compose`: a Compose project on the host, up or down, through `docker compose`.
//! Compose labels each container with the hash of its service's configuration; the project is
//! up to date when every service of `docker compose config --hash '*'` has a running
//! container (`docker compose ps --all --format json`) with that hash and no container is left
//! from a service that is gone. Only then is nothing done, in check mode and in a real run
//! alike; otherwise `up -d --remove-orphans` brings it there. Images are not polled: `pull`
//! pulls whenever the project is brought up, and a new image is rolled out by changing its
//! tag in the compose file.

use crate::facts::Facts;
use crate::modules::{ArgError, ArgReader, Effects, Inputs, Module, Need, Step, values};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct DockerCompose;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "docker_compose",
    summary: "Bring a Docker Compose project up (only when a service's configuration or state differs) or down.",
    free_form: None,
    args: &[
        arg(
            "project_src",
            ArgKind::Str,
            true,
            "the project's directory on the host (with its `compose.yaml`)",
        ),
        arg(
            "files",
            ArgKind::StrList,
            false,
            "compose files, relative to `project_src` (default: Compose's own lookup)",
        ),
        arg(
            "project_name",
            ArgKind::Str,
            false,
            "default: Compose's (the directory's name)",
        ),
        arg(
            "state",
            ArgKind::OneOf(&["present", "absent"]),
            false,
            "default `present`",
        ),
        arg(
            "pull",
            ArgKind::Bool,
            false,
            "pull images whenever the project is brought up (`--pull always`)",
        ),
    ],
    exactly_one_of: &[],
};

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    dir: String,
    /// `docker compose` options before the command (`-f`, `-p`).
    global: Vec<String>,
    present: bool,
    pull: bool,
}

/// Compose's project name rule: lowercase letters, digits, `_` and `-`, starting with a
/// letter or digit.
fn is_project_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// `ps` lines (one JSON object each, or one array) as `SERVICE HASH STATE`.
const PS_FIELDS: &str = concat!(
    "awk '{ n = split($0, part, /\\},\\{/); for (i = 1; i <= n; i++) { r = part[i]; s = \"\"; st = \"\"; h = \"\"\n",
    "  if (match(r, /\"Service\":\"[^\"]*\"/)) s = substr(r, RSTART + 11, RLENGTH - 12)\n",
    "  if (match(r, /\"State\":\"[^\"]*\"/)) st = substr(r, RSTART + 9, RLENGTH - 10)\n",
    "  if (match(r, /com\\.docker\\.compose\\.config-hash=[0-9a-f]*/)) h = substr(r, RSTART + 31, RLENGTH - 31)\n",
    "  if (s != \"\") print s, h, st } }'",
);

impl Module for DockerCompose {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, _: &Inputs<'_>) -> Result<Args, ArgError> {
        let dir = values::path(a, "project_src")?;
        let mut global = Vec::new();
        for f in a.str_list("files")? {
            if f.is_empty() || f.starts_with('-') || f.chars().any(char::is_control) {
                return Err(ArgError::arg(
                    "files",
                    format!("module `docker_compose`: `files`: `{f}` is not a file name"),
                ));
            }
            global.extend(["-f".to_string(), f]);
        }
        if let Some(p) = a.str("project_name")? {
            if !is_project_name(&p) {
                return Err(a.invalid(
                    "project_name",
                    "a Compose project name (lowercase letters, digits, `_`, `-`)",
                ));
            }
            global.extend(["-p".to_string(), p]);
        }
        Ok(Args {
            dir,
            global,
            present: a.one_of("state", &["present", "absent"])? != Some("absent"),
            pull: a.bool("pull")?.unwrap_or(false),
        })
    }

    fn script(&self, a: &Args, _facts: &Facts) -> Result<Step, ArgError> {
        let mut s = Script::new();
        s.set("D", a.dir.as_str())
            .set("WANT", if a.present { "present" } else { "absent" })
            .set("PULL", a.pull)
            .args(a.global.iter())
            .code(concat!(
                "command -v docker >/dev/null || fail \"docker is not installed on the host\"\n",
                "if [ ! -d \"$D\" ]; then [ \"$CHECK\" = 1 ] && [ ! -e \"$D\" ] && { missing=1; changed=1; finish 0; }; fail \"$D is not a directory\"; fi\n",
                "cd -- \"$D\" || fail \"cannot enter $D\"\n",
                "ps=$(docker compose \"$@\" ps --all --format json 2>&1) || fail \"docker compose ps failed: $ps\"\n",
                "have=$(printf '%s\\n' \"$ps\" | ",
            ))
            .code(PS_FIELDS)
            .code(concat!(
                " | sort)\n",
                "if [ \"$WANT\" = absent ]; then\n",
                "  [ -n \"$have\" ] || finish 0\n",
                "  changed=1; printf '%s\\n' \"$have\" | awk '{ print \"remove \" $1 }'\n",
                "  [ \"$CHECK\" = 1 ] && finish 0\n",
                "  out=$(docker compose \"$@\" down --remove-orphans 2>&1) || fail \"docker compose down failed: $out\"\n",
                "  finish 0\n",
                "fi\n",
                "want=$(docker compose \"$@\" config --hash '*' 2>&1) || fail \"docker compose config failed: $want\"\n",
                // What is out of date: a service without a running container of its current
                // configuration, or a container of a service that is gone.
                "stale=$( { printf '%s\\n' \"$want\" | sed 's/^/W /'; printf '%s\\n' \"$have\" | sed 's/^/H /'; } | awk '\n",
                "  $1 == \"W\" && NF == 3 { w[$2] = $3; next }\n",
                "  $1 == \"H\" && NF >= 2 { if (!($2 in w)) orphan[$2] = 1; else if ($3 == w[$2] && $4 == \"running\") ok[$2] = 1 }\n",
                "  END { for (s in w) if (!(s in ok)) print \"up \" s; for (s in orphan) print \"remove \" s }' | sort)\n",
                "[ -n \"$stale\" ] || finish 0\n",
                "changed=1; printf '%s\\n' \"$stale\"\n",
                "[ \"$CHECK\" = 1 ] && finish 0\n",
                "if [ \"$PULL\" = 1 ]; then out=$(docker compose \"$@\" up -d --remove-orphans --pull always 2>&1); else out=$(docker compose \"$@\" up -d --remove-orphans 2>&1); fi || fail \"docker compose up failed: $out\"\n",
                "finish 0\n",
            ));
        Ok(Step::of(s))
    }

    fn effects(&self, a: &Args) -> Effects {
        Effects {
            creates: None,
            needs: Some(Need::Dir(a.dir.trim_end_matches('/').to_string())),
        }
    }

    fn batchable(&self, _: &Args) -> bool {
        // `up` may pull images and start many containers: an exec of its own.
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names() {
        assert!(is_project_name("app") && is_project_name("my_app-2"));
        assert!(!is_project_name("App") && !is_project_name("-x") && !is_project_name(""));
    }

    /// The awk that reads `docker compose ps --format json`, run on both of its shapes (one
    /// object per line, and the one-array form of older Compose).
    #[test]
    fn ps_fields_from_either_json_shape() {
        let run = |input: &str| {
            let mut s = Script::new();
            s.set("IN", input)
                .code("printf '%s\\n' \"$IN\" | ")
                .code(PS_FIELDS);
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(s.text())
                .output()
                .expect("sh");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let a = r#"{"Name":"app-web-1","Service":"web","State":"running","Labels":"com.docker.compose.config-hash=ab12,com.docker.compose.project=app"}"#;
        let b = r#"{"Name":"app-db-1","Service":"db","State":"exited","Labels":"com.docker.compose.config-hash=cd34"}"#;
        let want = "web ab12 running\ndb cd34 exited\n";
        assert_eq!(run(&format!("{a}\n{b}")), want);
        assert_eq!(run(&format!("[{a},{b}]")), want);
        assert_eq!(run(""), "");
    }
}
