//! `fleet drain NODE` / `fleet drain --undo NODE` (`fleet undrain NODE`) on the controller with
//! an admin token, and `fleet leave` on a node with its own agent token: mark a node draining
//! in HQ (it leaves every routing pool at once; its agent stops once nothing is in flight to
//! it), or bring it back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::style;
use crate::error::{Error, Result};
use crate::hq::wire::ErrorBody;

/// Arguments of `fleet drain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node.
    #[arg(add = crate::cli::candidates::nodes())]
    pub node: String,
    /// Bring the node back: it takes work again.
    #[arg(long)]
    pub undo: bool,
    /// A file holding an admin token (default: FLEET_HQ_ADMIN_TOKEN, else
    /// `.fleet/hq-admin.token`, else the client token of `fleet check`, which must then be an
    /// admin token).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// How long to wait for HQ.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Arguments of `fleet undrain`.
#[derive(Debug, clap::Args)]
pub struct UndrainArgs {
    /// The node.
    #[arg(add = crate::cli::candidates::nodes())]
    pub node: String,
    /// A file holding an admin token (as for `fleet drain`).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// How long to wait for HQ.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Arguments of `fleet leave`.
#[derive(Debug, clap::Args)]
pub struct LeaveArgs {
    /// HQ's URL (as the agent's `--hq`).
    #[arg(long)]
    pub hq: String,
    /// This node's agent token (the agent role puts it there).
    #[arg(long, value_name = "PATH", default_value = "/etc/fleet/agent.token")]
    pub token_file: PathBuf,
    /// The fleet CA for an `https://` HQ (default: /etc/fleet/ca.pem, where the agent role puts it).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// How long to wait for HQ.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The environment variable holding an admin token for `fleet drain`.
pub const ADMIN_TOKEN_ENV: &str = "FLEET_HQ_ADMIN_TOKEN";

/// An admin token: `--token-file`, FLEET_HQ_ADMIN_TOKEN, `.fleet/hq-admin.token`, else the
/// client token (which HQ refuses unless it is an admin token).
fn admin_token(root: &Path, file: Option<&Path>) -> Result<Option<String>> {
    if let Some(f) = file {
        return crate::agent::read_token(f).map(Some).map_err(Error::Usage);
    }
    if let Ok(t) = std::env::var(ADMIN_TOKEN_ENV)
        && !t.trim().is_empty()
    {
        return Ok(Some(t.trim().to_string()));
    }
    let local = root.join(".fleet").join("hq-admin.token");
    if local.is_file() {
        return crate::agent::read_token(&local)
            .map(Some)
            .map_err(Error::Usage);
    }
    Ok(crate::hq::client::client_token(root))
}

/// Sends `method` to HQ's `path` with `token`; the JSON answer, or why not.
async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
) -> std::result::Result<serde_json::Value, (Option<u16>, String)> {
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| (None, format!("{url}: {}", crate::hq::client::describe(&e))))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if status.is_success() {
        return serde_json::from_str(&body)
            .map_err(|e| (None, format!("{url}: unexpected answer: {e}")));
    }
    let why = serde_json::from_str::<ErrorBody>(&body)
        .map(|e| e.error)
        .unwrap_or(body);
    Err((Some(status.as_u16()), why.chars().take(300).collect()))
}

