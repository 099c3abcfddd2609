//! Facts in one round trip: a POSIX sh probe prints `key=value` lines for Linux and macOS
//! alike, and a pure parser turns them into [`Facts`] (tested on fixtures of both).

use crate::facts::{Disk, Facts};

/// The probe script. Every command may be missing; the parser takes what is there.
pub const PROBE: &str = r#"
set -- $(uname -snm)
echo "kernel=$1"; echo "hostname=$2"; echo "arch=$3"; K=$1
if [ -r /etc/os-release ]; then
  id_=; ver_=
  while IFS='=' read -r k v; do v=${v#[\"\']}; v=${v%[\"\']}; case $k in ID) id_=$v;; VERSION_ID) ver_=$v;; esac; done < /etc/os-release
  echo "os_version=$id_ $ver_"
fi
if command -v sw_vers >/dev/null 2>&1; then echo "os_version=macOS $(sw_vers -productVersion)"; fi
if [ -r /proc/cpuinfo ]; then
  df -Pk 2>/dev/null | awk '
    FILENAME == "/proc/cpuinfo" && /^processor/ { cores++ }
    FILENAME == "/proc/cpuinfo" && /^model name/ && model == "" { sub(/^[^:]*:/, ""); model = $0 }
    FILENAME == "/proc/meminfo" && /^MemTotal:/ { mem = $2 }
    FILENAME == "-" && FNR > 1 && ($6 == "/" || $6 == "/System/Volumes/Data") { print "disk=" $6 " " $2 " " $4 }
    END { print "cores=" cores; print "cpu_model=" model; print "mem_kb=" mem }' /proc/cpuinfo /proc/meminfo -
else
  echo "cores=$(sysctl -n hw.logicalcpu 2>/dev/null)"
  echo "cpu_model=$(sysctl -n machdep.cpu.brand_string 2>/dev/null)"
  echo "mem_bytes=$(sysctl -n hw.memsize 2>/dev/null)"
  df -Pk 2>/dev/null | awk 'NR > 1 && ($6 == "/" || $6 == "/System/Volumes/Data") {print "disk=" $6 " " $2 " " $4}'
fi
if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits 2>/dev/null | sed 's/^/gpu=/'; fi
if [ "$K" = Darwin ]; then echo "init=launchd"; elif [ -d /run/systemd/system ]; then echo "init=systemd"; else echo "init=other"; fi
if [ "$K" = Darwin ]; then
  for b in brew /opt/homebrew/bin/brew /usr/local/bin/brew; do if command -v $b >/dev/null 2>&1; then echo "pkg=brew"; break; fi; done
else
  for m in apt-get dnf pacman brew; do if command -v $m >/dev/null 2>&1; then echo "pkg=$m"; break; fi; done
fi
for o in ollama /opt/homebrew/bin/ollama /usr/local/bin/ollama; do
  if command -v $o >/dev/null 2>&1; then echo "ollama_version=$($o --version 2>/dev/null | awk '{print $NF}' | tail -n1)"; break; fi
done
echo "user=${USER:-$(id -un)}"
# Addresses as the tools print them, parsed by fleet (one process, not a pipeline).
if command -v ip >/dev/null 2>&1; then
  ip -o addr show 2>/dev/null
elif command -v ifconfig >/dev/null 2>&1; then
  ifconfig 2>/dev/null
fi
for t in tailscale /opt/homebrew/bin/tailscale /usr/local/bin/tailscale /Applications/Tailscale.app/Contents/MacOS/Tailscale; do
  if command -v $t >/dev/null 2>&1; then echo "tailscale_ip=$($t ip -4 2>/dev/null | head -n1)"; break; fi
done
# Custom facts, in this same round trip: each file as hex (od is POSIX), so no content can
# pass for a line of the probe's own.
for f in /etc/fleet/facts.d/*.json; do
  [ -f "$f" ] && [ -r "$f" ] || continue
  n=${f##*/}; echo "local=${n%.json}"
  od -An -v -tx1 "$f" | while read -r l; do echo "localhex=$l"; done
done
"#;

