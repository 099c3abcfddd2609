//! Task modules, one file each. A module declares its [`ModuleSpec`] (the single source for
//! validation and `docs/modules.md`), decodes a task's rendered arguments into a typed `Args`
//! (a bad value is a typed error located at the argument), and builds the host script from
//! `Args` and the host's facts with the [`Script`] builder, through which every value enters
//! as data. Everything else the engine and `fleet plan` need to know about a task — the path
//! it creates, what it needs to exist, whether it can share an exec with its neighbours,
//! whether it makes the facts stale, how its result is judged, a follow-up step — is answered
//! here too, so `engine/` has no branch on module names. Adding a module is adding one file
//! and its entry in [`ALL`].

pub mod archive;
pub mod args;
pub mod attrs;
pub mod place;
pub mod run;
pub mod values;

pub mod agent_binary;
pub mod authorized_key;
pub mod command;
pub mod copy;
pub mod cron;
pub mod debug;
pub mod docker_compose;
pub mod docker_container;
pub mod file;
pub mod fleet_agent;
pub mod fleet_hq_binary;
pub mod fleet_tls;
pub mod get_url;
pub mod git;
pub mod http;
pub mod lineinfile;
pub mod ollama_install;
pub mod ollama_model;
pub mod package;
pub mod pip;
pub mod service;
pub mod shell;
pub mod sysctl;
pub mod systemd_unit;
pub mod template;
pub mod unarchive;
pub mod user;
pub mod uv;
pub mod wait_for;

#[cfg(test)]
mod snapshots;

use std::path::Path;
use std::sync::Arc;

use crate::facts::Facts;
use crate::script::Script;
pub use crate::script::frame::{Mode, Reported};
pub use crate::spec::module::ModuleSpec;
pub use args::{ArgError, ArgReader};

/// Every module, in documentation order.
pub static ALL: &[&dyn AnyModule] = &[
    &command::Command,
    &shell::Shell,
    &copy::Copy,
    &template::Template,
    &file::File,
    &lineinfile::LineInFile,
    &package::Package,
    &service::Service,
    &get_url::GetUrl,
    &wait_for::WaitFor,
    &http::Http,
    &ollama_model::OllamaModel,
    &ollama_install::OllamaInstall,
    &fleet_agent::FleetAgent,
    &fleet_tls::FleetTls,
    &fleet_hq_binary::FleetHqBinary,
    &user::User,
    &git::Git,
    &unarchive::Unarchive,
    &cron::Cron,
    &authorized_key::AuthorizedKey,
    &systemd_unit::SystemdUnit,
    &docker_container::DockerContainer,
    &docker_compose::DockerCompose,
    &pip::Pip,
    &uv::Uv,
    &sysctl::Sysctl,
    &debug::Debug,
];

/// The modules' specs, in documentation order (what task decoding checks against).
pub static SPECS: &[&ModuleSpec] = &[
    &command::SPEC,
    &shell::SPEC,
    &copy::SPEC,
    &template::SPEC,
    &file::SPEC,
    &lineinfile::SPEC,
    &package::SPEC,
    &service::SPEC,
    &get_url::SPEC,
    &wait_for::SPEC,
    &http::SPEC,
    &ollama_model::SPEC,
    &ollama_install::SPEC,
    &fleet_agent::SPEC,
    &fleet_tls::SPEC,
    &fleet_hq_binary::SPEC,
    &user::SPEC,
    &git::SPEC,
    &unarchive::SPEC,
    &cron::SPEC,
    &authorized_key::SPEC,
    &systemd_unit::SPEC,
    &docker_container::SPEC,
    &docker_compose::SPEC,
    &pip::SPEC,
    &uv::SPEC,
    &sysctl::SPEC,
    &debug::SPEC,
];

/// The module a task names.
pub fn lookup(name: &str) -> Option<&'static dyn AnyModule> {
    ALL.iter().copied().find(|m| m.spec().name == name)
}

/// `docs/modules.md`.
pub fn markdown() -> String {
    crate::spec::module::markdown(SPECS)
}

/// Content a task places on a host.
#[derive(Debug, Clone)]
pub struct FileContent {
    /// The bytes.
    pub bytes: Arc<[u8]>,
    /// Its rendering read a secret: printers never show it (nor a diff of it).
    pub secret: bool,
}

