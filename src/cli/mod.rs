//! Command-line surface: global flags, one file per subcommand, and the exit-code contract
//! (0 ok, 1 a host failed or a check found a problem, 2 usage or configuration error).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::Result;

pub mod adhoc;
pub mod adopt;
pub mod agent;
pub mod agent_platforms;
pub mod apply;
pub mod become_pass;
pub mod candidates;
pub mod check;
pub mod completions;
pub mod dashboard;
pub mod dispatch;
pub mod docs;
pub mod drain;
pub mod eligible;
pub mod facts;
pub mod hq_api;
pub mod init;
pub mod join;
pub mod journal;
pub mod log_file;
pub mod man;
pub mod nodes;
pub mod peers;
pub mod plan;
pub mod prompt;
pub mod provision;
pub mod render;
pub mod resources;
pub mod route;
pub mod secret;
pub mod serve;
pub mod spend;
pub mod status;
pub mod style;
pub mod tls;
pub mod token;
pub mod validate;

/// The heading the global flags are listed under, apart from each command's own.
const GLOBAL: &str = "Global options";

/// The version `--version` prints: the crate's, and the git commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("FLEET_GIT_COMMIT"),
    ")"
);

/// fleet: provision and run a fleet of AI worker machines from a declarative repo.
#[derive(Debug, Parser)]
#[command(name = "fleet", version = VERSION, about, propagate_version = true)]
pub struct Cli {
    /// The fleet repo (the directory holding `inventory/`); default: the current directory or
    /// its nearest parent holding `inventory/`.
    #[arg(
        short = 'i',
        long = "inventory",
        global = true,
        value_name = "DIR",
        env = "FLEET_REPO",
        help_heading = GLOBAL
    )]
    pub inventory: Option<PathBuf>,
    /// More output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,
    /// Errors only: no notes, warnings or progress, and nothing on stdout unless asked for
    /// data (`--json`, completions, a token); the exit code says how it went.
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    pub quiet: bool,
    /// No colors (also when NO_COLOR is set or output is not a terminal).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub no_color: bool,
    /// The age identity file that decrypts the repo's `.age` files (default: FLEET_AGE_IDENTITY,
    /// else `~/.config/fleet/age-identity.txt`).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "FLEET_AGE_IDENTITY_FILE",
        help_heading = GLOBAL
    )]
    pub identity: Option<PathBuf>,
    /// How log lines (`-v`, `-vv`, `serve`, `agent`) are written: text, or one JSON object a line.
    #[arg(long, global = true, value_enum, default_value = "text", help_heading = GLOBAL)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-12-01T10:00:00Z  INFO host{node=bob}: exec rc=0 ms=12`
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, fields, spans).
    Json,
}

/// Verbosity and format of the logs, set once from the global flags.
static LOGS: std::sync::OnceLock<(u8, LogFormat)> = std::sync::OnceLock::new();

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
    /// Ad-hoc: one module on the hosts a pattern selects (`fleet run all -m file -a 'path=/x state=directory'`).
    Run(adhoc::RunArgs),
    /// Ad-hoc: a shell command on the hosts a pattern selects, each host's output shown.
    Sh(adhoc::ShArgs),
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
    /// Health sweep: SSH, Ollama, heartbeats, Docker, disk; exit 1 unless all nodes are online (or draining).
    Check(check::Args),
    /// Run the HQ registry (heartbeats, node status, live routing table, metrics).
    Serve(serve::Args),
    /// Send this node's heartbeats to HQ.
    Agent(agent::Args),
    /// Send one prompt through the fleet (HQ's gateway picks the worker; `--direct` without HQ).
    Prompt(prompt::Args),
    /// Run a batch of prompts (JSON lines) through the fleet, resumable, as many at once as it has room for.
    Dispatch(dispatch::Args),
    /// The workers taking work now: models, requests in flight, breakers.
    Peers(peers::Args),
    /// Each node as HQ and its gateway see it: state, heartbeat, resources, in flight, errors.
    Status(status::Args),
    /// What the cloud fallback cost, today and this month, by provider, model and client.
    Spend(spend::Args),
    /// Open HQ's web dashboard in a browser (a one-time sign-in link).
    Dashboard(dashboard::Args),
    /// Issue or revoke a node's agent token.
    Token(token::Args),
    /// On a new machine: register it with HQ as pending (with a join token).
    Join(join::Args),
    /// Make a pending machine a node: inventory, agent token, provision.
    Adopt(adopt::Args),
    /// Take a node out of routing; its agent stops once nothing is in flight (`--undo`: back).
    Drain(drain::Args),
    /// Bring a drained node back (`fleet drain --undo NODE`).
    Undrain(drain::UndrainArgs),
    /// On a node: drain it with its own agent token.
    Leave(drain::LeaveArgs),
    /// The fleet CA and HQ's certificate (HTTPS between agents, CLI and HQ).
    Tls(tls::Args),
    /// Encrypted files in the repo (age): init, encrypt, decrypt, view, edit, rekey.
    Secret(secret::Args),
    /// Create a new fleet repo.
    Init(init::Args),
    /// Print shell completions (`fleet completions bash > /etc/bash_completion.d/fleet`).
    Completions(completions::Args),
    /// Write the man pages (`fleet man --out /usr/local/share/man/man1`).
    Man(man::Args),
    /// Generate reference docs from the code (`fleet docs modules > docs/modules.md`).
    #[command(hide = true)]
    Docs(docs::Args),
}

