//! `fleet_hq_binary`: whether HQ runs the fleet binary installed on its node. HQ reports the
//! sha256 of the executable it runs in `GET /healthz` (`binary_sha256`); this task compares it
//! with the binary at `path` and reports a change when they differ, so its `notify` restarts
//! HQ after an upgrade (the agent role installs the new binary; nothing else would restart
//! HQ, whose unit did not change).
//!
//! Check mode runs before the agent role's task has replaced the binary, so the sum HQ should
//! run is the one of the binary this run installs — chosen for the node's platform exactly as
//! the agent role's `fleet_agent` task chooses it (`agent_binary::resolve` with the same
//! `source`, `dist`, release URL and sums), not the file still on the node. A real run reads
//! the file the agent task has just placed. Both agree whenever that task succeeds, so
//! `--check` predicts the restart exactly.

use crate::facts::Facts;
use crate::modules::agent_binary::{Choice, Pick};
use crate::modules::{ArgError, ArgReader, Inputs, Judged, Mode, Module, Reported, Step, values};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct FleetHqBinary;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "fleet_hq_binary",
    summary: "Changed when the running HQ (its /healthz `binary_sha256`) runs another fleet binary than the one installed on its node: notify a restart with it.",
    free_form: None,
    args: &[
        arg(
            "url",
            ArgKind::Str,
            true,
            "HQ's /healthz URL, as the node reaches it",
        ),
        arg(
            "path",
            ArgKind::Str,
            false,
            "the fleet binary HQ's service runs (default /usr/local/bin/fleet)",
        ),
        arg(
            "source",
            ArgKind::Str,
            false,
            "what the agent role installs at `path`, chosen as `fleet_agent` chooses it (what check mode compares with): its `source` (`agent_source`)",
        ),
        arg(
            "dist",
            ArgKind::Str,
            false,
            "… its `dist` directory (`agent_dist`, default dist)",
        ),
        arg(
            "release_url",
            ArgKind::Str,
            false,
            "… its release `url` (`agent_url`)",
        ),
        arg(
            "sha256",
            ArgKind::Any,
            false,
            "… its `sha256` (`agent_sha256`: a mapping `<os>-<arch>: <sha256>` or a SHA256SUMS file)",
        ),
        arg(
            "ca",
            ArgKind::Str,
            false,
            "for an https:// `url`: the CA file on the node that HQ's certificate is checked against",
        ),
        arg(
            "timeout",
            ArgKind::Str,
            false,
            "how long HQ has to answer with its sum, e.g. `30s` (default 30s)",
        ),
    ],
    exactly_one_of: &[],
};

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    url: String,
    path: String,
    /// Where the agent task takes the binary from.
    choice: Choice,
    ca: Option<String>,
    secs: u64,
}

/// Polls `$U` until HQ reports the sum of its binary (`binary_sha256` is `null` while HQ is
/// still hashing it after a start; an HQ from before this field is running an older binary,
/// whatever it is). Not answering at all in check mode means HQ is not running: the task that
/// starts it starts the installed binary, so there is nothing to restart. Then compares with
/// what HQ should run: `$NEW` in check mode when known, else the file at `$P`.
const COMPARE: &str = concat!(
    "if [ -n \"$CA\" ]; then set -- --cacert \"$CA\"; else set --; fi\n",
    "end=$(( $(date +%s) + SECS )); run=\n",
    "while :; do\n",
    "  body=$(curl -fsS -g --proto '=http,https' --max-time 5 \"$@\" \"$U\" 2>/dev/null) || body=\n",
    "  case $body in\n",
    "    *'\"binary_sha256\":\"'*) run=${body#*\\\"binary_sha256\\\":\\\"}; run=${run%%\\\"*}; break;;\n",
    "    *'\"binary_sha256\":null'*) ;;\n",
    "    '') [ \"$CHECK\" = 1 ] && { echo \"HQ does not answer at $U: the start task starts the installed binary\"; finish 0; };;\n",
    "    *) run=unknown; break;;\n",
    "  esac\n",
    "  [ \"$(date +%s)\" -ge \"$end\" ] && { [ -z \"$body\" ] && fail \"HQ did not answer at $U within ${SECS}s\"; fail \"HQ at $U did not report the sum of its binary within ${SECS}s\"; }\n",
    "  sleep 0.25\n",
    "done\n",
    "if [ \"$CHECK\" = 1 ] && [ -n \"$NEW\" ]; then want=$NEW\n",
    "elif [ -f \"$P\" ]; then fleet_sum \"$P\"; want=$sum\n",
    "else fail \"no fleet binary at $P\"; fi\n",
    "short() { printf %.12s \"$1\"; }\n",
    "if [ \"$run\" != \"$want\" ]; then changed=1; echo \"HQ runs fleet $(short \"$run\"), $P is $(short \"$want\"): restart\"\n",
    "else echo \"HQ runs $P ($(short \"$want\"))\"; fi\n",
    "finish 0\n",
);

