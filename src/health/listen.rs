//! The listening-socket audit of `fleet check --deep` (issue 16, "private by default"): what a
//! node listens on, over SSH (`ss -Hltnp` on Linux, `lsof -nP -iTCP -sTCP:LISTEN` on macOS),
//! judged against what its role allows. A TCP port is fine on loopback or on one of the node's
//! fleet addresses; on every interface (`0.0.0.0`, `::`, `*`) or any other address it is open
//! beyond the fleet network, unless it is the SSH port or one the node's variables open
//! explicitly (`ollama_bind: 0.0.0.0`, `hq_bind: 0.0.0.0`, `open_ports: [8080]`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::Serialize;

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    /// The local address as the tool printed it, brackets and zone removed (`*` for "any").
    pub addr: String,
    /// The port.
    pub port: u16,
    /// The process that holds it, when the tool could tell.
    pub process: Option<String>,
    /// Its pid.
    pub pid: Option<u32>,
}

impl Listener {
    /// Bound to every interface.
    pub fn wildcard(&self) -> bool {
        self.addr == "*"
            || self
                .addr
                .parse::<IpAddr>()
                .is_ok_and(|a| a.is_unspecified())
    }

    /// Bound to a loopback address (an IPv4-mapped one too).
    pub fn loopback(&self) -> bool {
        match self.addr.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => a.is_loopback(),
            Ok(IpAddr::V6(a)) => {
                a.is_loopback() || a.to_ipv4_mapped().is_some_and(|m| m.is_loopback())
            }
            Err(_) => false,
        }
    }

    /// `0.0.0.0:8000 (python3, pid 4242)`.
    pub fn describe(&self) -> String {
        let addr = if self.addr.contains(':') {
            format!("[{}]", self.addr)
        } else {
            self.addr.clone()
        };
        let who = match (&self.process, self.pid) {
            (Some(p), Some(pid)) => format!(" ({p}, pid {pid})"),
            (Some(p), None) => format!(" ({p})"),
            (None, Some(pid)) => format!(" (pid {pid})"),
            (None, None) => " (process unknown)".to_string(),
        };
        format!("{addr}:{}{who}", self.port)
    }
}

/// The remote command: a marker line naming the format, then the tool's output. `sudo -n`
/// when it needs no password, so processes of other users are named too.
pub const COMMAND: &str = r#"S=; if [ "$(id -u)" != 0 ] && sudo -n true 2>/dev/null; then S="sudo -n"; fi
if [ "$(uname -s)" = Darwin ]; then echo '#lsof'; $S lsof -nP -iTCP -sTCP:LISTEN
else echo '#ss'; $S ss -Hltnp; fi"#;

/// Splits `host:port` as `ss` and `lsof` print it: `0.0.0.0:22`, `[::]:22`, `*:22`,
/// `127.0.0.53%lo:53`, `[fe80::1%eth0]:123`.
fn split_addr(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.split('%').next().unwrap_or(host);
    let host = match host.parse::<IpAddr>() {
        Ok(a) => a.to_string(),
        Err(_) => host.to_string(),
    };
    Some((host, port))
}

/// Parses `ss -Hltnp` lines (`LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=1,fd=3))`,
/// with or without the leading `tcp` netid column).
pub fn parse_ss(text: &str) -> Vec<Listener> {
    let mut out = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let Some(state) = cols.iter().position(|c| *c == "LISTEN") else {
            continue;
        };
        // State, Recv-Q, Send-Q, Local, Peer, [Process].
        let Some(local) = cols.get(state + 3) else {
            continue;
        };
        let Some((addr, port)) = split_addr(local) else {
            continue;
        };
        let users = cols[state + 4..]
            .iter()
            .find(|c| c.starts_with("users:"))
            .copied();
        let process = users.and_then(|u| u.split('"').nth(1)).map(str::to_string);
        let pid = users
            .and_then(|u| u.split("pid=").nth(1))
            .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok());
        let l = Listener {
            addr,
            port,
            process,
            pid,
        };
        if !out.contains(&l) {
            out.push(l);
        }
    }
    out
}