/// Parses the process arguments and runs the command; returns the exit code.
pub fn run() -> Result<u8> {
    // A completion request (`COMPLETE=bash fleet -- …`, from the script `fleet completions`
    // prints) is answered here, before anything else prints.
    clap_complete::CompleteEnv::with_factory(<Cli as clap::CommandFactory>::command).complete();
    let cli = Cli::parse();
    style::init(cli.no_color);
    style::set_quiet(cli.quiet, asks_for_data(&cli.command));
    let _ = LOGS.set((cli.verbose, cli.log_format));
    // Daemons start their own logging (with a file, at `info`); every other command logs
    // warnings by default, `-v` info, `-vv` debug (each ssh exec and its time), `-vvv` trace.
    if !matches!(cli.command, Command::Serve(_) | Command::Agent(_)) {
        init_logging(None, false);
    }
    crate::vault::set_identity_file(cli.identity.clone());
    let repo_dir = cli.inventory.clone();
    match cli.command {
        Command::Validate(a) => validate::run(repo_dir.as_deref(), &a, cli.quiet),
        Command::Nodes(a) => nodes::run(repo_dir.as_deref(), &a),
        Command::Plan(a) => plan::run(repo_dir.as_deref(), &a),
        Command::Init(a) => init::run(&a),
        Command::Render(a) => render::run(repo_dir.as_deref(), &a),
        Command::Route(a) => route::run(repo_dir.as_deref(), &a),
        Command::Eligible(a) => eligible::run(repo_dir.as_deref(), &a),
        Command::Prompt(a) => prompt::run(repo_dir.as_deref(), &a),
        Command::Dispatch(a) => dispatch::run(repo_dir.as_deref(), &a),
        Command::Peers(a) => peers::run(repo_dir.as_deref(), &a),
        Command::Status(a) => status::run(repo_dir.as_deref(), &a),
        Command::Spend(a) => spend::run(repo_dir.as_deref(), &a),
        Command::Dashboard(a) => dashboard::run(repo_dir.as_deref(), &a),
        Command::Resources(a) => resources::run(&a),
        Command::Apply(a) => apply::run(repo_dir.as_deref(), &a, cli.verbose > 0),
        Command::Run(a) => adhoc::run(repo_dir.as_deref(), &a, cli.verbose > 0),
        Command::Sh(a) => adhoc::sh(repo_dir.as_deref(), &a, cli.verbose > 0),
        Command::Facts(a) => facts::run(repo_dir.as_deref(), &a),
        Command::Provision(a) => provision::run(repo_dir.as_deref(), &a, cli.verbose > 0),
        Command::Completions(a) => completions::run(&a),
        Command::Man(a) => man::run(&a),
        Command::Check(a) => check::run(repo_dir.as_deref(), &a),
        Command::Serve(a) => serve::run(repo_dir.as_deref(), &a),
        Command::Agent(a) => agent::run(&a),
        Command::Token(a) => token::run(repo_dir.as_deref(), &a),
        Command::Join(a) => join::run(&a),
        Command::Adopt(a) => adopt::run(repo_dir.as_deref(), &a, cli.verbose > 0),
        Command::Drain(a) => drain::run(repo_dir.as_deref(), &a),
        Command::Undrain(a) => drain::undrain(repo_dir.as_deref(), &a),
        Command::Leave(a) => drain::leave(&a),
        Command::Tls(a) => tls::run(repo_dir.as_deref(), &a),
        Command::Secret(a) => secret::run(repo_dir.as_deref(), &a),
        Command::Docs(a) => docs::run(&a),
    }
}