/// What the controller gives a module while decoding: the task's templates and files.
pub trait Files {
    /// Renders the template `src` (the role's `templates/`, the repo's, then the built-ins)
    /// with the task's variables plus `extra`.
    fn template(
        &self,
        src: &str,
        extra: &[(&str, serde_json::Value)],
    ) -> Result<FileContent, ArgError>;
    /// A file of the role's `files/`, the repo's `files/`, or of the repo by its path.
    fn repo_file(&self, src: &str) -> Result<Vec<u8>, ArgError>;
    /// The repo's root on the controller.
    fn repo_root(&self) -> &Path;
    /// A variable of the task's context (`fleet_user` …).
    fn var(&self, name: &str) -> Option<serde_json::Value>;
}

/// What decoding may use besides the arguments.
pub struct Inputs<'a> {
    /// The node the task runs on.
    pub node: &'a str,
    /// Templates and files.
    pub files: &'a dyn Files,
}

/// Something a task needs to exist; in check mode an earlier task of the run may be about to
/// create it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// A directory (a file is placed in it).
    Dir(String),
    /// The path the task manages, as a regular file.
    File(String),
}

impl Need {
    /// Why the task fails when nothing earlier in the run creates it.
    pub fn message(&self) -> String {
        match self {
            Need::Dir(d) => {
                format!("directory {d} does not exist (create it with a file task first)")
            }
            Need::File(p) => format!(
                "{p} does not exist or is not a regular file (use state: touch to create it)"
            ),
        }
    }
}

/// What a task does to paths, for check-mode predictions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// A path it creates when it changes something, and whether that is a directory (created
    /// with its parents).
    pub creates: Option<(String, bool)>,
    /// What its script reports missing in check mode (`missing=1`).
    pub needs: Option<Need>,
}

/// How a result is judged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Judged {
    /// It changed something (or would, in check mode).
    pub changed: bool,
    /// It failed, and why.
    pub failed: Option<String>,
    /// A line worth showing beside the result (what a pull did …).
    pub note: Option<String>,
}

/// One exec of a task: its script, the content on its stdin, the path whose attributes it
/// compares (an exec looks them all up at once).
#[derive(Debug, Clone, Default)]
pub struct Step {
    /// The script (a unit of a frame).
    pub script: Script,
    /// Content streamed on stdin (a large or binary file).
    pub stdin: Option<Arc<[u8]>>,
    /// The path whose mode and owner the script compares.
    pub stat_path: Option<String>,
    /// The script changes nothing but `stat_path` (creating missing parents at most), so a
    /// change leaves what an exec looked up about other paths valid.
    pub own_path: bool,
}

impl Step {
    /// A step that is only a script.
    pub fn of(script: Script) -> Step {
        Step {
            script,
            ..Step::default()
        }
    }
}

/// A task module.
pub trait Module: Send + Sync + 'static {
    /// Its arguments, decoded and checked.
    type Args: Send + Sync + 'static;

    /// Its name and argument specs.
    fn spec(&self) -> &'static ModuleSpec;

    /// Decodes the rendered arguments.
    fn decode(&self, a: &ArgReader<'_>, inputs: &Inputs<'_>) -> Result<Self::Args, ArgError>;

    /// The host script for a host with these facts. It reads `$CHECK` (predict, change
    /// nothing) and `$DIFF` (report old contents), and ends with `finish` or `fail`.
    fn script(&self, args: &Self::Args, facts: &Facts) -> Result<Step, ArgError>;

    /// A second exec, in a real run, when the first reported `more=1` (a large file's content
    /// once the first found it differs, the agent binary …).
    fn followup(
        &self,
        _args: &Self::Args,
        _facts: &Facts,
        _first: &Reported,
    ) -> Result<Option<Step>, ArgError> {
        Ok(None)
    }

    /// Paths it creates and needs.
    fn effects(&self, _args: &Self::Args) -> Effects {
        Effects::default()
    }

    /// Whether it can share one exec with neighbouring tasks (short, no follow-up, no stdin).
    fn batchable(&self, _args: &Self::Args) -> bool {
        true
    }

    /// Whether a change makes the host's facts stale (packages, users).
    fn stales_facts(&self) -> bool {
        false
    }

    /// Whether a check run gives the output a real run would (a command does not run in
    /// check mode, so `changed_when` cannot judge it).
    fn output_in_check(&self, _args: &Self::Args) -> bool {
        true
    }

    /// Judges what the script reported.
    fn judge(&self, _args: &Self::Args, r: &Reported, _mode: Mode) -> Judged {
        Judged {
            changed: r.changed,
            ..Judged::default()
        }
    }

    /// A message printed on the controller instead of running anything on the host.
    fn local(&self, _args: &Self::Args) -> Option<String> {
        None
    }

    /// The file it places (destination and content), for `fleet plan` and `--diff`.
    fn file<'a>(&self, _args: &'a Self::Args) -> Option<(&'a str, &'a FileContent)> {
        None
    }
}

