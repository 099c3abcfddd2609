//! Records the git commit fleet is built from, for `fleet --version`. A build outside a git
//! checkout (a crate tarball) says `unknown`.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FLEET_GIT_COMMIT={commit}");
    // Rebuild when the commit moves (HEAD, and the branch it points to) — not on every source
    // change, which cargo tracks anyway.
    println!("cargo:rerun-if-changed=build.rs");
    let head = std::path::Path::new(".git/HEAD");
    if head.is_file() {
        println!("cargo:rerun-if-changed=.git/HEAD");
        if let Some(r) = std::fs::read_to_string(head)
            .ok()
            .and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string()))
        {
            println!("cargo:rerun-if-changed=.git/{r}");
            println!("cargo:rerun-if-changed=.git/packed-refs");
        }
    }
}
