//! Which fleet binary a node's agent runs, chosen per node from its platform (facts `os` and
//! `arch`), so one controller provisions Intel Macs, Apple-silicon Macs and Linux boxes with
//! no hand-built binary per node. The same choice is made while planning (`validate`, `plan`
//! and the check before `apply`) and when the task runs, so a node whose platform has no
//! binary is reported before anything changes.
//!
//! In order: an explicit `source`; `DIST/fleet-<os>-<arch>` (what `scripts/release` writes);
//! a release `url` (with `{os}` and `{arch}`) and its sha256 for that platform, downloaded on
//! the node; this controller's own binary when the node's platform is the controller's.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::spec::inventory::canonical_arch;

/// Where the sha256 of each platform's release binary comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sums {
    /// None given.
    None,
    /// `<os>-<arch>` → sha256, written in the task.
    Map(Vec<(String, String)>),
    /// A `SHA256SUMS` file (sha256sum's format) on the controller; the entry for a platform is
    /// the one named `fleet-<os>-<arch>` (any directory before it ignored).
    File(PathBuf),
}

/// What a node's platform resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// A file on the controller, uploaded when the node's copy differs.
    File(PathBuf),
    /// Downloaded on the node from `url` and installed only when its sha256 is `sha256`.
    Download {
        /// The URL with the node's platform filled in.
        url: String,
        /// Lowercase hex.
        sha256: String,
    },
    /// This controller's own executable (same platform as the node).
    Controller,
}

/// Why no binary was found for a node, or why the configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// Nothing is configured for this platform.
    NoBinary {
        /// `<os>/<arch>` of the node.
        platform: String,
        /// The dist file looked for.
        dist_file: PathBuf,
        /// `<os>/<arch>` of this controller.
        controller: String,
    },
    /// `url` is set but no sha256 for the platform is known.
    NoSum {
        /// `<os>-<arch>`.
        platform: String,
        /// Where the sums were looked for.
        looked_in: String,
    },
    /// The node's platform is one fleet has no release for (`linux/riscv64`).
    Unsupported {
        /// `<os>/<arch>` of the node.
        platform: String,
    },
    /// The sums file cannot be read, or a sum or URL is malformed.
    Bad(String),
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::NoBinary {
                platform,
                dist_file,
                controller,
            } => write!(
                f,
                "no fleet binary for {platform}: no `source`, no {}, no release `url`, and this controller is {controller}",
                dist_file.display()
            ),
            Missing::NoSum {
                platform,
                looked_in,
            } => write!(
                f,
                "a release `url` is set but {looked_in} has no sha256 for {platform}: fleet installs no download it cannot verify"
            ),
            Missing::Unsupported { platform } => write!(
                f,
                "fleet has no release binaries for {platform}, and no `source` is set"
            ),
            Missing::Bad(why) => f.write_str(why),
        }
    }
}

impl Missing {
    /// The same, naming the dist file relative to the repo `root` it lies under.
    pub fn relative_to(mut self, root: &Path) -> Missing {
        if let Missing::NoBinary { dist_file, .. } = &mut self
            && let Ok(rel) = dist_file.strip_prefix(root)
        {
            *dist_file = rel.to_path_buf();
        }
        self
    }

    /// What to do about it.
    pub fn help(&self) -> String {
        match self {
            Missing::NoBinary {
                platform,
                dist_file,
                ..
            } => format!(
                "put a fleet binary built for {platform} at {} (`scripts/release` builds them), set `agent_source` to one for this node, or set `agent_url` and `agent_sha256` to a release (docs/install.md)",
                dist_file.display()
            ),
            Missing::NoSum { platform, .. } => format!(
                "add the sha256 of fleet-{platform} to `agent_sha256` (a mapping `{platform}: <sha256>` or the release's SHA256SUMS file)"
            ),
            Missing::Unsupported { platform } => {
                format!("set `agent_source` for this node to a fleet binary built for {platform}")
            }
            Missing::Bad(_) => "see docs/install.md, \"Agents for every platform\"".into(),
        }
    }
}

/// Where a task says the agent binary comes from (`source`, `dist`, `url`, `sha256`), read
/// the same way by the agent task, the HQ-binary task and the plan, so all three pick the
/// same file for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// One file for every node (relative paths are the repo's).
    pub source: Option<PathBuf>,
    /// The directory of `fleet-<os>-<arch>` release binaries.
    pub dist: PathBuf,
    /// A release URL with `{os}` and `{arch}`.
    pub url: Option<String>,
    /// The sums for `url`.
    pub sums: Sums,
}

