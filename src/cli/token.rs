//! `fleet token issue|list|rotate|revoke`: HQ's tokens. Node tokens are agents'; client,
//! admin and scrape tokens are for reading HQ; join tokens let one new machine join (once,
//! before they expire). A secret is shown once (or written to a 0600 file); HQ's store keeps
//! only its hash.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::hq::store::{Store, TokenKind};
use crate::hq::tokens;

/// Arguments of `fleet token`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// Token actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Create (or replace) a token: a node's agent token (NODE), or with `--client`, `--admin`
    /// or `--scrape` a named token for reading HQ.
    #[command(group(clap::ArgGroup::new("kind").args(["node", "client", "admin", "scrape", "join"]).required(true)))]
    Issue {
        /// The node (an agent token: posts its heartbeats, reads its own record and the
        /// routing table).
        node: Option<String>,
        /// A client token called NAME: reads every endpoint but /metrics (fleet check, route,
        /// render --live).
        #[arg(long, value_name = "NAME")]
        client: Option<String>,
        /// An admin token called NAME: reads everything.
        #[arg(long, value_name = "NAME")]
        admin: Option<String>,
        /// A scrape token called NAME: reads /metrics only.
        #[arg(long, value_name = "NAME")]
        scrape: Option<String>,
        /// A join token: lets one new machine register as pending (`fleet join`), once, until
        /// it expires. It is named `join-XXXXXX` (for `fleet token revoke`); for an `https://`
        /// HQ it carries the fleet CA's fingerprint, so `fleet join` can check HQ.
        #[arg(long)]
        join: bool,
        /// How long a join token is valid.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, requires = "join")]
        ttl: Duration,
        /// Write the token to this file (mode 0600) instead of printing it.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// HQ's state file (default: `.fleet/hq.sqlite` in the repo).
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
    /// List the active tokens: name, kind, created, last used (never a secret).
    List {
        /// One JSON array.
        #[arg(long)]
        json: bool,
        /// HQ's state file.
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
    /// Give a token a new secret; the old one keeps working for the overlap.
    Rotate {
        /// The token's name.
        name: String,
        /// How long the old secret stays valid.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        overlap: Duration,
        /// Write the new token to this file (mode 0600) instead of printing it.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// HQ's state file.
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
    /// Revoke a token by name (a node's, whether or not the node is still in the
    /// inventory); it is refused from the next request on.
    Revoke {
        /// The token's name (the node, for a node token).
        node: String,
        /// HQ's state file.
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
}

impl Action {
    /// Whether the command prints a secret or data on stdout (kept under `-q`).
    pub fn prints_data(&self) -> bool {
        matches!(
            self,
            Action::Issue { out: None, .. }
                | Action::Rotate { out: None, .. }
                | Action::List { .. }
        )
    }
}

/// Writes a secret file readable by its owner only, atomically.
pub fn write_secret(path: &Path, contents: &[u8]) -> Result<()> {
    crate::util::write_atomic(path, contents)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io("set the mode of", path, e))?;
    }
    Ok(())
}

/// Shows a new secret once: written to `out`, or printed.
fn hand_out(token: &str, name: &str, out: Option<&Path>, what: &str) -> Result<()> {
    match out {
        Some(path) => {
            write_secret(path, format!("{token}\n").as_bytes())?;
            crate::noteln!(
                "{what} `{name}` written to {} (mode 0600); HQ keeps only its hash",
                path.display()
            );
        }
        None => {
            crate::outln!("{token}");
            crate::noteln!("{what} `{name}`: shown once; HQ keeps only its hash");
        }
    }
    Ok(())
}

/// Issues a join token: printed once as `SECRET[.sha256:CA-FINGERPRINT]`; HQ keeps the
/// secret's hash, its expiry, and later when it was used.
fn issue_join(
    repo: &crate::repo::Repo,
    store: Store,
    ttl: Duration,
    out: Option<&Path>,
) -> Result<u8> {
    if ttl.is_zero() {
        return Err(Error::Usage("--ttl must be more than 0".into()));
    }
    let secret = tokens::generate().map_err(Error::Failed)?;
    let name = format!(
        "join-{}",
        &tokens::generate().map_err(Error::Failed)?[6..12]
    );
    let hq_url = repo
        .inventory
        .fleet
        .hq_url
        .as_ref()
        .map(|u| u.value.clone());
    // For an HTTPS HQ the token names the CA to trust, so a machine that has never seen the
    // fleet can check HQ's certificate (as kubeadm's discovery hash does).
    let fingerprint = match &hq_url {
        Some(u) if u.starts_with("https://") => {
            let ca = crate::hq::client::repo_ca(&repo.root);
            let certs = crate::hq::tls::load_certs(&ca).map_err(|e| {
                Error::Failed(format!(
                    "{e}\n  help: an https:// HQ needs the fleet CA (`fleet tls init`)"
                ))
            })?;
            Some(crate::util::sha256_hex(certs[0].as_ref()))
        }
        _ => None,
    };
    let token = match &fingerprint {
        Some(fp) => format!("{secret}{}{fp}", crate::hq::discovery::CA_SEP),
        None => secret.clone(),
    };
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let expires = crate::hq::store::now_ms().saturating_add(ttl_ms);
    if let Some(path) = out {
        write_secret(path, format!("{token}\n").as_bytes())?;
    }
    store
        .issue_expiring(
            &name,
            TokenKind::Join,
            &tokens::hash(&secret),
            Some(expires),
        )
        .map_err(Error::Failed)?;
    let what = format!(
        "join token (one use, expires {})",
        crate::hq::store::rfc3339(expires)
    );
    match out {
        Some(path) => crate::noteln!(
            "{what} `{name}` written to {} (mode 0600); HQ keeps only its hash",
            path.display()
        ),
        None => hand_out(&token, &name, None, &what)?,
    }
    crate::noteln!(
        "on the new machine: fleet join --hq {} --token <the token>",
        hq_url.as_deref().unwrap_or("<HQ URL>")
    );
    Ok(0)
}

/// Runs `fleet token`.
pub fn run(repo_dir: Option<&Path>, args: &Args) -> Result<u8> {
    let repo = crate::cli::load_repo(repo_dir)?;
    let root = repo.root.clone();
    let open = |db: &Option<PathBuf>| {
        Store::open(
            &db.clone()
                .unwrap_or_else(|| crate::cli::serve::default_db(&root)),
        )
        .map_err(Error::Failed)
    };
    match &args.action {
        Action::Issue {
            node,
            client,
            admin,
            scrape,
            join,
            ttl,
            out,
            db,
        } => {
            if *join {
                return issue_join(&repo, open(db)?, *ttl, out.as_deref());
            }
            let (name, kind) = match (node, client, admin, scrape) {
                (Some(n), ..) => (n, TokenKind::Node),
                (_, Some(n), ..) => (n, TokenKind::Client),
                (_, _, Some(n), _) => (n, TokenKind::Admin),
                (_, _, _, Some(n)) => (n, TokenKind::Scrape),
                _ => {
                    return Err(Error::Usage(
                        "say which token: NODE, --client NAME, --admin NAME or --scrape NAME"
                            .into(),
                    ));
                }
            };
            if name.trim().is_empty() || name.chars().any(char::is_control) {
                return Err(Error::Usage(format!("`{name}` is not a token name")));
            }
            if kind == TokenKind::Node && !repo.inventory.nodes.contains_key(name) {
                let help = crate::validate::suggest(
                    name,
                    repo.inventory.nodes.keys().map(String::as_str),
                    "nodes",
                );
                return Err(Error::Usage(format!(
                    "no node `{name}` in the inventory\n  help: {help}"
                )));
            }
            let store = open(db)?;
            // Names are shared by every kind: a client token may not silently replace an
            // agent's (or the other way round).
            if let Some(existing) = store.token_kind(name).map_err(Error::Failed)?
                && existing != kind
            {
                return Err(Error::Usage(format!(
                    "a {} token called `{name}` exists; revoke it first (`fleet token revoke {name}`) or pick another name",
                    existing.as_str()
                )));
            }
            let token = tokens::generate().map_err(Error::Failed)?;
            if let Some(path) = out {
                write_secret(path, format!("{token}\n").as_bytes())?;
            }
            store
                .issue_token(name, kind, &tokens::hash(&token))
                .map_err(Error::Failed)?;
            let what = format!("{} token", kind.as_str());
            match out {
                Some(path) => crate::noteln!(
                    "{what} `{name}` written to {} (mode 0600); HQ keeps only its hash",
                    path.display()
                ),
                None => hand_out(&token, name, None, &what)?,
            }
            Ok(0)
        }
        Action::List { json, db } => {
            let list = open(db)?.token_list().map_err(Error::Failed)?;
            if *json {
                let text = serde_json::to_string_pretty(&list)
                    .map_err(|e| Error::Failed(format!("cannot encode the list: {e}")))?;
                crate::outln!("{text}");
                return Ok(0);
            }
            if list.is_empty() {
                crate::noteln!("no active tokens");
                return Ok(0);
            }
            let mut table = comfy_table::Table::new();
            table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
            table.set_header(["NAME", "KIND", "CREATED", "LAST USED"]);
            for t in &list {
                let mut created = t.created.clone();
                if let Some(until) = &t.previous_valid_until {
                    created.push_str(&format!(" (old secret valid until {until})"));
                }
                let now = crate::hq::store::rfc3339(crate::hq::store::now_ms());
                let mut used = t.last_used.clone().unwrap_or_else(|| "never".into());
                if t.kind == TokenKind::Join {
                    // RFC 3339 times in UTC compare as text.
                    let expiry = match &t.expires {
                        Some(e) if *e <= now => format!(" (expired {e})"),
                        Some(e) => format!(" (expires {e})"),
                        None => String::new(),
                    };
                    created.push_str(&expiry);
                    used = match &t.used {
                        Some(u) => format!("used {u}"),
                        None => "unused".into(),
                    };
                }
                table.add_row([t.name.clone(), t.kind.as_str().to_string(), created, used]);
            }
            crate::outln!("{table}");
            Ok(0)
        }
        Action::Rotate {
            name,
            overlap,
            out,
            db,
        } => {
            let store = open(db)?;
            if store.token_kind(name).map_err(Error::Failed)? == Some(TokenKind::Join) {
                return Err(Error::Usage(format!(
                    "`{name}` is a join token: it works once and is not rotated; issue a new one (`fleet token issue --join`)"
                )));
            }
            let token = tokens::generate().map_err(Error::Failed)?;
            let overlap_ms = i64::try_from(overlap.as_millis()).unwrap_or(i64::MAX);
            let until = crate::hq::store::now_ms().saturating_add(overlap_ms);
            if store.token_kind(name).map_err(Error::Failed)?.is_none() {
                return Err(Error::Failed(format!(
                    "no active token called `{name}`\n  help: `fleet token list` shows them"
                )));
            }
            if let Some(path) = out {
                write_secret(path, format!("{token}\n").as_bytes())?;
            }
            if !store
                .rotate_token(name, &tokens::hash(&token), until)
                .map_err(Error::Failed)?
            {
                return Err(Error::Failed(format!("no active token called `{name}`")));
            }
            let what = format!(
                "new secret (the old one works until {}) for",
                crate::hq::store::rfc3339(until)
            );
            match out {
                Some(path) => crate::noteln!(
                    "{what} `{name}` written to {} (mode 0600); HQ keeps only its hash",
                    path.display()
                ),
                None => hand_out(&token, name, None, &what)?,
            }
            Ok(0)
        }
        Action::Revoke { node, db } => {
            // By name, not through the inventory: a node that left it can still be cut off.
            if open(db)?.revoke_token(node).map_err(Error::Failed)? {
                crate::noteln!("token `{node}` revoked");
                Ok(0)
            } else {
                Err(Error::Failed(format!(
                    "no active token called `{node}`\n  help: `fleet token list` shows them"
                )))
            }
        }
    }
}
