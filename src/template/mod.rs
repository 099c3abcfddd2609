//! The minijinja environment fleet renders with: strict undefined, no auto-escaping, the
//! built-in templates (compiled into the binary) overridden by the repo's `templates/`, and
//! located errors that name the variable that was missing.

use std::collections::BTreeMap;
use std::sync::Arc;

use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use crate::error::{Diagnostic, Loc};

/// Templates compiled into the binary; a file of the same name under the repo's `templates/`
/// replaces one.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "routing/openclaw_workers.json.j2",
        include_str!("../../templates/routing/openclaw_workers.json.j2"),
    ),
    (
        "registry/nodes_registry.json.j2",
        include_str!("../../templates/registry/nodes_registry.json.j2"),
    ),
    (
        "services/fleet-agent.service.j2",
        include_str!("../../templates/services/fleet-agent.service.j2"),
    ),
    (
        "services/com.fleet.agent.plist.j2",
        include_str!("../../templates/services/com.fleet.agent.plist.j2"),
    ),
    (
        "services/fleet-hq.service.j2",
        include_str!("../../templates/services/fleet-hq.service.j2"),
    ),
    (
        "services/com.fleet.hq.plist.j2",
        include_str!("../../templates/services/com.fleet.hq.plist.j2"),
    ),
    (
        "services/ollama.service.j2",
        include_str!("../../templates/services/ollama.service.j2"),
    ),
    (
        "services/com.fleet.ollama.plist.j2",
        include_str!("../../templates/services/com.fleet.ollama.plist.j2"),
    ),
];

/// A template's source and the path it is shown as in errors.
#[derive(Debug, Clone)]
pub struct Source {
    /// Shown path (`templates/x.j2`, or `<built-in>/x.j2`).
    pub shown: Arc<str>,
    /// The text.
    pub text: String,
}

/// Where templates come from: the repo's (and roles') files over the built-ins.
#[derive(Debug, Clone, Default)]
pub struct Library {
    sources: BTreeMap<String, Source>,
}

impl Library {
    /// Built-ins overlaid with `repo` templates (name → (shown path, text)).
    pub fn new(repo: &BTreeMap<String, (Arc<str>, String)>) -> Library {
        let mut sources = BTreeMap::new();
        for (name, text) in BUILTIN {
            sources.insert(
                (*name).to_string(),
                Source {
                    shown: Arc::from(format!("<built-in>/{name}")),
                    text: (*text).to_string(),
                },
            );
        }
        for (name, (shown, text)) in repo {
            sources.insert(
                name.clone(),
                Source {
                    shown: shown.clone(),
                    text: text.clone(),
                },
            );
        }
        Library { sources }
    }

    /// Adds (or replaces) a template.
    pub fn insert(&mut self, name: String, shown: Arc<str>, text: String) {
        self.sources.insert(name, Source { shown, text });
    }

    /// Looks a template up.
    pub fn get(&self, name: &str) -> Option<&Source> {
        self.sources.get(name)
    }

    /// All template names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }

    /// A ready environment holding every template of the library.
    pub fn environment(&self) -> Environment<'static> {
        let mut env = base_environment();
        let sources: Arc<BTreeMap<String, String>> = Arc::new(
            self.sources
                .iter()
                .map(|(k, v)| (k.clone(), v.text.clone()))
                .collect(),
        );
        env.set_loader(move |name| Ok(sources.get(name).cloned()));
        env
    }
}

/// The environment settings every fleet render uses.
pub fn base_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.add_filter("basename", |s: String| {
        s.rsplit('/').next().unwrap_or_default().to_string()
    });
    env.add_filter("dirname", |s: String| match s.rfind('/') {
        Some(0) => "/".to_string(),
        Some(i) => s[..i].to_string(),
        None => String::new(),
    });
    env.add_filter("sha256", |s: String| crate::util::sha256_hex(s.as_bytes()));
    env.add_filter("shquote", |s: String| shquote(&s));
    env.add_function("env", |name: String| -> Result<String, minijinja::Error> {
        match std::env::var(&name) {
            Ok(v) => {
                secrets::remember(&v);
                Ok(v)
            }
            Err(_) => Err(minijinja::Error::new(
                minijinja::ErrorKind::UndefinedError,
                format!("environment variable `{name}` is not set"),
            )),
        }
    });
    env.add_filter("rbquote", |s: String| rbquote(&s));
    env
}

