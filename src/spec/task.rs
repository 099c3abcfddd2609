//! A task as written in a role or playbook: common keys plus exactly one module key.

use crate::spec::decode::{Decoder, Spanned, VarMap};
use crate::spec::module::ModuleSpec;
use crate::spec::yaml::{Node, Value};

/// Keys every task may carry besides its module.
pub const COMMON_KEYS: &[&str] = &[
    "name",
    "when",
    "loop",
    "register",
    "notify",
    "become",
    "become_user",
    "tags",
    "retries",
    "delay",
    "until",
    "ignore_errors",
    "changed_when",
    "failed_when",
    "timeout",
    "vars",
    "listen",
    "run_once",
    "delegate_to",
    "throttle",
];

/// One task, parsed and checked, not yet rendered for a host.
#[derive(Debug, Clone)]
pub struct Task {
    /// Its name, or the module name when none was given.
    pub name: String,
    /// Where the task starts.
    pub loc: crate::error::Loc,
    /// The module it runs.
    pub module: &'static ModuleSpec,
    /// The module's arguments (templates not yet rendered).
    pub args: Node,
    /// A condition (a minijinja expression, `{{ }}` optional).
    pub when: Option<Spanned<String>>,
    /// A list, or a template that yields one; the task runs once per `item`.
    pub loop_: Option<Node>,
    /// Name under which the result is kept for later tasks.
    pub register: Option<String>,
    /// Handlers to notify when this task changes something.
    pub notify: Vec<Spanned<String>>,
    /// Run with sudo (`None`: as the play says).
    pub become_: Option<bool>,
    /// User to become (default: the play's, else root); implies `become`.
    pub become_user: Option<Spanned<String>>,
    /// Tags for `--tags` / `--skip-tags`.
    pub tags: Vec<String>,
    /// Attempts after the first failure.
    pub retries: u32,
    /// Seconds between attempts.
    pub delay_secs: u64,
    /// Condition that must hold for the task to count as done (with `retries`).
    pub until: Option<Spanned<String>>,
    /// Keep going when this task fails.
    pub ignore_errors: bool,
    /// Overrides "changed" with an expression.
    pub changed_when: Option<Spanned<String>>,
    /// Overrides "failed" with an expression.
    pub failed_when: Option<Spanned<String>>,
    /// Per-task time limit in seconds.
    pub timeout_secs: Option<u64>,
    /// Task-level variables.
    pub vars: VarMap,
    /// Extra names a handler answers to.
    pub listen: Vec<String>,
    /// Conditions of the blocks and imports around the task (outermost first): each must
    /// hold, before its own `when`.
    pub guards: Vec<Spanned<String>>,
    /// Run on one host of the batch only; every host of the batch gets its result.
    pub run_once: bool,
    /// Run on this host (an inventory node or `localhost`) with the task's host's variables.
    pub delegate_to: Option<Spanned<String>>,
    /// At most this many hosts run the task at once.
    pub throttle: Option<u32>,
}

/// Decodes a `become_user`: a plain account name (no template), which fleet passes to
/// `sudo -u` as data.
pub fn become_user(d: &mut Decoder, n: &Node, what: &str) -> Option<Spanned<String>> {
    let label = format!("{what} `become_user`");
    let name = d.spanned_string(n, &label)?;
    if !is_account_name(&name.value) {
        d.error_help(
            &n.loc,
            format!("{label}: `{}` is not an account name", name.value),
            "give a plain user name such as `ollama` or `deploy` (letters, digits, `_`, `.`, `-`; no template)",
        );
        return None;
    }
    Some(name)
}

/// A user or group name as the usual tools take it: starts with a letter or `_`, then
/// letters, digits, `_`, `.`, `-` (and a final `$` for machine accounts), at most 64 bytes.
pub fn is_account_name(s: &str) -> bool {
    let body = s.strip_suffix('$').unwrap_or(s);
    let mut chars = body.chars();
    s.len() <= 64
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Whether a `delegate_to` value names the controller (`localhost`).
pub fn is_localhost(name: &str) -> bool {
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

impl Task {
    /// The account the task runs as through sudo, or `None` for the login user: the task's
    /// `become`/`become_user`, else the play's.
    pub fn become_as<'a>(
        &'a self,
        play_become: bool,
        play_user: Option<&'a str>,
    ) -> Option<&'a str> {
        let user = self.become_user.as_ref().map(|u| u.value.as_str());
        let on = match self.become_ {
            Some(b) => b || user.is_some(),
            None => play_become || play_user.is_some() || user.is_some(),
        };
        on.then(|| user.or(play_user).unwrap_or("root"))
    }
}

/// Parses a duration such as `30s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration_secs(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        return n.trim().parse::<u64>().ok().map(|ms| ms.div_ceil(1000));
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600)
    } else {
        (s, 1)
    };
    num.trim().parse::<u64>().ok().map(|n| n * mult)
}

