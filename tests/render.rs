//! `fleet render`, `route` and `eligible` through the real binary: snapshots of every
//! rendered file, PKGBUILDs checked by makepkg and formulae by ruby, the drift gate, and
//! routing edge cases.

mod support;

use std::path::Path;

use predicates::prelude::*;
use support::{build_repo, copy_tree, crate_root, ensure_tool, fleet, json_server, parse_case};

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p)
            } else {
                out.push(p)
            }
        }
    }
    out.sort();
    out
}

#[test]
fn example_fleet_routing_and_registry_snapshots() {
    let out = tempfile::tempdir().expect("tmp");
    fleet(&crate_root())
        .args(["render", "--out"])
        .arg(out.path())
        .assert()
        .success();
    insta::assert_snapshot!(
        "routing_example",
        read(&out.path().join("routing/openclaw_workers.json"))
    );
    insta::assert_snapshot!(
        "registry_example",
        read(&out.path().join("registry/nodes_registry.json"))
    );
}

#[test]
fn committed_generated_files_are_up_to_date() {
    // Routing, registry and the packages of the repo's catalog/: the CI gate covers all three.
    let packages = files(&crate_root().join("generated/packages"));
    assert_eq!(packages.len(), 28, "{packages:?}");
    fleet(&crate_root())
        .args(["render", "--check"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "ok: 30 files in generated are up to date",
        ));
}

#[test]
fn a_version_bump_in_the_repos_catalog_fails_the_gate() {
    let repo = tempfile::tempdir().expect("tmp");
    for d in ["inventory", "roles", "templates", "catalog", "generated"] {
        copy_tree(&crate_root().join(d), &repo.path().join(d));
    }
    fleet(repo.path())
        .args(["render", "--check"])
        .assert()
        .code(0);
    let cargo = repo.path().join("catalog/bin/31_sd_worker_rbee/Cargo.toml");
    std::fs::write(
        &cargo,
        read(&cargo).replace("version = \"0.1.0\"", "version = \"0.2.0\""),
    )
    .expect("bump");
    fleet(repo.path())
        .args(["render", "--check"])
        .assert()
        .code(1)
        .stdout(
            predicate::str::contains("differs: generated/packages/arch/sd-worker-cuda/PKGBUILD")
                .and(predicate::str::contains("+pkgver=0.2.0"))
                .and(predicate::str::contains("llm-worker").not()),
        );
    fleet(repo.path()).arg("render").assert().success();
    fleet(repo.path())
        .args(["render", "--check"])
        .assert()
        .code(0);
}

#[test]
fn rendering_is_byte_for_byte_deterministic() {
    let a = tempfile::tempdir().expect("tmp");
    let b = tempfile::tempdir().expect("tmp");
    for d in [&a, &b] {
        fleet(&crate_root())
            .args(["render", "all", "--catalog", "tests/catalog", "--out"])
            .arg(d.path())
            .assert()
            .success();
    }
    let fa = files(a.path());
    assert_eq!(fa.len(), files(b.path()).len());
    for f in fa {
        let rel = f.strip_prefix(a.path()).expect("rel");
        assert_eq!(read(&f), read(&b.path().join(rel)), "{}", rel.display());
    }
}

#[test]
fn catalog_packages_snapshots() {
    let out = tempfile::tempdir().expect("tmp");
    fleet(&crate_root())
        .args(["render", "packages", "--catalog", "tests/catalog", "--out"])
        .arg(out.path())
        .assert()
        .success();
    let all = files(&out.path().join("packages"));
    // 3 workers: llm-worker (cpu, cuda, rocm on Linux; cpu, metal on macOS), sd-worker (cuda; metal), embed-worker (cpu; cpu).
    assert_eq!(all.len(), 28, "{all:?}");
    for f in all {
        let rel = f
            .strip_prefix(out.path())
            .expect("rel")
            .to_string_lossy()
            .replace('/', "__");
        insta::assert_snapshot!(rel, read(&f));
    }
}

