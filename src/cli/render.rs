//! `fleet render [routing|registry|packages|all]`: generate the files the fleet runs on, or
//! with `--check` compare them with the committed ones (the CI deployment gate).
//! `fleet render release --dist DIR`: fleet's own installer, Homebrew formula and PKGBUILD
//! from a release directory (no fleet repo needed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::style;
use crate::error::{Diagnostics, Error, Result};
use crate::render::output::{Drift, Output, Written};
use crate::render::registry::LiveNode;
use crate::render::{catalog, packages, registry, routing};
use crate::repo::{Repo, shown};
use crate::template::Library;

/// What to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    /// The routing table.
    Routing,
    /// The node registry.
    Registry,
    /// Package manifests of the worker catalog.
    Packages,
    /// All of them (packages when a catalog is found).
    All,
    /// fleet's own release: install.sh, fleet.rb, PKGBUILD and .SRCINFO from `--dist DIR`.
    Release,
}

/// Arguments of `fleet render`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to render.
    #[arg(value_enum, default_value = "all")]
    pub what: What,
    /// Output directory (default: `generated/` in the repo).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write nothing; exit 1 when the files on disk differ from what would be rendered.
    #[arg(long)]
    pub check: bool,
    /// Take node status from HQ (`fleet.hq_url`); says so and goes on without it when HQ does not answer.
    #[arg(long)]
    pub live: bool,
    /// The worker catalog (default: `catalog/` in the repo, when present).
    #[arg(long, value_name = "DIR")]
    pub catalog: Option<PathBuf>,
    /// `release`: the release directory, holding SHA256SUMS over its archives.
    #[arg(long, value_name = "DIR")]
    pub dist: Option<PathBuf>,
    /// `release`: where the archives are downloaded from (default: the GitHub release of the
    /// version, under Cargo.toml's `repository`).
    #[arg(long, value_name = "BASE_URL")]
    pub url: Option<String>,
    /// `release`: render what the built platforms allow and skip the rest (instead of failing).
    #[arg(long)]
    pub partial: bool,
}

/// Paths of the generated files, relative to the output directory.
pub const ROUTING_FILE: &str = "routing/openclaw_workers.json";
/// The registry's path.
pub const REGISTRY_FILE: &str = "registry/nodes_registry.json";

/// Live node data from HQ, or a warning why there is none.
pub fn live_status(repo: &Repo, timeout: Duration) -> Result<BTreeMap<String, LiveNode>, String> {
    let Some(url) = &repo.inventory.fleet.hq_url else {
        return Err("the inventory sets no `fleet.hq_url`".into());
    };
    let token = crate::hq::client::client_token(&repo.root);
    let ca = crate::hq::client::repo_ca(&repo.root);
    let resp = crate::hq::client::block_on(crate::hq::client::fetch_nodes(
        &url.value,
        token.as_deref(),
        timeout,
        Some(&ca),
    ))??;
    Ok(resp
        .nodes
        .into_iter()
        .map(|n| {
            (
                n.name.clone(),
                LiveNode {
                    status: n.status,
                    last_heartbeat: n.last_heartbeat,
                },
            )
        })
        .collect())
}

