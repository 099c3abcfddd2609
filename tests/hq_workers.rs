//! The worker catalog on a real `fleet serve`: `GET /api/workers` and the manifests rendered
//! on request, compared byte for byte with what `fleet render` writes, version bumps seen
//! without a restart, and 404s (with what exists) for unknown and hostile ids.

mod support;

use std::path::{Path, PathBuf};

use support::{
    Child, build_repo, copy_tree, crate_root, fleet, free_port, parse_case, spawn_fleet, wait_for,
};

struct Serve {
    repo: tempfile::TempDir,
    base: String,
    _child: Child,
}

impl Serve {
    /// `fleet serve` on loopback in a scratch repo, with the example repo's `catalog/` or none.
    fn start(with_catalog: bool) -> Serve {
        let port = free_port();
        let case = parse_case(
            "workers",
            &format!(
                "--- inventory/fleet.yaml\nfleet: {{ name: t, hq: hq1, hq_url: \"http://127.0.0.1:{port}\" }}\nvars: {{ app_dir: /opt/app }}\nnodes:\n  hq1: {{ host: 127.0.0.1, role: hq }}\n"
            ),
        );
        let repo = build_repo(&crate_root().join("tests/corpus/base"), &case);
        if with_catalog {
            copy_tree(&crate_root().join("catalog"), &repo.path().join("catalog"));
        }
        let listen = format!("127.0.0.1:{port}");
        let db = repo.path().join("state/hq.sqlite").display().to_string();
        let child = spawn_fleet(
            repo.path(),
            &["serve", "--listen", &listen, "--db", &db],
            &repo.path().join("serve.log"),
        );
        let base = format!("http://{listen}");
        wait_for(20, "fleet serve to answer /healthz", || {
            get(&base, "/healthz", None).ok().filter(|r| r.code == 200)
        });
        Serve {
            repo,
            base,
            _child: child,
        }
    }