pub use crate::command::shquote;

/// Values read from the environment with `env()` in templates: secrets by assumption, masked
/// in every output, error and diff.
pub mod secrets {
    use std::sync::Mutex;

    use crate::command::Masker;

    static SEEN: Mutex<Option<Masker>> = Mutex::new(None);

    /// Records a secret.
    pub fn remember(v: &str) {
        if let Ok(mut g) = SEEN.lock() {
            g.get_or_insert_with(Masker::default).add(v);
        }
    }

    /// Masks every recorded secret in `text`.
    pub fn mask(text: &str) -> String {
        match SEEN.lock() {
            Ok(g) => g
                .as_ref()
                .map_or_else(|| text.to_string(), |m| m.mask(text)),
            Err(_) => text.to_string(),
        }
    }
}

/// Quotes a string for Ruby (Homebrew formulae): double quotes with `\`, `"` and `#{` escaped.
pub fn rbquote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '#' => out.push_str("\\#"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A top-level object whose fields become template values only when a template reads them:
/// the built-in data templates print `<name>_json` and never pay for converting (and later
/// freeing) thousands of nodes as template values.
#[derive(Debug)]
struct LazyObject {
    text: Arc<str>,
    parsed: std::sync::OnceLock<serde_json::Map<String, serde_json::Value>>,
}

impl LazyObject {
    fn fields(&self) -> &serde_json::Map<String, serde_json::Value> {
        self.parsed
            .get_or_init(|| serde_json::from_str(&self.text).unwrap_or_default())
    }
}

impl minijinja::value::Object for LazyObject {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.fields()
            .get(key.as_str()?)
            .map(|v| Value::from(Serde(v)))
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        minijinja::value::Enumerator::Values(
            self.fields()
                .keys()
                .map(|k| Value::from(k.as_str()))
                .collect(),
        )
    }
}

/// A JSON map whose entries become template values only when a template reads them.
#[derive(Debug)]
struct LazyMap(serde_json::Map<String, serde_json::Value>);

impl minijinja::value::Object for LazyMap {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.0.get(key.as_str()?).map(|v| Value::from(Serde(v)))
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        minijinja::value::Enumerator::Values(
            self.0.keys().map(|k| Value::from(k.as_str())).collect(),
        )
    }
}

/// A map as a template value that converts an entry only when it is read: `nodes` (every
/// node of the fleet) is one value shared by every host's renders, so a render costs the
/// nodes it reads, not the size of the fleet.
pub fn lazy_map(map: serde_json::Map<String, serde_json::Value>) -> Value {
    Value::from_object(LazyMap(map))
}

/// Context for a data file template: `<name>` (the data, converted on use) and `<name>_json`
/// (the data as pretty JSON, for templates that print it whole).
pub fn data_context<T: serde::Serialize>(name: &str, data: &T) -> Value {
    let text: Arc<str> = Arc::from(serde_json::to_string_pretty(data).unwrap_or_default());
    let lazy = Value::from_object(LazyObject {
        text: text.clone(),
        parsed: std::sync::OnceLock::new(),
    });
    let mut ctx = std::collections::BTreeMap::new();
    ctx.insert(name.to_string(), lazy);
    ctx.insert(format!("{name}_json"), Value::from(text.to_string()));
    Value::from(ctx)
}

/// Turns a JSON context into a minijinja value.
pub fn ctx_value(ctx: &serde_json::Value) -> Value {
    Value::from(Serde(ctx))
}

/// Names referenced by `source` that the context lacks (`node.hardware.gpu`, `ollama_prt`).
pub fn missing_variables(
    env: &Environment<'_>,
    source: &str,
    ctx: &serde_json::Value,
    is_expr: bool,
) -> Vec<String> {
    let names = if is_expr {
        env.compile_expression(source)
            .map(|e| e.undeclared_variables(true))
    } else {
        env.template_from_str(source)
            .map(|t| t.undeclared_variables(true))
    };
    let Ok(names) = names else { return Vec::new() };
    let mut missing: Vec<String> = names
        .into_iter()
        .filter(|path| !json_has_path(ctx, path) && !global_has_path(env, path))
        .collect();
    missing.sort();
    missing
}

