//! The worker catalog on HQ, rendered on request: `GET /api/workers` lists the workers and
//! package variants found in the `worker.toml` files of the repo's `catalog/`, and
//! `GET /api/workers/{package}/{platform}/{build}` answers one manifest, made by the renderer
//! `fleet render` uses, from the files as they are at that moment (a version bump in a
//! `Cargo.toml` shows without restarting HQ). The ids in the URL are only ever compared with
//! the names the catalog yields; no path is built from them.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::Severity;
use crate::hq::server::AppState;
use crate::render::catalog::{self, Worker};
use crate::render::packages::{self, BUILDS, PLATFORMS, Variant};
use crate::repo::Repo;
use crate::template::Library;

/// The longest piece of a request echoed back in an error (ids may be hostile and huge).
const MAX_ECHO: usize = 64;

/// An error answer: what is wrong, which part of the request, and what exists instead.
#[derive(Debug, Serialize)]
struct WorkersError {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    known: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    diagnostics: Vec<String>,
}

fn answer(code: StatusCode, body: WorkersError) -> Response {
    (code, Json(body)).into_response()
}

fn not_found(unknown: &'static str, error: String, known: Vec<String>) -> Response {
    answer(
        StatusCode::NOT_FOUND,
        WorkersError {
            error,
            unknown: Some(unknown),
            known,
            diagnostics: Vec::new(),
        },
    )
}

fn internal(error: impl Into<String>, diagnostics: Vec<String>) -> Response {
    answer(
        StatusCode::INTERNAL_SERVER_ERROR,
        WorkersError {
            error: error.into(),
            unknown: None,
            known: Vec::new(),
            diagnostics,
        },
    )
}

/// A request's piece as shown in an error: at most `MAX_ECHO` characters.
fn echo(s: &str) -> String {
    if s.chars().count() > MAX_ECHO {
        format!("{}…", s.chars().take(MAX_ECHO).collect::<String>())
    } else {
        s.to_string()
    }
}

/// The catalog as it is on disk now, with the templates of the repo HQ loaded; or the
/// answer saying why there is none.
fn load(st: &AppState) -> Result<(Vec<Worker>, Arc<Repo>), Box<Response>> {
    let repo = st
        .repo
        .read()
        .map_err(|_| Box::new(internal("repo lock poisoned", Vec::new())))?
        .clone();
    let Some(dir) = catalog::default_dir(&st.cfg.repo_root) else {
        return Err(Box::new(answer(
            StatusCode::NOT_FOUND,
            WorkersError {
                error: format!(
                    "no worker catalog: HQ serves `{}/` of its fleet repo, as `fleet render` does, and the repo has none",
                    catalog::DEFAULT_DIR
                ),
                unknown: None,
                known: Vec::new(),
                diagnostics: Vec::new(),
            },
        )));
    };
    let (workers, diags) = catalog::load(&dir);
    if diags.has_errors() {
        // `fleet render` would refuse the whole catalog; so does HQ, saying why.
        let errors = diags
            .sorted()
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .map(ToString::to_string)
            .collect();
        return Err(Box::new(internal(
            "the worker catalog has errors; `fleet render packages` shows them too",
            errors,
        )));
    }
    Ok((workers, repo))
}

/// The URL of a variant's manifest.
fn manifest_url(pkg: &str, platform: &str, build: &str) -> String {
    format!("/api/workers/{pkg}/{platform}/{build}")
}