    fn get(&self, path: &str) -> Reply {
        // Every read but /healthz needs a token: the client token `fleet serve` keeps.
        let token = support::hq_token(self.repo.path());
        get(&self.base, path, Some(&token)).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    fn json(&self, path: &str, code: u16) -> serde_json::Value {
        let r = self.get(path);
        assert_eq!(r.code, code, "GET {path}: {}", r.text());
        assert!(
            r.content_type.starts_with("application/json"),
            "{}",
            r.content_type
        );
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `fleet render packages` in the repo, into a fresh directory.
    fn render(&self) -> tempfile::TempDir {
        let out = tempfile::tempdir().expect("tmp");
        fleet(self.repo.path())
            .args(["render", "packages", "--out"])
            .arg(out.path())
            .assert()
            .success();
        out
    }

    fn catalog(&self) -> PathBuf {
        self.repo.path().join("catalog")
    }
}

struct Reply {
    code: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One raw HTTP/1.1 GET (the path is sent exactly as given: no normalisation of `..`);
/// status, content type and the body's bytes.
fn get(base: &str, path: &str, token: Option<&str>) -> Result<Reply, String> {
    use std::io::{Read, Write};
    let host = base.strip_prefix("http://").ok_or("http only")?;
    let mut s = std::net::TcpStream::connect(host).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {host}\r\n{auth}connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = raw[split + 4..].to_vec();
    assert!(
        !head.contains("transfer-encoding: chunked"),
        "expected a sized body: {head}"
    );
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    Ok(Reply {
        code,
        content_type,
        body,
    })
}

/// Where `fleet render` writes a variant's manifest, under the output directory.
fn rendered_path(out: &Path, pkg: &str, platform: &str, build: &str) -> PathBuf {
    out.join("packages").join(match (platform, build) {
        ("arch", "prod") => format!("arch/{pkg}/PKGBUILD"),
        ("arch", "dev") => format!("arch/{pkg}-git/PKGBUILD"),
        ("homebrew", "prod") => format!("homebrew/{pkg}.rb"),
        ("homebrew", "dev") => format!("homebrew/{pkg}-dev.rb"),
        other => panic!("unexpected manifest {other:?}"),
    })
}

/// Every manifest the listing offers: (package, platform, build, url).
fn manifests(list: &serde_json::Value) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for w in list["workers"].as_array().expect("workers") {
        for v in w["variants"].as_array().expect("variants") {
            let pkg = v["name"].as_str().expect("name");
            for (platform, builds) in v["manifests"].as_object().expect("manifests") {
                for (build, url) in builds.as_object().expect("builds") {
                    out.push((
                        pkg.to_string(),
                        platform.clone(),
                        build.clone(),
                        url.as_str().expect("url").to_string(),
                    ));
                }
            }
        }
    }
    out
}

fn assert_same_as_render(hq: &Serve) -> usize {
    let out = hq.render();
    let list = hq.json("/api/workers", 200);
    let all = manifests(&list);
    for (pkg, platform, build, url) in &all {
        assert_eq!(url, &format!("/api/workers/{pkg}/{platform}/{build}"));
        let r = hq.get(url);
        assert_eq!(r.code, 200, "{url}: {}", r.text());
        assert_eq!(r.content_type, "text/plain; charset=utf-8", "{url}");
        let file = rendered_path(out.path(), pkg, platform, build);
        let want = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(r.body == want, "{url} differs from {}", file.display());
    }
    all.len()
}

#[test]
fn manifests_on_hq_are_the_rendered_files_and_follow_cargo_toml_without_a_restart() {
    let hq = Serve::start(true);
    let list = hq.json("/api/workers", 200);
    let ids: Vec<&str> = list["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["llm-worker", "sd-worker"]);
    let sd = &list["workers"][1];
    assert_eq!(sd["version"], "0.1.0");
    assert_eq!(sd["crate_path"], "bin/31_sd_worker_rbee");
    assert!(sd.get("file").is_none(), "no server paths: {sd}");
    let names: Vec<&str> = sd["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .map(|v| v["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["sd-worker-cpu", "sd-worker-cuda", "sd-worker-metal"]
    );
    assert_eq!(
        sd["variants"][2]["manifests"],
        serde_json::json!({ "homebrew": { "prod": "/api/workers/sd-worker-metal/homebrew/prod", "dev": "/api/workers/sd-worker-metal/homebrew/dev" } })
    );
    // 5 Linux variants × prod/dev PKGBUILDs + 4 macOS variants × prod/dev formulae.
    assert_eq!(assert_same_as_render(&hq), 18);

    // A version bump in Cargo.toml: the next request has it, HQ still running.
    let cargo = hq.catalog().join("bin/31_sd_worker_rbee/Cargo.toml");
    let text = std::fs::read_to_string(&cargo).expect("read");
    std::fs::write(
        &cargo,
        text.replace("version = \"0.1.0\"", "version = \"0.2.0-rc.1\""),
    )
    .expect("bump");
    let pkgbuild = hq.get("/api/workers/sd-worker-cuda/arch/prod").text();
    assert!(pkgbuild.contains("\npkgver=0.2.0rc.1\n"), "{pkgbuild}");
    assert!(
        pkgbuild.contains("/archive/refs/tags/v0.2.0-rc.1.tar.gz"),
        "{pkgbuild}"
    );
    assert_eq!(
        hq.json("/api/workers", 200)["workers"][1]["version"],
        "0.2.0-rc.1"
    );
    assert_eq!(assert_same_as_render(&hq), 18);

    // A worker added while HQ runs is listed and served: discovery is per request.
    let tts = hq.catalog().join("bin/32_tts_worker");
    std::fs::create_dir_all(&tts).expect("mkdir");
    std::fs::write(
        tts.join("Cargo.toml"),
        "[package]\nname = \"tts-worker\"\nversion = \"1.0.0\"\n",
    )
    .expect("write");
    std::fs::write(
        tts.join("worker.toml"),
        "[worker]\nid = \"tts-worker\"\nname = \"TTS\"\ndescription = \"Speech\"\nlicense = \"MIT\"\n\n[build]\nfeatures = [\"cpu\"]\n\n[platforms]\nlinux = [\"x86_64\"]\n",
    )
    .expect("write");
    assert_eq!(assert_same_as_render(&hq), 20);
}

#[test]
fn unknown_and_hostile_ids_are_404s_that_say_what_exists() {
    let hq = Serve::start(true);
    let packages = serde_json::json!([
        "llm-worker-cpu",
        "llm-worker-cuda",
        "llm-worker-metal",
        "llm-worker-rocm",
        "sd-worker-cpu",
        "sd-worker-cuda",
        "sd-worker-metal"
    ]);
    let e = hq.json("/api/workers/tts-worker-cpu/arch/prod", 404);
    assert_eq!(
        e["error"],
        "no worker package `tts-worker-cpu` in the catalog"
    );
    assert_eq!(e["unknown"], "package");
    assert_eq!(e["known"], packages);
    let e = hq.json("/api/workers/llm-worker/arch/prod", 404);
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains("`llm-worker` is a worker, not a package")),
        "{e}"
    );
    assert_eq!(
        e["known"],
        serde_json::json!([
            "llm-worker-cpu",
            "llm-worker-cuda",
            "llm-worker-metal",
            "llm-worker-rocm"
        ])
    );
    let e = hq.json("/api/workers/llm-worker-cpu/debian/prod", 404);
    assert_eq!(e["unknown"], "platform");
    assert_eq!(e["known"], serde_json::json!(["arch", "homebrew"]));
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains("unknown platform `debian`")),
        "{e}"
    );
    let e = hq.json("/api/workers/llm-worker-cpu/arch/nightly", 404);
    assert_eq!(e["unknown"], "build");
    assert_eq!(e["known"], serde_json::json!(["prod", "dev"]));
    // A real package on a platform its feature does not build for.
    let e = hq.json("/api/workers/llm-worker-rocm/homebrew/prod", 404);
    assert_eq!(
        e["error"],
        "`llm-worker-rocm` has no `homebrew` manifest: its feature `rocm` does not build for macos"
    );
    assert_eq!(e["known"], serde_json::json!(["arch"]));

    // Ids that a path-joining server would follow out of the catalog (or into it by directory
    // name): none is a package name, none reads a file.
    let inventory =
        std::fs::read_to_string(hq.repo.path().join("inventory/fleet.yaml")).expect("read");
    let long = "a".repeat(8000);
    let hostile = [
        "/api/workers/../arch/prod".to_string(),
        "/api/workers/%2e%2e/arch/prod".to_string(),
        "/api/workers/%2E%2E%2F%2E%2E%2Finventory%2Ffleet.yaml/arch/prod".to_string(),
        "/api/workers/..%2f..%2f..%2f..%2fetc%2fpasswd/arch/prod".to_string(),
        "/api/workers/bin%2F30_llm_worker_rbee/arch/prod".to_string(),
        "/api/workers/30_llm_worker_rbee/arch/prod".to_string(),
        "/api/workers/llm-worker-cpu/..%2f..%2finventory/prod".to_string(),
        "/api/workers/llm-worker-cpu/arch/..%2f..%2f..%2fetc%2fpasswd".to_string(),
        "/api/workers/../../inventory/fleet.yaml".to_string(),
        "/api/workers/llm-worker-cpu/arch/prod/../../../../etc/passwd".to_string(),
        "/api/workers/%00/arch/prod".to_string(),
        format!("/api/workers/{long}/arch/prod"),
    ];
    for path in &hostile {
        let r = hq.get(path);
        let body = r.text();
        assert_eq!(r.code, 404, "{path}: {body}");
        assert!(
            !body.contains("hq_url") && !body.contains(inventory.trim()) && !body.contains("root:"),
            "{path} leaked a file: {body}"
        );
        assert!(body.len() < 1024, "{path}: the answer echoes too much");
        if !body.is_empty() {
            let v: serde_json::Value = serde_json::from_str(&body).expect("json");
            assert!(v["error"].is_string(), "{path}: {v}");
        }
    }
    let e = hq.json(&format!("/api/workers/{long}/arch/prod"), 404);
    assert_eq!(e["known"], packages);
    assert_eq!(hq.get("/healthz").code, 200, "still serving");
}