fn global_has_path(env: &Environment<'_>, path: &str) -> bool {
    let mut parts = path.split('.');
    let Some(root) = parts.next() else {
        return false;
    };
    let Some((_, mut cur)) = env.globals().find(|(k, _)| *k == root) else {
        return false;
    };
    for part in parts {
        match cur.get_attr(part) {
            Ok(v) if !v.is_undefined() => cur = v,
            _ => return false,
        }
    }
    true
}

fn json_has_path(ctx: &serde_json::Value, path: &str) -> bool {
    let mut cur = ctx;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return false,
        }
    }
    true
}

/// Why a template failed, located in the user's file.
pub fn render_error(
    err: &minijinja::Error,
    loc: &Loc,
    missing: &[String],
    context: &str,
) -> Diagnostic {
    // Inline templates: the error line is relative to the string, which starts at `loc`.
    let line = err
        .line()
        .map_or(loc.line, |l| loc.line + u32::try_from(l).unwrap_or(1) - 1);
    let at = Loc {
        file: loc.file.clone(),
        line,
        col: if line == loc.line { loc.col } else { 1 },
    };
    if err.kind() == minijinja::ErrorKind::UndefinedError && !missing.is_empty() {
        let list = missing
            .iter()
            .map(|m| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(", ");
        return Diagnostic::error(at, format!("undefined variable {list} {context}"))
            .with_help("define it in the inventory (`vars`), the role's `defaults`, the play's `vars`, or pass `-e name=value`");
    }
    let detail = err
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| err.kind().to_string());
    let what = match err.kind() {
        minijinja::ErrorKind::SyntaxError => "template syntax error",
        minijinja::ErrorKind::UndefinedError => "undefined value",
        minijinja::ErrorKind::UnknownFilter => "unknown filter",
        minijinja::ErrorKind::UnknownFunction => "unknown function",
        minijinja::ErrorKind::TemplateNotFound => "template not found",
        _ => "template error",
    };
    Diagnostic::error(at, format!("{what} {context}: {detail}"))
}

/// Renders a string template (a YAML value) against a context.
pub fn render_inline(
    env: &Environment<'_>,
    text: &str,
    ctx: &serde_json::Value,
    loc: &Loc,
    context: &str,
) -> Result<String, Diagnostic> {
    if !text.contains("{{") && !text.contains("{%") {
        return Ok(text.to_string());
    }
    env.render_str(text, ctx_value(ctx)).map_err(|e| {
        let missing = missing_variables(env, text, ctx, false);
        render_error(&e, loc, &missing, context)
    })
}

/// Renders a string template keeping the value's type when the whole string is one
/// expression (`"{{ node.models }}"` yields the list, not its text).
pub fn render_value(
    env: &Environment<'_>,
    text: &str,
    ctx: &serde_json::Value,
    loc: &Loc,
    context: &str,
) -> Result<serde_json::Value, Diagnostic> {
    // Only surrounding spaces: a trailing newline is content, so such a string stays a string.
    let trimmed = text.trim_matches(' ');
    if let Some(inner) = trimmed
        .strip_prefix("{{")
        .and_then(|s| s.strip_suffix("}}"))
        && !inner.contains("{{")
        && !inner.contains("}}")
    {
        return eval_expr(env, inner, ctx, loc, context)
            .map(|v| serde_json::to_value(&v).unwrap_or(serde_json::Value::Null));
    }
    render_inline(env, text, ctx, loc, context).map(serde_json::Value::String)
}