fn list_now(st: &AppState) -> Response {
    let (workers, _) = match load(st) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let mut out = Vec::new();
    for w in &workers {
        let Ok(serde_json::Value::Object(mut entry)) = serde_json::to_value(w) else {
            return internal(format!("cannot describe worker `{}`", w.id), Vec::new());
        };
        // Where the file is on HQ's disk is nobody's business; crate_path says it relatively.
        entry.remove("file");
        let mut variants = Vec::new();
        for v in packages::variants(w) {
            let Ok(serde_json::Value::Object(mut ve)) = serde_json::to_value(&v) else {
                return internal(format!("cannot describe package `{}`", v.name), Vec::new());
            };
            let mut manifests = serde_json::Map::new();
            for platform in PLATFORMS {
                let mut builds = serde_json::Map::new();
                for build in BUILDS {
                    if let Some(kind) = packages::manifest_kind(platform, build)
                        && kind.applies(&v)
                    {
                        builds.insert(
                            (*build).to_string(),
                            manifest_url(&v.name, platform, build).into(),
                        );
                    }
                }
                if !builds.is_empty() {
                    manifests.insert((*platform).to_string(), builds.into());
                }
            }
            ve.insert("manifests".into(), manifests.into());
            variants.push(serde_json::Value::Object(ve));
        }
        entry.insert("variants".into(), variants.into());
        out.push(serde_json::Value::Object(entry));
    }
    Json(serde_json::json!({ "workers": out })).into_response()
}

fn manifest_now(st: &AppState, id: &str, platform: &str, build: &str) -> Response {
    let (workers, repo) = match load(st) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let all: Vec<(&Worker, Variant)> = workers
        .iter()
        .flat_map(|w| packages::variants(w).into_iter().map(move |v| (w, v)))
        .collect();
    let Some((w, v)) = all.iter().find(|(_, v)| v.name == id) else {
        if let Some(w) = workers.iter().find(|w| w.id == id) {
            let names = packages::variants(w).into_iter().map(|v| v.name).collect();
            return not_found(
                "package",
                format!(
                    "`{id}` is a worker, not a package: ask for one of its packages (one per build feature)"
                ),
                names,
            );
        }
        return not_found(
            "package",
            format!("no worker package `{}` in the catalog", echo(id)),
            all.iter().map(|(_, v)| v.name.clone()).collect(),
        );
    };
    if !PLATFORMS.contains(&platform) {
        return not_found(
            "platform",
            format!(
                "unknown platform `{}`; manifests are for {}",
                echo(platform),
                PLATFORMS.join(" and ")
            ),
            PLATFORMS.iter().map(|p| (*p).to_string()).collect(),
        );
    }
    let Some(kind) = packages::manifest_kind(platform, build) else {
        return not_found(
            "build",
            format!(
                "unknown build `{}`; builds are `prod` (the release tarball) and `dev` (the git branch)",
                echo(build)
            ),
            BUILDS.iter().map(|b| (*b).to_string()).collect(),
        );
    };
    if !kind.applies(v) {
        let has: Vec<String> = PLATFORMS
            .iter()
            .filter(|p| packages::manifest_kind(p, build).is_some_and(|k| k.applies(v)))
            .map(|p| (*p).to_string())
            .collect();
        return not_found(
            "platform",
            format!(
                "`{}` has no `{platform}` manifest: its feature `{}` does not build for {}",
                v.name,
                v.feature,
                if platform == "arch" { "linux" } else { "macos" }
            ),
            has,
        );
    }
    let env = Library::new(&repo.templates).environment();
    match packages::render_file(&env, w, v, kind) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        Err(d) => internal(
            format!("rendering `{}` failed", v.name),
            vec![d.to_string()],
        ),
    }
}

/// `GET /api/workers`: every worker with its variants and the URLs of their manifests.
pub(crate) async fn list(State(st): State<Arc<AppState>>) -> Response {
    // Reading the catalog is file I/O: off the async threads.
    tokio::task::spawn_blocking(move || list_now(&st))
        .await
        .unwrap_or_else(|_| internal("listing the catalog failed", Vec::new()))
}

/// `GET /api/workers/{package}/{platform}/{build}`: one manifest, rendered now.
pub(crate) async fn manifest(
    State(st): State<Arc<AppState>>,
    UrlPath((id, platform, build)): UrlPath<(String, String, String)>,
) -> Response {
    tokio::task::spawn_blocking(move || manifest_now(&st, &id, &platform, &build))
        .await
        .unwrap_or_else(|_| internal("rendering the manifest failed", Vec::new()))
}