fn expr(d: &mut Decoder, node: &Node, what: &str) -> Option<Spanned<String>> {
    // `when: true` and `failed_when: false` are written plain; keep them as expressions.
    match &node.value {
        Value::Scalar { text, .. } if !node.is_null() => {
            Some(Spanned::new(text.clone(), node.loc.clone()))
        }
        _ => {
            d.expected(node, what, "an expression");
            None
        }
    }
}

/// Decodes a list of tasks; `what` names the list for messages (e.g. "role `ollama` tasks").
pub fn decode_tasks(d: &mut Decoder, node: &Node, what: &str) -> Vec<Task> {
    d.list(node, what)
        .iter()
        .filter_map(|t| decode_task(d, t))
        .collect()
}

/// Decodes one task.
pub fn decode_task(d: &mut Decoder, node: &Node) -> Option<Task> {
    let Some(entries) = node.as_map() else {
        d.expected(node, "task", "a mapping with a module key");
        return None;
    };
    let mut module: Option<(&Node, &Node, &'static ModuleSpec)> = None;
    let mut bad = false;
    for (k, v) in entries {
        let key = k.key_text();
        if COMMON_KEYS.contains(&key) {
            continue;
        }
        match d.module(key) {
            Some(spec) => {
                if let Some((first, _, _)) = module {
                    d.error_help(
                        &k.loc,
                        format!(
                            "a task takes exactly one module, found `{}` and `{key}`",
                            first.key_text()
                        ),
                        "split it into two tasks",
                    );
                    bad = true;
                } else {
                    module = Some((k, v, spec));
                }
            }
            None => {
                let help = d
                    .suggest_task_key(key, COMMON_KEYS)
                    .unwrap_or_else(|| format!("modules: {}", d.module_list()));
                d.error_help(&k.loc, format!("unknown module or task key `{key}`"), help);
                bad = true;
            }
        }
    }
    let Some((_, args, spec)) = module else {
        if !bad {
            d.error_help(
                &node.loc,
                "this task names no module",
                format!("add one of: {}", d.module_list()),
            );
        }
        return None;
    };
    spec.check_args(args, d);

    let get = |key: &str| node.get(key);
    let name = match get("name") {
        Some(n) => d.string(n, "task `name`").unwrap_or_default(),
        None => spec.name.to_string(),
    };
    let when = get("when").and_then(|n| expr(d, n, "task `when`"));
    let until = get("until").and_then(|n| expr(d, n, "task `until`"));
    let changed_when = get("changed_when").and_then(|n| expr(d, n, "task `changed_when`"));
    let failed_when = get("failed_when").and_then(|n| expr(d, n, "task `failed_when`"));
    let register = get("register").and_then(|n| {
        let s = d.string(n, "task `register`")?;
        if !crate::spec::decode::is_identifier(&s) {
            d.error(
                &n.loc,
                format!("`register: {s}` is not a valid variable name"),
            );
        }
        Some(s)
    });
    let notify = get("notify")
        .map(|n| d.string_list(n, "task `notify`"))
        .unwrap_or_default();
    let become_ = get("become").and_then(|n| d.boolean(n, "task `become`"));
    let become_user = get("become_user").and_then(|n| become_user(d, n, "task"));
    if become_ == Some(false)
        && let (Some(u), Some(n)) = (&become_user, get("become"))
    {
        d.error_help(
            &n.loc,
            format!("`become: false` with `become_user: {}`", u.value),
            "`become_user` runs the task through sudo as that user: drop `become: false`",
        );
    }
    let tags = get("tags")
        .map(|n| {
            d.string_list(n, "task `tags`")
                .into_iter()
                .map(|s| s.value)
                .collect()
        })
        .unwrap_or_default();
    let retries = get("retries")
        .and_then(|n| d.uint(n, "task `retries`"))
        .unwrap_or(0);
    let delay_secs = get("delay")
        .and_then(|n| d.uint(n, "task `delay` (seconds)"))
        .unwrap_or(1);
    let ignore_errors = get("ignore_errors")
        .and_then(|n| d.boolean(n, "task `ignore_errors`"))
        .unwrap_or(false);
    let timeout_secs = get("timeout").and_then(|n| {
        let text = n.key_text();
        let secs = parse_duration_secs(text);
        if secs.is_none() {
            d.error_help(
                &n.loc,
                format!("task `timeout`: expected a duration, found `{text}`"),
                "write e.g. `30s`, `5m` or `1h`",
            );
        }
        secs
    });
    let vars = get("vars")
        .map(|n| d.vars(n, "task `vars`"))
        .unwrap_or_default();
    let listen = get("listen")
        .map(|n| {
            d.string_list(n, "handler `listen`")
                .into_iter()
                .map(|s| s.value)
                .collect()
        })
        .unwrap_or_default();
    let run_once = get("run_once")
        .and_then(|n| d.boolean(n, "task `run_once`"))
        .unwrap_or(false);
    let delegate_to = get("delegate_to").and_then(|n| d.spanned_string(n, "task `delegate_to`"));
    let throttle = get("throttle").and_then(|n| {
        let v = d.uint(n, "task `throttle`")?;
        if v == 0 {
            d.error_help(
                &n.loc,
                "task `throttle: 0` would never run the task",
                "give the most hosts that may run it at once, 1 or more",
            );
            return None;
        }
        Some(u32::try_from(v).unwrap_or(u32::MAX))
    });
    Some(Task {
        name,
        loc: node.loc.clone(),
        module: spec,
        args: args.clone(),
        when,
        loop_: get("loop").cloned(),
        register,
        notify,
        become_,
        become_user,
        tags,
        retries: u32::try_from(retries).unwrap_or(u32::MAX),
        delay_secs,
        until,
        ignore_errors,
        changed_when,
        failed_when,
        timeout_secs,
        vars,
        listen,
        guards: Vec::new(),
        run_once,
        delegate_to,
        throttle,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::yaml::parse;
    use std::sync::Arc;

    use crate::spec::module::{ArgKind, arg};

    const SPECS: &[&ModuleSpec] = &[
        &ModuleSpec {
            name: "ollama_model",
            summary: "",
            free_form: None,
            args: &[arg("name", ArgKind::Str, true, "")],
            exactly_one_of: &[],
        },
        &ModuleSpec {
            name: "command",
            summary: "",
            free_form: Some("cmd"),
            args: &[arg("cmd", ArgKind::Str, true, "")],
            exactly_one_of: &[],
        },
        &ModuleSpec {
            name: "shell",
            summary: "",
            free_form: Some("cmd"),
            args: &[arg("cmd", ArgKind::Str, true, "")],
            exactly_one_of: &[],
        },
        &ModuleSpec {
            name: "package",
            summary: "",
            free_form: None,
            args: &[arg("name", ArgKind::StrList, true, "")],
            exactly_one_of: &[],
        },
    ];

    fn decode(src: &str) -> (Option<Task>, Vec<String>) {
        let n = parse(&Arc::from("t.yaml"), src).expect("yaml");
        let mut d = Decoder::with_modules(SPECS);
        let t = decode_task(&mut d, &n);
        (t, d.diags.sorted().iter().map(|x| x.to_string()).collect())
    }

    #[test]
    fn parses_common_keys() {
        let (t, e) = decode(
            "name: pull\nollama_model: { name: \"{{ item }}\" }\nloop: \"{{ node.models }}\"\nnotify: restart ollama\nretries: 3\ntimeout: 5m\n",
        );
        assert!(e.is_empty(), "{e:?}");
        let t = t.expect("task");
        assert_eq!(t.module.name, "ollama_model");
        assert_eq!(t.notify[0].value, "restart ollama");
        assert_eq!(t.timeout_secs, Some(300));
        assert_eq!(t.retries, 3);
    }

    #[test]
    fn module_count_is_checked() {
        let (_, e) = decode("name: x\n");
        assert!(e[0].contains("names no module"), "{e:?}");
        let (_, e) = decode("command: a\nshell: b\n");
        assert!(
            e[0].contains("exactly one module, found `command` and `shell`"),
            "{e:?}"
        );
        let (_, e) = decode("pakage: { name: x }\n");
        assert!(e[0].contains("did you mean `package`?"), "{e:?}");
    }

    #[test]
    fn become_user_implies_become_and_takes_account_names_only() {
        let (t, e) = decode("command: id\nbecome_user: ollama\n");
        assert!(e.is_empty(), "{e:?}");
        let t = t.expect("task");
        assert_eq!(t.become_as(false, None), Some("ollama"));
        let (t, _) = decode("command: id\nbecome: true\n");
        assert_eq!(t.expect("task").become_as(false, Some("svc")), Some("svc"));
        let (t, _) = decode("command: id\nbecome: false\n");
        assert_eq!(t.expect("task").become_as(true, Some("svc")), None);
        let (_, e) = decode("command: id\nbecome_user: \"x$(id)\"\n");
        assert!(e[0].contains("is not an account name"), "{e:?}");
        let (_, e) = decode("command: id\nbecome: false\nbecome_user: a\n");
        assert!(e[0].contains("`become: false` with"), "{e:?}");
        assert!(is_account_name("_svc-1.x$") && !is_account_name("-x") && !is_account_name("a b"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("30s"), Some(30));
        assert_eq!(parse_duration_secs("2m"), Some(120));
        assert_eq!(parse_duration_secs("10"), Some(10));
        assert_eq!(parse_duration_secs("soon"), None);
    }
}