/// Whether the command's stdout is data the caller asked for, which `-q` keeps.
fn asks_for_data(c: &Command) -> bool {
    match c {
        Command::Nodes(a) => a.json,
        Command::Plan(a) => a.json,
        Command::Apply(a) => a.json || a.list_hosts || a.list_tasks || a.list_tags,
        Command::Run(a) => a.common.json,
        Command::Sh(a) => a.common.json,
        Command::Provision(a) => a.json,
        Command::Facts(a) => a.json,
        Command::Route(a) => a.json,
        Command::Eligible(a) => a.json,
        Command::Prompt(_) => true,
        Command::Dispatch(a) => a.json,
        Command::Peers(a) => a.json,
        Command::Status(a) => a.json,
        Command::Spend(a) => a.json,
        Command::Dashboard(a) => a.print,
        Command::Resources(a) => a.json,
        Command::Check(a) => a.json,
        Command::Token(a) => a.action.prints_data(),
        Command::Adopt(a) => a.json,
        Command::Completions(_) | Command::Docs(_) | Command::Secret(_) => true,
        Command::Man(a) => a.out.is_none(),
        Command::Validate(_)
        | Command::Render(_)
        | Command::Serve(_)
        | Command::Agent(_)
        | Command::Tls(_)
        | Command::Join(_)
        | Command::Drain(_)
        | Command::Undrain(_)
        | Command::Leave(_)
        | Command::Init(_) => false,
    }
}

/// Logs (tracing) to stderr, or to `file` when given (`--log-file`), as text or JSON
/// (`--log-format`). The level: `-q` errors only; else `FLEET_LOG`/`RUST_LOG` when set; else
/// by `-v` count — `serve` and `agent` log `info` by default, other commands `warn`.
///
/// Where the lines go (docs/logs.md): with a file, into it — reopened when rotated — and to
/// stderr too only when someone reads it there (a terminal or the journal): launchd sends a
/// daemon's stderr to a file nothing rotates, kept for what is said before logging starts.
/// When stderr is systemd's journal, each line carries its priority and no timestamp
/// ([`journal`]).
pub fn init_logging(file: Option<&std::path::Path>, daemon: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};
    let (verbose, format) = LOGS.get().copied().unwrap_or_default();
    let level = match (verbose, daemon) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        (2, _) => "debug",
        _ => "trace",
    };
    let filter = if style::quiet() {
        EnvFilter::new("error")
    } else {
        EnvFilter::try_from_env("FLEET_LOG")
            .or_else(|_| EnvFilter::try_from_default_env())
            .unwrap_or_else(|_| EnvFilter::new(level))
    };
    let log_file = file.and_then(|p| {
        log_file::LogFile::open(p)
            .map_err(|e| crate::noteln!("warning: cannot open the log file {}: {e}", p.display()))
            .ok()
    });
    let to_journal = journal::stderr_is_journal();
    let to_stderr = log_file.is_none() || to_journal || std::io::stderr().is_terminal();
    FILE_ONLY.store(!to_stderr, std::sync::atomic::Ordering::Relaxed);
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::new();
    if let Some(f) = log_file {
        let w = MaskSecrets(f);
        layers.push(match format {
            LogFormat::Json => fmt::layer()
                .json()
                .with_target(false)
                .with_writer(w)
                .boxed(),
            LogFormat::Text => fmt::layer()
                .with_target(false)
                .with_ansi(false)
                .with_writer(w)
                .boxed(),
        });
    }
    if to_stderr {
        let w = MaskSecrets(std::io::stderr);
        layers.push(match (format, to_journal) {
            (LogFormat::Json, true) => fmt::layer()
                .json()
                .event_format(journal::Prioritized {
                    format: fmt::format().json().with_target(false),
                    level_name: false,
                })
                .with_writer(w)
                .boxed(),
            (LogFormat::Text, true) => fmt::layer()
                .with_ansi(false)
                .event_format(journal::Prioritized {
                    format: fmt::format()
                        .without_time()
                        .with_target(false)
                        .with_level(false),
                    level_name: true,
                })
                .with_writer(w)
                .boxed(),
            (LogFormat::Json, false) => fmt::layer()
                .json()
                .with_target(false)
                .with_writer(w)
                .boxed(),
            (LogFormat::Text, false) => fmt::layer()
                .with_target(false)
                .with_ansi(style::colors_on())
                .with_writer(w)
                .boxed(),
        });
    }
    let _ = tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .try_init();
}

/// Set when the log lines go to `--log-file` alone (not to stderr).
static FILE_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether log lines go to a log file and not to stderr: the error a daemon stops with is
/// then logged too, so that the file tells why it stopped.
pub fn logs_only_to_file() -> bool {
    FILE_ONLY.load(std::sync::atomic::Ordering::Relaxed)
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
    let started = std::time::Instant::now();
    let mut repo = crate::repo::Repo::load(&root);
    tracing::info!(
        root = %root.display(),
        nodes = repo.inventory.nodes.len(),
        roles = repo.roles.len(),
        templates = repo.templates.len(),
        ms = started.elapsed().as_millis() as u64,
        "repo loaded"
    );
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