/// Runs the probe on an open connection and parses it.
pub async fn gather(conn: &crate::connection::AnyConnection) -> Result<Facts, String> {
    let out = conn
        .exec(
            PROBE,
            None,
            crate::connection::RunAs::Login,
            Some(std::time::Duration::from_secs(60)),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(parse(&out.stdout))
}

/// Connects to a host and gathers its facts (one connection, one round trip).
pub async fn gather_over_ssh(target: &crate::connection::ssh::SshTarget) -> Result<Facts, String> {
    let conn = crate::connection::AnyConnection::new(crate::connection::Transport::Ssh(
        crate::connection::ssh::SshConnection::connect(target)
            .await
            .map_err(|e| e.to_string())?,
    ));
    let facts = gather(&conn).await;
    // The master exits now, not after its persist time.
    conn.close().await;
    facts
}

use crate::facts::round1;

/// The address of a line of `ip -o addr show` (`2: eth0    inet 10.0.0.7/24 brd …`) or of
/// `ifconfig` (`\tinet 10.0.0.7 netmask …`, `inet6 fe80::1%lo0 prefixlen 64`).
fn interface_address(line: &str) -> Option<std::net::IpAddr> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = match words.as_slice() {
        [idx, _, fam, ..] if idx.ends_with(':') && (*fam == "inet" || *fam == "inet6") => 3,
        [fam, ..] if *fam == "inet" || *fam == "inet6" => 1,
        _ => return None,
    };
    let word = words.get(at)?;
    let bare = word.split(['/', '%']).next()?;
    bare.parse().ok()
}

/// Bytes from `od -An -tx1` words (`7b 22 61`); `None` at a word that is not a byte.
fn hex_bytes(words: &str, out: &mut Vec<u8>) -> Option<()> {
    for w in words.split_whitespace() {
        out.push(u8::from_str_radix(w, 16).ok()?);
    }
    Some(())
}

/// The custom facts files, parsed into `f.local` (or their problem into `f.local_errors`).
fn parse_local(files: Vec<(String, Option<Vec<u8>>)>, f: &mut Facts) {
    for (name, bytes) in files {
        let parsed = match bytes {
            None => Err("the probe could not read it whole".to_string()),
            Some(b) => match std::str::from_utf8(&b) {
                Err(_) => Err("it is not UTF-8 text".to_string()),
                Ok(t) => serde_json::from_str::<serde_json::Value>(t)
                    .map_err(|e| format!("not valid JSON: {e}")),
            },
        };
        match parsed {
            Ok(v) => {
                f.local.insert(name, v);
            }
            Err(e) => {
                f.local_errors
                    .insert(name.clone(), format!("/etc/fleet/facts.d/{name}.json: {e}"));
            }
        }
    }
}

