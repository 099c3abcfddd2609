//! `playbooks/*.yaml`: a list of plays, each selecting hosts and listing roles and tasks.

use crate::error::Loc;
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
    /// Tasks after the roles'.
    pub tasks: Vec<Task>,
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
    "gather_facts",
];

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
        let tasks = f
            .get("tasks")
            .map(|n| decode_tasks(d, n, "play `tasks`"))
            .unwrap_or_default();
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
            handlers,
            become_,
            become_user,
            gather_facts,
        });
    }
    Playbook { file, plays }
}
