//! The structure of a task list: plain tasks, `block`/`rescue`/`always`, `import_tasks`
//! (static: the file's tasks take the import's place) and `include_tasks` (the file is read at
//! load time too, so `plan` and `validate` see every task; its `loop`, `vars` and `when` are
//! decided per host at run time).
//!
//! Every task stays in one flat list (what `--list-tasks`, tags and `validate` read); the
//! structure refers to it by index. What a block or import says about its tasks (`when`,
//! `become`, `become_user`, `tags`, `vars`, `ignore_errors`) is given to each task as it is
//! decoded, so the engine and the planner run them as ordinary tasks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Loc;
use crate::spec::decode::{Decoder, Spanned, VarMap};
use crate::spec::task::{Task, decode_task};
use crate::spec::yaml::Node;

/// One entry of a task list.
#[derive(Debug, Clone)]
pub enum Item {
    /// A task: its index in the owner's flat list.
    Task(usize),
    /// A `block` with its `rescue` and `always`.
    Block(Block),
    /// An `include_tasks`.
    Include(Include),
}

/// `block`/`rescue`/`always`: when a task of `block` fails, `rescue` runs (and the host is
/// not failed if it succeeds); `always` runs in every case.
#[derive(Debug, Clone)]
pub struct Block {
    /// Its name, or `block`.
    pub name: String,
    /// Where it starts.
    pub loc: Loc,
    /// The tasks tried.
    pub block: Vec<Item>,
    /// Run when a task of `block` fails.
    pub rescue: Vec<Item>,
    /// Run afterwards in every case.
    pub always: Vec<Item>,
}

/// `include_tasks`: a file's tasks, per host once or per loop item, with `vars`.
#[derive(Debug, Clone)]
pub struct Include {
    /// Its name, or the file.
    pub name: String,
    /// Where it starts.
    pub loc: Loc,
    /// The file, as written.
    pub file: Spanned<String>,
    /// A list, or a template yielding one: the file's tasks run once per `item`.
    pub loop_: Option<Node>,
    /// Variables for the file's tasks (rendered per host and item).
    pub vars: VarMap,
    /// Decided per host (and item) before the file's tasks run.
    pub when: Option<Spanned<String>>,
    /// The file's tasks.
    pub body: Vec<Item>,
}

/// What a block or import gives each of its tasks.
#[derive(Debug, Clone, Default)]
struct Inherited {
    guards: Vec<Spanned<String>>,
    become_: Option<bool>,
    become_user: Option<Spanned<String>>,
    tags: Vec<String>,
    vars: VarMap,
    ignore_errors: Option<bool>,
}

const BLOCK: &[&str] = &[
    "name",
    "block",
    "rescue",
    "always",
    "when",
    "become",
    "become_user",
    "tags",
    "vars",
    "ignore_errors",
];
const IMPORT: &[&str] = &[
    "name",
    "import_tasks",
    "when",
    "become",
    "become_user",
    "tags",
    "vars",
];
const INCLUDE: &[&str] = &[
    "name",
    "include_tasks",
    "when",
    "loop",
    "become",
    "become_user",
    "tags",
    "vars",
];

/// Decodes a task list with its structure: the flat list of tasks and the items over it.
pub fn decode_body(d: &mut Decoder, node: &Node, what: &str) -> (Vec<Task>, Vec<Item>) {
    let mut tasks = Vec::new();
    let items = list(d, node, what, &Inherited::default(), &mut tasks);
    (tasks, items)
}

fn list(
    d: &mut Decoder,
    node: &Node,
    what: &str,
    inh: &Inherited,
    tasks: &mut Vec<Task>,
) -> Vec<Item> {
    let mut out = Vec::new();
    for n in d.list(node, what) {
        entry(d, n, inh, tasks, &mut out);
    }
    out
}

fn has(n: &Node, key: &str) -> bool {
    n.get(key).is_some()
}

fn entry(d: &mut Decoder, n: &Node, inh: &Inherited, tasks: &mut Vec<Task>, out: &mut Vec<Item>) {
    if n.as_map().is_none() {
        d.expected(n, "task", "a mapping with a module key");
        return;
    }
    if has(n, "block") {
        if let Some(b) = block(d, n, inh, tasks) {
            out.push(Item::Block(b));
        }
    } else if let Some(k) = ["rescue", "always"]
        .into_iter()
        .find_map(|k| n.as_map()?.iter().find(|(key, _)| key.key_text() == k))
    {
        d.error_help(
            &k.0.loc,
            format!("`{}` without `block`", k.0.key_text()),
            "`rescue` and `always` belong to a `block:` of tasks in the same mapping",
        );
    } else if has(n, "import_tasks") {
        import(d, n, inh, tasks, out);
    } else if has(n, "include_tasks") {
        if let Some(i) = include(d, n, inh, tasks) {
            out.push(Item::Include(i));
        }
    } else if let Some(mut t) = decode_task(d, n) {
        apply(&mut t, inh);
        tasks.push(t);
        out.push(Item::Task(tasks.len() - 1));
    }
}

