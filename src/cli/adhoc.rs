//! Ad-hoc commands: one module on the hosts a pattern selects, without a playbook —
//! `fleet run PATTERN -m MODULE -a 'k=v …'` and its short form for commands,
//! `fleet sh PATTERN 'COMMAND'` (Ansible's `ansible all -m shell -a …`). They run through the
//! same planner and engine as `fleet apply` (values bound as data, check mode, recap, exit
//! codes), and show each host's output under its line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value as J};

use crate::engine::RunOptions;
use crate::error::{Diagnostic, Error, Result};
use crate::inventory::vars::ExtraVars;

/// What the ad-hoc play is called in its messages.
const SOURCE: &str = "<fleet run>";

/// Options both ad-hoc commands take.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// Predict what would change; change nothing.
    #[arg(long)]
    pub check: bool,
    /// Show unified diffs of files.
    #[arg(long)]
    pub diff: bool,
    /// Run as root (sudo).
    #[arg(short = 'b', long = "become")]
    pub become_: bool,
    /// Run as this account (sudo -u); implies --become.
    #[arg(long, value_name = "USER")]
    pub become_user: Option<String>,
    /// Hosts at once.
    #[arg(long, default_value_t = 50)]
    pub forks: usize,
    /// Extra variables, highest precedence: `-e key=value`, `-e @vars.yaml`, `-e '{"key": 1}'`.
    #[arg(short = 'e', long = "extra-vars", value_name = "KEY=VALUE")]
    pub extra: Vec<String>,
    /// An ssh config file (`-F`), instead of the inventory's `ssh_config`.
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// JSON lines on stdout (each host's rc, stdout and stderr in its event).
    #[arg(long)]
    pub json: bool,
    /// The sudo password.
    #[command(flatten)]
    pub become_pass: crate::cli::become_pass::AskBecomePass,
    /// Use cached facts younger than this (`10m`, `1h`) instead of gathering them again.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub facts_max_age: Option<Duration>,
}

/// Arguments of `fleet run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Hosts: a node, group, role or glob (`!x` excludes; `all`).
    #[arg(add = crate::cli::candidates::patterns())]
    pub pattern: String,
    /// The module (`fleet docs modules` lists them).
    #[arg(short = 'm', long = "module", default_value = "command")]
    pub module: String,
    /// Its arguments: `k=v` words (quote values with spaces: `msg="a b"`), or a YAML/JSON
    /// mapping (`'{path: /tmp/x, state: directory}'`). For `command` and `shell`, words
    /// without `=` are the command line.
    #[arg(short = 'a', long = "args", default_value = "")]
    pub args: String,
    #[command(flatten)]
    pub common: Common,
}

/// Arguments of `fleet sh`.
#[derive(Debug, clap::Args)]
pub struct ShArgs {
    /// Hosts: a node, group, role or glob (`!x` excludes; `all`).
    #[arg(add = crate::cli::candidates::patterns())]
    pub pattern: String,
    /// The command line, run by `sh -c` on each host.
    pub command: String,
    #[command(flatten)]
    pub common: Common,
}

/// Parses `-a`: a mapping, or `k=v` words (shell-like quoting); for the command modules, the
/// words without `=` form the command line.
pub fn parse_args(module: &str, text: &str) -> std::result::Result<J, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        let node = crate::spec::yaml::parse(&SOURCE.into(), trimmed).map_err(|d| d.message)?;
        return match node.to_json() {
            J::Object(m) => Ok(J::Object(m)),
            _ => Err("`-a` starting with `{` must be a mapping".into()),
        };
    }
    let words = shlex::split(trimmed).ok_or_else(|| "`-a` has an unclosed quote".to_string())?;
    let mut map = Map::new();
    let mut free = Vec::new();
    for w in words {
        match w.split_once('=') {
            Some((k, v)) if crate::script::is_var_name(k) => {
                if map
                    .insert(k.to_string(), J::String(v.to_string()))
                    .is_some()
                {
                    return Err(format!("`-a` gives `{k}` twice"));
                }
            }
            _ => free.push(w),
        }
    }
    if !free.is_empty() {
        match module {
            "command" => {
                map.insert(
                    "argv".into(),
                    J::Array(free.into_iter().map(J::String).collect()),
                );
            }
            "shell" => {
                map.insert("cmd".into(), J::String(free.join(" ")));
            }
            _ => {
                return Err(format!(
                    "`-a` for `{module}` takes `key=value` words; `{}` is not one",
                    free[0]
                ));
            }
        }
    }
    Ok(J::Object(map))
}

