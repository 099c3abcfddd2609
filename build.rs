//! Records the git commit fleet is built from, for `fleet --version`. A build outside a git
//! checkout (a crate tarball) says `unknown`.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FLEET_GIT_COMMIT={commit}");
    // Rebuild when the commit moves (HEAD, and the branch it points to) — not on every source
    // change, which cargo tracks anyway. Git says where those files are: in a worktree `.git`
    // is a file, HEAD is in the worktree's git dir and the branches in the common one.
    println!("cargo:rerun-if-changed=build.rs");
    let Some(git_dir) = git(&["rev-parse", "--git-dir"]) else {
        return;
    };
    let head = Path::new(&git_dir).join("HEAD");
    if !head.is_file() {
        return;
    }
    println!("cargo:rerun-if-changed={}", head.display());
    let common = git(&["rev-parse", "--git-common-dir"]).unwrap_or(git_dir);
    if let Some(r) = std::fs::read_to_string(&head)
        .ok()
        .and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string()))
    {
        println!(
            "cargo:rerun-if-changed={}",
            Path::new(&common).join(r).display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            Path::new(&common).join("packed-refs").display()
        );
    }
}