fn printsrcinfo(pkgbuild: &Path) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::copy(pkgbuild, dir.path().join("PKGBUILD")).expect("copy");
    std::process::Command::new("chmod")
        .args(["-R", "a+rwx"])
        .arg(dir.path())
        .status()
        .expect("chmod");
    // makepkg refuses to run as root: run it as nobody, in a clean environment.
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "env",
            "-i",
        ])
        .arg(format!("HOME={}", dir.path().display()))
        .args([
            "PATH=/usr/bin:/bin",
            "PACMAN=true",
            "makepkg",
            "--printsrcinfo",
        ])
        .current_dir(dir.path())
        .output()
        .expect("makepkg runs");
    assert!(
        out.status.success(),
        "makepkg --printsrcinfo failed for {}:\n{}",
        pkgbuild.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pkgbuilds_pass_makepkg_and_srcinfo_matches() {
    ensure_tool("makepkg", "makepkg");
    let out = tempfile::tempdir().expect("tmp");
    fleet(&crate_root())
        .args(["render", "packages", "--catalog", "tests/catalog", "--out"])
        .arg(out.path())
        .assert()
        .success();
    let pkgbuilds: Vec<_> = files(out.path())
        .into_iter()
        .filter(|p| p.ends_with("PKGBUILD"))
        .collect();
    assert_eq!(pkgbuilds.len(), 10);
    // And the committed ones of the repo's own catalog (a monorepo: other paths and names).
    let committed: Vec<_> = files(&crate_root().join("generated/packages"))
        .into_iter()
        .filter(|p| p.ends_with("PKGBUILD"))
        .collect();
    assert_eq!(committed.len(), 10);
    for p in pkgbuilds.into_iter().chain(committed) {
        let srcinfo = printsrcinfo(&p);
        assert_eq!(
            srcinfo,
            read(&p.with_file_name(".SRCINFO")),
            "{}",
            p.display()
        );
        assert!(
            !srcinfo.contains("pkgver = 0.4.0-"),
            "pkgver without hyphen"
        );
    }
}

#[test]
fn formulae_pass_ruby_syntax_check() {
    ensure_tool("ruby", "ruby");
    let out = tempfile::tempdir().expect("tmp");
    fleet(&crate_root())
        .args(["render", "packages", "--catalog", "tests/catalog", "--out"])
        .arg(out.path())
        .assert()
        .success();
    let rb = |dir: &Path| -> Vec<std::path::PathBuf> {
        files(dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "rb"))
            .collect()
    };
    let formulae = rb(out.path());
    assert_eq!(formulae.len(), 8);
    let committed = rb(&crate_root().join("generated/packages"));
    assert_eq!(committed.len(), 8);
    for f in formulae.into_iter().chain(committed) {
        let o = std::process::Command::new("ruby")
            .arg("-c")
            .arg(&f)
            .output()
            .expect("ruby");
        assert!(
            o.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn adding_a_worker_is_adding_a_directory_and_versions_come_from_cargo() {
    let cat = tempfile::tempdir().expect("tmp");
    copy_tree(&crate_root().join("tests/catalog"), cat.path());
    let out = tempfile::tempdir().expect("tmp");
    let render = |out: &Path| {
        fleet(&crate_root())
            .args(["render", "packages", "--catalog"])
            .arg(cat.path())
            .arg("--out")
            .arg(out)
            .assert()
            .success();
    };
    render(out.path());
    let before: Vec<_> = files(out.path());

    // A fourth worker: a directory with worker.toml and Cargo.toml, no code change.
    let tts = cat.path().join("crates/tts-worker");
    std::fs::create_dir_all(&tts).expect("mkdir");
    std::fs::write(tts.join("Cargo.toml"), "[package]\nname = \"tts-worker\"\nversion = \"2.0.1\"\nrepository = \"https://example.org/tts\"\n").expect("write");
    std::fs::write(
        tts.join("worker.toml"),
        "[worker]\nid = \"tts-worker\"\nname = \"TTS\"\ndescription = \"Speech synthesis\"\nlicense = \"MIT\"\n\n[build]\nfeatures = [\"cpu\", \"cuda\"]\n\n[platforms]\nlinux = [\"x86_64\"]\n",
    )
    .expect("write");
    fleet(&crate_root())
        .args(["render", "packages", "--check", "--catalog"])
        .arg(cat.path())
        .arg("--out")
        .arg(out.path())
        .assert()
        .code(1)
        .stdout(
            predicate::str::contains("missing:")
                .and(predicate::str::contains("tts-worker-cuda/PKGBUILD")),
        );
    render(out.path());
    let after: Vec<_> = files(out.path());
    let added: Vec<String> = after
        .iter()
        .filter(|p| !before.contains(p))
        .map(|p| {
            p.strip_prefix(out.path())
                .expect("rel")
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(
        added,
        vec![
            "packages/arch/tts-worker-cpu/.SRCINFO",
            "packages/arch/tts-worker-cpu/PKGBUILD",
            "packages/arch/tts-worker-cpu-git/.SRCINFO",
            "packages/arch/tts-worker-cpu-git/PKGBUILD",
            "packages/arch/tts-worker-cuda/.SRCINFO",
            "packages/arch/tts-worker-cuda/PKGBUILD",
            "packages/arch/tts-worker-cuda-git/.SRCINFO",
            "packages/arch/tts-worker-cuda-git/PKGBUILD",
        ]
    );
    assert!(
        read(&out.path().join("packages/arch/tts-worker-cuda/PKGBUILD")).contains("pkgver=2.0.1")
    );

    // Bumping one crate's version changes exactly that worker's files.
    let snapshot: Vec<(std::path::PathBuf, String)> =
        after.iter().map(|p| (p.clone(), read(p))).collect();
    let cargo = cat.path().join("crates/llm-worker/Cargo.toml");
    std::fs::write(
        &cargo,
        read(&cargo).replace("version = \"1.2.0\"", "version = \"1.3.0\""),
    )
    .expect("bump");
    // The pinned checksum is of the 1.2.0 tarball: rendering refuses rather than pin it in
    // the 1.3.0 manifests, and writes nothing.
    let o = fleet(&crate_root())
        .args(["render", "packages", "--catalog"])
        .arg(cat.path())
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("crates/llm-worker/worker.toml:23:1: error: `[release] sha256` is the checksum of version 1.2.0, but the crate is now at 1.3.0"),
        "{err}"
    );
    assert!(
        err.contains("help: set `version = \"1.3.0\"` and `sha256` to the checksum of https://github.com/symphony-ai/workers/archive/refs/tags/v1.3.0.tar.gz"),
        "{err}"
    );
    assert!(
        snapshot.iter().all(|(p, old)| &read(p) == old),
        "nothing written"
    );
    let worker = cat.path().join("crates/llm-worker/worker.toml");
    std::fs::write(
        &worker,
        read(&worker)
            .replace("version = \"1.2.0\"", "version = \"1.3.0\"")
            .replace("9f86d081", "0123abcd"),
    )
    .expect("new checksum");
    render(out.path());
    let changed: Vec<String> = snapshot
        .iter()
        .filter(|(p, old)| &read(p) != old)
        .map(|(p, _)| {
            p.strip_prefix(out.path())
                .expect("rel")
                .display()
                .to_string()
        })
        .collect();
    assert!(!changed.is_empty());
    assert!(
        changed.iter().all(|c| c.contains("llm-worker")),
        "{changed:?}"
    );
    assert_eq!(
        changed.len(),
        14,
        "every llm-worker file: 3 Linux variants × 4 + 2 formulae with the version; {changed:?}"
    );
}

#[test]
fn check_fails_on_a_hand_edit_and_passes_after_render() {
    let out = tempfile::tempdir().expect("tmp");
    let args = |check: bool| {
        let mut a = vec!["render", "all", "--catalog", "tests/catalog"];
        if check {
            a.push("--check");
        }
        a
    };
    fleet(&crate_root())
        .args(args(false))
        .arg("--out")
        .arg(out.path())
        .assert()
        .success();
    fleet(&crate_root())
        .args(args(true))
        .arg("--out")
        .arg(out.path())
        .assert()
        .code(0);
    let f = out.path().join("packages/arch/llm-worker-cuda/PKGBUILD");
    std::fs::write(&f, read(&f).replace("pkgrel=1", "pkgrel=2")).expect("edit");
    let stray = out.path().join("packages/homebrew/old-worker.rb");
    std::fs::write(&stray, "class OldWorker < Formula\nend\n").expect("stray");
    fleet(&crate_root())
        .args(args(true))
        .arg("--out")
        .arg(out.path())
        .assert()
        .code(1)
        .stdout(
            predicate::str::contains("differs:")
                .and(predicate::str::contains("-pkgrel=2"))
                .and(predicate::str::contains("+pkgrel=1"))
                .and(predicate::str::contains("stale:")),
        )
        .stderr(predicate::str::contains("2 generated files differ"));
    fleet(&crate_root())
        .args(args(false))
        .arg("--out")
        .arg(out.path())
        .assert()
        .success()
        .stdout(predicate::str::contains("removed"));
    fleet(&crate_root())
        .args(args(true))
        .arg("--out")
        .arg(out.path())
        .assert()
        .code(0);
    assert!(!stray.exists());
}

#[test]
fn bad_worker_toml_is_located() {
    let cat = tempfile::tempdir().expect("tmp");
    copy_tree(&crate_root().join("tests/catalog"), cat.path());
    let w = cat.path().join("crates/embed-worker/worker.toml");
    std::fs::write(
        &w,
        read(&w)
            .replace("features = [\"cpu\"]", "features = [\"cpu\", \"cuad\"]")
            .replace("license = \"MIT\"", "license = \"MIT\"\nlicence = \"MIT\""),
    )
    .expect("edit");
    let o = fleet(cat.path())
        .args(["-i"])
        .arg(crate_root())
        .args(["render", "packages", "--catalog", "."])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("crates/embed-worker/worker.toml:6:1: error: invalid worker.toml: unknown field `licence`"), "{err}");
    std::fs::write(&w, read(&w).replace("licence = \"MIT\"\n", "")).expect("edit");
    let o = fleet(cat.path())
        .args(["-i"])
        .arg(crate_root())
        .args(["render", "packages", "--catalog", "."])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("crates/embed-worker/worker.toml:8:20: error: unknown build feature `cuad`"),
        "{err}"
    );
    assert!(err.contains("help: did you mean `cuda`?"), "{err}");
}

#[test]
fn a_checksum_must_say_which_version_it_is_of() {
    let cat = tempfile::tempdir().expect("tmp");
    copy_tree(&crate_root().join("tests/catalog"), cat.path());
    let w = cat.path().join("crates/llm-worker/worker.toml");
    std::fs::write(&w, read(&w).replace("version = \"1.2.0\"\n", "")).expect("edit");
    let o = fleet(cat.path())
        .args(["-i"])
        .arg(crate_root())
        .args(["render", "packages", "--catalog", ".", "--out"])
        .arg(cat.path().join("out"))
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("crates/llm-worker/worker.toml:23:1: error: `[release] sha256` does not say which version's tarball it is the checksum of (worker `llm-worker`)"), "{err}");
    assert!(
        err.contains("help: add `version = \"1.2.0\"` under `[release]`"),
        "{err}"
    );
    assert!(!cat.path().join("out").exists(), "nothing written");
}

/// Renders the catalog at `cat` into `out`; exit code and stderr.
fn render_catalog(cat: &Path, out: &Path) -> (Option<i32>, String) {
    let o = fleet(cat)
        .args(["-i"])
        .arg(crate_root())
        .args(["render", "packages", "--catalog", ".", "--out"])
        .arg(out)
        .output()
        .expect("runs");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn monorepo_catalog_in_the_documents_format_renders() {
    // The worker-catalog document's layout: one workspace, workers in bin/, worker.toml
    // without `repository`; the llm crate names no repository, the sd crate inherits it.
    let cat = tempfile::tempdir().expect("tmp");
    copy_tree(&crate_root().join("tests/catalog-monorepo"), cat.path());
    let out = cat.path().join("out");
    let (code, err) = render_catalog(cat.path(), &out);
    assert_eq!(code, Some(0), "{err}");
    let llm = read(&out.join("packages/arch/llm-worker-cuda/PKGBUILD"));
    assert!(llm.contains("pkgver=0.3.0\n"), "{llm}");
    assert!(
        llm.contains("source=(\"$pkgname-$pkgver.tar.gz::https://github.com/symphony-ai/rbee/archive/refs/tags/v0.3.0.tar.gz\")"),
        "{llm}"
    );
    assert!(llm.contains("cargo build --frozen --release -p llm-worker-rbee --no-default-features --features cuda"), "{llm}");
    assert!(
        llm.contains("install -Dm0755 -t \"$pkgdir/usr/bin/\" target/release/llm-worker-rbee"),
        "the binary Cargo builds, not the worker id: {llm}"
    );
    let sd = read(&out.join("packages/arch/sd-worker-cpu/PKGBUILD"));
    assert!(sd.contains("pkgver=0.2.1\n"), "{sd}");
    assert!(
        sd.contains("https://github.com/symphony-ai/rbee/archive/refs/tags/v0.2.1.tar.gz"),
        "{sd}"
    );
    let formula = read(&out.join("packages/homebrew/llm-worker-metal.rb"));
    assert!(
        formula.contains("std_cargo_args(path: \"bin/30_llm_worker_rbee\")"),
        "{formula}"
    );
    assert_eq!(files(&out.join("packages")).len(), 28);
}

#[test]
fn monorepo_repository_falls_back_to_catalog_toml_then_refuses_with_the_places() {
    let cat = tempfile::tempdir().expect("tmp");
    copy_tree(&crate_root().join("tests/catalog-monorepo"), cat.path());
    let out = cat.path().join("out");
    let ws = cat.path().join("Cargo.toml");
    std::fs::write(
        &ws,
        read(&ws).replace("repository = \"https://github.com/symphony-ai/rbee\"\n", ""),
    )
    .expect("edit");
    // The sd crate inherits what the workspace no longer has: Cargo refuses that too.
    let (code, err) = render_catalog(cat.path(), &out);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("bin/31_sd_worker_rbee/Cargo.toml:6:1: error: `repository.workspace = true`, but the workspace has no `[workspace.package] repository`"), "{err}");
    let sd = cat.path().join("bin/31_sd_worker_rbee/Cargo.toml");
    std::fs::write(&sd, read(&sd).replace("repository.workspace = true\n", "")).expect("edit");

    // Nothing names a repository: refused, saying where to put one.
    let (code, err) = render_catalog(cat.path(), &out);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("bin/30_llm_worker_rbee/worker.toml:1:1: error: worker `llm-worker` has no source repository"),
        "{err}"
    );
    for place in [
        "`repository` in `[worker]` of ./bin/30_llm_worker_rbee/worker.toml",
        "`repository` in `[package]` of ./bin/30_llm_worker_rbee/Cargo.toml",
        "`repository` in `[workspace.package]` of ./Cargo.toml",
        "`repository = \"https://…\"` in ./catalog.toml (for every worker of the catalog)",
    ] {
        assert!(err.contains(place), "{place}: {err}");
    }
    assert!(!out.exists(), "nothing written");

    // The catalog-wide setting.
    std::fs::write(
        cat.path().join("catalog.toml"),
        "repository = \"https://git.example.org/rbee.git\"\n",
    )
    .expect("write");
    let (code, err) = render_catalog(cat.path(), &out);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        read(&out.join("packages/arch/sd-worker-cpu/PKGBUILD"))
            .contains("https://git.example.org/rbee/archive/refs/tags/v0.2.1.tar.gz")
    );

    // The workspace's wins over the catalog's; the worker's own over both.
    std::fs::write(
        &ws,
        read(&ws).replace(
            "[workspace.package]\n",
            "[workspace.package]\nrepository = \"https://github.com/symphony-ai/rbee\"\n",
        ),
    )
    .expect("edit");
    let w = cat.path().join("bin/31_sd_worker_rbee/worker.toml");
    std::fs::write(
        &w,
        read(&w).replace(
            "license = \"GPL-3.0-or-later\"\n",
            "license = \"GPL-3.0-or-later\"\nrepository = \"https://github.com/symphony-ai/sd\"\n",
        ),
    )
    .expect("edit");
    let (code, err) = render_catalog(cat.path(), &out);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        read(&out.join("packages/arch/llm-worker-cpu/PKGBUILD"))
            .contains("https://github.com/symphony-ai/rbee/archive/refs/tags/v0.3.0.tar.gz")
    );
    assert!(
        read(&out.join("packages/arch/sd-worker-cpu/PKGBUILD"))
            .contains("https://github.com/symphony-ai/sd/archive/refs/tags/v0.2.1.tar.gz")
    );

    // A typo in catalog.toml is located.
    std::fs::write(cat.path().join("catalog.toml"), "repo = \"x\"\n").expect("write");
    let (code, err) = render_catalog(cat.path(), &out);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("catalog.toml:1:1: error: invalid catalog.toml: unknown field `repo`"),
        "{err}"
    );
}

