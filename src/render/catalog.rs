//! The worker package catalog: every `worker.toml` below a directory, with the version of the
//! crate beside it (`Cargo.toml`, or the workspace's when it says `version.workspace = true`).
//! Adding a worker is adding a directory; nothing here names a worker.
//!
//! The source repository a worker is packaged from is looked up from the most specific place
//! to the least: `[worker] repository`, the crate's `[package] repository` (or the workspace's
//! with `repository.workspace = true`), the workspace's `[workspace.package] repository` (a
//! monorepo whose crates do not repeat it), then `repository` in `catalog.toml` at the catalog
//! root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::{Diagnostic, Diagnostics, Loc, did_you_mean};
use crate::repo::shown;

/// Where the catalog is when nobody says otherwise: `catalog/` in the fleet repo. `fleet
/// render` and `fleet serve` both look there.
pub const DEFAULT_DIR: &str = "catalog";

/// The catalog-wide settings file at the catalog root.
pub const SETTINGS_FILE: &str = "catalog.toml";

/// The repo's catalog directory, when it has one.
pub fn default_dir(repo_root: &Path) -> Option<PathBuf> {
    let dir = repo_root.join(DEFAULT_DIR);
    dir.is_dir().then_some(dir)
}

/// A build feature's platforms and Arch dependencies (`data/build_features.toml`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FeatureSpec {
    /// Operating systems it builds for.
    pub platforms: Vec<String>,
    /// Human name (`NVIDIA CUDA`).
    pub description: String,
    /// Arch runtime dependencies.
    #[serde(default)]
    pub arch_depends: Vec<String>,
    /// Arch build dependencies.
    #[serde(default)]
    pub arch_makedepends: Vec<String>,
}

