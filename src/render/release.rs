//! fleet's own release: the installer, the Homebrew formula and the Arch `fleet-bin` PKGBUILD
//! (with its `.SRCINFO`), rendered from a release directory's `SHA256SUMS` by the same
//! template environment and filters as the worker catalog's packages (dogfood).
//!
//! The archives are named `fleet-<version>-<os>-<arch>.tar.gz` (what `scripts/release`
//! makes); the version, the platforms and every checksum come from those names and sums, so
//! a manifest can only name an archive that was built.

use std::collections::BTreeMap;

use minijinja::Environment;
use serde::Serialize;

use crate::error::{Diagnostic, Loc};
use crate::render::catalog::arch_pkgver;

/// The file the checksums are read from, in the release directory.
pub const SUMS_FILE: &str = "SHA256SUMS";

/// The project's home, from Cargo.toml's `repository` (the one place a fork changes it).
pub const REPOSITORY: &str = env!("CARGO_PKG_REPOSITORY");

/// Every platform fleet is released for, as `(os, arch)`.
pub const PLATFORMS: &[(&str, &str)] = &[
    ("linux", "x86_64"),
    ("linux", "aarch64"),
    ("macos", "x86_64"),
    ("macos", "aarch64"),
];

/// One release archive.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Archive {
    /// `linux` or `macos`.
    pub os: String,
    /// `x86_64` or `aarch64`.
    pub arch: String,
    /// File name (`fleet-0.1.0-linux-x86_64.tar.gz`).
    pub file: String,
    /// The directory the archive unpacks to (its name without `.tar.gz`).
    pub dir: String,
    /// Download URL (base URL + file name).
    pub url: String,
    /// Lower-case hex SHA-256.
    pub sha256: String,
}

/// What the release templates see as `release`.
#[derive(Debug, Clone, Serialize)]
pub struct Release {
    /// The version (`0.1.0`, `1.2.0-rc.1`).
    pub version: String,
    /// Arch's `pkgver` (no hyphen).
    pub pkgver: String,
    /// One line about fleet.
    pub description: &'static str,
    /// SPDX license expression.
    pub license: &'static str,
    /// The licenses the expression offers a choice of (`MIT OR Apache-2.0` → both).
    pub licenses: Vec<&'static str>,
    /// The project's home page.
    pub homepage: String,
    /// Where the archives are downloaded from (no trailing slash).
    pub base_url: String,
    /// Archives by `<os>-<arch>`.
    pub archives: BTreeMap<String, Archive>,
}

/// One file the release renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest {
    /// File name in the release directory.
    pub file: &'static str,
    /// The template that renders it.
    pub template: &'static str,
    /// The platforms (`os-arch`) it needs an archive of.
    pub needs: &'static [&'static str],
}

/// The release's rendered files.
pub const MANIFESTS: &[Manifest] = &[
    Manifest {
        file: "install.sh",
        template: "packaging/release-install.sh.j2",
        needs: &[],
    },
    Manifest {
        file: "fleet.rb",
        template: "packaging/release-homebrew.rb.j2",
        needs: &[
            "linux-x86_64",
            "linux-aarch64",
            "macos-x86_64",
            "macos-aarch64",
        ],
    },
    Manifest {
        file: "PKGBUILD",
        template: "packaging/release-arch.PKGBUILD.j2",
        needs: &["linux-x86_64", "linux-aarch64"],
    },
    Manifest {
        file: ".SRCINFO",
        template: "packaging/release-arch.SRCINFO.j2",
        needs: &["linux-x86_64", "linux-aarch64"],
    },
];