fn routing_repo(inventory: &str) -> tempfile::TempDir {
    let case = parse_case("r", &format!("--- inventory/fleet.yaml\n{inventory}"));
    build_repo(&crate_root().join("tests/corpus/base"), &case)
}

const HEAD: &str =
    "fleet: { name: t, hq: hq1, hq_url: \"http://127.0.0.1:9\" }\nvars: { app_dir: /opt/app }\n";

#[test]
fn node_without_ram_stays_out_of_the_pool() {
    let repo = routing_repo(&format!(
        "{HEAD}nodes:\n  hq1: {{ host: h, role: hq }}\n  w1: {{ host: w, role: worker, models: [llama3.1:70b], hardware: {{ os: linux, ram_gb: 64 }} }}\n  w2: {{ host: w2, role: worker, models: [llama3.1:70b], hardware: {{ os: linux, ram_gb: 32 }} }}\nrouting:\n  rules:\n    - {{ task: reason, model: llama3.1:70b }}\n"
    ));
    let out = fleet(repo.path())
        .args(["route", "reason", "--offline", "--json"])
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["route"]["pool"], serde_json::json!(["w1"]));
    fleet(repo.path())
        .arg("validate")
        .assert()
        .code(0)
        .stderr(predicate::str::contains("inventory/fleet.yaml:6:42: warning: `w2` lists `llama3.1:70b`, which it cannot serve (tier Llama-3.1-70B: needs 24 GB VRAM (has 0) or 56 GB RAM to run on the CPU (has 32)); it stays out of that model's pool"));
}

