//! `fleet join --hq URL --token JOIN_TOKEN`, run on a new machine: gathers this machine's facts
//! (the probe `fleet facts` runs, here locally, with sysinfo for what it misses) and how the
//! controller reaches it over ssh, and registers it with HQ as *pending* until an operator runs
//! `fleet adopt NAME --role ROLE`.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::facts::Facts;
use crate::hq::discovery;
use crate::hq::join::{name_from_hostname, valid_node_name};
use crate::hq::wire::{ErrorBody, JoinFacts, JoinRequest, SshEndpoint};

/// Arguments of `fleet join`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// HQ's URL, e.g. https://bob.local:8765.
    #[arg(long)]
    pub hq: String,
    /// The join token (`fleet token issue --join` on the controller); it works once.
    #[arg(long, env = "FLEET_JOIN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The node name to propose (default: from this machine's host name).
    #[arg(long)]
    pub name: Option<String>,
    /// The address the controller reaches this machine at over ssh (default: its Tailscale
    /// address, else its first IPv4 address, else its host name).
    #[arg(long)]
    pub address: Option<String>,
    /// The account the controller logs in as (default: the one running `fleet join`).
    #[arg(long)]
    pub ssh_user: Option<String>,
    /// sshd's port on this machine.
    #[arg(long, default_value_t = 22)]
    pub ssh_port: u16,
    /// The fleet CA (PEM) to check an `https://` HQ with, instead of the fingerprint the join
    /// token carries.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Allow a plain `http://` HQ that is not on loopback (the token crosses the network in
    /// clear).
    #[arg(long)]
    pub insecure_http: bool,
    /// How long to wait for HQ.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// This machine's facts: the probe `fleet facts` runs over ssh, run here; what it could not
/// find comes from sysinfo (as `fleet resources` reads it).
fn local_facts() -> Result<Facts> {
    let conn = crate::connection::AnyConnection::new(crate::connection::Transport::Local(
        crate::connection::local::LocalConnection,
    ));
    let probed = crate::hq::client::block_on(async {
        let f = crate::facts::probe::gather(&conn).await;
        conn.close().await;
        f
    })
    .map_err(Error::Failed)?;
    let mut f = probed.unwrap_or_default();
    let s = crate::resources::local();
    f.os = f.os.or(s.os);
    f.os_version = f.os_version.or(s.os_version);
    f.arch = f.arch.or(s.arch);
    f.cpu_model = f.cpu_model.or(s.cpu_model);
    f.apple_chip = f.apple_chip.or(s.apple_chip);
    f.cores = f.cores.or(s.cores);
    f.ram_gb = f.ram_gb.or(s.ram_gb);
    f.hostname = f.hostname.or(s.hostname);
    if f.disks.is_empty() {
        f.disks = s.disks;
    }
    if f.gpus.is_empty() {
        f.gpus = s.gpus;
    }
    Ok(f)
}

/// The address to offer: the Tailscale one, else the first IPv4 that is not link-local, else
/// the first address, else the host name.
fn default_address(f: &Facts) -> Option<String> {
    let v4 = |a: &&String| {
        a.parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| !ip.is_link_local() && !ip.is_loopback())
    };
    f.tailscale_ip
        .clone()
        .or_else(|| f.addresses.iter().find(v4).cloned())
        .or_else(|| f.addresses.first().cloned())
        .or_else(|| f.hostname.clone())
}

/// Plain HTTP only to a loopback HQ, or when told.
fn check_scheme(hq: &str, insecure: bool) -> Result<()> {
    if hq.starts_with("https://") {
        return Ok(());
    }
    if !hq.starts_with("http://") {
        return Err(Error::Usage(format!(
            "`--hq {hq}` is not an http(s) URL (like https://bob.local:8765)"
        )));
    }
    let host = crate::cli::serve::url_host_port(hq).map(|(h, _)| h);
    let loopback = host.as_deref().is_some_and(|h| {
        h == "localhost"
            || h.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    if loopback || insecure {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "refusing to send the join token to `{hq}` in clear (plain HTTP, not loopback)\n  help: use HQ's https:// URL; or pass --insecure-http if this network is trusted"
    )))
}

