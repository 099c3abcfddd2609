//! Package manifests for the worker catalog: one variant per build feature, Arch `prod`
//! (release tarball) and `dev` (git) PKGBUILDs with their `.SRCINFO` for Linux, and Homebrew
//! `prod` and `dev` formulae for macOS, all from overridable templates.

use std::collections::BTreeMap;

use minijinja::Environment;
use serde::Serialize;

use crate::error::{Diagnostic, Loc};
use crate::render::catalog::{Worker, arch_pkgver, features};
use crate::template::json_value as ctx_value;

/// A package variant: one worker built with one feature.
#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    /// Package name (`llm-worker-cuda`).
    pub name: String,
    /// Feature it is built with.
    pub feature: String,
    /// The feature's human name.
    pub feature_description: String,
    /// Arch `pkgver`.
    pub pkgver: String,
    /// Linux architectures (empty: no PKGBUILD).
    pub linux_arch: Vec<String>,
    /// macOS architectures (empty: no formula).
    pub macos_arch: Vec<String>,
    /// Arch runtime dependencies.
    pub depends: Vec<String>,
    /// Arch build dependencies (cargo first).
    pub makedepends: Vec<String>,
    /// Other variants of the same worker on the same OS (they install the same binary).
    pub linux_conflicts: Vec<String>,
    /// Same, for formulae.
    pub macos_conflicts: Vec<String>,
    /// Homebrew class name of the prod formula.
    pub class_name: String,
    /// Directory the release tarball unpacks to.
    pub srcdir: String,
}

