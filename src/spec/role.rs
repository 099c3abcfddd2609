//! `roles/<name>/role.yaml`: a role's description, requirements, included roles, defaults,
//! tasks and handlers.

use std::path::PathBuf;

use crate::error::Loc;
use crate::spec::block::{Item, decode_body};
use crate::spec::decode::{Decoder, Spanned, VarMap};
use crate::spec::task::{Task, decode_tasks};
use crate::spec::yaml::Node;

/// What a host must have for a role.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Requires {
    /// Minimum memory in GB.
    pub ram_gb: Option<f64>,
    /// Minimum CPU cores.
    pub cores: Option<u64>,
    /// Minimum free disk in GB.
    pub disk_gb: Option<f64>,
    /// Operating systems the role supports (empty: any).
    pub os: Vec<String>,
    /// Architectures the role supports (empty: any).
    pub arch: Vec<String>,
    /// Where `requires:` is written.
    #[serde(skip)]
    pub loc: Option<Loc>,
}

/// A role as written.
#[derive(Debug, Clone)]
pub struct Role {
    /// Its name (the directory name).
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Where role.yaml starts.
    pub loc: Loc,
    /// One line about it.
    pub description: String,
    /// Requirements on the host.
    pub requires: Requires,
    /// What nodes with this role can do (`ollama`, `browser`, `docker`, `hq`); routing uses it.
    pub capabilities: Vec<String>,
    /// Roles whose tasks run before this one's.
    pub includes: Vec<Spanned<String>>,
    /// Lowest-precedence variables.
    pub defaults: VarMap,
    /// Tasks in order (every task, blocks' and files' included).
    pub tasks: Vec<Task>,
    /// Their structure (blocks, includes) over `tasks`.
    pub body: Vec<Item>,
    /// Handlers (run at the end of a play when notified).
    pub handlers: Vec<Task>,
}

const ROLE: &[&str] = &[
    "description",
    "requires",
    "capabilities",
    "includes",
    "defaults",
    "tasks",
    "handlers",
];
const REQUIRES: &[&str] = &["ram_gb", "cores", "disk_gb", "os", "arch"];

/// Decodes a role file.
pub fn decode_role(d: &mut Decoder, name: &str, dir: PathBuf, root: &Node) -> Option<Role> {
    let what = format!("role `{name}`");
    let f = d.fields(root, &what, ROLE)?;
    let description = f
        .get("description")
        .and_then(|n| d.string(n, &format!("{what} `description`")))
        .unwrap_or_default();
    let mut requires = Requires::default();
    if let Some(r) = f.get("requires") {
        requires.loc = Some(r.loc.clone());
        if let Some(rf) = d.fields(r, &format!("{what} `requires`"), REQUIRES) {
            requires.ram_gb = rf
                .get("ram_gb")
                .and_then(|n| d.number(n, "`requires.ram_gb`"));
            requires.cores = rf.get("cores").and_then(|n| d.uint(n, "`requires.cores`"));
            requires.disk_gb = rf
                .get("disk_gb")
                .and_then(|n| d.number(n, "`requires.disk_gb`"));
            requires.os = rf
                .get("os")
                .map(|n| {
                    d.string_list(n, "`requires.os`")
                        .into_iter()
                        .map(|s| s.value)
                        .collect()
                })
                .unwrap_or_default();
            // `arm64` and `aarch64` are one architecture: kept as fleet writes it, so the
            // comparison with a node's (equally normalized) arch holds.
            requires.arch = rf
                .get("arch")
                .map(|n| {
                    d.string_list(n, "`requires.arch`")
                        .into_iter()
                        .filter_map(|s| {
                            crate::spec::inventory::checked_arch(
                                d,
                                &s.loc,
                                &format!("{what} `requires.arch`"),
                                &s.value,
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
        }
    }
    let capabilities = f
        .get("capabilities")
        .map(|n| {
            d.string_list(n, &format!("{what} `capabilities`"))
                .into_iter()
                .map(|s| s.value)
                .collect()
        })
        .unwrap_or_default();
    let includes = f
        .get("includes")
        .map(|n| d.string_list(n, &format!("{what} `includes`")))
        .unwrap_or_default();
    let defaults = f
        .get("defaults")
        .map(|n| d.vars(n, &format!("{what} `defaults`")))
        .unwrap_or_default();
    // `import_tasks`/`include_tasks` in a role start at its `tasks/` directory.
    let saved = d.task_dir.replace(dir.join("tasks"));
    let (tasks, body) = f
        .get("tasks")
        .map(|n| decode_body(d, n, &format!("{what} `tasks`")))
        .unwrap_or_default();
    d.task_dir = saved;
    let handlers = f
        .get("handlers")
        .map(|n| decode_tasks(d, n, &format!("{what} `handlers`")))
        .unwrap_or_default();
    Some(Role {
        name: name.to_string(),
        dir,
        loc: root.loc.clone(),
        description,
        requires,
        capabilities,
        includes,
        defaults,
        tasks,
        body,
        handlers,
    })
}
