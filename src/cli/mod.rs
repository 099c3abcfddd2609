//! Command-line surface: global flags, one file per subcommand, and the exit-code contract
//! (0 ok, 1 a host failed or a check found a problem, 2 usage or configuration error).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::Result;

pub mod agent;
pub mod apply;
pub mod check;
pub mod completions;
pub mod docs;
pub mod eligible;
pub mod facts;
pub mod init;
pub mod nodes;
pub mod plan;
pub mod provision;
pub mod render;
pub mod resources;
pub mod route;
pub mod serve;
pub mod style;
pub mod tls;
pub mod token;
pub mod validate;

/// fleet: provision and run a fleet of AI worker machines from a declarative repo.
#[derive(Debug, Parser)]
#[command(name = "fleet", version, about, propagate_version = true)]
pub struct Cli {
    /// The fleet repo (the directory holding `inventory/`); default: the current directory or
    /// its nearest parent holding `inventory/`.
    #[arg(
        short = 'i',
        long = "inventory",
        global = true,
        value_name = "DIR",
        env = "FLEET_REPO"
    )]
    pub inventory: Option<PathBuf>,
    /// More output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Errors only: no notes, warnings or progress, and nothing on stdout unless asked for
    /// data (`--json`, completions, a token); the exit code says how it went.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// No colors (also when NO_COLOR is set or output is not a terminal).
    #[arg(long, global = true)]
    pub no_color: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the inventory, roles, playbooks and templates; exit 2 on any error.
    Validate(validate::Args),
    /// The inventory as a table (or JSON).
    Nodes(nodes::Args),
    /// Offline dry-run of a playbook: every host's tasks, rendered, with file checksums.
    Plan(plan::Args),
    /// Run a playbook on its hosts over SSH (`--check`: predict, change nothing).
    Apply(apply::Args),
    /// Bring one node (new or known) to its role: facts, requirements, role, verify, inventory, render.
    Provision(provision::Args),
    /// Gather facts of nodes over SSH (one round trip each) and cache them.
    Facts(facts::Args),
    /// Generate the routing table, node registry and package manifests (`--check`: drift gate).
    Render(render::Args),
    /// Which worker takes a task type now, and the fallback chain.
    Route(route::Args),
    /// The model tiers each node can serve.
    Eligible(eligible::Args),
    /// This machine's CPU, memory, disks and GPUs.
    Resources(resources::Args),
    /// Health sweep: SSH, Ollama, heartbeats, Docker, disk; exit 1 unless all nodes are online.
    Check(check::Args),
    /// Run the HQ registry (heartbeats, node status, live routing table, metrics).
    Serve(serve::Args),
    /// Send this node's heartbeats to HQ.
    Agent(agent::Args),
    /// Issue or revoke a node's agent token.
    Token(token::Args),
    /// The fleet CA and HQ's certificate (HTTPS between agents, CLI and HQ).
    Tls(tls::Args),
    /// Create a new fleet repo.
    Init(init::Args),
    /// Print shell completions (`fleet completions bash > /etc/bash_completion.d/fleet`).
    Completions(completions::Args),
    /// Generate reference docs from the code (`fleet docs modules > docs/modules.md`).
    #[command(hide = true)]
    Docs(docs::Args),
}

/// Parses the process arguments and runs the command; returns the exit code.
pub fn run() -> Result<u8> {
    let cli = Cli::parse();
    style::init(cli.no_color);
    style::set_quiet(cli.quiet, asks_for_data(&cli.command));
    let repo_dir = cli.inventory.clone();
    match cli.command {
        Command::Validate(a) => validate::run(repo_dir.as_deref(), &a, cli.quiet),
        Command::Nodes(a) => nodes::run(repo_dir.as_deref(), &a),
        Command::Plan(a) => plan::run(repo_dir.as_deref(), &a),
        Command::Init(a) => init::run(&a),
        Command::Render(a) => render::run(repo_dir.as_deref(), &a),
        Command::Route(a) => route::run(repo_dir.as_deref(), &a),
        Command::Eligible(a) => eligible::run(repo_dir.as_deref(), &a),
        Command::Resources(a) => resources::run(&a),
        Command::Apply(a) => apply::run(repo_dir.as_deref(), &a, cli.verbose > 0),
        Command::Facts(a) => facts::run(repo_dir.as_deref(), &a),
        Command::Provision(a) => provision::run(repo_dir.as_deref(), &a, cli.verbose > 0),
        Command::Completions(a) => completions::run(&a),
        Command::Check(a) => check::run(repo_dir.as_deref(), &a),
        Command::Serve(a) => serve::run(repo_dir.as_deref(), &a),
        Command::Agent(a) => agent::run(&a),
        Command::Token(a) => token::run(repo_dir.as_deref(), &a),
        Command::Tls(a) => tls::run(repo_dir.as_deref(), &a),
        Command::Docs(a) => docs::run(&a),
    }
}

/// Whether the command's stdout is data the caller asked for, which `-q` keeps.
fn asks_for_data(c: &Command) -> bool {
    match c {
        Command::Nodes(a) => a.json,
        Command::Plan(a) => a.json,
        Command::Apply(a) => a.json,
        Command::Provision(a) => a.json,
        Command::Facts(a) => a.json,
        Command::Route(a) => a.json,
        Command::Eligible(a) => a.json,
        Command::Resources(a) => a.json,
        Command::Check(a) => a.json,
        Command::Token(a) => matches!(a.action, token::Action::Issue { out: None, .. }),
        Command::Completions(_) | Command::Docs(_) => true,
        Command::Validate(_)
        | Command::Render(_)
        | Command::Serve(_)
        | Command::Agent(_)
        | Command::Tls(_)
        | Command::Init(_) => false,
    }
}

/// Logs (tracing) to stderr, and also to `file` when given. `RUST_LOG` / `FLEET_LOG` filter
/// (default `info`).
pub fn init_logging(file: Option<&std::path::Path>) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    let filter = EnvFilter::try_from_env("FLEET_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(if style::quiet() { "error" } else { "info" }));
    let log_file = file.and_then(|p| {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| crate::noteln!("warning: cannot open the log file {}: {e}", p.display()))
            .ok()
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(style::colors_on());
    let _ = match log_file {
        Some(f) => builder
            .with_ansi(false)
            .with_writer(MaskSecrets(std::io::stderr.and(std::sync::Mutex::new(f))))
            .try_init(),
        None => builder.with_writer(MaskSecrets(std::io::stderr)).try_init(),
    };
}

/// A log writer that masks every known secret value in what it writes (one log line per
/// write).
struct MaskSecrets<M>(M);

/// See [`MaskSecrets`].
struct MaskingWriter<W>(W);

impl<W: std::io::Write> std::io::Write for MaskingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(crate::secret::mask(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a>
    for MaskSecrets<M>
{
    type Writer = MaskingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        MaskingWriter(self.0.make_writer())
    }
}

/// Loads the repo a command works on: finds it, prints its warnings, and stops with exit 2
/// on any error (nothing is touched).
pub fn load_repo(repo_dir: Option<&std::path::Path>) -> Result<crate::repo::Repo> {
    let root = crate::repo::find_root(repo_dir)?;
    let mut repo = crate::repo::Repo::load(&root);
    for w in repo.diags.take_warnings() {
        crate::noteln!("{}", style::diagnostic(&w));
    }
    if repo.diags.has_errors() {
        return Err(crate::error::Error::Config(repo.diags));
    }
    Ok(repo)
}

/// A multi-threaded async runtime for commands that talk to many hosts at once.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::error::Error::Failed(format!("cannot start the async runtime: {e}")))
}