/// Gives a task what its blocks and imports say; its own keys win.
fn apply(t: &mut Task, inh: &Inherited) {
    let mut guards = inh.guards.clone();
    guards.append(&mut t.guards);
    t.guards = guards;
    if t.become_.is_none() && t.become_user.is_none() {
        t.become_ = inh.become_;
        t.become_user = inh.become_user.clone();
    }
    for tag in &inh.tags {
        if !t.tags.contains(tag) {
            t.tags.push(tag.clone());
        }
    }
    if !inh.vars.is_empty() {
        let mut vars = inh.vars.clone();
        vars.extend(std::mem::take(&mut t.vars));
        t.vars = vars;
    }
    if let Some(i) = inh.ignore_errors
        && !t.ignore_errors
    {
        t.ignore_errors = i;
    }
}

/// The keys a block or import passes on, over what it got from outside.
fn inherit(d: &mut Decoder, n: &Node, outer: &Inherited, what: &str, when: bool) -> Inherited {
    let mut inh = outer.clone();
    if when && let Some(w) = n.get("when") {
        match &w.value {
            crate::spec::yaml::Value::Scalar { text, .. } if !w.is_null() => {
                inh.guards.push(Spanned::new(text.clone(), w.loc.clone()))
            }
            _ => d.expected(w, &format!("{what} `when`"), "an expression"),
        }
    }
    let become_ = n
        .get("become")
        .and_then(|b| d.boolean(b, &format!("{what} `become`")));
    let become_user = n
        .get("become_user")
        .and_then(|u| crate::spec::task::become_user(d, u, what));
    if become_.is_some() || become_user.is_some() {
        inh.become_ = become_;
        inh.become_user = become_user;
    }
    if let Some(t) = n.get("tags") {
        for tag in d.string_list(t, &format!("{what} `tags`")) {
            if !inh.tags.contains(&tag.value) {
                inh.tags.push(tag.value);
            }
        }
    }
    if let Some(v) = n.get("vars") {
        inh.vars.extend(d.vars(v, &format!("{what} `vars`")));
    }
    if let Some(i) = n.get("ignore_errors") {
        inh.ignore_errors = d.boolean(i, &format!("{what} `ignore_errors`"));
    }
    inh
}

fn block(d: &mut Decoder, n: &Node, outer: &Inherited, tasks: &mut Vec<Task>) -> Option<Block> {
    let f = d.fields(n, "a block", BLOCK)?;
    let name = f
        .get("name")
        .and_then(|x| d.string(x, "block `name`"))
        .unwrap_or_else(|| "block".to_string());
    let what = format!("block `{name}`");
    let inh = inherit(d, n, outer, &what, true);
    let mut section = |d: &mut Decoder, key: &str| match f.get(key) {
        Some(x) => list(d, x, &format!("{what} `{key}`"), &inh, tasks),
        None => Vec::new(),
    };
    let body = section(d, "block");
    let rescue = section(d, "rescue");
    let always = section(d, "always");
    if body.is_empty() {
        d.error_help(
            &n.loc,
            format!("{what} has no tasks"),
            "give `block:` a list of tasks",
        );
    }
    Some(Block {
        name,
        loc: n.loc.clone(),
        block: body,
        rescue,
        always,
    })
}

/// The file an import or include names: a path, or `{ file: path }`.
fn file_arg(d: &mut Decoder, n: &Node, key: &str) -> Option<Spanned<String>> {
    let v = n.get(key)?;
    let file = match v.get("file") {
        Some(f) if v.as_map().is_some_and(|m| m.len() == 1) => d.spanned_string(f, key)?,
        _ if v.as_map().is_some() => {
            d.expected(v, &format!("`{key}`"), "a file path or `{ file: PATH }`");
            return None;
        }
        _ => d.spanned_string(v, &format!("`{key}`"))?,
    };
    if file.value.contains("{{") || file.value.contains("{%") {
        d.error_help(
            &file.loc,
            format!("a `{key}` path cannot be a template: fleet reads the file when it loads the playbook"),
            "name the file; to choose tasks per host, give them a `when` (or loop over items in one file)",
        );
        return None;
    }
    Some(file)
}

