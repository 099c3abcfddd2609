//! `fleet dashboard`: signs a browser in to HQ's dashboard with a one-time link (two minutes,
//! one use) obtained with this repo's client token; opens it, or prints it with `--print`.

use crate::cli::hq_api::{Hq, error_message};
use crate::error::{Error, Result};

/// Arguments of `fleet dashboard`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the link instead of opening a browser.
    #[arg(long)]
    pub print: bool,
    /// HQ's URL (default: the inventory's `fleet.hq_url`).
    #[arg(long, value_name = "URL")]
    pub hq: Option<String>,
}

/// The program that opens a URL on this system.
fn opener() -> Option<&'static str> {
    if cfg!(target_os = "macos") {
        return Some("open");
    }
    let graphical =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    graphical.then_some("xdg-open")
}

/// Runs `fleet dashboard`.
pub fn run(repo_dir: Option<&std::path::Path>, args: &Args) -> Result<u8> {
    let repo = crate::cli::load_repo(repo_dir)?;
    let hq = Hq::for_repo(
        &repo,
        args.hq.as_deref(),
        Some(std::time::Duration::from_secs(10)),
    )?;
    let answer: serde_json::Value = crate::hq::client::block_on(async {
        let resp = hq
            .request(reqwest::Method::POST, "/api/dashboard/link")
            .send()
            .await
            .map_err(|e| {
                Error::Failed(format!(
                    "HQ at {}: {}",
                    hq.url,
                    crate::hq::client::describe(&e)
                ))
            })?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        if !status.is_success() {
            return Err(Error::Usage(format!(
                "HQ answered {status}: {}",
                error_message(&body)
            )));
        }
        Ok(body)
    })
    .map_err(Error::Failed)??;
    let Some(path) = answer["path"].as_str() else {
        return Err(Error::Failed("HQ's answer has no link".into()));
    };
    let url = format!("{}{path}", hq.url);
    if !args.print
        && let Some(open) = opener()
        && std::process::Command::new(open)
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    {
        crate::noteln!(
            "opened the dashboard in your browser (the link works once, for two minutes)"
        );
        return Ok(0);
    }
    crate::outln!("{url}");
    crate::noteln!("open this link in a browser: it signs it in once, within two minutes");
    Ok(0)
}