/// Runs `fleet drain` (and `fleet undrain`).
pub fn run(repo_dir: Option<&Path>, args: &Args) -> Result<u8> {
    let repo = crate::cli::load_repo(repo_dir)?;
    let node = &args.node;
    if !repo.inventory.nodes.contains_key(node) {
        let help = crate::validate::suggest(
            node,
            repo.inventory.nodes.keys().map(String::as_str),
            "nodes",
        );
        return Err(Error::Usage(format!(
            "no node `{node}` in the inventory\n  help: {help}"
        )));
    }
    let Some(hq_url) = repo
        .inventory
        .fleet
        .hq_url
        .as_ref()
        .map(|u| u.value.clone())
    else {
        return Err(Error::Usage(
            "the inventory sets no `fleet.hq_url`: draining is HQ's".into(),
        ));
    };
    let token = admin_token(&repo.root, args.token_file.as_deref())?;
    if let Some(t) = &token {
        crate::secret::remember(t);
    }
    let ca = crate::hq::client::repo_ca(&repo.root);
    let url = format!("{}/api/nodes/{node}/drain", hq_url.trim_end_matches('/'));
    let method = if args.undo {
        reqwest::Method::DELETE
    } else {
        reqwest::Method::POST
    };
    let answer = crate::hq::client::block_on(async {
        let client = crate::hq::client::hq_client(&hq_url, args.timeout, Some(&ca))
            .map_err(|e| (None, e))?;
        call(&client, method, &url, token.as_deref()).await
    })
    .map_err(Error::Failed)?;
    let v = match answer {
        Ok(v) => v,
        Err((Some(401 | 403), why)) => {
            return Err(Error::Failed(format!(
                "HQ refused: {why}\n  help: draining needs an admin token: `fleet token issue --admin NAME --out .fleet/hq-admin.token` on HQ, or set {ADMIN_TOKEN_ENV}"
            )));
        }
        Err((_, why)) => return Err(Error::Failed(format!("HQ did not drain `{node}`: {why}"))),
    };
    let changed = v["changed"].as_bool().unwrap_or(false);
    if args.undo {
        if !changed {
            crate::noteln!("`{node}` was not draining");
        } else {
            crate::noteln!(
                "{} `{node}` takes work again: it is back in the routing table while it reports",
                style::green("undrained")
            );
            if let Some(at) = v["agent_stopped_at"].as_str() {
                crate::noteln!(
                    "its agent was told to stop at {at}: `fleet provision {node}` starts it again"
                );
            }
        }
        return Ok(0);
    }
    let inflight = v["inflight"].as_u64().unwrap_or(0);
    if changed {
        crate::noteln!(
            "{} `{node}`: it is out of the routing table now; {}, then its agent is told to stop",
            style::yellow("draining"),
            if inflight == 0 {
                "nothing is in flight to it".to_string()
            } else {
                format!(
                    "{} in flight finish first",
                    crate::util::count(inflight, "request", "requests")
                )
            }
        );
    } else {
        crate::noteln!("`{node}` was already draining");
    }
    Ok(0)
}

/// Runs `fleet undrain NODE` (`fleet drain --undo NODE`).
pub fn undrain(repo_dir: Option<&Path>, a: &UndrainArgs) -> Result<u8> {
    run(
        repo_dir,
        &Args {
            node: a.node.clone(),
            undo: true,
            token_file: a.token_file.clone(),
            timeout: a.timeout,
        },
    )
}

/// Runs `fleet leave`.
pub fn leave(args: &LeaveArgs) -> Result<u8> {
    let token = crate::agent::read_token(&args.token_file).map_err(Error::Usage)?;
    crate::secret::remember(&token);
    let ca = args.ca.clone().or_else(|| {
        args.hq
            .starts_with("https://")
            .then(|| PathBuf::from(crate::hq::tls::NODE_CA))
    });
    let hq = args.hq.trim_end_matches('/');
    let url = format!("{hq}/api/leave");
    let answer = crate::hq::client::block_on(async {
        let client =
            crate::hq::client::hq_client(hq, args.timeout, ca.as_deref()).map_err(|e| (None, e))?;
        call(&client, reqwest::Method::POST, &url, Some(&token)).await
    })
    .map_err(Error::Failed)?;
    match answer {
        Ok(v) => {
            let node = v["node"].as_str().unwrap_or("this node");
            if v["changed"].as_bool().unwrap_or(false) {
                crate::noteln!(
                    "{} `{node}` is leaving: it takes no new work; its agent stops once the requests in flight finish",
                    style::yellow("draining")
                );
            } else {
                crate::noteln!("`{node}` was already draining");
            }
            Ok(0)
        }
        Err((Some(401 | 403), why)) => Err(Error::Failed(format!(
            "HQ refused: {why}\n  help: `fleet leave` takes this node's own agent token ({})",
            args.token_file.display()
        ))),
        Err((_, why)) => Err(Error::Failed(format!("HQ did not take the leave: {why}"))),
    }
}
