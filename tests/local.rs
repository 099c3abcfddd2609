//! `file`, `copy`, `template` and `lineinfile` on this machine (`connection: local`), in a
//! temp directory: no root, no sshd. Each playbook three ways: `--check` predicts exactly the
//! changes of the real run, the real run makes them, a second run changes nothing.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use support::{build_repo, crate_root, parse_case};

fn repo(dir: &Path, playbook: &str, files: &str) -> tempfile::TempDir {
    let inv = format!(
        "fleet: {{ name: t, hq: me, hq_url: \"http://127.0.0.1:1\" }}\nvars: {{ d: \"{}\" }}\nnodes:\n  me: {{ host: localhost, role: common, vars: {{ connection: local }} }}\n",
        dir.display()
    );
    build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "local",
            &format!("--- inventory/fleet.yaml\n{inv}--- playbooks/site.yaml\n{playbook}{files}"),
        ),
    )
}

fn changed(events: &[serde_json::Value]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e["status"] == "changed")
        .map(|e| format!("{} {}", e["task"], e["item"]))
        .collect()
}

fn three_ways(repo: &Path, expect: usize) {
    let (code, check, err) = support::apply_json(repo, "playbooks/site.yaml", &["--check"]);
    assert_eq!(code, 0, "check: {err}\n{check:?}");
    let (code, real, err) = support::apply_json(repo, "playbooks/site.yaml", &[]);
    assert_eq!(code, 0, "real: {err}\n{real:?}");
    assert_eq!(
        changed(&check),
        changed(&real),
        "--check predicted other changes"
    );
    assert_eq!(changed(&real).len(), expect, "{:?}", changed(&real));
    let (code, again, _) = support::apply_json(repo, "playbooks/site.yaml", &[]);
    assert_eq!(code, 0);
    assert!(
        changed(&again).is_empty(),
        "second run: {:?}",
        changed(&again)
    );
    let (_, check_again, _) = support::apply_json(repo, "playbooks/site.yaml", &["--check"]);
    assert!(changed(&check_again).is_empty());
}

#[test]
fn files_copies_templates_and_lines_here() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("env"), "A=1\nOLD=yes\n").expect("env");
    let pb = concat!(
        "- name: local\n  hosts: all\n  tasks:\n",
        "    - { name: dir, file: { path: \"{{ d }}/app/conf.d\", state: directory, mode: \"0750\" } }\n",
        "    - { name: copy, copy: { content: \"x = 1\\n\", dest: \"{{ d }}/app/conf.d/x.conf\", mode: \"0640\" } }\n",
        "    - { name: binary, copy: { src: blob.bin, dest: \"{{ d }}/app/blob.bin\" } }\n",
        "    - { name: template, template: { src: app.j2, dest: \"{{ d }}/app/app.conf\" } }\n",
        "    - { name: link, file: { path: \"{{ d }}/current\", src: \"{{ d }}/app\", state: link } }\n",
        "    - { name: touch, file: { path: \"{{ d }}/app/stamp\", state: touch, mode: \"0600\" } }\n",
        "    - { name: replace, lineinfile: { path: \"{{ d }}/env\", regexp: \"^OLD=\", line: \"NEW=1\" } }\n",
        "    - { name: append, lineinfile: { path: \"{{ d }}/env\", line: \"B=2\" } }\n",
        "    - { name: create, lineinfile: { path: \"{{ d }}/app/lines\", line: \"first\", create: true } }\n",
        "    - { name: gone, file: { path: \"{{ d }}/app/never\", state: absent } }\n",
    );
    // A file too large to travel inside the script, and not text: it streams on stdin.
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let r = repo(
        dir.path(),
        pb,
        "--- templates/app.j2\nname = {{ node.name }}\n",
    );
    std::fs::create_dir_all(r.path().join("files")).expect("files");
    std::fs::write(r.path().join("files/blob.bin"), &blob).expect("blob");
    three_ways(r.path(), 9);
    let d = dir.path();
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(d.join(p))
            .expect("meta")
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("app/conf.d"), 0o750);
    assert_eq!(mode("app/conf.d/x.conf"), 0o640);
    assert_eq!(mode("app/stamp"), 0o600);
    assert_eq!(std::fs::read(d.join("app/blob.bin")).expect("blob"), blob);
    assert_eq!(
        std::fs::read_to_string(d.join("app/app.conf")).expect("tmpl"),
        "name = me\n"
    );
    assert_eq!(
        std::fs::read_link(d.join("current")).expect("link"),
        d.join("app")
    );
    assert_eq!(
        std::fs::read_to_string(d.join("env")).expect("env"),
        "A=1\nNEW=1\nB=2\n"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("app/lines")).expect("lines"),
        "first\n"
    );
    // Nothing else was left beside the files.
    let leftovers: Vec<_> = walk(d)
        .into_iter()
        .filter(|p| p.contains(".fleet."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(d: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).expect("dir").flatten() {
        let p = e.path();
        out.push(p.display().to_string());
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        }
    }
    out
}