/// Shows a path relative to the working directory when it is under it.
fn shown(path: &Path) -> Arc<str> {
    let cwd = std::env::current_dir().ok();
    let rel = cwd
        .as_deref()
        .and_then(|c| path.strip_prefix(c).ok())
        .unwrap_or(path);
    Arc::from(rel.to_string_lossy().as_ref())
}

/// Reads a task file named at `file` (relative to the decoder's task directory) and decodes
/// its list; a missing file or a cycle is an error at the import.
fn read_tasks(
    d: &mut Decoder,
    key: &str,
    file: &Spanned<String>,
    inh: &Inherited,
    tasks: &mut Vec<Task>,
) -> Vec<Item> {
    let Some(dir) = d.task_dir.clone() else {
        d.error(
            &file.loc,
            format!("`{key}` cannot be used here: there is no directory to read it from"),
        );
        return Vec::new();
    };
    let path: PathBuf = dir.join(&file.value);
    let key_path = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
    let file_name = shown(&path);
    if let Some(pos) = d.task_files.iter().position(|p| *p == key_path) {
        let cycle: Vec<String> = d.task_files[pos..]
            .iter()
            .chain(std::iter::once(&key_path))
            .map(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        d.error_help(
            &file.loc,
            format!(
                "`{key}: {}` includes itself: {}",
                file.value,
                cycle.join(" → ")
            ),
            "task files must form a tree: remove one of the imports",
        );
        return Vec::new();
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            let help = format!(
                "paths are relative to {} (`{}`)",
                if dir.ends_with("tasks") {
                    "the role's `tasks/` directory"
                } else {
                    "the playbook's directory"
                },
                shown(&dir)
            );
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                "no such file".to_string()
            } else {
                e.to_string()
            };
            d.error_help(
                &file.loc,
                format!("`{key}`: cannot read `{file_name}`: {why}"),
                help,
            );
            return Vec::new();
        }
    };
    let root = match crate::spec::yaml::parse(&file_name, &text) {
        Ok(n) => n,
        Err(diag) => {
            d.push(diag);
            return Vec::new();
        }
    };
    d.task_files.push(key_path);
    let items = list(d, &root, &format!("tasks of `{file_name}`"), inh, tasks);
    d.task_files.pop();
    items
}

fn import(
    d: &mut Decoder,
    n: &Node,
    outer: &Inherited,
    tasks: &mut Vec<Task>,
    out: &mut Vec<Item>,
) {
    if let Some((k, _)) = n
        .as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.key_text() == "loop"))
    {
        d.error_help(
            &k.loc,
            "`import_tasks` is static (read once, at load time): it takes no `loop`",
            "use `include_tasks` to run a file's tasks once per item",
        );
        return;
    }
    let Some(_) = d.fields(n, "an `import_tasks`", IMPORT) else {
        return;
    };
    let Some(file) = file_arg(d, n, "import_tasks") else {
        return;
    };
    // Static: the import's `when`, tags and account go to every task of the file.
    let inh = inherit(d, n, outer, "`import_tasks`", true);
    out.extend(read_tasks(d, "import_tasks", &file, &inh, tasks));
}

fn include(d: &mut Decoder, n: &Node, outer: &Inherited, tasks: &mut Vec<Task>) -> Option<Include> {
    d.fields(n, "an `include_tasks`", INCLUDE)?;
    let file = file_arg(d, n, "include_tasks")?;
    // The include's own `when` is decided once per host and item, at the include; tags and
    // the account go to its tasks (so `--tags` selects tasks inside, unlike Ansible).
    let inh = inherit(d, n, outer, "`include_tasks`", false);
    let mut inner = inh.clone();
    // Its vars are rendered per item at run time, not given to each task as written.
    inner.vars = outer.vars.clone();
    let vars = n
        .get("vars")
        .map(|v| d.vars(v, "`include_tasks` `vars`"))
        .unwrap_or_default();
    let when = n.get("when").and_then(|w| match &w.value {
        crate::spec::yaml::Value::Scalar { text, .. } if !w.is_null() => {
            Some(Spanned::new(text.clone(), w.loc.clone()))
        }
        _ => {
            d.expected(w, "`include_tasks` `when`", "an expression");
            None
        }
    });
    let name = n
        .get("name")
        .and_then(|x| d.string(x, "`include_tasks` `name`"))
        .unwrap_or_else(|| format!("include_tasks {}", file.value));
    let body = read_tasks(d, "include_tasks", &file, &inner, tasks);
    Some(Include {
        name,
        loc: n.loc.clone(),
        file,
        loop_: n.get("loop").cloned(),
        vars,
        when,
        body,
    })
}