/// Evaluates an expression (`when:`), `{{ }}` optional.
pub fn eval_expr(
    env: &Environment<'_>,
    expr: &str,
    ctx: &serde_json::Value,
    loc: &Loc,
    context: &str,
) -> Result<Value, Diagnostic> {
    let e = expr.trim();
    let e = e
        .strip_prefix("{{")
        .and_then(|s| s.strip_suffix("}}"))
        .unwrap_or(e)
        .trim();
    let compiled = env
        .compile_expression(e)
        .map_err(|err| render_error(&err, loc, &[], context))?;
    let value = compiled.eval(ctx_value(ctx)).map_err(|err| {
        let missing = missing_variables(env, e, ctx, true);
        render_error(&err, loc, &missing, context)
    })?;
    // A bare undefined name evaluates to "undefined" without an error; strict means strict.
    if value.is_undefined() {
        let missing = missing_variables(env, e, ctx, true);
        let err = minijinja::Error::new(minijinja::ErrorKind::UndefinedError, "undefined value");
        return Err(render_error(&err, loc, &missing, context));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn loc() -> Loc {
        Loc {
            file: "r.yaml".into(),
            line: 4,
            col: 7,
        }
    }

    #[test]
    fn undefined_variables_are_named() {
        let env = base_environment();
        let ctx = json!({"node": {"name": "maestro"}});
        let e = render_inline(&env, "port {{ ollama_prt }}", &ctx, &loc(), "in task `x`")
            .expect_err("undefined");
        assert_eq!(e.message, "undefined variable `ollama_prt` in task `x`");
        assert_eq!(e.loc, Some(loc()));
        let e = render_inline(&env, "{{ node.hardware.gpu }}", &ctx, &loc(), "here")
            .expect_err("undefined");
        assert!(e.message.contains("`node.hardware.gpu`"), "{}", e.message);
    }

    #[test]
    fn a_bare_undefined_expression_is_an_error() {
        let env = base_environment();
        let e =
            render_value(&env, "{{ nowhere }}", &json!({}), &loc(), "in t").expect_err("undefined");
        assert_eq!(e.message, "undefined variable `nowhere` in t");
        assert!(eval_expr(&env, "nowhere", &json!({}), &loc(), "in t").is_err());
    }

    #[test]
    fn whole_expressions_keep_their_type() {
        let env = base_environment();
        let ctx = json!({"node": {"models": ["a", "b"]}});
        let v = render_value(&env, "{{ node.models }}", &ctx, &loc(), "").expect("renders");
        assert_eq!(v, json!(["a", "b"]));
        let v = render_value(&env, "x-{{ node.models[0] }}", &ctx, &loc(), "").expect("renders");
        assert_eq!(v, json!("x-a"));
    }

    #[test]
    fn no_autoescape_and_syntax_errors_located() {
        let env = base_environment();
        let ctx = json!({"a": "<b>&"});
        assert_eq!(
            render_inline(&env, "{{ a }}", &ctx, &loc(), "").expect("ok"),
            "<b>&"
        );
        let e = render_inline(&env, "{{ a ", &ctx, &loc(), "in x").expect_err("syntax");
        assert!(
            e.message.starts_with("template syntax error in x"),
            "{}",
            e.message
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(shquote("abc-1.2"), "abc-1.2");
        assert_eq!(shquote("it's $HOME"), "'it'\\''s $HOME'");
        assert_eq!(rbquote("a \"b\" #{x}"), "\"a \\\"b\\\" \\#{x}\"");
    }

    #[test]
    fn repo_templates_override_builtins() {
        let mut repo = BTreeMap::new();
        repo.insert(
            "services/ollama.service.j2".to_string(),
            (
                Arc::from("templates/services/ollama.service.j2"),
                "mine".to_string(),
            ),
        );
        let lib = Library::new(&repo);
        assert_eq!(
            lib.get("services/ollama.service.j2")
                .map(|s| s.text.as_str()),
            Some("mine")
        );
        assert!(lib.get("services/fleet-agent.service.j2").is_some());
    }
}
#[cfg(test)]
mod lazy_tests {
    use super::*;

    #[test]
    fn data_context_exposes_json_and_fields() {
        let env = base_environment();
        let ctx = data_context(
            "routing",
            &serde_json::json!({"fleet": "x", "rules": [1, 2]}),
        );
        let out = env
            .render_str(
                "{{ routing_json }}|{{ routing.fleet }}|{{ routing.rules | length }}",
                ctx,
            )
            .expect("renders");
        assert_eq!(
            out,
            "{\n  \"fleet\": \"x\",\n  \"rules\": [\n    1,\n    2\n  ]\n}|x|2"
        );
    }
}
