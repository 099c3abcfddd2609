//! `fleet render release` through the real binary: fleet's own installer, Homebrew formula
//! and PKGBUILD from a release directory's SHA256SUMS, the errors bad input gets (exit 2),
//! the drift check, `ruby -c` on the formula and `makepkg --printsrcinfo` on the PKGBUILD.
//! The built release itself (static binaries, install.sh over HTTP, makepkg of the real
//! archives) is scripts/release-check's.

mod support;

use std::path::Path;

use predicates::prelude::*;
use support::{ensure_tool, fleet};

const SUMS: &str = "\
1111111111111111111111111111111111111111111111111111111111111111  fleet-0.3.1-linux-x86_64.tar.gz
2222222222222222222222222222222222222222222222222222222222222222  fleet-0.3.1-linux-aarch64.tar.gz
3333333333333333333333333333333333333333333333333333333333333333  fleet-0.3.1-macos-x86_64.tar.gz
4444444444444444444444444444444444444444444444444444444444444444  fleet-0.3.1-macos-aarch64.tar.gz
5555555555555555555555555555555555555555555555555555555555555555  fleet-linux-x86_64
";

fn dist(sums: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tmp");
    std::fs::write(d.path().join("SHA256SUMS"), sums).expect("write");
    d
}

fn render(dir: &Path) -> assert_cmd::Command {
    let mut c = fleet(dir);
    c.args(["render", "release", "--dist", "."]);
    c
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn renders_installer_formula_and_pkgbuild_from_the_sums() {
    let d = dist(SUMS);
    render(d.path())
        .args(["--url", "https://dl.example.org/v0.3.1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("4 files rendered, 4 changed"));
    let rb = read(&d.path().join("fleet.rb"));
    assert!(rb.contains(
        "url \"https://dl.example.org/v0.3.1/fleet-0.3.1-macos-aarch64.tar.gz\"\n      sha256 \"4444"
    ));
    let pkgbuild = read(&d.path().join("PKGBUILD"));
    assert!(pkgbuild.contains("sha256sums_aarch64=(2222"), "{pkgbuild}");
    let install = read(&d.path().join("install.sh"));
    assert!(install.contains("release_url=https://dl.example.org/v0.3.1\n"));
    assert!(install.trim_end().ends_with("fleet_install \"$@\""));
    for f in ["install.sh", "fleet.rb", "PKGBUILD", ".SRCINFO"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join(f))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "{f}: everyone downloads it");
    }
    // A second run changes nothing; --check agrees, and catches a hand edit (exit 1).
    render(d.path())
        .args(["--url", "https://dl.example.org/v0.3.1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("4 files rendered, 0 changed"));
    render(d.path())
        .args(["--url", "https://dl.example.org/v0.3.1", "--check"])
        .assert()
        .success();
    std::fs::write(
        d.path().join("PKGBUILD"),
        pkgbuild.replace("pkgrel=1", "pkgrel=2"),
    )
    .expect("edit");
    render(d.path())
        .args(["--url", "https://dl.example.org/v0.3.1", "--check"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("differs:"));
}

#[test]
fn the_default_url_is_the_github_release_under_cargo_tomls_repository() {
    let d = dist(SUMS);
    render(d.path()).assert().success();
    let repository = env!("CARGO_PKG_REPOSITORY");
    assert!(read(&d.path().join("PKGBUILD")).contains(&format!(
        "{repository}/releases/download/v0.3.1/fleet-0.3.1-linux-x86_64.tar.gz"
    )));
}

#[test]
fn no_sums_is_a_usage_error() {
    let d = tempfile::tempdir().expect("tmp");
    render(d.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no `./SHA256SUMS`"));
    fleet(d.path())
        .args(["render", "release"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("needs `--dist DIR`"));
    fleet(d.path())
        .args(["render", "routing", "--dist", "."])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "options of `fleet render release`",
        ));
}

#[test]
fn a_missing_platform_fails_unless_partial() {
    let linux_only: String = SUMS
        .lines()
        .filter(|l| !l.contains("macos"))
        .map(|l| format!("{l}\n"))
        .collect();
    let d = dist(&linux_only);
    render(d.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "`fleet.rb` needs archives for linux-x86_64, linux-aarch64, macos-x86_64, macos-aarch64; SHA256SUMS has none for macos-x86_64, macos-aarch64",
        ));
    assert!(!d.path().join("PKGBUILD").exists(), "nothing written");
    render(d.path())
        .arg("--partial")
        .assert()
        .success()
        .stderr(predicate::str::contains("skipped: `fleet.rb`"));
    assert!(d.path().join("PKGBUILD").exists());
    assert!(!d.path().join("fleet.rb").exists());
}

#[test]
fn bad_sums_and_versions_are_located_errors() {
    let cases = [
        (
            SUMS.replace("0.3.1-linux-x86_64", "0.3-linux-x86_64"),
            "`0.3` is not a release version",
        ),
        (
            SUMS.replace("0.3.1-macos-x86_64", "0.4.0-macos-x86_64"),
            "archives of two versions",
        ),
        (
            format!("{SUMS}zzzz  fleet-0.3.1-linux-x86_64.tar.gz\n"),
            "SHA256SUMS:6:1: error: expected a SHA-256 checksum (64 hex digits), found `zzzz`",
        ),
        (
            SUMS.replace("linux-aarch64", "freebsd-aarch64"),
            "released platform",
        ),
    ];
    for (sums, want) in cases {
        let d = dist(&sums);
        render(d.path())
            .assert()
            .code(2)
            .stderr(predicate::str::contains(want));
    }
    let d = dist(SUMS);
    render(d.path())
        .args(["--url", "file:///tmp"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not an http(s) URL"));
}

#[test]
fn the_formula_passes_ruby_and_the_srcinfo_is_makepkgs() {
    let d = dist(SUMS);
    render(d.path()).assert().success();
    // `ruby -c` only where ruby is (it is not installed for this alone).
    if std::process::Command::new("ruby")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let o = std::process::Command::new("ruby")
            .arg("-c")
            .arg(d.path().join("fleet.rb"))
            .output()
            .expect("ruby");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = std::process::Command::new("bash")
        .arg("-n")
        .arg(d.path().join("PKGBUILD"))
        .output()
        .expect("bash");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = std::process::Command::new("sh")
        .arg("-n")
        .arg(d.path().join("install.sh"))
        .output()
        .expect("sh");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    ensure_tool("makepkg", "makepkg");
    let mk = tempfile::tempdir().expect("tmp");
    std::fs::copy(d.path().join("PKGBUILD"), mk.path().join("PKGBUILD")).expect("copy");
    std::process::Command::new("chmod")
        .args(["-R", "a+rwx"])
        .arg(mk.path())
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
        .arg(format!("HOME={}", mk.path().display()))
        .args([
            "PATH=/usr/bin:/bin",
            "PACMAN=true",
            "makepkg",
            "--printsrcinfo",
        ])
        .current_dir(mk.path())
        .output()
        .expect("makepkg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        read(&d.path().join(".SRCINFO"))
    );
}