/// Known build features.
pub fn features() -> &'static BTreeMap<String, FeatureSpec> {
    static F: OnceLock<BTreeMap<String, FeatureSpec>> = OnceLock::new();
    F.get_or_init(|| {
        toml::from_str(include_str!("../../data/build_features.toml")).unwrap_or_default()
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerFile {
    worker: WorkerSection,
    build: BuildSection,
    #[serde(default)]
    capabilities: toml::Table,
    platforms: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    release: ReleaseSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerSection {
    id: String,
    name: String,
    description: String,
    license: String,
    repository: Option<String>,
    homepage: Option<String>,
    binary: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildSection {
    features: Vec<String>,
    default_feature: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseSection {
    /// Release tarball URL; `{version}` is replaced.
    url: Option<String>,
    sha256: Option<String>,
    /// The version whose tarball `sha256` is the checksum of: a version bump in Cargo.toml
    /// must not leave the old checksum pinned in the new version's manifests.
    version: Option<String>,
    branch: Option<String>,
}

/// `catalog.toml`: settings for every worker of the catalog.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogSettings {
    /// Source repository of workers that name none themselves (nor their crate or workspace).
    repository: Option<String>,
}

/// A worker of the catalog, resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Worker {
    /// Package id (`llm-worker`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// One line.
    pub description: String,
    /// SPDX license.
    pub license: String,
    /// Source repository URL.
    pub repository: String,
    /// Project homepage.
    pub homepage: String,
    /// Binary name.
    pub binary: String,
    /// Cargo package name.
    pub cargo_package: String,
    /// Version from Cargo.toml.
    pub version: String,
    /// The crate's directory relative to the catalog root.
    pub crate_path: String,
    /// Build features, in order.
    pub features: Vec<String>,
    /// Default feature.
    pub default_feature: Option<String>,
    /// OS → architectures.
    pub platforms: BTreeMap<String, Vec<String>>,
    /// Capabilities as written.
    pub capabilities: toml::Table,
    /// Release tarball URL (with the version filled in).
    pub source_url: String,
    /// Its checksum when known.
    pub sha256: Option<String>,
    /// Branch the dev packages build.
    pub branch: String,
    /// worker.toml as shown in messages.
    pub file: String,
}

fn loc_of(file: &std::sync::Arc<str>, src: &str, span: Option<std::ops::Range<usize>>) -> Loc {
    let offset = span.map_or(0, |s| s.start).min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Loc {
        file: file.clone(),
        line: u32::try_from(line).unwrap_or(u32::MAX),
        col: u32::try_from(col).unwrap_or(u32::MAX),
    }
}

fn toml_error(
    file: &std::sync::Arc<str>,
    src: &str,
    e: &toml::de::Error,
    what: &str,
) -> Diagnostic {
    let msg = e.message().trim().replace('\n', " ");
    Diagnostic::error(
        loc_of(file, src, e.span()),
        format!("invalid {what}: {msg}"),
    )
}

/// What Cargo.toml says about a crate.
struct CrateInfo {
    name: String,
    version: String,
    /// The crate's own `[package] repository` (or the workspace's, inherited).
    repository: Option<String>,
    /// The workspace's `[workspace.package] repository`, inherited or not.
    workspace_repository: Option<String>,
    /// The workspace root's Cargo.toml, when the crate is in a workspace.
    workspace_file: Option<PathBuf>,
    homepage: Option<String>,
    /// The binary the crate builds, when Cargo.toml says (`[[bin]]`).
    binary: Option<String>,
}

/// The byte offset of `key` in `[section]` of a TOML file (as `key =` or `key.…`), for
/// locating messages; `None` when it is not written there plainly.
fn key_offset(src: &str, section: &str, key: &str) -> Option<usize> {
    let header = format!("[{section}]");
    let mut offset = 0;
    let mut inside = false;
    for line in src.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with('[') {
            inside = t.trim_end().starts_with(&header);
        } else if inside
            && let Some(rest) = t.strip_prefix(key)
            && rest.trim_start().starts_with(['=', '.'])
        {
            return Some(offset + (line.len() - t.len()));
        }
        offset += line.len();
    }
    None
}

/// The workspace root above (or at) `dir` inside the catalog: its path and parsed Cargo.toml.
fn find_workspace(
    dir: &Path,
    catalog_root: &Path,
) -> Result<Option<(PathBuf, toml::Table)>, Diagnostic> {
    let mut at = Some(dir);
    while let Some(d) = at {
        let path = d.join("Cargo.toml");
        if let Ok(src) = std::fs::read_to_string(&path) {
            let doc: toml::Table = toml::from_str(&src)
                .map_err(|e| toml_error(&shown(&path), &src, &e, "Cargo.toml"))?;
            if doc.get("workspace").is_some_and(toml::Value::is_table) {
                return Ok(Some((path, doc)));
            }
        }
        if d == catalog_root || !d.starts_with(catalog_root) {
            break;
        }
        at = d.parent();
    }
    Ok(None)
}

fn read_crate(dir: &Path, catalog_root: &Path) -> Result<CrateInfo, Diagnostic> {
    let path = dir.join("Cargo.toml");
    let file = shown(&path);
    let src = std::fs::read_to_string(&path).map_err(|_| {
        Diagnostic::error(Loc::file_start(&shown(&dir.join("worker.toml"))), "no `Cargo.toml` beside this worker.toml")
            .with_help("the package version comes from the crate's Cargo.toml; put worker.toml in the crate's directory")
    })?;
    let doc: toml::Table =
        toml::from_str(&src).map_err(|e| toml_error(&file, &src, &e, "Cargo.toml"))?;
    let Some(pkg) = doc.get("package").and_then(|p| p.as_table()) else {
        return Err(
            Diagnostic::error(Loc::file_start(&file), "Cargo.toml has no `[package]`").with_help(
                "worker.toml goes beside the Cargo.toml of the worker's crate, not the workspace's",
            ),
        );
    };
    let name = pkg
        .get("name")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let workspace = find_workspace(dir, catalog_root)?;
    let ws_value = |key: &str| -> Option<String> {
        workspace.as_ref().and_then(|(_, ws)| {
            ws.get("workspace")
                .and_then(|w| w.get("package"))
                .and_then(|p| p.get(key))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
    };
    let at_key = |key: &str| loc_of(&file, &src, key_offset(&src, "package", key).map(|i| i..i));
    let field = |key: &str| -> Result<Option<String>, Diagnostic> {
        match pkg.get(key) {
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(toml::Value::Table(t))
                if t.get("workspace").and_then(|w| w.as_bool()) == Some(true) =>
            {
                // Cargo itself refuses a crate that inherits what its workspace lacks.
                match (ws_value(key), &workspace) {
                    (Some(v), _) => Ok(Some(v)),
                    (None, Some((ws_path, _))) => Err(Diagnostic::error(
                        at_key(key),
                        format!("`{key}.workspace = true`, but the workspace has no `[workspace.package] {key}`"),
                    )
                    .with_help(format!("set `{key}` under `[workspace.package]` in {}, or give the crate its own `{key} = \"…\"`", shown(ws_path)))),
                    (None, None) => Err(Diagnostic::error(
                        at_key(key),
                        format!("`{key}.workspace = true`, but no workspace Cargo.toml is above this crate in the catalog"),
                    )
                    .with_help(format!("give the crate its own `{key} = \"…\"`, or catalog the whole workspace (its root holds `[workspace]`)"))),
                }
            }
            _ => Ok(None),
        }
    };
    let version = match field("version")? {
        Some(v) => v,
        None => {
            return Err(Diagnostic::error(at_key("name"), "the crate's version cannot be found")
                .with_help("set `[package] version`, or `version.workspace = true` with `[workspace.package] version` in the workspace root"));
        }
    };
    let bins: Vec<String> = doc
        .get("bin")
        .and_then(|b| b.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|b| b.get("name").and_then(|n| n.as_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let repository = field("repository")?;
    let homepage = field("homepage")?;
    let workspace_repository = ws_value("repository");
    Ok(CrateInfo {
        binary: match bins.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        },
        repository,
        workspace_repository,
        workspace_file: workspace.map(|(p, _)| p),
        homepage,
        name,
        version,
    })
}

/// Reads `catalog.toml` at the catalog root, when there is one.
fn read_settings(root: &Path) -> Result<CatalogSettings, Diagnostic> {
    let path = root.join(SETTINGS_FILE);
    let Ok(src) = std::fs::read_to_string(&path) else {
        return Ok(CatalogSettings::default());
    };
    toml::from_str(&src).map_err(|e| toml_error(&shown(&path), &src, &e, SETTINGS_FILE))
}

fn is_package_id(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Reads every worker below `root`; problems are collected, each with its location.
pub fn load(root: &Path) -> (Vec<Worker>, Diagnostics) {
    let mut diags = Diagnostics::default();
    let mut workers = Vec::new();
    let mut files = Vec::new();
    crate::repo::catalog_files::worker_files(root, &mut files);
    if files.is_empty() {
        diags.push(
            Diagnostic::error(None, format!("no `worker.toml` below `{}`", shown(root))).with_help(
                "a catalog is a tree of crates, each with a worker.toml beside its Cargo.toml",
            ),
        );
    }
    let settings = match read_settings(root) {
        Ok(s) => s,
        Err(d) => {
            diags.push(d);
            CatalogSettings::default()
        }
    };
    for path in files {
        let file = shown(&path);
        let Ok(src) = std::fs::read_to_string(&path) else {
            diags.push(Diagnostic::error(
                Loc::file_start(&file),
                "cannot read this file",
            ));
            continue;
        };
        let parsed: WorkerFile = match toml::from_str(&src) {
            Ok(p) => p,
            Err(e) => {
                diags.push(toml_error(&file, &src, &e, "worker.toml"));
                continue;
            }
        };
        let at = |needle: &str| loc_of(&file, &src, src.find(needle).map(|i| i..i));
        let w = &parsed.worker;
        let mut ok = true;
        if !is_package_id(&w.id) {
            diags.push(
                Diagnostic::error(
                    at("id"),
                    format!("worker id `{}` is not a package name", w.id),
                )
                .with_help("use lowercase letters, digits and `-`, starting with a letter"),
            );
            ok = false;
        }
        let known = features();
        for f in &parsed.build.features {
            if !known.contains_key(f) {
                let help = did_you_mean(f, known.keys().map(String::as_str)).unwrap_or_else(|| {
                    format!(
                        "known features: {}",
                        known.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                });
                diags.push(
                    Diagnostic::error(
                        at(&format!("\"{f}\"")),
                        format!("unknown build feature `{f}`"),
                    )
                    .with_help(help),
                );
                ok = false;
            }
        }
        if parsed.build.features.is_empty() {
            diags.push(Diagnostic::error(
                at("features"),
                "`build.features` is empty: a worker needs at least one feature to package",
            ));
            ok = false;
        }
        if let Some(d) = &parsed.build.default_feature
            && !parsed.build.features.contains(d)
        {
            diags.push(Diagnostic::error(
                at("default_feature"),
                format!("`default_feature = \"{d}\"` is not one of `build.features`"),
            ));
            ok = false;
        }
        for (os, archs) in &parsed.platforms {
            if !matches!(os.as_str(), "linux" | "macos" | "windows") {
                let help = did_you_mean(os, ["linux", "macos", "windows"])
                    .unwrap_or_else(|| "platforms are `linux`, `macos`, `windows`".into());
                diags.push(
                    Diagnostic::error(at(os), format!("unknown platform `{os}`")).with_help(help),
                );
                ok = false;
            }
            for a in archs {
                if !matches!(a.as_str(), "x86_64" | "aarch64") {
                    let help = if a == "arm64" {
                        "write `aarch64`".to_string()
                    } else {
                        "architectures are `x86_64` and `aarch64`".to_string()
                    };
                    diags.push(
                        Diagnostic::error(
                            at(&format!("\"{a}\"")),
                            format!("unknown architecture `{a}` for `{os}`"),
                        )
                        .with_help(help),
                    );
                    ok = false;
                }
            }
        }
        let dir = path.parent().unwrap_or(root);
        let krate = match read_crate(dir, root) {
            Ok(k) => k,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        // Most specific first; a monorepo's crates usually leave it to the workspace.
        let repository = w
            .repository
            .clone()
            .or(krate.repository.clone())
            .or(krate.workspace_repository.clone())
            .or(settings.repository.clone());
        let Some(repository) = repository else {
            let mut places = vec![
                format!("`repository` in `[worker]` of {file}"),
                format!(
                    "`repository` in `[package]` of {}",
                    shown(&dir.join("Cargo.toml"))
                ),
            ];
            if let Some(ws) = &krate.workspace_file {
                places.push(format!(
                    "`repository` in `[workspace.package]` of {}",
                    shown(ws)
                ));
            }
            places.push(format!(
                "`repository = \"https://…\"` in {} (for every worker of the catalog)",
                shown(&root.join(SETTINGS_FILE))
            ));
            diags.push(
                Diagnostic::error(
                    at("[worker]"),
                    format!("worker `{}` has no source repository", w.id),
                )
                .with_help(format!(
                    "the packages are built from it; set one of: {}",
                    places.join("; ")
                )),
            );
            continue;
        };
        if !ok {
            continue;
        }
        let repository = repository
            .trim_end_matches('/')
            .trim_end_matches(".git")
            .to_string();
        let source_url = parsed
            .release
            .url
            .clone()
            .unwrap_or_else(|| format!("{repository}/archive/refs/tags/v{{version}}.tar.gz"))
            .replace("{version}", &krate.version);
        let release_at =
            |key: &str| loc_of(&file, &src, key_offset(&src, "release", key).map(|i| i..i));
        if parsed.release.sha256.is_some() {
            // A checksum is of one tarball; pinning it in another version's manifests makes
            // every prod build fail its check (or, worse, look pinned when it is not).
            match &parsed.release.version {
                None => {
                    diags.push(
                        Diagnostic::error(
                            release_at("sha256"),
                            format!("`[release] sha256` does not say which version's tarball it is the checksum of (worker `{}`)", w.id),
                        )
                        .with_help(format!("add `version = \"{}\"` under `[release]` if it is the checksum of {source_url}; a version bump in Cargo.toml is then caught instead of shipping the old checksum", krate.version)),
                    );
                    continue;
                }
                Some(v) if *v != krate.version => {
                    diags.push(
                        Diagnostic::error(
                            release_at("version"),
                            format!("`[release] sha256` is the checksum of version {v}, but the crate is now at {} ({})", krate.version, shown(&dir.join("Cargo.toml"))),
                        )
                        .with_help(format!("set `version = \"{}\"` and `sha256` to the checksum of {source_url} once it is published, or remove both (prod manifests then say SKIP)", krate.version)),
                    );
                    continue;
                }
                Some(_) => {}
            }
        }
        workers.push(Worker {
            id: w.id.clone(),
            name: w.name.clone(),
            description: w.description.clone(),
            license: w.license.clone(),
            homepage: w
                .homepage
                .clone()
                .or(krate.homepage)
                .unwrap_or_else(|| repository.clone()),
            // What Cargo builds: the crate's one `[[bin]]`, else the package's own name.
            binary: w
                .binary
                .clone()
                .or(krate.binary)
                .unwrap_or_else(|| krate.name.clone()),
            cargo_package: krate.name,
            version: krate.version,
            crate_path: dir
                .strip_prefix(root)
                .map(|p| p.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default(),
            features: parsed.build.features.clone(),
            default_feature: parsed.build.default_feature.clone(),
            platforms: parsed.platforms.clone(),
            capabilities: parsed.capabilities.clone(),
            source_url,
            sha256: parsed.release.sha256.clone(),
            branch: parsed
                .release
                .branch
                .clone()
                .unwrap_or_else(|| "main".into()),
            repository,
            file: file.to_string(),
        });
    }
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for w in &workers {
        if let Some(prev) = seen.insert(w.id.clone(), w.file.clone()) {
            diags.push(
                Diagnostic::error(
                    Loc::file_start(&w.file.as_str().into()),
                    format!("worker id `{}` is used twice", w.id),
                )
                .with_help(format!("also in {prev}")),
            );
        }
    }
    (workers, diags)
}

/// Turns a Cargo version into a valid Arch `pkgver` (no hyphens; pre-releases sort before
/// the release: `1.2.0-rc.1` → `1.2.0rc.1`).
pub fn arch_pkgver(version: &str) -> String {
    version.replace('-', "").replace('+', ".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkgver_has_no_hyphen() {
        assert_eq!(arch_pkgver("1.2.0"), "1.2.0");
        assert_eq!(arch_pkgver("1.2.0-rc.1"), "1.2.0rc.1");
        assert_eq!(arch_pkgver("0.3.0-beta+build.5"), "0.3.0beta.build.5");
    }

    #[test]
    fn key_offsets_stay_in_their_section() {
        let src = "[package]\nname = \"a\"\nversion.workspace = true\n\n[release]\nversion = \"1\"\n  sha256 = \"x\"\n";
        assert_eq!(key_offset(src, "package", "version"), Some(21));
        assert_eq!(key_offset(src, "release", "version"), Some(57));
        assert_eq!(key_offset(src, "release", "sha256"), Some(73));
        assert_eq!(key_offset(src, "package", "sha256"), None);
        assert_eq!(key_offset(src, "package", "nam"), None);
    }

    #[test]
    fn features_table_parses() {
        assert!(features().contains_key("cuda"));
        assert_eq!(features()["metal"].platforms, vec!["macos"]);
    }
}