#[test]
fn model_nobody_can_hold_and_empty_pool_without_fallback() {
    let repo = routing_repo(&format!(
        "{HEAD}nodes:\n  hq1: {{ host: h, role: hq, models: [llama3.1:405b], hardware: {{ ram_gb: 16 }} }}\n  w1: {{ host: w, role: worker, models: [llama3.1:405b], hardware: {{ os: linux, ram_gb: 64 }} }}\nrouting:\n  rules:\n    - {{ task: huge, model: llama3.1:405b }}\n"
    ));
    fleet(repo.path())
        .arg("validate")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("inventory/fleet.yaml:8:15: error: no node can serve `llama3.1:405b` for rule `huge`: `hq1`: tier Llama-3.1-405B: needs 48 GB VRAM (has 0) or 112 GB RAM to run on the CPU (has 16); `w1`: tier Llama-3.1-405B: needs 48 GB VRAM (has 0) or 112 GB RAM to run on the CPU (has 64)"));
    let case2 = routing_repo(&format!(
        "{HEAD}nodes:\n  hq1: {{ host: h, role: hq }}\n  w1: {{ host: w, role: common, models: [small:1b] }}\nrouting:\n  rules:\n    - {{ task: t, model: small:1b }}\n"
    ));
    fleet(case2.path())
        .arg("validate")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("inventory/fleet.yaml:8:15: error: rule `t` needs model `small:1b`; `w1` (common) lists it, but no role there runs Ollama"));
}