/// Every task index an item list reaches, in order.
pub fn task_indices(items: &[Item], out: &mut Vec<usize>) {
    for i in items {
        match i {
            Item::Task(t) => out.push(*t),
            Item::Block(b) => {
                task_indices(&b.block, out);
                task_indices(&b.rescue, out);
                task_indices(&b.always, out);
            }
            Item::Include(inc) => task_indices(&inc.body, out),
        }
    }
}

/// Whether the list is plain tasks only (what runs exactly as before blocks existed).
pub fn is_flat(items: &[Item]) -> bool {
    items.iter().all(|i| matches!(i, Item::Task(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(src: &str) -> (Vec<Task>, Vec<Item>, Vec<String>) {
        let n = crate::spec::yaml::parse(&Arc::from("t.yaml"), src).expect("yaml");
        let mut d = Decoder::with_modules(crate::modules::SPECS);
        let (tasks, items) = decode_body(&mut d, &n, "tasks");
        let errs = d.diags.sorted().iter().map(|x| x.to_string()).collect();
        (tasks, items, errs)
    }

    #[test]
    fn a_block_gives_its_tasks_when_become_tags_and_vars_and_theirs_win() {
        let (tasks, items, errs) = body(concat!(
            "- name: b\n",
            "  when: a\n",
            "  become_user: svc\n",
            "  tags: [x]\n",
            "  vars: { v: 1, w: 1 }\n",
            "  block:\n",
            "    - debug: { msg: one }\n",
            "      when: b\n",
            "      tags: [y]\n",
            "      vars: { w: 2 }\n",
            "    - block:\n",
            "        - debug: { msg: two }\n",
            "          become: false\n",
            "      when: c\n",
            "  rescue:\n",
            "    - debug: { msg: three }\n",
        ));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(tasks.len(), 3);
        let guards = |t: &Task| t.guards.iter().map(|g| g.value.clone()).collect::<Vec<_>>();
        assert_eq!(guards(&tasks[0]), ["a"]);
        assert_eq!(tasks[0].when.as_ref().map(|w| w.value.as_str()), Some("b"));
        assert_eq!(tasks[0].tags, ["y", "x"]);
        assert_eq!(tasks[0].become_as(false, None), Some("svc"));
        assert_eq!(tasks[0].vars.keys().collect::<Vec<_>>(), ["v", "w"]);
        assert_eq!(
            tasks[0].vars["w"].key_text(),
            "2",
            "the task's own vars win"
        );
        assert_eq!(guards(&tasks[1]), ["a", "c"], "outermost first");
        assert_eq!(
            tasks[1].become_as(true, None),
            None,
            "its own `become: false` wins"
        );
        let Item::Block(b) = &items[0] else {
            panic!("a block")
        };
        assert!(matches!(b.rescue[..], [Item::Task(2)]));
        assert!(matches!(b.block[1], Item::Block(_)));
        let mut all = Vec::new();
        task_indices(&items, &mut all);
        assert_eq!(all, [0, 1, 2]);
        assert!(!is_flat(&items));
    }

    #[test]
    fn misplaced_keys_are_errors() {
        let (_, _, errs) = body("- always:\n    - debug: { msg: x }\n");
        assert!(
            errs[0].contains("t.yaml:1:3: error: `always` without `block`"),
            "{errs:?}"
        );
        let (_, _, errs) = body("- block: []\n");
        assert!(errs[0].contains("block `block` has no tasks"), "{errs:?}");
        let (_, _, errs) = body("- block:\n    - debug: { msg: x }\n  loop: [1]\n");
        assert!(
            errs[0].contains("unknown key `loop` in a block"),
            "{errs:?}"
        );
        let (_, _, errs) = body("- include_tasks: \"{{ f }}.yaml\"\n");
        assert!(errs[0].contains("cannot be a template"), "{errs:?}");
        let (_, _, errs) = body("- import_tasks: x.yaml\n");
        assert!(
            errs[0].contains("`import_tasks` cannot be used here"),
            "{errs:?}"
        );
    }
}