/// Parses `lsof -nP -iTCP -sTCP:LISTEN` (`COMMAND PID USER FD TYPE DEVICE SIZE/OFF NODE NAME`,
/// the name `*:22 (LISTEN)`).
pub fn parse_lsof(text: &str) -> Vec<Listener> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with("COMMAND")) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let Some(i) = cols.iter().position(|c| *c == "(LISTEN)") else {
            continue;
        };
        if i < 2 || cols.len() < 3 {
            continue;
        }
        let Some((addr, port)) = split_addr(cols[i - 1]) else {
            continue;
        };
        let l = Listener {
            addr,
            port,
            // lsof escapes spaces in names as `\x20`.
            process: Some(cols[0].replace("\\x20", " ")),
            pid: cols[1].parse().ok(),
        };
        if !out.contains(&l) {
            out.push(l);
        }
    }
    out
}

/// Parses [`COMMAND`]'s output: the tool that listed them (`ss`, `lsof`) and the sockets.
pub fn parse(text: &str) -> Option<(&'static str, Vec<Listener>)> {
    let (marker, rest) = text.split_once('\n').unwrap_or((text, ""));
    match marker.trim() {
        "#ss" => Some(("ss", parse_ss(rest))),
        "#lsof" => Some(("lsof", parse_lsof(rest))),
        _ => None,
    }
}

/// What a node may listen on.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    /// Its fleet addresses (inventory `address`, bind address, Tailscale IP).
    pub addresses: BTreeSet<String>,
    /// Ports that may listen on every interface (SSH, and ports its variables open).
    pub open_ports: BTreeSet<u16>,
}

/// The sockets open beyond the fleet network.
pub fn beyond_fleet<'a>(listeners: &'a [Listener], allowed: &Allowed) -> Vec<&'a Listener> {
    listeners
        .iter()
        .filter(|l| {
            !(l.loopback()
                || allowed.addresses.contains(&l.addr)
                || allowed.open_ports.contains(&l.port))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ss_output() {
        let text = "LISTEN 0      5            0.0.0.0:8000       0.0.0.0:*    users:((\"python3\",pid=4242,fd=3))\n\
                    tcp   LISTEN 0 128 [::]:22 [::]:* users:((\"sshd\",pid=1,fd=4),(\"sshd\",pid=9,fd=4))\n\
                    LISTEN 0 4096 127.0.0.53%lo:53 0.0.0.0:*\n\
                    LISTEN 0 4096 [::ffff:127.0.0.1]:631 *:*\n\
                    LISTEN 0 4096 *:9090 *:*\n\
                    junk\n";
        let l = parse_ss(text);
        assert_eq!(l.len(), 5);
        assert_eq!(l[0].describe(), "0.0.0.0:8000 (python3, pid 4242)");
        assert!(l[0].wildcard() && !l[0].loopback());
        assert_eq!((l[1].addr.as_str(), l[1].port), ("::", 22));
        assert!(l[1].wildcard());
        assert!(l[2].loopback() && l[2].process.is_none());
        assert!(l[3].loopback());
        assert!(l[4].wildcard());
        let allowed = Allowed {
            addresses: ["10.0.0.7".to_string()].into(),
            open_ports: [22].into(),
        };
        let bad: Vec<u16> = beyond_fleet(&l, &allowed).iter().map(|l| l.port).collect();
        assert_eq!(bad, [8000, 9090]);
    }

    #[test]
    fn lsof_output() {
        let text = "#lsof\nCOMMAND     PID     USER   FD   TYPE             DEVICE SIZE/OFF NODE NAME\n\
                    launchd       1     root   12u  IPv6 0x1234      0t0  TCP *:22 (LISTEN)\n\
                    ollama      812 symphony    3u  IPv4 0x5678      0t0  TCP 10.0.0.7:11434 (LISTEN)\n\
                    Google\\x20 9000 symphony  40u  IPv4 0x9abc      0t0  TCP 127.0.0.1:9222 (LISTEN)\n\
                    nc          777 symphony    3u  IPv6 0xdef0      0t0  TCP [fe80::1%en0]:7000 (LISTEN)\n";
        let (tool, l) = parse(text).expect("lsof");
        assert_eq!(tool, "lsof");
        assert_eq!(l.len(), 4);
        assert_eq!(l[0].describe(), "*:22 (launchd, pid 1)");
        assert_eq!(l[1].describe(), "10.0.0.7:11434 (ollama, pid 812)");
        assert!(l[2].loopback());
        assert_eq!(l[3].describe(), "[fe80::1]:7000 (nc, pid 777)");
        let allowed = Allowed {
            addresses: ["10.0.0.7".to_string()].into(),
            open_ports: [22].into(),
        };
        let bad: Vec<u16> = beyond_fleet(&l, &allowed).iter().map(|l| l.port).collect();
        assert_eq!(bad, [7000]);
        assert_eq!(parse("something else"), None);
    }
}
