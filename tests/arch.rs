//! Architectures as machines name them: macOS's `uname -m` says `arm64`, Linux's `aarch64`,
//! Debian's `amd64` is `x86_64`. The inventory and role requirements accept either name and
//! every comparison (requirements, templates' `node.arch`, `fleet nodes`) sees one.

mod support;

use support::{build_repo, crate_root, fleet, parse_case};

fn repo(inventory: &str, hq_requires: &str) -> tempfile::TempDir {
    let base = crate_root().join("tests/corpus/base");
    let case = parse_case(
        "arch",
        &format!(
            "--- inventory/fleet.yaml\n{inventory}--- roles/hq/role.yaml\ndescription: test hq\ncapabilities: [hq, ollama]\nrequires: {hq_requires}\nincludes: [common]\ntasks:\n  - name: config\n    template: {{ src: app.conf.j2, dest: \"{{{{ app_dir }}}}/app.conf\", mode: \"0644\" }}\n--- templates/app.conf.j2\narch = {{{{ node.arch }}}}\nbrew = {{{{ '/opt/homebrew' if node.arch == 'aarch64' else '/usr/local' }}}}\n"
        ),
    );
    build_repo(&base, &case)
}

fn inventory(hq_arch: &str, w1_arch: &str) -> String {
    format!(
        "fleet: {{ name: test, hq: hq1, hq_url: \"http://hq1.lan:8765\" }}\nvars: {{ app_dir: /opt/app }}\nnodes:\n  hq1: {{ host: hq1.lan, role: hq, hardware: {{ os: macos, arch: {hq_arch}, ram_gb: 16 }} }}\n  w1: {{ host: w1.lan, role: worker, hardware: {{ os: linux, arch: {w1_arch}, ram_gb: 32 }} }}\n"
    )
}

fn run(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = fleet(dir).args(args).output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn arm64_and_amd64_are_accepted_and_read_as_aarch64_and_x86_64() {
    let r = repo(
        &inventory("arm64", "amd64"),
        "{ ram_gb: 8, arch: [aarch64] }",
    );
    let (code, _, err) = run(r.path(), &["validate"]);
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = run(r.path(), &["nodes", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let arch = |i: usize| v["nodes"][i]["hardware"]["arch"].clone();
    assert_eq!(arch(0), "aarch64", "{out}");
    assert_eq!(arch(1), "x86_64", "{out}");

    // Templates read one name: the Homebrew prefix of Apple silicon is chosen for `arm64`.
    let (code, out, err) = run(
        r.path(),
        &["plan", "playbooks/site.yaml", "--diff", "--limit", "hq1"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("+ arch = aarch64"), "{out}");
    assert!(out.contains("+ brew = /opt/homebrew"), "{out}");
    assert!(out.contains("macos/aarch64"), "{out}");
}

#[test]
fn a_requirement_written_arm64_is_met_by_aarch64_and_says_aarch64_when_missed() {
    let r = repo(&inventory("aarch64", "x86_64"), "{ arch: [arm64] }");
    let (code, _, err) = run(r.path(), &["validate"]);
    assert_eq!(code, 0, "{err}");

    let r = repo(&inventory("amd64", "x86_64"), "{ arch: [arm64] }");
    let (code, _, err) = run(r.path(), &["validate"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("error: role `hq` needs aarch64; `hq1` is x86_64"),
        "{err}"
    );
}

#[test]
fn an_unknown_architecture_is_a_located_error_in_the_inventory_and_in_a_role() {
    let r = repo(&inventory("armv7l", "x86_64"), "{ arch: [amd64, sparc] }");
    let (code, _, err) = run(r.path(), &["validate"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "inventory/fleet.yaml:4:64: error: node `hq1` hardware `arch`: expected `x86_64` or `aarch64`, found `armv7l`"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "roles/hq/role.yaml:3:27: error: role `hq` `requires.arch`: expected `x86_64` or `aarch64`, found `sparc`"
        ),
        "{err}"
    );
    assert!(err.contains("help: write `x86_64` or `aarch64`"), "{err}");
}
