//! What host names ssh would connect to, for addresses other programs use (routing
//! endpoints, HTTP probes): an inventory `host` may be an ssh alias (`Host forge` with
//! `HostName 10.0.0.5` in an ssh config) that no HTTP client can resolve.
//!
//! `ssh -G` is the authority, but it is a process per host; a fleet of thousands of nodes is
//! rendered in milliseconds. So the ssh configuration is read first: when no file ssh would
//! read (following `Include`) sets `HostName` or `CanonicalizeHostname`, no alias can rename
//! a host and nothing is spawned. Otherwise each distinct host is asked once per process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Include depth ssh itself allows.
const MAX_DEPTH: usize = 16;

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

fn expand_tilde(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), home()) {
        (Some(rest), Some(h)) => h.join(rest),
        _ => PathBuf::from(p),
    }
}

/// The files ssh reads first: the one given with `-F` (then the system file is skipped),
/// else the user's and the system's.
fn top_files(config: Option<&Path>) -> Vec<(PathBuf, PathBuf)> {
    match config {
        Some(c) => {
            let base = c.parent().map(Path::to_path_buf).unwrap_or_default();
            vec![(c.to_path_buf(), base)]
        }
        None => {
            let mut v = Vec::new();
            if let Some(h) = home() {
                v.push((h.join(".ssh/config"), h.join(".ssh")));
            }
            v.push((
                PathBuf::from("/etc/ssh/ssh_config"),
                PathBuf::from("/etc/ssh"),
            ));
            v
        }
    }
}

/// The keyword of a config line (`Key value` or `Key=value`), lowercased.
fn keyword(line: &str) -> Option<(String, &str)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let rest = line[end..].trim_start_matches(|c: char| c.is_whitespace() || c == '=');
    Some((line[..end].to_ascii_lowercase(), rest))
}

/// Whether `file`, or anything it includes, may rename a host. Unreadable files count as
/// "may" (the safe answer costs only a process per host).
fn may_rename(file: &Path, base: &Path, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return true;
    }
    let text = match std::fs::read(file) {
        Ok(t) => String::from_utf8_lossy(&t).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        Err(_) => return true,
    };
    for line in text.lines() {
        let Some((key, rest)) = keyword(line) else {
            continue;
        };
        match key.as_str() {
            "hostname" | "canonicalizehostname" => return true,
            "include" => {
                for arg in rest.split_whitespace() {
                    let arg = arg.trim_matches('"');
                    let p = expand_tilde(arg);
                    let p = if p.is_absolute() { p } else { base.join(p) };
                    if included(&p).iter().any(|f| may_rename(f, base, depth + 1)) {
                        return true;
                    }
                }
            }
            _ => {}
        }
    }
    false
}

/// The files an `Include` argument may name: itself, or, when its last part has a wildcard,
/// every file of its directory (a superset of the matches, which only costs accuracy in the
/// safe direction).
fn included(p: &Path) -> Vec<PathBuf> {
    let wild = |s: &str| s.contains(['*', '?', '[']);
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
    let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
    if parent
        .to_string_lossy()
        .chars()
        .any(|c| matches!(c, '*' | '?' | '['))
    {
        // A wildcard in a directory part: give up on reading and let ssh answer.
        return vec![PathBuf::from("/\0wildcard-directory")];
    }
    match name {
        Some(n) if wild(&n) => std::fs::read_dir(&parent)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file())
                    .collect()
            })
            .unwrap_or_default(),
        _ => vec![p.to_path_buf()],
    }
}

fn config_may_rename(config: Option<&Path>) -> bool {
    static SEEN: OnceLock<Mutex<HashMap<Option<PathBuf>, bool>>> = OnceLock::new();
    let key = config.map(Path::to_path_buf);
    let seen = SEEN.get_or_init(Default::default);
    if let Some(v) = seen.lock().ok().and_then(|m| m.get(&key).copied()) {
        return v;
    }
    let v = top_files(config)
        .iter()
        .any(|(f, base)| may_rename(f, base, 0));
    if let Ok(mut m) = seen.lock() {
        m.insert(key, v);
    }
    v
}

fn ssh_hostname(config: Option<&Path>, host: &str) -> String {
    let mut cmd = std::process::Command::new("ssh");
    if let Some(c) = config {
        cmd.arg("-F").arg(c);
    }
    // `--` ends options: a host that starts with `-` is a name, never a flag.
    let out = cmd
        .arg("-G")
        .arg("--")
        .arg(host)
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("hostname ").map(|v| v.trim().to_string()))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| host.to_string()),
        _ => host.to_string(),
    }
}

/// The host names ssh would connect to for `hosts` under `config` (`-F`; `None`: the
/// user's and the system's files), in order. A host ssh cannot resolve stays as written.
pub fn hostnames(config: Option<&Path>, hosts: &[&str]) -> Vec<String> {
    if !config_may_rename(config) {
        return hosts.iter().map(|h| h.to_string()).collect();
    }
    type Cache = Mutex<HashMap<(Option<PathBuf>, String), String>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = |h: &str| (config.map(Path::to_path_buf), h.to_string());
    let mut todo: Vec<&str> = hosts
        .iter()
        .copied()
        .filter(|h| {
            cache
                .lock()
                .map(|c| !c.contains_key(&key(h)))
                .unwrap_or(true)
        })
        .collect();
    todo.sort_unstable();
    todo.dedup();
    // A few at a time: each is a short-lived process.
    for chunk in todo.chunks(8) {
        let found: Vec<(String, String)> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|h| s.spawn(move || (h.to_string(), ssh_hostname(config, h))))
                .collect();
            handles.into_iter().filter_map(|j| j.join().ok()).collect()
        });
        if let Ok(mut c) = cache.lock() {
            for (h, name) in found {
                c.insert(key(&h), name);
            }
        }
    }
    let c = cache.lock().ok();
    hosts
        .iter()
        .map(|h| {
            c.as_ref()
                .and_then(|c| c.get(&key(h)).cloned())
                .unwrap_or_else(|| h.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_in_both_spellings() {
        assert_eq!(
            keyword("  HostName 10.0.0.1"),
            Some(("hostname".into(), "10.0.0.1"))
        );
        assert_eq!(
            keyword("Include=conf.d/*"),
            Some(("include".into(), "conf.d/*"))
        );
        assert_eq!(keyword("# HostName x"), None);
    }

    #[test]
    fn a_config_without_hostname_renames_nothing_and_spawns_nothing() {
        let d = tempfile::tempdir().expect("tmp");
        let c = d.path().join("cfg");
        std::fs::write(&c, "Host *\n  User ops\n  Include sub/*.conf\n").expect("w");
        std::fs::create_dir(d.path().join("sub")).expect("mkdir");
        std::fs::write(d.path().join("sub/a.conf"), "Port 22\n").expect("w");
        assert!(!config_may_rename(Some(&c)));
        std::fs::write(d.path().join("sub/b.conf"), "Host x\n HostName 10.9.9.9\n").expect("w");
        assert!(may_rename(&c, d.path(), 0), "an included file renames");
    }

    #[test]
    fn an_alias_resolves_through_ssh() {
        let d = tempfile::tempdir().expect("tmp");
        let c = d.path().join("cfg");
        std::fs::write(&c, "Host box2\n  HostName 127.0.0.2\n").expect("w");
        assert_eq!(
            hostnames(Some(&c), &["box2", "other.lan", "-oProxyCommand=x"]),
            vec!["127.0.0.2", "other.lan", "-oProxyCommand=x"]
        );
    }
}