/// Whether `v` is a release version: `MAJOR.MINOR.PATCH` with an optional `-pre` and `+build`
/// of ASCII letters, digits, dots and hyphens (SemVer's shape; it ends up in URLs, file
/// names and Ruby and shell strings, so nothing else may pass).
pub fn valid_version(v: &str) -> bool {
    let (core, rest) = match v.find(['-', '+']) {
        Some(i) => (&v[..i], &v[i..]),
        None => (v, ""),
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-+.".contains(&b))
        && !rest.ends_with(['-', '+', '.'])
        && !v.is_empty()
}

/// Splits `fleet-<version>-<os>-<arch>.tar.gz` into its parts.
pub fn parse_archive_name(name: &str) -> Option<(&str, &str, &str)> {
    let stem = name.strip_prefix("fleet-")?.strip_suffix(".tar.gz")?;
    PLATFORMS.iter().find_map(|(os, arch)| {
        let version = stem.strip_suffix(&format!("-{os}-{arch}"))?;
        Some((version, *os, *arch))
    })
}

/// Parses `sha256sum` output (`<hex>  <name>`, or `<hex> *<name>` for binary mode):
/// file name → checksum. `file` is how the file is named in errors.
pub fn parse_sums(text: &str, file: &str) -> Result<BTreeMap<String, String>, Diagnostic> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let loc = |col: usize| Loc {
            file: file.into(),
            line: u32::try_from(i + 1).unwrap_or(u32::MAX),
            col: u32::try_from(col).unwrap_or(u32::MAX),
        };
        if line.trim().is_empty() {
            continue;
        }
        let (hash, name) = match line.split_once(' ') {
            Some((h, rest)) => (h, rest.strip_prefix([' ', '*'])),
            None => (line, None),
        };
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Diagnostic::error(
                loc(1),
                format!("expected a SHA-256 checksum (64 hex digits), found `{hash}`"),
            )
            .with_help("the file is `sha256sum` output: `<checksum>  <file name>` per line"));
        }
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Err(Diagnostic::error(
                loc(66),
                "expected two spaces and a file name after the checksum",
            ));
        };
        if out
            .insert(name.to_string(), hash.to_ascii_lowercase())
            .is_some()
        {
            return Err(Diagnostic::error(
                loc(67),
                format!("`{name}` is listed twice"),
            ));
        }
    }
    Ok(out)
}

/// The release described by the checksums of a release directory: its one version, and an
/// archive per platform found. `base_url` is where the archives are downloaded from; `None`
/// means the GitHub release of the version in [`REPOSITORY`].
pub fn from_sums(
    sums: &BTreeMap<String, String>,
    base_url: Option<&str>,
    file: &str,
) -> Result<Release, Diagnostic> {
    let whole = |msg: String| Diagnostic::error(None, format!("{file}: {msg}"));
    let mut version: Option<&str> = None;
    let mut found = Vec::new();
    for (name, sha) in sums {
        if !name.ends_with(".tar.gz") || !name.starts_with("fleet-") {
            continue;
        }
        let Some((v, os, arch)) = parse_archive_name(name) else {
            return Err(whole(format!(
                "`{name}` is not named `fleet-<version>-<os>-<arch>.tar.gz` for a released platform (linux or macos, x86_64 or aarch64)"
            )));
        };
        if !valid_version(v) {
            return Err(whole(format!(
                "`{name}`: `{v}` is not a release version (MAJOR.MINOR.PATCH, optionally -pre and +build)"
            )));
        }
        match version {
            Some(have) if have != v => {
                return Err(whole(format!(
                    "archives of two versions, `{have}` and `{v}`: a release directory holds one version"
                )));
            }
            _ => version = Some(v),
        }
        found.push((os, arch, name.clone(), sha.clone()));
    }
    let Some(version) = version else {
        return Err(whole(
            "lists no release archive (`fleet-<version>-<os>-<arch>.tar.gz`); run scripts/release first"
                .into(),
        ));
    };
    let base_url = base_url
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("{REPOSITORY}/releases/download/v{version}"));
    if !(base_url.starts_with("https://") || base_url.starts_with("http://"))
        || base_url.contains(|c: char| c.is_whitespace() || c.is_control())
    {
        return Err(Diagnostic::error(
            None,
            format!("the base URL `{base_url}` is not an http(s) URL"),
        ));
    }
    let archives = found
        .into_iter()
        .map(|(os, arch, name, sha256)| {
            let key = format!("{os}-{arch}");
            let archive = Archive {
                os: os.into(),
                arch: arch.into(),
                url: format!("{base_url}/{name}"),
                dir: name.trim_end_matches(".tar.gz").to_string(),
                file: name,
                sha256,
            };
            (key, archive)
        })
        .collect();
    Ok(Release {
        pkgver: arch_pkgver(version),
        version: version.to_string(),
        description: env!("CARGO_PKG_DESCRIPTION"),
        license: env!("CARGO_PKG_LICENSE"),
        licenses: env!("CARGO_PKG_LICENSE").split(" OR ").collect(),
        homepage: REPOSITORY.to_string(),
        base_url,
        archives,
    })
}