/// Renders the requested files.
pub fn build(
    repo: &Repo,
    what: What,
    catalog_dir: Option<&Path>,
    live: Option<&BTreeMap<String, LiveNode>>,
) -> (Output, Diagnostics) {
    let mut out = Output::default();
    let mut diags = Diagnostics::default();
    let library = Library::new(&repo.templates);
    let env = library.environment();
    let facts = crate::facts::FactsCache::open(&repo.root);
    let hw = |n: &crate::spec::inventory::NodeSpec| facts.hardware(n);
    let status: Option<routing::StatusMap> = live.map(|l| {
        l.iter()
            .map(|(k, v)| (k.clone(), v.status.clone()))
            .collect()
    });
    if matches!(what, What::Routing | What::All) {
        let (table, d) = routing::build(repo, &|n| hw(n).0, status.as_ref());
        diags.extend(d);
        let ctx = crate::template::data_context("routing", &table);
        match crate::template::render_data(&env, "routing/openclaw_workers.json.j2", ctx) {
            Ok(text) => {
                out.files.insert(ROUTING_FILE.into(), ensure_newline(text));
            }
            Err(e) => diags.push(crate::error::Diagnostic::error(
                None,
                format!("rendering the routing table: {e}"),
            )),
        }
    }
    if matches!(what, What::Registry | What::All) {
        let reg = registry::build(repo, &hw, live);
        let ctx = crate::template::data_context("registry", &reg);
        match crate::template::render_data(&env, "registry/nodes_registry.json.j2", ctx) {
            Ok(text) => {
                out.files.insert(REGISTRY_FILE.into(), ensure_newline(text));
            }
            Err(e) => diags.push(crate::error::Diagnostic::error(
                None,
                format!("rendering the node registry: {e}"),
            )),
        }
    }
    if let (true, Some(dir)) = (matches!(what, What::Packages | What::All), catalog_dir) {
        let (workers, d) = catalog::load(dir);
        diags.extend(d);
        match packages::render_all(&env, &workers) {
            Ok(files) => {
                for (rel, text) in files {
                    out.files.insert(PathBuf::from("packages").join(rel), text);
                }
                out.owned_dirs.push("packages".into());
            }
            Err(d) => diags.push(d),
        }
    }
    (out, diags)
}

fn ensure_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Renders fleet's own release files from `--dist DIR/SHA256SUMS` into `--out` (default: the
/// release directory).
fn run_release(args: &Args) -> Result<u8> {
    use crate::render::release;
    let Some(dist) = &args.dist else {
        return Err(Error::Usage(
            "`fleet render release` needs `--dist DIR`: the release directory scripts/release made"
                .into(),
        ));
    };
    if args.catalog.is_some() || args.live {
        return Err(Error::Usage(
            "`fleet render release` takes no --catalog or --live".into(),
        ));
    }
    let sums_path = dist.join(release::SUMS_FILE);
    let shown_sums = sums_path.display().to_string();
    let text = match std::fs::read_to_string(&sums_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Usage(format!(
                "no `{shown_sums}`: the release directory needs its checksums (scripts/release writes them; or `sha256sum fleet-* > {}`)",
                release::SUMS_FILE
            )));
        }
        Err(e) => return Err(Error::io("read", &sums_path, e)),
    };
    let sums = release::parse_sums(&text, &shown_sums).map_err(Error::config)?;
    let rel = release::from_sums(&sums, args.url.as_deref(), &shown_sums).map_err(Error::config)?;
    let env = Library::new(&BTreeMap::new()).environment();
    let (files, skipped) = release::render_all(&env, &rel, args.partial).map_err(Error::config)?;
    for why in &skipped {
        crate::noteln!("{} {why}", style::dim("skipped:"));
    }
    let mut out = Output {
        mode: Some(0o644),
        ..Output::default()
    };
    for (name, text) in files {
        out.files.insert(PathBuf::from(name), text);
    }
    let out_dir = args.out.clone().unwrap_or_else(|| dist.clone());
    finish(&out, &out_dir, args)
}