#[test]
fn fallback_cycles_are_errors() {
    let repo = routing_repo(&format!(
        "{HEAD}nodes:\n  hq1: {{ host: h, role: hq }}\n  w1: {{ host: w, role: worker, models: [small:1b], hardware: {{ os: linux, ram_gb: 32 }} }}\nrouting:\n  rules:\n    - {{ task: a, model: small:1b, fallback: [b] }}\n    - {{ task: b, model: small:1b, fallback: [c] }}\n    - {{ task: c, model: small:1b, fallback: [a] }}\n"
    ));
    fleet(repo.path()).arg("validate").assert().code(2).stderr(
        predicate::str::contains(
            "inventory/fleet.yaml:8:15: error: routing fallbacks form a cycle: a → b → c → a",
        )
        .and(predicate::str::contains("b → c → a → b").not()),
    );
}

#[test]
fn single_worker_pool_without_fallback_warns() {
    let repo = routing_repo(&format!(
        "{HEAD}nodes:\n  hq1: {{ host: h, role: hq }}\n  w1: {{ host: w, role: worker, models: [small:1b], hardware: {{ os: linux, ram_gb: 32 }} }}\nrouting:\n  rules:\n    - {{ task: a, model: small:1b }}\n    - {{ task: b, capability: hq, fallback: [a] }}\n"
    ));
    fleet(repo.path())
        .arg("validate")
        .assert()
        .code(0)
        .stderr(predicate::str::contains("warning: rule `a` is served by one worker (`w1`) and has no fallback of its own: when it is down, its requests fail"));
}