/// The platforms a manifest needs that the release lacks.
pub fn missing(release: &Release, m: &Manifest) -> Vec<&'static str> {
    m.needs
        .iter()
        .copied()
        .filter(|p| !release.archives.contains_key(*p))
        .collect()
}

/// Renders the release's files: file name → contents. A manifest whose platforms are not all
/// built is an error, or (with `partial`) left out and named in the second list.
pub fn render_all(
    env: &Environment<'_>,
    release: &Release,
    partial: bool,
) -> Result<(BTreeMap<String, String>, Vec<String>), Diagnostic> {
    let mut out = BTreeMap::new();
    let mut skipped = Vec::new();
    for m in MANIFESTS {
        let lacking = missing(release, m);
        if !lacking.is_empty() {
            let why = format!(
                "`{}` needs archives for {}; {SUMS_FILE} has none for {}",
                m.file,
                m.needs.join(", "),
                lacking.join(", ")
            );
            if partial {
                skipped.push(why);
                continue;
            }
            return Err(Diagnostic::error(None, why).with_help(
                "build every platform (scripts/release), or pass --partial to render what the built ones allow",
            ));
        }
        let ctx = serde_json::json!({ "release": release });
        let text = crate::template::render_data(env, m.template, crate::template::json_value(&ctx))
            .map_err(|e| {
                Diagnostic::error(
                    Loc {
                        file: m.template.into(),
                        line: e.line().map_or(1, |l| u32::try_from(l).unwrap_or(1)),
                        col: 1,
                    },
                    format!(
                        "rendering `{}`: {}",
                        m.file,
                        e.detail().unwrap_or("template error")
                    ),
                )
            })?;
        out.insert(m.file.to_string(), text);
    }
    Ok((out, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMS: &str = "\
1111111111111111111111111111111111111111111111111111111111111111  fleet-0.3.1-linux-x86_64.tar.gz
2222222222222222222222222222222222222222222222222222222222222222  fleet-0.3.1-linux-aarch64.tar.gz
3333333333333333333333333333333333333333333333333333333333333333  fleet-0.3.1-macos-x86_64.tar.gz
4444444444444444444444444444444444444444444444444444444444444444 *fleet-0.3.1-macos-aarch64.tar.gz
5555555555555555555555555555555555555555555555555555555555555555  fleet-linux-x86_64
";

    fn env() -> Environment<'static> {
        crate::template::Library::new(&BTreeMap::new()).environment()
    }

    fn release(sums: &str) -> Result<Release, Diagnostic> {
        from_sums(
            &parse_sums(sums, "SHA256SUMS")?,
            Some("https://example.org/dl/v0.3.1/"),
            "SHA256SUMS",
        )
    }

    #[test]
    fn versions() {
        for ok in ["0.1.0", "1.2.3-rc.1", "0.3.0-beta+build.5", "10.20.30"] {
            assert!(valid_version(ok), "{ok}");
        }
        for bad in [
            "",
            "1.2",
            "1.2.3.4",
            "v1.2.3",
            "1.2.x",
            "1.2.3-",
            "1.2.3 ",
            "1.2.3-a b",
            "1.2.3-'x",
            "1..3",
        ] {
            assert!(!valid_version(bad), "{bad}");
        }
    }

    #[test]
    fn archive_names() {
        assert_eq!(
            parse_archive_name("fleet-1.2.3-rc.1-linux-aarch64.tar.gz"),
            Some(("1.2.3-rc.1", "linux", "aarch64"))
        );
        assert_eq!(
            parse_archive_name("fleet-1.2.3-windows-x86_64.tar.gz"),
            None
        );
        assert_eq!(parse_archive_name("fleet-linux-x86_64"), None);
    }

    #[test]
    fn sums_parse_and_locate_errors() {
        let s = parse_sums(SUMS, "SHA256SUMS").expect("parses");
        assert_eq!(s.len(), 5);
        assert!(s["fleet-0.3.1-macos-aarch64.tar.gz"].starts_with("4444"));
        let e = parse_sums("abc  fleet-x\n", "dist/SHA256SUMS").expect_err("short hash");
        assert_eq!(
            e.to_string().lines().next(),
            Some(
                "dist/SHA256SUMS:1:1: error: expected a SHA-256 checksum (64 hex digits), found `abc`"
            )
        );
        let line2 = format!(
            "{}\n{}\n",
            &SUMS[..SUMS.find('\n').unwrap_or(0)],
            "1".repeat(64)
        );
        let e = parse_sums(&line2, "S").expect_err("no name");
        assert!(e.to_string().starts_with("S:2:66: error:"), "{e}");
        let first = SUMS.lines().next().unwrap_or_default();
        let twice = format!("{first}\n{first}\n");
        let e = parse_sums(&twice, "S").expect_err("twice");
        assert!(e.to_string().contains("listed twice"), "{e}");
    }

    #[test]
    fn release_from_sums() {
        let r = release(SUMS).expect("release");
        assert_eq!(r.version, "0.3.1");
        assert_eq!(r.archives.len(), 4);
        let a = &r.archives["linux-aarch64"];
        assert_eq!(
            a.url,
            "https://example.org/dl/v0.3.1/fleet-0.3.1-linux-aarch64.tar.gz"
        );
        assert_eq!(a.dir, "fleet-0.3.1-linux-aarch64");
        let default =
            from_sums(&parse_sums(SUMS, "S").expect("parses"), None, "S").expect("release");
        assert_eq!(
            default.base_url,
            format!("{REPOSITORY}/releases/download/v0.3.1")
        );
    }

    #[test]
    fn bad_releases_say_why() {
        let two = SUMS.replace("0.3.1-macos-x86_64", "0.3.2-macos-x86_64");
        let e = release(&two).expect_err("two versions");
        assert!(e.to_string().contains("two versions"), "{e}");
        let bad = SUMS.replace("0.3.1-linux-x86_64.tar.gz", "0.3-linux-x86_64.tar.gz");
        let e = release(&bad).expect_err("bad version");
        assert!(
            e.to_string().contains("`0.3` is not a release version"),
            "{e}"
        );
        let none = "5555555555555555555555555555555555555555555555555555555555555555  fleet-linux-x86_64\n";
        let e = release(none).expect_err("no archive");
        assert!(e.to_string().contains("lists no release archive"), "{e}");
        let odd = SUMS.replace("linux-aarch64", "linux-riscv64");
        let e = release(&odd).expect_err("platform");
        assert!(e.to_string().contains("released platform"), "{e}");
        let e = from_sums(
            &parse_sums(SUMS, "S").expect("parses"),
            Some("ftp://x"),
            "S",
        )
        .expect_err("url");
        assert!(e.to_string().contains("not an http(s) URL"), "{e}");
    }

    #[test]
    fn a_missing_platform_is_an_error_or_skipped_with_partial() {
        let linux_only: String = SUMS
            .lines()
            .filter(|l| !l.contains("macos"))
            .map(|l| format!("{l}\n"))
            .collect();
        let r = release(&linux_only).expect("release");
        let e = render_all(&env(), &r, false).expect_err("strict");
        assert!(
            e.to_string()
                .contains("`fleet.rb` needs archives for linux-x86_64, linux-aarch64, macos-x86_64, macos-aarch64; SHA256SUMS has none for macos-x86_64, macos-aarch64"),
            "{e}"
        );
        let (files, skipped) = render_all(&env(), &r, true).expect("partial");
        assert_eq!(
            files.keys().map(String::as_str).collect::<Vec<_>>(),
            [".SRCINFO", "PKGBUILD", "install.sh"]
        );
        assert_eq!(skipped.len(), 1);
    }

    #[test]
    fn manifests_snapshot() {
        let (files, skipped) =
            render_all(&env(), &release(SUMS).expect("release"), false).expect("renders");
        assert!(skipped.is_empty());
        for (name, text) in files {
            insta::assert_snapshot!(format!("release-{}", name.trim_start_matches('.')), text);
        }
    }
}