/// Parses the probe's output.
pub fn parse(text: &str) -> Facts {
    let mut f = Facts::default();
    let mut local: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("local=") {
            local.push((name.to_string(), Some(Vec::new())));
            continue;
        }
        if let Some(words) = line.strip_prefix("localhex=") {
            if let Some((_, bytes)) = local.last_mut() {
                let ok = bytes.as_mut().and_then(|b| hex_bytes(words, b));
                if ok.is_none() {
                    *bytes = None;
                }
            }
            continue;
        }
        if let Some(ip) = interface_address(line) {
            if !ip.is_loopback() && !f.addresses.contains(&ip.to_string()) {
                f.addresses.push(ip.to_string());
            }
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        match k {
            "kernel" => {
                f.os = Some(match v {
                    "Darwin" => "macos".to_string(),
                    "Linux" => "linux".to_string(),
                    other => other.to_ascii_lowercase(),
                });
            }
            "arch" => {
                f.arch = Some(
                    crate::spec::inventory::canonical_arch(v)
                        .map_or_else(|| v.to_string(), str::to_string),
                );
            }
            "hostname" => f.hostname = Some(v.to_string()),
            "os_version" => f.os_version = Some(v.to_string()),
            "cores" => f.cores = v.parse().ok(),
            "cpu_model" => f.cpu_model = Some(v.to_string()),
            "mem_kb" => f.ram_gb = v.parse::<f64>().ok().map(|kb| round1(kb / 1024.0 / 1024.0)),
            "mem_bytes" => {
                f.ram_gb = v
                    .parse::<f64>()
                    .ok()
                    .map(|b| round1(b / 1024.0 / 1024.0 / 1024.0))
            }
            "disk" => {
                let parts: Vec<&str> = v.split_whitespace().collect();
                if let [mount, total, free] = parts[..]
                    && let (Ok(t), Ok(a)) = (total.parse::<f64>(), free.parse::<f64>())
                {
                    f.disks.push(Disk {
                        mount: mount.to_string(),
                        total_gb: round1(t / 1024.0 / 1024.0),
                        free_gb: round1(a / 1024.0 / 1024.0),
                    });
                }
            }
            "gpu" => f.gpus.extend(crate::facts::parse_nvidia_smi(v)),
            "init" => f.init = Some(v.to_string()),
            "pkg" => {
                f.package_manager = Some(if v == "apt-get" {
                    "apt".to_string()
                } else {
                    v.to_string()
                })
            }
            "ollama_version" => f.ollama_version = Some(v.to_string()),
            "user" => f.user = Some(v.to_string()),
            "tailscale_ip" if v.parse::<std::net::Ipv4Addr>().is_ok() => {
                f.tailscale_ip = Some(v.to_string());
            }
            _ => {}
        }
    }
    if f.os.as_deref() == Some("macos")
        && let Some(m) = f.cpu_model.clone().filter(|m| m.starts_with("Apple "))
    {
        f.apple_chip = Some(m);
    }
    parse_local(local, &mut f);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_gpu_box() {
        let f = parse(include_str!("../../tests/fixtures/facts/linux-gpu.txt"));
        assert_eq!(f.os.as_deref(), Some("linux"));
        assert_eq!(f.os_version.as_deref(), Some("debian 12"));
        assert_eq!(f.arch.as_deref(), Some("x86_64"));
        assert_eq!(f.cores, Some(32));
        assert_eq!(
            f.cpu_model.as_deref(),
            Some("AMD Ryzen 9 7950X 16-Core Processor")
        );
        assert_eq!(f.ram_gb, Some(125.7));
        assert_eq!(
            f.disks,
            vec![Disk {
                mount: "/".into(),
                total_gb: 915.8,
                free_gb: 601.2
            }]
        );
        assert_eq!(f.gpus.len(), 1);
        assert_eq!(f.gpus[0].vram_gb, 24.0);
        assert_eq!(f.init.as_deref(), Some("systemd"));
        assert_eq!(f.package_manager.as_deref(), Some("apt"));
        assert_eq!(f.ollama_version.as_deref(), Some("0.5.7"));
        assert_eq!(f.apple_chip, None);
    }

    #[test]
    fn mac_mini_m4() {
        let f = parse(include_str!("../../tests/fixtures/facts/macos-m4.txt"));
        assert_eq!(f.os.as_deref(), Some("macos"));
        assert_eq!(f.os_version.as_deref(), Some("macOS 15.1"));
        assert_eq!(f.arch.as_deref(), Some("aarch64"));
        assert_eq!(f.cores, Some(10));
        assert_eq!(f.ram_gb, Some(24.0));
        assert_eq!(f.apple_chip.as_deref(), Some("Apple M4"));
        assert_eq!(f.init.as_deref(), Some("launchd"));
        assert_eq!(f.package_manager.as_deref(), Some("brew"));
        assert_eq!(
            f.root_free_gb(),
            Some(287.3),
            "macOS data volume, not the sealed system volume"
        );
        let hw = f.overlay(&Default::default());
        assert_eq!(hw.cpu.as_deref(), Some("apple_silicon"));
        assert_eq!(hw.chip.as_deref(), Some("M4"));
    }

    #[test]
    fn addresses_and_the_tailscale_ip() {
        let f = parse(
            "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n2: eth0    inet 10.0.0.7/24 brd 10.0.0.255 scope global eth0\n2: eth0    inet6 fe80::1/64 scope link\n\tinet 10.0.0.7 netmask 0xffffff00 broadcast 10.0.0.255\n\tinet6 fe80::1%lo0 prefixlen 64\nen0: flags=8863<UP> mtu 1500\n\tinet junk\ntailscale_ip=100.101.102.103\n",
        );
        assert_eq!(f.addresses, ["10.0.0.7", "fe80::1"]);
        assert_eq!(f.tailscale_ip.as_deref(), Some("100.101.102.103"));
        assert_eq!(parse("tailscale_ip=Logged out.").tailscale_ip, None);
    }

    #[test]
    fn custom_facts_each_file_on_its_own() {
        let hex = |s: &str| {
            s.bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let text = format!(
            "kernel=Linux\nlocal=app\nlocalhex={}\nlocalhex={}\nlocal=broken\nlocalhex={}\nlocal=empty\nlocal=odd\nlocalhex=zz\ncores=4\n",
            hex("{\"version\": \"1.2\",\n"),
            hex("\"tags\": [\"a\"]}"),
            hex("{not json"),
        );
        let f = parse(&text);
        assert_eq!(f.cores, Some(4), "the other facts are there");
        assert_eq!(
            f.local.get("app"),
            Some(&serde_json::json!({"version": "1.2", "tags": ["a"]}))
        );
        assert_eq!(f.local.len(), 1);
        assert!(f.local_errors["broken"].contains("broken.json: not valid JSON"));
        assert!(f.local_errors["empty"].contains("not valid JSON"));
        assert!(f.local_errors["odd"].contains("could not read it"));
    }

    #[test]
    fn empty_or_partial_output_is_fine() {
        assert_eq!(parse(""), Facts::default());
        assert_eq!(
            parse("cores=\nkernel=Linux\nnonsense").os.as_deref(),
            Some("linux")
        );
    }
}
