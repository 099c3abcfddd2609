//! Hostile values in every string argument of every module, through `fleet apply --check`
//! and a real run against a real sshd test host (as root): no value ever runs as code on the
//! host (the MARK files are never created), and where a value is data — a path, file
//! content, a line, a link target, an environment value, an argument, a request body — it
//! arrives byte for byte. Values also reach modules through `register` + `loop` from a file
//! on the host. Every hostile task ignores errors: a value a module refuses is fine, one it
//! runs is not.

mod support;

use std::collections::BTreeMap;

use support::{Hosts, build_repo, crate_root, parse_case};

const MARK: &str = "fleet-mark";

/// A well-formed public key (an authorized_key task's options are the hostile part).
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINLmsPu4QhDy2LXaWCxuBN4bcZAg5M8FswK2snhyG7eu k";

/// The hostile values; `mark` is where a successful injection would create a file.
/// A well-formed sha256 that matches nothing.
const SUM64: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

fn values(mark: &str) -> Vec<String> {
    vec![
        format!("$(touch {mark})"),
        format!("`touch {mark}`"),
        format!("\"; touch {mark}; \""),
        format!("'; touch {mark}; '"),
        format!("\\\"$(touch {mark})\\"),
        format!("x\n$(touch {mark})"),
        format!("x; touch {mark} &"),
        "*".to_string(),
        "-rf".to_string(),
        " two  spaces ".to_string(),
        "üñï ☃ 日本 \u{7f}".to_string(),
        format!("${{IFS}}touch${{IFS}}{mark}"),
    ]
}

fn items(vals: &[String]) -> String {
    serde_json::to_string(
        &vals
            .iter()
            .enumerate()
            .map(|(i, v)| serde_json::json!({ "i": i, "v": v }))
            .collect::<Vec<_>>(),
    )
    .expect("json")
}

/// Files below `dir` on host 1 as name → content (lossless for UTF-8 names and contents).
fn listing(hosts: &Hosts, dir: &str, contents: bool) -> BTreeMap<String, String> {
    let py = if contents {
        "import os,json,sys; d=sys.argv[1]; print(json.dumps({f: open(os.path.join(d,f),'rb').read().decode('utf-8','surrogateescape') for f in os.listdir(d)} if os.path.isdir(d) else {}))"
    } else {
        "import os,json,sys; d=sys.argv[1]; print(json.dumps({f: '' for f in os.listdir(d)} if os.path.isdir(d) else {}))"
    };
    let out = hosts.sh(
        1,
        &format!("python3 -c {} {dir}", fleet::script::shquote(py)),
    );
    serde_json::from_str(out.trim()).expect("listing json")
}

fn readlinks(hosts: &Hosts, dir: &str) -> BTreeMap<String, String> {
    let py = "import os,json,sys; d=sys.argv[1]; print(json.dumps({f: os.readlink(os.path.join(d,f)) for f in os.listdir(d)} if os.path.isdir(d) else {}))";
    let out = hosts.sh(
        1,
        &format!("python3 -c {} {dir}", fleet::script::shquote(py)),
    );
    serde_json::from_str(out.trim()).expect("links json")
}

fn no_mark(hosts: &Hosts, when: &str) {
    let found = hosts.sh(
        1,
        &format!(
            "find / -xdev \\( -path /proc -o -path /sys \\) -prune -o -name '{MARK}' -print 2>/dev/null; true"
        ),
    );
    assert!(
        found.trim().is_empty(),
        "{when}: a hostile value ran as code on the host: {found}"
    );
}