/// The one-play playbook of an ad-hoc run.
fn playbook(
    pattern: &str,
    module: &str,
    args: J,
    common: &Common,
) -> Result<crate::spec::playbook::Playbook> {
    let mut task = Map::new();
    task.insert("name".into(), J::String(module.to_string()));
    task.insert(module.to_string(), args);
    // Registered, so the engine keeps the output it shows (and runs it on its own).
    task.insert("register".into(), J::String("fleet_adhoc".into()));
    let mut play = Map::new();
    play.insert("name".into(), J::String(format!("{module} on {pattern}")));
    play.insert("hosts".into(), J::String(pattern.to_string()));
    if common.become_ || common.become_user.is_some() {
        play.insert("become".into(), J::Bool(true));
    }
    if let Some(u) = &common.become_user {
        play.insert("become_user".into(), J::String(u.clone()));
    }
    play.insert("tasks".into(), J::Array(vec![J::Object(task)]));
    // JSON is YAML: the playbook goes through the same decoder (and its checks) as a file.
    let text = serde_json::to_string(&J::Array(vec![J::Object(play)]))
        .map_err(|e| Error::Failed(e.to_string()))?;
    let file: std::sync::Arc<str> = SOURCE.into();
    let node = crate::spec::yaml::parse(&file, &text).map_err(Error::config)?;
    let mut d = crate::spec::decode::Decoder::with_modules(crate::modules::SPECS);
    let pb = crate::spec::playbook::decode_playbook(&mut d, file, &node);
    if d.diags.has_errors() {
        return Err(Error::Config(d.diags));
    }
    Ok(pb)
}

fn execute(
    repo_dir: Option<&Path>,
    pattern: &str,
    module: &str,
    args: J,
    common: &Common,
    verbose: bool,
) -> Result<u8> {
    let repo = crate::cli::load_repo(repo_dir)?;
    if !crate::modules::SPECS.iter().any(|m| m.name == module) {
        let names = crate::modules::SPECS.iter().map(|m| m.name);
        let help = crate::validate::suggest(module, names, "modules");
        return Err(Error::config(
            Diagnostic::error(None, format!("unknown module `{module}`")).with_help(help),
        ));
    }
    let pb = playbook(pattern, module, args, common)?;
    let extra = ExtraVars::parse(&common.extra).map_err(Error::Usage)?;
    let opts = RunOptions {
        check: common.check,
        diff: common.diff,
        forks: common.forks.max(1),
        extra,
        ssh_config: common.ssh_config.clone(),
        connect_timeout: Duration::from_secs(10),
        show_output: true,
        start_at_task: None,
        step: false,
        become_password: common.become_pass.read()?,
        facts_max_age: common.facts_max_age,
        ..RunOptions::default()
    };
    crate::cli::apply::execute(repo, pb, opts, common.json, verbose)
}

/// Runs `fleet run`.
pub fn run(repo_dir: Option<&Path>, a: &RunArgs, verbose: bool) -> Result<u8> {
    let args = parse_args(&a.module, &a.args).map_err(Error::Usage)?;
    execute(repo_dir, &a.pattern, &a.module, args, &a.common, verbose)
}

/// Runs `fleet sh`.
pub fn sh(repo_dir: Option<&Path>, a: &ShArgs, verbose: bool) -> Result<u8> {
    if a.command.trim().is_empty() {
        return Err(Error::Usage("`fleet sh` needs a command".into()));
    }
    let mut m = Map::new();
    m.insert("cmd".into(), J::String(a.command.clone()));
    execute(
        repo_dir,
        &a.pattern,
        "shell",
        J::Object(m),
        &a.common,
        verbose,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_words_and_command_lines() {
        assert_eq!(
            parse_args("file", "path=/tmp/x state=directory mode=0755").expect("ok"),
            serde_json::json!({ "path": "/tmp/x", "state": "directory", "mode": "0755" })
        );
        assert_eq!(
            parse_args("debug", "msg=\"a b=c\"").expect("ok"),
            serde_json::json!({ "msg": "a b=c" })
        );
        assert_eq!(
            parse_args("command", "ls -l /tmp chdir=/").expect("ok"),
            serde_json::json!({ "argv": ["ls", "-l", "/tmp"], "chdir": "/" })
        );
        assert_eq!(
            parse_args("shell", "echo $HOME | wc -c").expect("ok"),
            serde_json::json!({ "cmd": "echo $HOME | wc -c" })
        );
        assert_eq!(
            parse_args("file", "{path: /tmp/y, state: absent}").expect("ok"),
            serde_json::json!({ "path": "/tmp/y", "state": "absent" })
        );
        assert!(parse_args("file", "path=/a path=/b").is_err());
        assert!(parse_args("file", "oops").is_err());
        assert!(parse_args("file", "msg='open").is_err());
        assert!(parse_args("file", "[1, 2]").is_err());
    }
}