/// Runs `fleet render`.
pub fn run(repo_dir: Option<&Path>, args: &Args) -> Result<u8> {
    if args.what == What::Release {
        return run_release(args);
    }
    if args.dist.is_some() || args.url.is_some() || args.partial {
        return Err(Error::Usage(
            "--dist, --url and --partial are options of `fleet render release`".into(),
        ));
    }
    let repo = crate::cli::load_repo(repo_dir)?;
    let root = repo.root.clone();
    let catalog_dir = match (&args.catalog, args.what) {
        (Some(c), _) if !c.is_dir() => {
            return Err(Error::Usage(format!(
                "--catalog `{}` is not a directory",
                c.display()
            )));
        }
        (Some(c), _) => Some(c.clone()),
        (None, what) => match catalog::default_dir(&root) {
            Some(dir) => Some(dir),
            None if what == What::Packages => {
                return Err(Error::Usage(format!(
                    "no worker catalog: pass `--catalog DIR` (a tree of crates with worker.toml files) or create `{}` in the repo",
                    shown(&root.join(catalog::DEFAULT_DIR))
                )));
            }
            None => None,
        },
    };
    let live = if args.live {
        match live_status(&repo, Duration::from_secs(3)) {
            Ok(l) => {
                crate::noteln!(
                    "{} node status from HQ ({})",
                    style::dim("live:"),
                    crate::util::count(l.len() as u64, "node", "nodes")
                );
                Some(l)
            }
            Err(why) => {
                if why.contains("HQ refused the read") {
                    crate::noteln!(
                        "{}: {why}; rendering without live status",
                        style::yellow("warning")
                    );
                } else {
                    crate::noteln!(
                        "{}: HQ is not reachable ({why}); rendering without live status",
                        style::yellow("warning")
                    );
                }
                None
            }
        }
    } else {
        None
    };
    let (out, mut diags) = build(&repo, args.what, catalog_dir.as_deref(), live.as_ref());
    for w in diags.take_warnings() {
        crate::noteln!("{}", style::diagnostic(&w));
    }
    if diags.has_errors() {
        return Err(Error::Config(diags));
    }
    if args.what == What::All && catalog_dir.is_none() {
        crate::noteln!(
            "{}",
            style::dim("packages: skipped (no catalog/ in the repo and no --catalog)")
        );
    }
    let out_dir = args.out.clone().unwrap_or_else(|| root.join("generated"));
    // A 10,000-node repo takes longer to free than to render; the process ends next anyway.
    std::mem::forget(repo);
    finish(&out, &out_dir, args)
}

/// Compares (`--check`) or writes the rendered files and says what changed.
fn finish(out: &Output, out_dir: &Path, args: &Args) -> Result<u8> {
    if args.check {
        let drift = out.check(out_dir);
        if drift.is_empty() {
            crate::outln!(
                "{} {} in {} {} up to date",
                style::green("ok:"),
                crate::util::count(out.files.len() as u64, "file", "files"),
                shown(out_dir),
                if out.files.len() == 1 { "is" } else { "are" }
            );
            return Ok(0);
        }
        for d in &drift {
            match d {
                Drift::Missing(p) => crate::outln!(
                    "{} {} (not rendered yet)",
                    style::red("missing:"),
                    shown(&out_dir.join(p))
                ),
                Drift::Stale(p) => crate::outln!(
                    "{} {} (no longer generated)",
                    style::red("stale:"),
                    shown(&out_dir.join(p))
                ),
                Drift::Differs(p, diff) => {
                    crate::outln!("{} {}", style::red("differs:"), shown(&out_dir.join(p)));
                    crate::out!("{diff}");
                }
            }
        }
        return Err(Error::Failed(format!(
            "{} generated file{} differ from what the repo renders\n  help: run `fleet render{}` and commit the result",
            drift.len(),
            if drift.len() == 1 { "" } else { "s" },
            match args.what {
                What::All => String::new(),
                w => format!(" {}", format!("{w:?}").to_lowercase()),
            }
        )));
    }
    let written = out.write(out_dir)?;
    let mut changed = 0;
    for w in &written {
        match w {
            Written::Changed(p) => {
                changed += 1;
                crate::outln!("{} {}", style::yellow("wrote"), shown(&out_dir.join(p)));
            }
            Written::Removed(p) => {
                changed += 1;
                crate::outln!("{} {}", style::yellow("removed"), shown(&out_dir.join(p)));
            }
            Written::Unchanged(_) => {}
        }
    }
    crate::outln!(
        "{} rendered, {changed} changed",
        crate::util::count(out.files.len() as u64, "file", "files")
    );
    Ok(0)
}
