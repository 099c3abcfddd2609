//! `playbooks/*.yaml`: a list of plays, each selecting hosts and listing roles and tasks.

use crate::error::Loc;
use crate::spec::block::{Item, decode_body};
use crate::spec::decode::{Decoder, Spanned, VarMap};
use crate::spec::task::{Task, decode_tasks};
use crate::spec::yaml::Node;

/// One play.
#[derive(Debug, Clone)]
pub struct Play {
    /// Its name.
    pub name: String,
    /// Where it starts.
    pub loc: Loc,
    /// Host pattern: node, group, role, glob, `all`; comma-separated; `!` excludes.
    pub hosts: Spanned<String>,
    /// Play variables.
    pub vars: VarMap,
    /// Files of variables (`vars_files`), relative to the playbook; read when the playbook is
    /// loaded, their variables over `vars`.
    pub vars_files: Vec<Spanned<String>>,
    /// Roles to apply, in order.
    pub roles: Vec<Spanned<String>>,
    /// Tasks after the roles' (every task, blocks' and files' included, in order).
    pub tasks: Vec<Task>,
    /// Their structure (blocks, includes) over `tasks`.
    pub body: Vec<Item>,
    /// Rolling batches (`serial`): empty runs every host at once.
    pub serial: Vec<Spanned<BatchSize>>,
    /// A batch in which more than this percentage of hosts fail stops the run.
    pub max_fail_percentage: Option<f64>,
    /// Handlers of the play.
    pub handlers: Vec<Task>,
    /// Run every task with sudo.
    pub become_: bool,
    /// The account tasks become (default root); implies `become`.
    pub become_user: Option<Spanned<String>>,
    /// Gather the hosts' facts before the tasks (default); `false`: use the cached facts,
    /// when there are any, and do not contact the host for them.
    pub gather_facts: bool,
}

/// A playbook file.
#[derive(Debug, Clone)]
pub struct Playbook {
    /// Its path as shown to the user.
    pub file: std::sync::Arc<str>,
    /// Its plays.
    pub plays: Vec<Play>,
}

const PLAY: &[&str] = &[
    "name",
    "hosts",
    "vars",
    "vars_files",
    "roles",
    "tasks",
    "handlers",
    "become",
    "become_user",
    "serial",
    "max_fail_percentage",
    "gather_facts",
];

/// One batch size of `serial`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BatchSize {
    /// This many hosts.
    Count(u64),
    /// This percentage of the play's hosts (at least one).
    Percent(f64),
}

impl BatchSize {
    /// The number of hosts of a play of `total` hosts (Ansible's rounding: down, at least 1).
    pub fn of(self, total: usize) -> usize {
        match self {
            BatchSize::Count(n) => usize::try_from(n).unwrap_or(usize::MAX),
            BatchSize::Percent(p) => ((total as f64) * p / 100.0).floor() as usize,
        }
        .max(1)
    }
}

/// Splits a play's hosts into batches of the `serial` sizes (the last size repeats).
pub fn batches<T: Clone>(hosts: &[T], serial: &[Spanned<BatchSize>]) -> Vec<Vec<T>> {
    if serial.is_empty() {
        return vec![hosts.to_vec()];
    }
    let mut out = Vec::new();
    let mut rest = hosts;
    let mut i = 0;
    while !rest.is_empty() {
        let size = serial[i.min(serial.len() - 1)].value.of(hosts.len());
        let (batch, tail) = rest.split_at(size.min(rest.len()));
        out.push(batch.to_vec());
        rest = tail;
        i += 1;
    }
    out
}

/// A percentage, `30` or `"30%"`, within 0..=100 (`zero_ok`: 0 allowed).
fn percent(d: &mut Decoder, n: &Node, what: &str, zero_ok: bool) -> Option<f64> {
    use crate::spec::yaml::Resolved;
    let text = n.key_text().trim();
    let num = match n.resolve() {
        Some(Resolved::Int(i)) => Some(i as f64),
        Some(Resolved::Float(f)) => Some(f),
        Some(Resolved::Str(_)) => text
            .strip_suffix('%')
            .unwrap_or(text)
            .trim()
            .parse::<f64>()
            .ok(),
        _ => None,
    };
    match num {
        Some(p) if p.is_finite() && p <= 100.0 && (p > 0.0 || (zero_ok && p == 0.0)) => Some(p),
        _ => {
            d.error_help(
                &n.loc,
                format!("{what}: `{text}` is not a percentage"),
                if zero_ok {
                    "give a number from 0 to 100, e.g. `30` or \"30%\""
                } else {
                    "give a percentage above 0 and at most 100, e.g. \"30%\""
                },
            );
            None
        }
    }
}