/// Runs `fleet join`.
pub fn run(args: &Args) -> Result<u8> {
    check_scheme(&args.hq, args.insecure_http)?;
    let (secret, fingerprint) = discovery::split_token(&args.token);
    if secret.is_empty() {
        return Err(Error::Usage("--token is empty".into()));
    }
    // The token appears in no output from here on.
    crate::secret::remember(secret);
    crate::secret::remember(args.token.trim());
    if let Some(n) = &args.name
        && !valid_node_name(n)
    {
        return Err(Error::Usage(format!(
            "--name `{n}` is not a valid node name: letters, digits, `-` and `_`, starting with a letter, at most 63"
        )));
    }
    let facts = local_facts()?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => facts
            .hostname
            .as_deref()
            .and_then(name_from_hostname)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "cannot make a node name from this machine's host name ({}); pass --name NAME",
                    facts.hostname.as_deref().unwrap_or("unknown")
                ))
            })?,
    };
    let address = args
        .address
        .clone()
        .or_else(|| default_address(&facts))
        .ok_or_else(|| Error::Usage("cannot tell this machine's address; pass --address".into()))?;
    let user = args
        .ssh_user
        .clone()
        .or_else(|| facts.user.clone())
        .unwrap_or_else(|| "root".into());
    let req = JoinRequest {
        name: name.clone(),
        ssh: SshEndpoint {
            address: address.clone(),
            user: user.clone(),
            port: args.ssh_port,
        },
        facts: JoinFacts::from(&facts),
        fleet_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    crate::hq::join::check_request(&req).map_err(Error::Usage)?;

    let hq = args.hq.trim_end_matches('/').to_string();
    let answer = crate::hq::client::block_on(async {
        // For HTTPS: the CA given, else the one HQ offers when its fingerprint is the token's.
        // The fetched CA lives in a temporary file for as long as the request needs it.
        let mut kept = None;
        let ca = match (&args.ca, fingerprint) {
            (Some(ca), _) => Some(ca.clone()),
            (None, Some(fp)) if hq.starts_with("https://") => {
                let pem = discovery::fetch_ca(&hq, fp, args.timeout).await?;
                let file = tempfile::NamedTempFile::new()
                    .map_err(|e| format!("cannot keep the fleet CA: {e}"))?;
                std::fs::write(file.path(), &pem)
                    .map_err(|e| format!("cannot keep the fleet CA: {e}"))?;
                let path = file.path().to_path_buf();
                kept = Some(file);
                Some(path)
            }
            _ => None,
        };
        let client = crate::hq::client::hq_client(&hq, args.timeout, ca.as_deref())?;
        let url = format!("{hq}/api/join");
        let resp = client
            .post(&url)
            .bearer_auth(secret)
            .json(&req)
            .send()
            .await
            .map_err(|e| format!("{url}: {}", crate::hq::client::describe(&e)))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let why = serde_json::from_str::<ErrorBody>(&body)
            .map(|e| e.error)
            .unwrap_or(body);
        drop(kept);
        Ok::<_, String>((status, why))
    })
    .map_err(Error::Failed)?
    .map_err(Error::Failed)?;
    let (status, why) = answer;
    if !status.is_success() {
        let why: String = why.chars().take(400).collect();
        return Err(Error::Failed(format!(
            "HQ refused the join ({}): {why}",
            status.as_u16()
        )));
    }
    let hw = facts.overlay(&Default::default());
    crate::noteln!(
        "joined: `{name}` ({}/{}, {} cores, {} GB RAM{}) is pending at HQ; ssh {user}@{address} port {}",
        hw.os.as_deref().unwrap_or("?"),
        hw.arch.as_deref().unwrap_or("?"),
        hw.cores.map_or("?".into(), |c| c.to_string()),
        hw.ram_gb.map_or("?".into(), |r| r.to_string()),
        hw.gpu
            .as_ref()
            .map(|g| format!(", {} GPU {} GB", g.vendor, g.vram_gb))
            .unwrap_or_default(),
        args.ssh_port
    );
    crate::noteln!(
        "next, on the controller: `fleet nodes --pending`, then `fleet adopt {name} --role ROLE` (it connects over ssh: authorize the controller's key for {user} here)"
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback_or_when_told() {
        assert!(check_scheme("https://bob:8765", false).is_ok());
        assert!(check_scheme("http://127.0.0.1:8765", false).is_ok());
        assert!(check_scheme("http://localhost:8765", false).is_ok());
        assert!(check_scheme("http://[::1]:8765", false).is_ok());
        assert!(check_scheme("http://10.0.0.2:8765", false).is_err());
        assert!(check_scheme("http://10.0.0.2:8765", true).is_ok());
        assert!(check_scheme("ftp://x", true).is_err());
    }

    #[test]
    fn the_address_offered() {
        let mut f = Facts {
            addresses: vec!["fe80::1".into(), "169.254.1.1".into(), "10.0.0.7".into()],
            hostname: Some("box".into()),
            ..Facts::default()
        };
        assert_eq!(default_address(&f).as_deref(), Some("10.0.0.7"));
        f.tailscale_ip = Some("100.64.0.9".into());
        assert_eq!(default_address(&f).as_deref(), Some("100.64.0.9"));
        let f = Facts {
            hostname: Some("box".into()),
            ..Facts::default()
        };
        assert_eq!(default_address(&f).as_deref(), Some("box"));
    }
}