#[test]
fn route_uses_live_status_from_hq() {
    let hq = json_server(r#"{"nodes":[{"name":"forge","status":"offline","last_heartbeat":"2026-11-23T09:00:00Z","heartbeat_age_secs":900.0},{"name":"maestro","status":"online","last_heartbeat":"2026-11-23T10:00:00Z","heartbeat_age_secs":5.0}]}"#.to_string());
    let repo = tempfile::tempdir().expect("tmp");
    copy_tree(
        &crate_root().join("inventory"),
        &repo.path().join("inventory"),
    );
    copy_tree(&crate_root().join("roles"), &repo.path().join("roles"));
    let inv = repo.path().join("inventory/fleet.yaml");
    std::fs::write(&inv, read(&inv).replace("https://bob.local:8765", &hq)).expect("write");
    let out = fleet(repo.path())
        .args(["route", "reason", "--json"])
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["route"]["target"], "maestro", "forge is offline: {v}");
    assert_eq!(v["route"]["pool"], serde_json::json!(["maestro"]));
    assert_eq!(v["source"], "live status from HQ");
    let offline = fleet(repo.path())
        .args(["route", "reason", "--json", "--offline"])
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&offline.stdout).expect("json");
    assert_eq!(v["route"]["target"], "forge");
    // render --live marks status in both files.
    let out_dir = tempfile::tempdir().expect("tmp");
    fleet(repo.path())
        .args(["render", "--live", "--out"])
        .arg(out_dir.path())
        .assert()
        .success()
        .stderr(predicate::str::contains("live: node status from HQ"));
    let reg: serde_json::Value =
        serde_json::from_str(&read(&out_dir.path().join("registry/nodes_registry.json")))
            .expect("json");
    let forge = reg["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["name"] == "forge")
        .expect("forge");
    assert_eq!(forge["status"], "offline");
    let bob = reg["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["name"] == "bob")
        .expect("bob");
    assert_eq!(
        bob["status"], "offline",
        "a node HQ has never heard from is offline"
    );
}

#[test]
fn render_live_says_when_hq_is_unreachable() {
    let repo = routing_repo(&format!("{HEAD}nodes:\n  hq1: {{ host: h, role: hq }}\n"));
    let out = tempfile::tempdir().expect("tmp");
    fleet(repo.path())
        .args(["render", "--live", "--out"])
        .arg(out.path())
        .assert()
        .success()
        .stderr(predicate::str::contains("HQ is not reachable"));
    assert!(
        read(&out.path().join("registry/nodes_registry.json")).contains("\"status\": \"unknown\"")
    );
}

#[test]
fn unknown_route_task_is_a_config_error() {
    fleet(&crate_root())
        .args(["route", "reasn", "--offline"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("no routing rule for task `reasn`")
                .and(predicate::str::contains("did you mean `reason`?")),
        );
}

#[test]
fn eligible_reports_tiers_per_node() {
    let out = fleet(&crate_root())
        .args(["eligible", "maestro", "--json"])
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let tiers = v["nodes"][0]["tiers"].as_array().expect("tiers");
    let tier = |name: &str| {
        tiers
            .iter()
            .find(|t| t["tier"] == name)
            .expect("tier")
            .clone()
    };
    // maestro (Intel iMac, 64 GB, no GPU) runs 8B and 70B on the CPU, as the
    // node-infrastructure document has it.
    for t in ["Llama-3.1-8B", "Llama-3.1-70B"] {
        assert_eq!(tier(t)["eligible"], true, "{t}");
        assert_eq!(tier(t)["compute"], "cpu", "{t}");
    }
    assert_eq!(
        tier("Llama-3.1-405B")["missing"],
        serde_json::json!([
            "needs 16 cores, has 8",
            "needs 48 GB VRAM (has 0) or 112 GB RAM to run on the CPU (has 64)"
        ])
    );
    assert_eq!(tiers.iter().filter(|t| t["eligible"] == true).count(), 9);
    fleet(&crate_root())
        .args(["eligible", "maestr"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("did you mean `maestro`?"));
}

/// `eligible` and the routing pools answer from one function: a node serves a model it lists
/// exactly when it is in the pool of every rule for that model.
#[test]
fn eligible_and_the_routing_pools_agree() {
    let out = fleet(&crate_root())
        .args(["eligible", "--json"])
        .output()
        .expect("runs");
    let el: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let dir = tempfile::tempdir().expect("tmp");
    fleet(&crate_root())
        .args(["render", "routing", "--out"])
        .arg(dir.path())
        .assert()
        .success();
    let table: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("routing/openclaw_workers.json")).expect("table"),
    )
    .expect("json");
    let mut checked = 0;
    for n in el["nodes"].as_array().expect("nodes") {
        for m in n["models"].as_array().expect("models") {
            for r in table["rules"].as_array().expect("rules") {
                if r["model"] != m["model"] {
                    continue;
                }
                let in_pool = r["pool"]
                    .as_array()
                    .expect("pool")
                    .iter()
                    .any(|p| p == &n["node"]);
                assert_eq!(in_pool, m["serves"] == true, "{} {}", n["node"], m["model"]);
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "{checked}");
    // maestro is in the 70B pool, ranked as a CPU-only server.
    let reason = table["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["task"] == "reason")
        .expect("reason")
        .clone();
    assert_eq!(reason["pool"], serde_json::json!(["forge", "maestro"]));
    assert_eq!(reason["priorities"]["maestro"], 40);
}

#[test]
fn a_cpu_only_node_ranks_below_accelerated_ones_in_that_pool() {
    // Same node priority; w2 has no GPU for the 70B tier, so it serves it from RAM.
    let repo = routing_repo(&format!(
        "{HEAD}nodes:\n  hq1: {{ host: h, role: hq }}\n  w1: {{ host: w, role: worker, priority: 70, models: [llama3.1:70b], hardware: {{ os: linux, ram_gb: 64, cores: 16, gpu: {{ vendor: nvidia, vram_gb: 24 }} }} }}\n  w2: {{ host: w2, role: worker, priority: 90, models: [llama3.1:70b], hardware: {{ os: linux, ram_gb: 128, cores: 32 }} }}\nrouting:\n  rules:\n    - {{ task: reason, model: llama3.1:70b, fallback: [] }}\n"
    ));
    let out = fleet(repo.path())
        .args(["route", "reason", "--offline", "--json"])
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["route"]["pool"], serde_json::json!(["w1", "w2"]), "{v}");
}

#[test]
fn resources_json_has_the_agent_shape() {
    let out = fleet(&crate_root())
        .args(["resources", "--json"])
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["ram_gb"].as_f64().is_some_and(|r| r > 0.0));
    assert!(v["cores"].as_u64().is_some_and(|c| c > 0));
    assert_eq!(v["os"], std::env::consts::OS);
}

#[test]
fn a_browser_task_routes_to_the_browser_endpoint() {
    let out = fleet(&crate_root())
        .args(["route", "browser", "--offline", "--json"])
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let endpoints = v["route"]["endpoints"].as_object().expect("endpoints");
    assert!(!endpoints.is_empty());
    for (node, e) in endpoints {
        let e = e.as_str().expect("str");
        assert!(e.ends_with(":9222"), "{node}: {e}");
    }
    let human = fleet(&crate_root())
        .args(["route", "browser", "--offline"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("http://192.168.1.13:9222"), "{text}");
    assert!(!text.contains(":11434"), "{text}");
}

#[test]
fn endpoints_use_the_address_or_what_ssh_resolves() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("ssh_config");
    std::fs::write(&cfg, "Host alias2\n  HostName 127.0.0.5\n  Port 2222\n").expect("w");
    let repo = routing_repo(&format!(
        "fleet: {{ name: t, hq: hq1, hq_url: \"http://127.0.0.1:9\", ssh_config: \"{}\" }}\nvars: {{ app_dir: /opt/app }}\nnodes:\n  hq1: {{ host: h, role: hq }}\n  w1: {{ host: alias1, address: 10.1.2.3, role: worker, models: [m:1b], hardware: {{ os: linux, ram_gb: 64 }} }}\n  w2: {{ host: alias2, role: worker, models: [m:1b], hardware: {{ os: linux, ram_gb: 64 }} }}\n  w3: {{ host: alias3, address: \"fd7a:115c::3\", role: worker, models: [m:1b], hardware: {{ os: linux, ram_gb: 64 }} }}\nrouting:\n  rules:\n    - {{ task: t, model: m:1b }}\n",
        cfg.display()
    ));
    let out = fleet(repo.path())
        .args(["route", "t", "--offline", "--json"])
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let e = &v["route"]["endpoints"];
    assert_eq!(e["w1"], "http://10.1.2.3:11434", "{v}");
    assert_eq!(e["w2"], "http://127.0.0.5:11434", "{v}");
    assert_eq!(e["w3"], "http://[fd7a:115c::3]:11434", "{v}");
    // An address that is not one is a located error.
    let bad = routing_repo(&format!(
        "{HEAD}nodes:\n  hq1: {{ host: h, role: hq, address: \"http://x:1/\" }}\nrouting:\n  rules: []\n"
    ));
    fleet(bad.path())
        .arg("validate")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "inventory/fleet.yaml:4:38: error: node `hq1` `address`: expected a host name or an IP address, found \"http://x:1/\"",
        ));
}