/// Homebrew's class name for a formula name (`llm-worker-cuda` → `LlmWorkerCuda`).
pub fn class_name(formula: &str) -> String {
    formula
        .split(['-', '_', '.'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// The variants of a worker.
pub fn variants(w: &Worker) -> Vec<Variant> {
    let feats = features();
    let os_archs = |os: &str| w.platforms.get(os).cloned().unwrap_or_default();
    let runs_on = |f: &str, os: &str| {
        feats
            .get(f)
            .is_some_and(|s| s.platforms.iter().any(|p| p == os))
    };
    let repo_name = w.repository.rsplit('/').next().unwrap_or(&w.id).to_string();
    w.features
        .iter()
        .map(|f| {
            let spec = &feats[f];
            let name = format!("{}-{f}", w.id);
            let others = |os: &str| -> Vec<String> {
                w.features
                    .iter()
                    .filter(|o| *o != f && runs_on(o, os))
                    .map(|o| format!("{}-{o}", w.id))
                    .collect()
            };
            let mut makedepends = vec!["cargo".to_string()];
            makedepends.extend(spec.arch_makedepends.iter().cloned());
            Variant {
                feature: f.clone(),
                feature_description: spec.description.clone(),
                pkgver: arch_pkgver(&w.version),
                linux_arch: if runs_on(f, "linux") {
                    os_archs("linux")
                } else {
                    Vec::new()
                },
                macos_arch: if runs_on(f, "macos") {
                    os_archs("macos")
                } else {
                    Vec::new()
                },
                depends: spec.arch_depends.clone(),
                makedepends,
                linux_conflicts: others("linux"),
                macos_conflicts: others("macos"),
                class_name: class_name(&name),
                srcdir: format!("{repo_name}-{}", w.version),
                name,
            }
        })
        .collect()
}

/// The templates packaging uses, by kind.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("arch-prod", "packaging/arch-prod.PKGBUILD.j2"),
    ("arch-prod-srcinfo", "packaging/arch-prod.SRCINFO.j2"),
    ("arch-dev", "packaging/arch-dev.PKGBUILD.j2"),
    ("arch-dev-srcinfo", "packaging/arch-dev.SRCINFO.j2"),
    ("homebrew-prod", "packaging/homebrew-prod.rb.j2"),
    ("homebrew-dev", "packaging/homebrew-dev.rb.j2"),
];

fn render(
    env: &Environment<'_>,
    template: &str,
    ctx: &serde_json::Value,
    w: &Worker,
) -> Result<String, Diagnostic> {
    crate::template::render_data(env, template, ctx_value(ctx)).map_err(|e| {
        let line = e.line().map_or(1, |l| u32::try_from(l).unwrap_or(1));
        Diagnostic::error(
            Loc {
                file: template.into(),
                line,
                col: 1,
            },
            format!(
                "rendering `{template}` for worker `{}` ({}): {}",
                w.id,
                w.file,
                e.detail().unwrap_or("template error")
            ),
        )
    })
}

/// One kind of file a variant gets: where it goes under `packages/` and what renders it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// `arch` or `homebrew`.
    pub platform: &'static str,
    /// `prod` (release tarball) or `dev` (git branch).
    pub build: &'static str,
    /// Whether this is the manifest itself (PKGBUILD, formula) rather than Arch's `.SRCINFO`.
    pub manifest: bool,
    /// The template that renders it.
    pub template: &'static str,
    /// Path under `packages/`; `{pkg}` is the variant's name.
    path: &'static str,
}

impl Kind {
    /// Path of this file for a variant, relative to `packages/`.
    pub fn path(&self, pkg: &str) -> String {
        self.path.replace("{pkg}", pkg)
    }

    /// Whether the variant gets this file (PKGBUILDs for Linux builds, formulae for macOS).
    pub fn applies(&self, v: &Variant) -> bool {
        match self.platform {
            "arch" => !v.linux_arch.is_empty(),
            _ => !v.macos_arch.is_empty(),
        }
    }
}

/// Every kind of file, by platform and build.
pub const KINDS: &[Kind] = &[
    Kind {
        platform: "arch",
        build: "prod",
        manifest: true,
        template: "packaging/arch-prod.PKGBUILD.j2",
        path: "arch/{pkg}/PKGBUILD",
    },
    Kind {
        platform: "arch",
        build: "prod",
        manifest: false,
        template: "packaging/arch-prod.SRCINFO.j2",
        path: "arch/{pkg}/.SRCINFO",
    },
    Kind {
        platform: "arch",
        build: "dev",
        manifest: true,
        template: "packaging/arch-dev.PKGBUILD.j2",
        path: "arch/{pkg}-git/PKGBUILD",
    },
    Kind {
        platform: "arch",
        build: "dev",
        manifest: false,
        template: "packaging/arch-dev.SRCINFO.j2",
        path: "arch/{pkg}-git/.SRCINFO",
    },
    Kind {
        platform: "homebrew",
        build: "prod",
        manifest: true,
        template: "packaging/homebrew-prod.rb.j2",
        path: "homebrew/{pkg}.rb",
    },
    Kind {
        platform: "homebrew",
        build: "dev",
        manifest: true,
        template: "packaging/homebrew-dev.rb.j2",
        path: "homebrew/{pkg}-dev.rb",
    },
];

/// Manifest platforms (`arch`, `homebrew`).
pub const PLATFORMS: &[&str] = &["arch", "homebrew"];

/// Manifest builds (`prod`, `dev`).
pub const BUILDS: &[&str] = &["prod", "dev"];

/// The manifest (not `.SRCINFO`) of a platform and build, when both are known.
pub fn manifest_kind(platform: &str, build: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.manifest && k.platform == platform && k.build == build)
}

/// Renders one file of one variant: what `fleet render` writes and HQ serves.
pub fn render_file(
    env: &Environment<'_>,
    w: &Worker,
    v: &Variant,
    kind: &Kind,
) -> Result<String, Diagnostic> {
    let ctx = serde_json::json!({ "worker": w, "pkg": v });
    render(env, kind.template, &ctx, w)
}

/// Renders every manifest of the catalog: relative path → contents.
pub fn render_all(
    env: &Environment<'_>,
    workers: &[Worker],
) -> Result<BTreeMap<String, String>, Diagnostic> {
    let mut out = BTreeMap::new();
    for w in workers {
        for v in variants(w) {
            for kind in KINDS.iter().filter(|k| k.applies(&v)) {
                out.insert(kind.path(&v.name), render_file(env, w, &v, kind)?);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names() {
        assert_eq!(class_name("llm-worker-cuda"), "LlmWorkerCuda");
        assert_eq!(class_name("sd-worker-metal-dev"), "SdWorkerMetalDev");
        assert_eq!(class_name("x2-worker"), "X2Worker");
    }
}
