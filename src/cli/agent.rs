//! `fleet agent`: the heartbeat loop that runs on every node.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Arguments of `fleet agent`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// HQ's URL, e.g. https://bob.local:8765.
    #[arg(long)]
    pub hq: String,
    /// The fleet CA (PEM) HQ's certificate must be signed by, for an `https://` HQ; the agent
    /// trusts exactly this CA. Default: /etc/fleet/ca.pem (where the agent role puts it).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// This node's name in the inventory.
    #[arg(long)]
    pub node: String,
    /// File holding this node's token (mode 0600).
    #[arg(long, value_name = "PATH")]
    pub token_file: PathBuf,
    /// Time between heartbeats (jittered by ±10%).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// The local Ollama API.
    #[arg(long, default_value = "http://127.0.0.1:11434")]
    pub ollama_url: String,
    /// Log to this file (appending; opened again when it was rotated away, see docs/logs.md);
    /// stderr gets the lines too only when it is a terminal or the journal.
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Send one heartbeat and exit: 0 when HQ stored it, 1 otherwise.
    #[arg(long)]
    pub once: bool,
}

/// Runs `fleet agent`.
pub fn run(args: &Args) -> Result<u8> {
    crate::cli::init_logging(args.log_file.as_deref(), true);
    if args.interval < Duration::from_millis(100) {
        return Err(Error::Usage("--interval must be at least 100ms".into()));
    }
    let ca = args.ca.clone().or_else(|| {
        args.hq
            .starts_with("https://")
            .then(|| PathBuf::from(crate::hq::tls::NODE_CA))
    });
    // A missing or unreadable CA is a configuration error (exit 2), found before the loop.
    crate::hq::client::hq_client(&args.hq, Duration::from_secs(10), ca.as_deref())
        .map_err(Error::Usage)?;
    let cfg = crate::agent::Config {
        ca,
        hq: args.hq.clone(),
        node: args.node.clone(),
        token_file: args.token_file.clone(),
        interval: args.interval,
        ollama_url: args.ollama_url.clone(),
        once: args.once,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Failed(format!("cannot start the runtime: {e}")))?;
    rt.block_on(crate::agent::run(cfg, crate::cli::serve::shutdown_signal()))
        .map_err(Error::Failed)?;
    Ok(0)
}