/// One `serial` entry: a host count (1 or more) or a percentage (`"25%"`).
fn batch_size(d: &mut Decoder, n: &Node) -> Option<Spanned<BatchSize>> {
    use crate::spec::yaml::Resolved;
    let size = match n.resolve() {
        Some(Resolved::Int(i)) if i > 0 => BatchSize::Count(i as u64),
        Some(Resolved::Int(_)) => {
            d.error_help(
                &n.loc,
                format!("play `serial: {}` would run no host", n.key_text()),
                "give a batch size of 1 or more hosts, a percentage such as \"25%\", or a list of them",
            );
            return None;
        }
        Some(Resolved::Str(s)) if s.trim().ends_with('%') => {
            BatchSize::Percent(percent(d, n, "play `serial`", false)?)
        }
        _ => {
            d.expected(
                n,
                "play `serial`",
                "a number of hosts, a percentage (\"25%\") or a list of them",
            );
            return None;
        }
    };
    Some(Spanned::new(size, n.loc.clone()))
}

/// Decodes a playbook file.
pub fn decode_playbook(d: &mut Decoder, file: std::sync::Arc<str>, root: &Node) -> Playbook {
    let mut plays = Vec::new();
    if root.is_null() {
        d.error_help(
            &Loc::file_start(&file),
            "the playbook is empty",
            "a playbook is a list of plays, each with `hosts:`",
        );
    }
    for (i, p) in d.list(root, "a playbook").iter().enumerate() {
        let what = format!("play {}", i + 1);
        let Some(f) = d.fields(p, &what, PLAY) else {
            continue;
        };
        let name = f
            .get("name")
            .and_then(|n| d.string(n, "play `name`"))
            .unwrap_or_else(|| what.clone());
        let Some(hosts) = d
            .require(&f, "hosts", &format!("play `{name}`"))
            .and_then(|h| d.spanned_string(h, "play `hosts`"))
        else {
            continue;
        };
        let vars = f
            .get("vars")
            .map(|n| d.vars(n, "play `vars`"))
            .unwrap_or_default();
        let vars_files: Vec<Spanned<String>> = f
            .get("vars_files")
            .map(|n| d.string_list(n, "play `vars_files`"))
            .unwrap_or_default()
            .into_iter()
            .filter(|v| {
                if v.value.contains("{{") {
                    d.error_help(
                        &v.loc,
                        "a `vars_files` path cannot be a template: it is read when the playbook is loaded",
                        "name the file; choose between files with `-e @FILE` instead",
                    );
                    return false;
                }
                true
            })
            .collect();
        let roles = f
            .get("roles")
            .map(|n| d.string_list(n, "play `roles`"))
            .unwrap_or_default();
        // `import_tasks`/`include_tasks` in a play start at the playbook's directory.
        let saved = d.task_dir.replace(
            std::path::Path::new(&*file)
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default(),
        );
        let (tasks, body) = f
            .get("tasks")
            .map(|n| decode_body(d, n, "play `tasks`"))
            .unwrap_or_default();
        d.task_dir = saved;
        let serial = match f.get("serial") {
            None => Vec::new(),
            Some(n) => match &n.value {
                crate::spec::yaml::Value::Seq(items) => {
                    if items.is_empty() {
                        d.error_help(
                            &n.loc,
                            "play `serial: []` gives no batch size",
                            "give sizes such as `[1, 5, \"50%\"]`, or leave `serial` out",
                        );
                    }
                    items.iter().filter_map(|i| batch_size(d, i)).collect()
                }
                _ => batch_size(d, n).into_iter().collect(),
            },
        };
        let max_fail_percentage = f
            .get("max_fail_percentage")
            .and_then(|n| percent(d, n, "play `max_fail_percentage`", true));
        let handlers = f
            .get("handlers")
            .map(|n| decode_tasks(d, n, "play `handlers`"))
            .unwrap_or_default();
        let become_ = f
            .get("become")
            .and_then(|n| d.boolean(n, "play `become`"))
            .unwrap_or(false);
        let become_user = f
            .get("become_user")
            .and_then(|n| crate::spec::task::become_user(d, n, "play"));
        let gather_facts = f
            .get("gather_facts")
            .and_then(|n| d.boolean(n, "play `gather_facts`"))
            .unwrap_or(true);
        if roles.is_empty() && tasks.is_empty() {
            d.error_help(
                &p.loc,
                format!("play `{name}` has neither `roles` nor `tasks`"),
                "a play applies roles, runs tasks, or both",
            );
        }
        plays.push(Play {
            name,
            loc: p.loc.clone(),
            hosts,
            vars,
            vars_files,
            roles,
            tasks,
            body,
            serial,
            max_fail_percentage,
            handlers,
            become_,
            become_user,
            gather_facts,
        });
    }
    Playbook { file, plays }
}