#[test]
fn no_value_runs_as_code_and_data_arrives_byte_for_byte() {
    let hosts = Hosts::up(1);
    hosts.install_standins(1);
    hosts.install(1, "tests/standins/crontab", "/usr/local/bin/crontab");
    hosts.install(1, "tests/standins/docker", "/usr/local/bin/docker");
    hosts.sh(
        1,
        "mkdir -p /var/lib/standin-systemd && touch /var/lib/standin-systemd/docker.active",
    );
    let (hook, bodies) = support::webhook();
    let abs = values(&format!("/tmp/{MARK}"));
    // Values for file names: a relative mark (a script's working directory is the login's
    // home), no `/`.
    let rel = values(MARK);
    // What a registered command prints, one value per line (no line breaks inside).
    let lines: Vec<String> = abs.iter().filter(|v| !v.contains('\n')).cloned().collect();
    hosts.sh(
        1,
        &format!(
            "mkdir -p /srv/in && printf '%s\\n' {} > /srv/in/lines",
            lines
                .iter()
                .map(|l| fleet::script::shquote(l))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    );
    // The values reach fleet at run time, as the answer of an HTTP request the host makes (a
    // read, so it runs in check mode too): no check before the run can refuse them, the
    // modules must.
    let server = support::http_routes(vec![("/abs.json", items(&abs)), ("/rel.json", items(&rel))]);
    let t = "ignore_errors: true";
    let a = "loop: \"{{ abs.stdout | from_json }}\"";
    let r = "loop: \"{{ rel.stdout | from_json }}\"";
    let pb = [
        "- name: hostile\n  hosts: all\n  tasks:".to_string(),
        format!("    - {{ name: read abs, http: {{ url: \"{server}/abs.json\" }}, register: abs }}"),
        format!("    - {{ name: read rel, http: {{ url: \"{server}/rel.json\" }}, register: rel }}"),
        "    - { name: dirs, file: { path: \"/srv/h/{{ item }}\", state: directory }, loop: [touch, dirs, link, copy, names, tmpl, lines, argv, env, shenv, cwd, reg, sub, git, sysctl, units] }".into(),
        // file
        format!("    - {{ name: touch, file: {{ path: \"/srv/h/touch/{{{{ item.v }}}}\", state: touch }}, {r}, {t} }}"),
        format!("    - {{ name: mkdirs, file: {{ path: \"/srv/h/dirs/{{{{ item.v }}}}\", state: directory, mode: \"0750\" }}, {r}, {t} }}"),
        format!("    - {{ name: link, file: {{ path: \"/srv/h/link/{{{{ item.i }}}}\", src: \"{{{{ item.v }}}}\", state: link }}, {a}, {t} }}"),
        format!("    - {{ name: absent, file: {{ path: \"/srv/h/gone/{{{{ item.v }}}}\", state: absent }}, {r}, {t} }}"),
        format!("    - {{ name: file attrs, file: {{ path: /srv/h/touch/x, state: touch, owner: \"{{{{ item.v }}}}\", group: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: file mode, file: {{ path: /srv/h/touch/y, state: touch, mode: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: file state, file: {{ path: /srv/h/touch/z, state: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        // copy
        format!("    - {{ name: copy content, copy: {{ content: \"{{{{ item.v }}}}\", dest: \"/srv/h/copy/{{{{ item.i }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: copy name, copy: {{ content: x, dest: \"/srv/h/names/{{{{ item.v }}}}\" }}, {r}, {t} }}"),
        format!("    - {{ name: copy src, copy: {{ src: \"{{{{ item.v }}}}\", dest: /srv/h/copy/src }}, {a}, {t} }}"),
        format!("    - {{ name: copy attrs, copy: {{ content: x, dest: /srv/h/copy/attrs, owner: \"{{{{ item.v }}}}\", group: \"{{{{ item.v }}}}\", mode: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        // template
        format!("    - {{ name: template dest, template: {{ src: echo.j2, dest: \"/srv/h/tmpl/{{{{ item.v }}}}\" }}, {r}, {t} }}"),
        format!("    - {{ name: template src, template: {{ src: \"{{{{ item.v }}}}\", dest: /srv/h/tmpl/src }}, {a}, {t} }}"),
        // lineinfile
        format!("    - {{ name: line, lineinfile: {{ path: \"/srv/h/lines/{{{{ item.i }}}}\", line: \"{{{{ item.v }}}}\", create: true }}, {a}, {t} }}"),
        format!("    - {{ name: regexp file, copy: {{ content: \"a\\n\", dest: \"/srv/h/sub/r{{{{ item.i }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: line regexp, lineinfile: {{ path: \"/srv/h/sub/r{{{{ item.i }}}}\", regexp: \"{{{{ item.v }}}}\", line: replaced }}, {a}, {t} }}"),
        format!("    - {{ name: line path, lineinfile: {{ path: \"/srv/h/names/l{{{{ item.v }}}}\", line: x, create: true, mode: \"0600\" }}, {r}, {t} }}"),
        // command and shell
        format!("    - {{ name: argv, command: {{ argv: [sh, -c, 'printf %s \"$1\" > \"/srv/h/argv/$2\"', sh, \"{{{{ item.v }}}}\", \"{{{{ item.i }}}}\"] }}, {a}, {t} }}"),
        format!("    - {{ name: cmd, command: {{ cmd: \"echo {{{{ item.v }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: env, command: {{ argv: [sh, -c, 'printf %s \"$V\" > \"/srv/h/env/$1\"', sh, \"{{{{ item.i }}}}\"], env: {{ V: \"{{{{ item.v }}}}\" }} }}, {a}, {t} }}"),
        format!("    - {{ name: cwd, command: {{ argv: [sh, -c, 'pwd > \"/srv/h/cwd/$1\"', sh, \"{{{{ item.i }}}}\"], chdir: \"/srv/h/dirs/{{{{ item.v }}}}\" }}, {r}, {t} }}"),
        format!("    - {{ name: guards, command: {{ cmd: \"true\", creates: \"/srv/h/none/{{{{ item.v }}}}\", removes: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: shell env, shell: {{ cmd: 'printf %s \"$V\" > /srv/h/shenv/{{{{ item.i }}}}', env: {{ V: \"{{{{ item.v }}}}\" }}, chdir: /srv/h }}, {a}, {t} }}"),
        format!("    - {{ name: shell guards, shell: {{ cmd: \"true\", creates: \"{{{{ item.v }}}}\", chdir: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        // package, service, user
        format!("    - {{ name: package, package: {{ name: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: packages, package: {{ name: [fleet-demo-ok, \"{{{{ item.v }}}}\"], state: latest }}, {a}, {t} }}"),
        format!("    - {{ name: service, service: {{ name: \"{{{{ item.v }}}}\", state: started, enabled: true }}, {a}, {t} }}"),
        format!("    - {{ name: user, user: {{ name: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: user fields, user: {{ name: fleethostile, home: \"/srv/h/sub/{{{{ item.v }}}}\", shell: \"{{{{ item.v }}}}\", groups: [\"{{{{ item.v }}}}\"] }}, {a}, {t} }}"),
        // network modules: nothing listens on port 1
        format!("    - {{ name: get_url, get_url: {{ url: \"http://127.0.0.1:1/{{{{ item.v }}}}\", dest: \"/srv/h/names/g{{{{ item.v }}}}\", sha256: \"{{{{ item.v }}}}\" }}, {r}, {t} }}"),
        format!("    - {{ name: wait_for host, wait_for: {{ host: \"{{{{ item.v }}}}\", port: 1, timeout: 1s }}, {a}, {t} }}"),
        format!("    - {{ name: wait_for url, wait_for: {{ url: \"http://127.0.0.1:1/{{{{ item.v }}}}\", timeout: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: wait_for closed, wait_for: {{ url: \"http://127.0.0.1:1/{{{{ item.i }}}}\", timeout: 1s }}, {a}, {t} }}"),
        format!("    - {{ name: http, http: {{ url: \"{hook}?{{{{ item.i }}}}\", method: POST, body: \"{{{{ item.v }}}}\", headers: {{ X-V: \"{{{{ item.v }}}}\" }}, timeout: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: http body, http: {{ url: \"{hook}?{{{{ item.i }}}}\", method: POST, body: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: http url, http: {{ url: \"http://127.0.0.1:1/{{{{ item.v }}}}\", method: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: ollama, ollama_model: {{ name: \"{{{{ item.v }}}}\", url: \"http://127.0.0.1:1/{{{{ item.v }}}}\", state: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: ollama url, ollama_model: {{ name: m, url: \"http://127.0.0.1:1/{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: agent, fleet_agent: {{ hq_url: \"http://127.0.0.1:1/{{{{ item.v }}}}\", token_file: \"{{{{ item.v }}}}\", interval: \"{{{{ item.v }}}}\", binary: \"{{{{ item.v }}}}\", user: \"{{{{ item.v }}}}\", source: \"{{{{ item.v }}}}\", token_source: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: agent url, fleet_agent: {{ hq_url: \"http://127.0.0.1:1/{{{{ item.v }}}}\", binary: /srv/h/sub/fleet, token_file: /srv/h/sub/agent.token, token_source: /nonexistent }}, {a}, {t} }}"),
        format!("    - {{ name: agent download, fleet_agent: {{ hq_url: \"http://127.0.0.1:1/\", binary: /srv/h/sub/fleet, token_file: /srv/h/sub/agent.token, token_source: /nonexistent, url: \"http://127.0.0.1:1/{{{{ item.v }}}}-{{os}}\", dist: \"{{{{ item.v }}}}\", sha256: {{ linux-x86_64: \"{SUM64}\", linux-aarch64: \"{SUM64}\" }} }}, {a}, {t} }}"),
        format!("    - {{ name: agent sums, fleet_agent: {{ hq_url: \"http://127.0.0.1:1/\", binary: /srv/h/sub/fleet, token_file: /srv/h/sub/agent.token, token_source: /nonexistent, url: \"http://127.0.0.1:1/f\", sha256: {{ linux-x86_64: \"{{{{ item.v }}}}\", linux-aarch64: \"{{{{ item.v }}}}\" }} }}, {a}, {t} }}"),
        format!("    - {{ name: debug, debug: {{ msg: \"{{{{ item.v }}}}\" }}, {a} }}"),
        // the modules Ansible users reach for
        format!("    - {{ name: git, git: {{ repo: \"{{{{ item.v }}}}\", dest: \"/srv/h/git/{{{{ item.i }}}}\", version: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: git dest, git: {{ repo: /srv/none.git, dest: \"/srv/h/names/git{{{{ item.v }}}}\", depth: \"{{{{ item.v }}}}\" }}, {r}, {t} }}"),
        format!("    - {{ name: unarchive, unarchive: {{ src: \"{{{{ item.v }}}}\", dest: \"/srv/h/dirs/{{{{ item.v }}}}\", remote_src: true, creates: \"{{{{ item.v }}}}\" }}, {r}, {t} }}"),
        format!("    - {{ name: unarchive src, unarchive: {{ src: \"{{{{ item.v }}}}\", dest: /srv/h/sub }}, {a}, {t} }}"),
        format!("    - {{ name: cron, cron: {{ name: \"{{{{ item.v }}}}\", job: \"{{{{ item.v }}}}\", minute: \"{{{{ item.v }}}}\", special_time: \"{{{{ item.v }}}}\", user: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: cron data, cron: {{ name: \"{{{{ item.v }}}}\", job: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: cron env, cron: {{ name: \"{{{{ item.v }}}}\", env: true, job: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: authorized_key, authorized_key: {{ user: \"{{{{ item.v }}}}\", key: \"{{{{ item.v }}}}\", key_options: \"{{{{ item.v }}}}\", path: \"/srv/h/names/k{{{{ item.v }}}}\", state: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: authorized_key opts, authorized_key: {{ user: root, key: \"{KEY}\", key_options: \"{{{{ item.v }}}}\", path: \"/srv/h/sub/keys{{{{ item.i }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: systemd_unit, systemd_unit: {{ name: \"{{{{ item.v }}}}\", content: \"{{{{ item.v }}}}\", dir: \"/srv/h/dirs/{{{{ item.v }}}}\", state: \"{{{{ item.v }}}}\" }}, {r}, {t} }}"),
        format!("    - {{ name: systemd_unit content, systemd_unit: {{ name: \"u{{{{ item.i }}}}\", content: \"{{{{ item.v }}}}\", dir: /srv/h/units }}, {a}, {t} }}"),
        format!("    - {{ name: docker_container, docker_container: {{ name: \"{{{{ item.v }}}}\", image: \"{{{{ item.v }}}}\", ports: [\"{{{{ item.v }}}}\"], env: {{ V: \"{{{{ item.v }}}}\" }}, volumes: [\"{{{{ item.v }}}}\"], command: [\"{{{{ item.v }}}}\"], bind_address: \"{{{{ item.v }}}}\", restart_policy: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: docker data, docker_container: {{ name: \"hc{{{{ item.i }}}}\", image: busybox, env: {{ V: \"{{{{ item.v }}}}\" }}, command: [sh, \"{{{{ item.v }}}}\"], volumes: [\"/srv/h/{{{{ item.i }}}}:/x\"] }}, {a}, {t} }}"),
        format!("    - {{ name: docker_compose, docker_compose: {{ project_src: \"/srv/h/dirs/{{{{ item.v }}}}\", files: [\"{{{{ item.v }}}}\"], project_name: \"{{{{ item.v }}}}\" }}, {r}, {t} }}"),
        format!("    - {{ name: pip, pip: {{ name: \"{{{{ item.v }}}}\", virtualenv: \"/srv/h/names/venv{{{{ item.v }}}}\", python: \"{{{{ item.v }}}}\", index_url: \"{{{{ item.v }}}}\", find_links: \"{{{{ item.v }}}}\" }}, {r}, {t} }}"),
        format!("    - {{ name: pip python, pip: {{ name: fleetdemo, virtualenv: \"/srv/h/names/venv{{{{ item.v }}}}\", python: \"{{{{ item.v }}}}\" }}, {r}, {t} }}"),
        format!("    - {{ name: uv, uv: {{ name: \"{{{{ item.v }}}}\", find_links: \"{{{{ item.v }}}}\", index_url: \"{{{{ item.v }}}}\", state: \"{{{{ item.v }}}}\" }}, {a}, {t} }}"),
        format!("    - {{ name: sysctl, sysctl: {{ name: \"{{{{ item.v }}}}\", value: \"{{{{ item.v }}}}\", sysctl_file: \"/srv/h/names/s{{{{ item.v }}}}\", reload: false }}, {r}, {t} }}"),
        format!("    - {{ name: sysctl data, sysctl: {{ name: kernel.domainname, value: \"{{{{ item.v }}}}\", sysctl_file: \"/srv/h/sysctl/{{{{ item.i }}}}\", reload: false }}, {a}, {t} }}"),
        // values that come from the host through register + loop
        "    - { name: read lines, shell: cat /srv/in/lines, register: got, changed_when: false }".into(),
        format!("    - {{ name: reg package, package: {{ name: \"{{{{ item }}}}\" }}, loop: \"{{{{ got.stdout_lines }}}}\", {t} }}"),
        format!("    - {{ name: reg copy, copy: {{ content: \"{{{{ item }}}}\", dest: \"/srv/h/reg/{{{{ item | sha256 }}}}\" }}, loop: \"{{{{ got.stdout_lines }}}}\", {t} }}"),
        format!("    - {{ name: reg argv, command: {{ argv: [sh, -c, 'printf %s \"$1\" > \"/srv/h/reg/a-$2\"', sh, \"{{{{ item }}}}\", \"{{{{ item | sha256 }}}}\"] }}, loop: \"{{{{ got.stdout_lines }}}}\", {t} }}"),
        format!("    - {{ name: reg service, service: {{ name: \"{{{{ item }}}}\", state: restarted }}, loop: \"{{{{ got.stdout_lines }}}}\", {t} }}"),
        format!("    - {{ name: reg wait, wait_for: {{ host: \"{{{{ item }}}}\", port: 1, timeout: 1s }}, loop: \"{{{{ got.stdout_lines }}}}\", {t} }}"),
    ]
    .join("\n")
        + "\n";
    let inv = format!(
        "fleet: {{ name: t, hq: h1, hq_url: \"http://127.0.0.1:1\", ssh_config: \"{}\" }}\nnodes:\n  h1: {{ host: 127.0.0.1, role: common, vars: {{ ssh_port: {} }} }}\n",
        hosts.ssh_config().display(),
        hosts.port(1)
    );
    let repo = build_repo(
        &crate_root().join("tests/corpus/base"),
        &parse_case(
            "hostile",
            &format!(
                "--- inventory/fleet.yaml\n{inv}--- playbooks/site.yaml\n{pb}--- templates/echo.j2\n{{{{ item.v }}}}"
            ),
        ),
    );

    // Check mode: nothing runs, nothing is created.
    let (code, check, stderr) =
        support::apply_json(repo.path(), "playbooks/site.yaml", &["--check"]);
    assert!(code == 0 || code == 1, "{stderr}");
    assert!(!check.is_empty(), "{stderr}");
    no_mark(&hosts, "check mode");
    assert_eq!(
        hosts.sh(1, "ls -A /srv/h 2>/dev/null | wc -l").trim(),
        "0",
        "a check run created files"
    );

    // A real run.
    let (code, real, stderr) = support::apply_json(repo.path(), "playbooks/site.yaml", &[]);
    assert!(code == 0 || code == 1, "{stderr}");
    no_mark(&hosts, "real run");
    let status = |task: &str| -> Vec<String> {
        real.iter()
            .filter(|e| e["task"] == task)
            .map(|e| e["status"].as_str().unwrap_or("").to_string())
            .collect()
    };
    // Paths are data: every hostile name exists exactly.
    let expect_names: BTreeMap<String, String> =
        rel.iter().map(|v| (v.clone(), String::new())).collect();
    assert_eq!(
        listing(&hosts, "/srv/h/touch", false)
            .into_keys()
            .filter(|k| k != "x" && k != "y")
            .collect::<Vec<_>>(),
        expect_names.keys().cloned().collect::<Vec<_>>()
    );
    assert_eq!(listing(&hosts, "/srv/h/dirs", false), expect_names);
    assert_eq!(
        listing(&hosts, "/srv/h/tmpl", true),
        rel.iter().map(|v| (v.clone(), v.clone())).collect()
    );
    let names = listing(&hosts, "/srv/h/names", false);
    for v in &rel {
        assert!(names.contains_key(v.as_str()), "copy dest {v:?}: {names:?}");
        assert!(
            names.contains_key(&format!("l{v}")),
            "lineinfile path {v:?}: {names:?}"
        );
    }
    // Contents, link targets, arguments and environment values are data.
    let by_index = |v: &[String], keep: &dyn Fn(&str) -> bool| -> BTreeMap<String, String> {
        v.iter()
            .enumerate()
            .filter(|(_, v)| keep(v))
            .map(|(i, v)| (i.to_string(), v.clone()))
            .collect()
    };
    let all = |_: &str| true;
    assert_eq!(listing(&hosts, "/srv/h/copy", true), by_index(&abs, &all));
    assert_eq!(readlinks(&hosts, "/srv/h/link"), by_index(&abs, &all));
    assert_eq!(listing(&hosts, "/srv/h/argv", true), by_index(&abs, &all));
    assert_eq!(listing(&hosts, "/srv/h/env", true), by_index(&abs, &all));
    assert_eq!(listing(&hosts, "/srv/h/shenv", true), by_index(&abs, &all));
    // One line each, a line break refused.
    let one_line = |v: &str| !v.contains('\n');
    assert_eq!(
        listing(&hosts, "/srv/h/lines", true),
        by_index(&abs, &one_line)
            .into_iter()
            .map(|(k, v)| (k, format!("{v}\n")))
            .collect()
    );
    assert_eq!(
        listing(&hosts, "/srv/h/cwd", true),
        by_index(&rel, &all)
            .into_iter()
            .map(|(k, v)| (k, format!("/srv/h/dirs/{v}\n")))
            .collect()
    );
    // Request bodies arrive as sent.
    let got = bodies.lock().expect("bodies").clone();
    for v in &abs {
        assert!(
            got.iter().any(|b| b == v),
            "http body {v:?} not received as sent: {got:?}"
        );
    }
    // Values from the host, through register + loop.
    let reg = listing(&hosts, "/srv/h/reg", true);
    for l in &lines {
        let sum = fleet::util::sha256_hex(l.as_bytes());
        assert_eq!(reg.get(&sum), Some(l), "reg copy of {l:?}");
        assert_eq!(reg.get(&format!("a-{sum}")), Some(l), "reg argv of {l:?}");
    }
    // Nothing listens on port 1: waiting for it never succeeds.
    for task in [
        "wait_for host",
        "wait_for url",
        "wait_for closed",
        "reg wait",
    ] {
        let s = status(task);
        assert!(
            !s.is_empty() && s.iter().all(|s| s == "failed"),
            "{task}: {s:?}"
        );
    }
    // Refused values are refused, not run: package names that no manager takes fail.
    assert!(
        status("package").iter().all(|s| s == "failed"),
        "{:?}",
        status("package")
    );
    assert!(status("reg package").iter().all(|s| s == "failed"));
    // Cron entries, unit files, sysctl values and container environments hold the values as
    // data (a cron name or job with a control character is refused; sysctl reads any
    // whitespace as one space).
    let crontab = hosts.sh(1, "crontab -l");
    for v in abs.iter().filter(|v| !v.chars().any(char::is_control)) {
        assert!(
            crontab.lines().any(|l| l == format!("#fleet: {v}"))
                && crontab.lines().any(|l| l == format!("* * * * * {v}")),
            "cron entry {v:?}: {crontab}"
        );
    }
    assert_eq!(
        listing(&hosts, "/srv/h/units", true),
        by_index(&abs, &all)
            .into_iter()
            .map(|(k, v)| (format!("u{k}.service"), v))
            .collect()
    );
    assert_eq!(
        listing(&hosts, "/srv/h/sysctl", true),
        by_index(&abs, &all)
            .into_iter()
            .map(|(k, v)| (
                k,
                format!(
                    "kernel.domainname = {}\n",
                    v.split_whitespace().collect::<Vec<_>>().join(" ")
                )
            ))
            .collect()
    );
    let containers = listing(&hosts, "/var/lib/standin-docker/containers", true);
    for (i, v) in abs.iter().enumerate() {
        let c: serde_json::Value = serde_json::from_str(
            containers
                .get(&format!("hc{i}.json"))
                .unwrap_or_else(|| panic!("container hc{i} for {v:?}: {containers:?}")),
        )
        .expect("container JSON");
        assert_eq!(
            c["Config"]["Env"].as_array().and_then(|e| e.last()),
            Some(&serde_json::json!(format!("V={v}")))
        );
        assert_eq!(c["Config"]["Cmd"], serde_json::json!(["sh", v]));
    }
    for task in [
        "git",
        "git dest",
        "unarchive",
        "unarchive src",
        "pip",
        "pip python",
        "uv",
        "sysctl",
    ] {
        let s = status(task);
        assert!(
            !s.is_empty() && s.iter().all(|s| s == "failed"),
            "{task}: {s:?}"
        );
    }
    no_mark(&hosts, "after the checks");
}