#[test]
fn hq_without_a_catalog_says_where_it_looks_and_a_broken_one_says_why() {
    let hq = Serve::start(false);
    let e = hq.json("/api/workers", 404);
    assert!(
        e["error"].as_str().is_some_and(
            |m| m.contains("no worker catalog: HQ serves `catalog/` of its fleet repo")
        ),
        "{e}"
    );
    hq.json("/api/workers/llm-worker-cpu/arch/prod", 404);

    // Created while HQ runs: found on the next request.
    copy_tree(&crate_root().join("catalog"), &hq.catalog());
    assert_eq!(assert_same_as_render(&hq), 18);

    // A checksum left pinned: refused, as `fleet render` refuses it.
    let w = hq.catalog().join("bin/30_llm_worker_rbee/worker.toml");
    let text = std::fs::read_to_string(&w).expect("read");
    std::fs::write(
        &w,
        format!("{text}\n[release]\nversion = \"0.0.9\"\nsha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n"),
    )
    .expect("write");
    for path in ["/api/workers", "/api/workers/sd-worker-cpu/arch/prod"] {
        let e = hq.json(path, 500);
        assert_eq!(
            e["error"],
            "the worker catalog has errors; `fleet render packages` shows them too"
        );
        let d = e["diagnostics"][0].as_str().unwrap_or_default();
        assert!(
            d.contains("bin/30_llm_worker_rbee/worker.toml:")
                && d.contains("`[release] sha256` is the checksum of version 0.0.9, but the crate is now at 0.1.0"),
            "{e}"
        );
    }
    fleet(hq.repo.path())
        .args(["render", "packages", "--out"])
        .arg(hq.repo.path().join("out"))
        .assert()
        .code(2);
}