impl Choice {
    /// From a task's argument values; blank strings are unset. `Err` names the argument.
    pub fn from_values(
        source: Option<&serde_json::Value>,
        dist: Option<&serde_json::Value>,
        url: Option<&serde_json::Value>,
        sha256: Option<&serde_json::Value>,
        root: &Path,
    ) -> Result<Choice, (&'static str, String)> {
        let text = |v: Option<&serde_json::Value>| {
            v.and_then(|v| v.as_str())
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Ok(Choice {
            source: text(source).map(|s| root.join(s)),
            dist: root.join(text(dist).unwrap_or_else(|| "dist".into())),
            url: text(url),
            sums: Sums::from_arg(sha256, root).map_err(|why| ("sha256", why))?,
        })
    }

    /// The binary for a node whose facts say `os` and `arch`: `None` when that needs the
    /// node's platform and it is not known yet.
    pub fn pick(&self, os: Option<&str>, arch: Option<&str>) -> Option<Result<Pick, Missing>> {
        // An explicit binary is for whatever the node is, even a platform fleet has no name for.
        if let Some(s) = &self.source {
            return Some(from_source(s));
        }
        let (os, arch) = (os.filter(|p| known(p))?, arch.filter(|p| known(p))?);
        let Some(node) = platform(Some(os), Some(arch)) else {
            return Some(Err(Missing::Unsupported {
                platform: format!("{os}/{arch}"),
            }));
        };
        Some(resolve(
            node,
            None,
            &self.dist,
            self.url.as_deref(),
            &self.sums,
        ))
    }
}

/// Whether a platform part is known (`?` stands for unknown in plans).
fn known(part: &str) -> bool {
    !part.is_empty() && part != "?"
}

/// A node's platform as release files name it (`macos`, `aarch64`), when both are known.
pub fn platform(os: Option<&str>, arch: Option<&str>) -> Option<(&'static str, &'static str)> {
    let os = match os? {
        "linux" => "linux",
        "macos" | "darwin" => "macos",
        _ => return None,
    };
    Some((os, canonical_arch(arch?)?))
}

/// The controller's own platform.
pub fn controller() -> (&'static str, &'static str) {
    (
        std::env::consts::OS,
        canonical_arch(std::env::consts::ARCH).unwrap_or(std::env::consts::ARCH),
    )
}

/// The binary for a node on `(os, arch)` (canonical names, see [`platform`]).
pub fn resolve(
    node: (&str, &str),
    source: Option<&Path>,
    dist: &Path,
    url: Option<&str>,
    sums: &Sums,
) -> Result<Pick, Missing> {
    let (os, arch) = node;
    if let Some(s) = source {
        return from_source(s);
    }
    let dist_file = dist.join(format!("fleet-{os}-{arch}"));
    if dist_file.is_file() {
        return Ok(Pick::File(dist_file));
    }
    if let Some(url) = url {
        let url = url.replace("{os}", os).replace("{arch}", arch);
        if url.contains(['{', '}']) {
            return Err(Missing::Bad(format!(
                "agent release url `{url}`: only `{{os}}` and `{{arch}}` are filled in"
            )));
        }
        crate::modules::values::check_url(&url)
            .map_err(|why| Missing::Bad(format!("agent release url `{url}`: expected {why}")))?;
        let key = format!("{os}-{arch}");
        let sha256 = match sums {
            Sums::None => None,
            Sums::Map(m) => m
                .iter()
                .find(|(k, _)| platform_key(k).as_deref() == Some(key.as_str()))
                .map(|(_, v)| v.clone()),
            Sums::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Missing::Bad(format!("cannot read the sums file {}: {e}", path.display()))
                })?;
                sum_in_file(&text, &key).map_err(|why| {
                    Missing::Bad(format!("the sums file {}: {why}", path.display()))
                })?
            }
        };
        let looked_in = match sums {
            Sums::File(p) => p.display().to_string(),
            _ => "`sha256`".to_string(),
        };
        let sha256 = sha256.ok_or_else(|| Missing::NoSum {
            platform: key.clone(),
            looked_in: looked_in.clone(),
        })?;
        let sha256 = sha256.trim().to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Missing::Bad(format!(
                "the sha256 for {key} in {looked_in} is not 64 hex digits"
            )));
        }
        return Ok(Pick::Download { url, sha256 });
    }
    if (os, arch) == controller() {
        return Ok(Pick::Controller);
    }
    let (cos, carch) = controller();
    Err(Missing::NoBinary {
        platform: format!("{os}/{arch}"),
        dist_file,
        controller: format!("{cos}/{carch}"),
    })
}