#[test]
fn a_draining_node_leaves_the_live_pools() {
    // What HQ says of a node being drained (`fleet drain forge`): reporting, but draining.
    let hq = json_server(r#"{"nodes":[{"name":"forge","status":"draining","draining_since":"2026-11-23T09:59:00Z","last_heartbeat":"2026-11-23T10:00:00Z","heartbeat_age_secs":3.0},{"name":"maestro","status":"online","last_heartbeat":"2026-11-23T10:00:00Z","heartbeat_age_secs":5.0}]}"#.to_string());
    let repo = tempfile::tempdir().expect("tmp");
    copy_tree(
        &crate_root().join("inventory"),
        &repo.path().join("inventory"),
    );
    copy_tree(&crate_root().join("roles"), &repo.path().join("roles"));
    let inv = repo.path().join("inventory/fleet.yaml");
    std::fs::write(&inv, read(&inv).replace("https://bob.local:8765", &hq)).expect("write");
    let out = fleet(repo.path())
        .args(["route", "reason", "--json"])
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["route"]["target"], "maestro", "forge is draining: {v}");
    assert_eq!(v["route"]["pool"], serde_json::json!(["maestro"]));
    let out_dir = tempfile::tempdir().expect("tmp");
    fleet(repo.path())
        .args(["render", "--live", "routing", "--out"])
        .arg(out_dir.path())
        .assert()
        .success();
    let table = read(&out_dir.path().join("routing/openclaw_workers.json"));
    let t: serde_json::Value = serde_json::from_str(&table).expect("json");
    let pools: Vec<&serde_json::Value> = t["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| &r["pool"])
        .collect();
    assert!(
        pools.iter().all(|p| !p.to_string().contains("\"forge\"")),
        "{table}"
    );
}
