//! Expands a play into what runs: the roles in order (each role's `includes` first,
//! each role once), their tasks, then the play's tasks, and the handlers they may notify.

use indexmap::IndexMap;

use crate::error::Diagnostic;
use crate::spec::block::Item;
use crate::spec::decode::{Spanned, VarMap};
use crate::spec::playbook::Play;
use crate::spec::role::Role;
use crate::spec::task::Task;

/// Where a task comes from: a role's name, or `None` for the play's own tasks.
pub type Origin<'a> = Option<&'a str>;

/// A play's roles and tasks in execution order.
#[derive(Debug)]
pub struct Expanded<'a> {
    /// Roles in application order (includes first, each once).
    pub roles: Vec<&'a Role>,
    /// Tasks in order with their origin.
    pub tasks: Vec<(Origin<'a>, &'a Task)>,
    /// Handlers of the roles and the play.
    pub handlers: Vec<(Origin<'a>, &'a Task)>,
    /// The same tasks with their structure (blocks, includes): each role's, then the
    /// play's, with the flat list its items index.
    pub bodies: Vec<Body<'a>>,
}

/// A role's or the play's tasks with their structure.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    /// Whose tasks.
    pub origin: Origin<'a>,
    /// The structure.
    pub items: &'a [Item],
    /// The flat list the items index.
    pub tasks: &'a [Task],
}

impl Expanded<'_> {
    /// Whether every body is plain tasks (no block, no include): the play runs its tasks
    /// in one sequence, as it always has.
    pub fn is_flat(&self) -> bool {
        self.bodies
            .iter()
            .all(|b| crate::spec::block::is_flat(b.items))
    }
}

impl<'a> Expanded<'a> {
    /// Role defaults, lowest precedence first.
    pub fn defaults(&self) -> Vec<&'a VarMap> {
        self.roles.iter().map(|r| &r.defaults).collect()
    }

    /// The handler a notify name refers to (by name or `listen`).
    pub fn handler(&self, name: &str) -> Option<&(Origin<'a>, &'a Task)> {
        self.handlers
            .iter()
            .find(|(_, h)| h.name == name || h.listen.iter().any(|l| l == name))
    }
}

/// Orders `names` and their includes depth-first; unknown roles and include cycles are errors.
pub fn role_order<'a>(
    roles: &'a IndexMap<String, Role>,
    names: &[Spanned<String>],
) -> Result<Vec<&'a Role>, Diagnostic> {
    let mut out: Vec<&'a Role> = Vec::new();
    let mut path: Vec<&str> = Vec::new();
    for n in names {
        visit(roles, n, &mut path, &mut out)?;
    }
    Ok(out)
}

fn visit<'a>(
    roles: &'a IndexMap<String, Role>,
    name: &Spanned<String>,
    path: &mut Vec<&'a str>,
    out: &mut Vec<&'a Role>,
) -> Result<(), Diagnostic> {
    let Some(role) = roles.get(name.value.as_str()) else {
        let help = crate::error::did_you_mean(&name.value, roles.keys().map(String::as_str))
            .unwrap_or_else(|| {
                format!(
                    "roles in this repo: {}",
                    roles.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            });
        return Err(
            Diagnostic::error(name.loc.clone(), format!("unknown role `{}`", name.value))
                .with_help(help),
        );
    };
    if let Some(pos) = path.iter().position(|p| *p == role.name) {
        let mut cycle: Vec<&str> = path[pos..].to_vec();
        cycle.push(&role.name);
        return Err(Diagnostic::error(
            name.loc.clone(),
            format!("roles include each other in a cycle: {}", cycle.join(" → ")),
        )
        .with_help("remove one of the `includes` so the roles form a tree"));
    }
    if out.iter().any(|r| r.name == role.name) {
        return Ok(());
    }
    path.push(&role.name);
    for inc in &role.includes {
        visit(roles, inc, path, out)?;
    }
    path.pop();
    out.push(role);
    Ok(())
}

/// Expands a play against the repo's roles.
pub fn expand<'a>(
    roles: &'a IndexMap<String, Role>,
    play: &'a Play,
) -> Result<Expanded<'a>, Diagnostic> {
    let ordered = role_order(roles, &play.roles)?;
    Ok(from_roles(ordered, &play.tasks, &play.body, &play.handlers))
}

/// Expands a single role (for `fleet provision NODE --role R`).
pub fn expand_role<'a>(
    roles: &'a IndexMap<String, Role>,
    role: &Spanned<String>,
) -> Result<Expanded<'a>, Diagnostic> {
    let ordered = role_order(roles, std::slice::from_ref(role))?;
    Ok(from_roles(ordered, &[], &[], &[]))
}

fn from_roles<'a>(
    ordered: Vec<&'a Role>,
    tasks: &'a [Task],
    body: &'a [Item],
    handlers: &'a [Task],
) -> Expanded<'a> {
    let mut all_tasks = Vec::new();
    let mut all_handlers = Vec::new();
    let mut bodies = Vec::new();
    for r in &ordered {
        all_tasks.extend(r.tasks.iter().map(|t| (Some(r.name.as_str()), t)));
        all_handlers.extend(r.handlers.iter().map(|t| (Some(r.name.as_str()), t)));
        bodies.push(Body {
            origin: Some(r.name.as_str()),
            items: &r.body,
            tasks: &r.tasks,
        });
    }
    all_tasks.extend(tasks.iter().map(|t| (None, t)));
    all_handlers.extend(handlers.iter().map(|t| (None, t)));
    bodies.push(Body {
        origin: None,
        items: body,
        tasks,
    });
    Expanded {
        roles: ordered,
        tasks: all_tasks,
        handlers: all_handlers,
        bodies,
    }
}