impl FleetHqBinary {
    /// The sum of the binary this run installs, as the agent task picks it. When nothing can
    /// be picked, the agent task fails on it first, and check mode falls back to the file on
    /// the node.
    fn intended_sha256(a: &Args, facts: &Facts) -> Option<String> {
        let pick = a
            .choice
            .pick(facts.os.as_deref(), facts.arch.as_deref())?
            .ok()?;
        let path = match pick {
            Pick::Download { sha256, .. } => return Some(sha256),
            Pick::File(p) => p,
            Pick::Controller => std::env::current_exe().ok()?,
        };
        crate::hq::binary::file_sha256(&path).ok()
    }
}

impl Module for FleetHqBinary {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, inputs: &Inputs<'_>) -> Result<Args, ArgError> {
        let url = values::url(a, "url")?;
        let path = a
            .str("path")?
            .unwrap_or_else(|| "/usr/local/bin/fleet".into());
        if !path.starts_with('/') {
            return Err(a.invalid("path", "an absolute path"));
        }
        // As `fleet_agent` reads them: paths relative to the repo.
        let root = inputs.files.repo_root();
        let choice = Choice::from_values(
            a.any("source"),
            a.any("dist"),
            a.any("release_url"),
            a.any("sha256"),
            root,
        )
        .map_err(|(key, why)| a.invalid(key, &why))?;
        let ca = a.str("ca")?.filter(|s| !s.is_empty());
        if ca.as_deref().is_some_and(|c| !c.starts_with('/')) {
            return Err(a.invalid("ca", "an absolute path on the node"));
        }
        let secs = a.duration_secs("timeout")?.unwrap_or(30);
        Ok(Args {
            url,
            path,
            choice,
            ca,
            secs,
        })
    }

    fn script(&self, a: &Args, facts: &Facts) -> Result<Step, ArgError> {
        let new = Self::intended_sha256(a, facts).unwrap_or_default();
        let mut s = Script::new();
        s.set("U", a.url.as_str())
            .set("P", a.path.as_str())
            .set("NEW", new.as_str())
            .set("CA", a.ca.as_deref().unwrap_or(""))
            .set("SECS", a.secs)
            .code(COMPARE);
        Ok(Step::of(s))
    }

    fn batchable(&self, _: &Args) -> bool {
        // It may wait for HQ to finish hashing its binary after a start.
        false
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
    use crate::modules::agent_binary::Sums;

    #[test]
    fn check_mode_compares_with_the_binary_this_run_installs() {
        let dir = tempfile::tempdir().expect("tmp");
        let bin = dir.path().join("fleet-b");
        std::fs::write(&bin, b"binary B").expect("write");
        let linux = Facts {
            os: Some("linux".into()),
            arch: Some("aarch64".into()),
            ..Facts::default()
        };
        let choice = |source: Option<&std::path::Path>, dist: &str, url: Option<&str>, sums| {
            crate::modules::agent_binary::Choice {
                source: source.map(std::path::Path::to_path_buf),
                dist: dir.path().join(dist),
                url: url.map(str::to_string),
                sums,
            }
        };
        let a = Args {
            url: "http://127.0.0.1:8765/healthz".into(),
            path: "/usr/local/bin/fleet".into(),
            choice: choice(Some(&bin), "dist", None, Sums::None),
            ca: None,
            secs: 30,
        };
        assert_eq!(
            FleetHqBinary::intended_sha256(&a, &linux),
            Some(crate::util::sha256_hex(b"binary B"))
        );
        // The platform's file in dist, as the agent task picks it.
        std::fs::create_dir_all(dir.path().join("dist")).expect("dist");
        std::fs::write(dir.path().join("dist/fleet-linux-aarch64"), b"dist B").expect("write");
        let from_dist = Args {
            choice: choice(None, "dist", None, Sums::None),
            ..a.clone()
        };
        assert_eq!(
            FleetHqBinary::intended_sha256(&from_dist, &linux),
            Some(crate::util::sha256_hex(b"dist B"))
        );
        // A release download: the sum it is checked against.
        let sum = "ab".repeat(32);
        let release = Args {
            choice: choice(
                None,
                "nodist",
                Some("https://example.com/fleet-{os}-{arch}"),
                Sums::Map(vec![("linux-aarch64".into(), sum.clone())]),
            ),
            ..a.clone()
        };
        assert_eq!(FleetHqBinary::intended_sha256(&release, &linux), Some(sum));
        // Nothing for the platform (the agent task fails on it): no prediction.
        let nothing = Args {
            choice: choice(None, "nodist", None, Sums::None),
            ..a
        };
        let other = Facts {
            os: Some("macos".into()),
            arch: Some("x86_64".into()),
            ..Facts::default()
        };
        assert_eq!(FleetHqBinary::intended_sha256(&nothing, &other), None);
    }
}