/// `macos-arm64` → `macos-aarch64`; keys that name no platform give `None`.
fn platform_key(k: &str) -> Option<String> {
    let k = k.strip_prefix("fleet-").unwrap_or(k);
    let (os, arch) = k.split_once('-')?;
    let (os, arch) = platform(Some(os), Some(arch))?;
    Some(format!("{os}-{arch}"))
}

/// The sum of the release binary for platform `key` (`macos-aarch64`) in a sums file: GNU
/// `sha256sum` lines (`<hex>  <name>`, `<hex> *<name>`) or BSD/macOS `shasum --tag` lines
/// (`SHA256 (<name>) = <hex>`), the name `fleet-<os>-<arch>` in any of its spellings
/// (`fleet-darwin-arm64`), any directory before it ignored. Two different sums for the same
/// platform are an error, not a guess.
fn sum_in_file(text: &str, key: &str) -> Result<Option<String>, String> {
    let mut found: Option<String> = None;
    for l in text.lines() {
        let l = l.trim().trim_start_matches('\u{feff}');
        let parsed = if let Some(rest) = l.strip_prefix("SHA256 (") {
            rest.split_once(") = ")
                .map(|(name, sum)| (sum.trim(), name))
        } else {
            l.split_once(char::is_whitespace).map(|(sum, file)| {
                (
                    sum.trim_start_matches('\\'),
                    file.trim_start().trim_start_matches('*'),
                )
            })
        };
        let Some((sum, file)) = parsed else { continue };
        let base = file.rsplit('/').next().unwrap_or(file);
        if platform_key(base).as_deref() != Some(key) {
            continue;
        }
        let sum = sum.to_ascii_lowercase();
        match &found {
            Some(other) if *other != sum => {
                return Err(format!("two different sums for fleet-{key}"));
            }
            _ => found = Some(sum),
        }
    }
    Ok(found)
}

/// An explicit binary: it must be a file, found before anything runs rather than when the
/// task comes.
fn from_source(source: &Path) -> Result<Pick, Missing> {
    if source.is_file() {
        Ok(Pick::File(source.to_path_buf()))
    } else {
        Err(Missing::Bad(format!(
            "the agent's `source` {} is not a file on this controller",
            source.display()
        )))
    }
}