/// A task's module with its decoded arguments, as the engine and `fleet plan` hold it.
pub trait Action: Send + Sync {
    /// The module's spec.
    fn spec(&self) -> &'static ModuleSpec;
    /// See [`Module::script`].
    fn script(&self, facts: &Facts) -> Result<Step, ArgError>;
    /// See [`Module::followup`].
    fn followup(&self, facts: &Facts, first: &Reported) -> Result<Option<Step>, ArgError>;
    /// See [`Module::effects`].
    fn effects(&self) -> Effects;
    /// See [`Module::batchable`].
    fn batchable(&self) -> bool;
    /// See [`Module::stales_facts`].
    fn stales_facts(&self) -> bool;
    /// See [`Module::output_in_check`].
    fn output_in_check(&self) -> bool;
    /// See [`Module::judge`].
    fn judge(&self, r: &Reported, mode: Mode) -> Judged;
    /// See [`Module::local`].
    fn local(&self) -> Option<String>;
    /// See [`Module::file`].
    fn file(&self) -> Option<(&str, &FileContent)>;
}

struct Bound<M: Module> {
    module: &'static M,
    args: M::Args,
}

impl<M: Module> Action for Bound<M> {
    fn spec(&self) -> &'static ModuleSpec {
        self.module.spec()
    }
    fn script(&self, facts: &Facts) -> Result<Step, ArgError> {
        self.module.script(&self.args, facts)
    }
    fn followup(&self, facts: &Facts, first: &Reported) -> Result<Option<Step>, ArgError> {
        self.module.followup(&self.args, facts, first)
    }
    fn effects(&self) -> Effects {
        self.module.effects(&self.args)
    }
    fn batchable(&self) -> bool {
        self.module.batchable(&self.args)
    }
    fn stales_facts(&self) -> bool {
        self.module.stales_facts()
    }
    fn output_in_check(&self) -> bool {
        self.module.output_in_check(&self.args)
    }
    fn judge(&self, r: &Reported, mode: Mode) -> Judged {
        self.module.judge(&self.args, r, mode)
    }
    fn local(&self) -> Option<String> {
        self.module.local(&self.args)
    }
    fn file(&self) -> Option<(&str, &FileContent)> {
        self.module.file(&self.args)
    }
}

/// A module without its argument type: what the registry holds.
pub trait AnyModule: Send + Sync {
    /// Its spec.
    fn spec(&self) -> &'static ModuleSpec;
    /// Decodes arguments into an [`Action`].
    fn bind(
        &'static self,
        a: &ArgReader<'_>,
        inputs: &Inputs<'_>,
    ) -> Result<Box<dyn Action>, ArgError>;
}

impl<M: Module> AnyModule for M {
    fn spec(&self) -> &'static ModuleSpec {
        Module::spec(self)
    }
    fn bind(
        &'static self,
        a: &ArgReader<'_>,
        inputs: &Inputs<'_>,
    ) -> Result<Box<dyn Action>, ArgError> {
        let args = self.decode(a, inputs)?;
        Ok(Box::new(Bound { module: self, args }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_specs_match_the_modules() {
        let mut n: Vec<_> = SPECS.iter().map(|s| s.name).collect();
        n.sort();
        n.dedup();
        assert_eq!(n.len(), SPECS.len());
        for (m, s) in ALL.iter().zip(SPECS) {
            assert_eq!(m.spec().name, s.name);
        }
    }

    /// `Script::code` takes `&'static str`: text built at run time can only get there by
    /// leaking it, which module and script code never does.
    #[test]
    fn no_value_is_leaked_into_script_code() {
        for dir in ["src/modules", "src/script"] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
            for entry in std::fs::read_dir(&dir).expect("dir") {
                let path = entry.expect("entry").path();
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("read");
                assert!(
                    !text.contains(&["le", "ak("].concat()),
                    "{}",
                    path.display()
                );
            }
        }
    }
}