impl Sums {
    /// From a task's `sha256` argument: empty, a mapping, or a sums file relative to `root`.
    pub fn from_arg(value: Option<&serde_json::Value>, root: &Path) -> Result<Sums, String> {
        use serde_json::Value as J;
        match value {
            None | Some(J::Null) => Ok(Sums::None),
            Some(J::String(s)) if s.trim().is_empty() => Ok(Sums::None),
            Some(J::String(s))
                if s.trim().len() == 64 && s.trim().bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Err("a mapping `<os>-<arch>: <sha256>` or the path of the release's SHA256SUMS file (one sum cannot be right for every platform)".into())
            }
            Some(J::String(s)) => Ok(Sums::File(root.join(s.trim()))),
            Some(J::Object(m)) => m
                .iter()
                .map(|(k, v)| match v.as_str() {
                    Some(v) => Ok((k.clone(), v.to_string())),
                    None => Err(format!("a sha256 (text) for `{k}`")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Sums::Map),
            Some(_) => Err("a mapping `<os>-<arch>: <sha256>` or the path of a SHA256SUMS file".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

    fn other() -> (&'static str, &'static str) {
        if controller() == ("macos", "aarch64") {
            ("linux", "x86_64")
        } else {
            ("macos", "aarch64")
        }
    }

    #[test]
    fn platforms_are_named_as_release_files_name_them() {
        assert_eq!(
            platform(Some("darwin"), Some("arm64")),
            Some(("macos", "aarch64"))
        );
        assert_eq!(
            platform(Some("linux"), Some("amd64")),
            Some(("linux", "x86_64"))
        );
        assert_eq!(platform(Some("windows"), Some("x86_64")), None);
        assert_eq!(platform(Some("linux"), Some("riscv64")), None);
        assert_eq!(platform(None, Some("x86_64")), None);
    }

    #[test]
    fn source_then_dist_then_url_then_the_controller() {
        let d = tempfile::tempdir().expect("tmp");
        let (os, arch) = other();
        let none = Sums::None;
        // Nothing for another platform: an error naming the dist file looked for.
        let e = resolve((os, arch), None, d.path(), None, &none).expect_err("missing");
        assert!(e.to_string().contains(&format!("fleet-{os}-{arch}")), "{e}");
        assert!(e.help().contains("scripts/release"));
        // The controller's own platform falls back to its own binary.
        assert_eq!(
            resolve(controller(), None, d.path(), None, &none),
            Ok(Pick::Controller)
        );
        // A release URL with its sum.
        let sums = Sums::Map(vec![(format!("{os}-{arch}"), B.into())]);
        let url = "https://example.com/v1/fleet-{os}-{arch}";
        assert_eq!(
            resolve((os, arch), None, d.path(), Some(url), &sums),
            Ok(Pick::Download {
                url: format!("https://example.com/v1/fleet-{os}-{arch}"),
                sha256: B.to_ascii_lowercase()
            })
        );
        // A dist file wins over the URL.
        let f = d.path().join(format!("fleet-{os}-{arch}"));
        std::fs::write(&f, b"bin").expect("write");
        assert_eq!(
            resolve((os, arch), None, d.path(), Some(url), &sums),
            Ok(Pick::File(f.clone()))
        );
        // An explicit source wins over everything; it must exist.
        let s = &d.path().join("built");
        assert!(matches!(
            resolve((os, arch), Some(s), d.path(), Some(url), &sums),
            Err(Missing::Bad(_))
        ));
        std::fs::write(s, b"bin").expect("write");
        assert_eq!(
            resolve((os, arch), Some(s), d.path(), Some(url), &sums),
            Ok(Pick::File(s.to_path_buf()))
        );
    }

    #[test]
    fn a_url_without_a_valid_sum_for_the_platform_is_refused() {
        let d = tempfile::tempdir().expect("tmp");
        let url = Some("https://example.com/fleet-{os}-{arch}");
        let other_only = Sums::Map(vec![("linux-riscv".into(), A.into())]);
        let e = resolve(("macos", "x86_64"), None, d.path(), url, &other_only).expect_err("no sum");
        assert!(matches!(e, Missing::NoSum { .. }), "{e}");
        let short = Sums::Map(vec![("macos-x86_64".into(), "abc".into())]);
        let e = resolve(("macos", "x86_64"), None, d.path(), url, &short).expect_err("bad sum");
        assert!(e.to_string().contains("64 hex digits"), "{e}");
        let bad_url = Some("https://exa mple.com/fleet-{os}");
        let sums = Sums::Map(vec![("macos-arm64".into(), A.into())]);
        let e = resolve(("macos", "aarch64"), None, d.path(), bad_url, &sums).expect_err("url");
        assert!(e.to_string().contains("agent release url"), "{e}");
        assert!(resolve(("macos", "aarch64"), None, d.path(), url, &sums).is_ok());
    }

    #[test]
    fn sums_come_from_a_sha256sums_file_by_file_name() {
        let d = tempfile::tempdir().expect("tmp");
        let file = d.path().join("SHA256SUMS");
        std::fs::write(
            &file,
            format!(
                "\u{feff}{A}  fleet-0.2.0-macos-aarch64.tar.gz\n{B} *dist/fleet-macos-aarch64\r\n{A}  fleet-linux-x86_64\nSHA256 (fleet-darwin-x86_64) = {A}\n"
            ),
        )
        .expect("write");
        let url = Some("https://example.com/fleet-{os}-{arch}");
        let sums = Sums::File(file.clone());
        match resolve(("macos", "aarch64"), None, d.path(), url, &sums) {
            Ok(Pick::Download { sha256, .. }) => assert_eq!(sha256, B.to_ascii_lowercase()),
            other => panic!("{other:?}"),
        }
        match resolve(("macos", "x86_64"), None, d.path(), url, &sums) {
            Ok(Pick::Download { sha256, .. }) => assert_eq!(sha256, A),
            other => panic!("BSD line: {other:?}"),
        }
        let e = resolve(("linux", "aarch64"), None, d.path(), url, &sums).expect_err("absent");
        assert!(e.to_string().contains("SHA256SUMS"), "{e}");
        std::fs::write(
            &file,
            format!("{A}  fleet-linux-x86_64\n{B}  fleet-linux-amd64\n"),
        )
        .expect("write");
        let e = resolve(("linux", "x86_64"), None, d.path(), url, &sums).expect_err("two");
        assert!(e.to_string().contains("two different sums"), "{e}");
        assert!(matches!(
            Sums::from_arg(Some(&serde_json::json!(A)), d.path()),
            Err(m) if m.contains("one sum cannot be right")
        ));
        let gone = Sums::File(d.path().join("nope"));
        let e = resolve(("macos", "x86_64"), None, d.path(), url, &gone).expect_err("gone");
        assert!(e.to_string().contains("cannot read the sums file"), "{e}");
    }
}
