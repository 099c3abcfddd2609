//! The minijinja environment fleet renders with: strict undefined, no auto-escaping, a bound
//! on the work and memory of one render, the built-in templates (compiled into the binary)
//! overridden by the repo's `templates/`.

pub mod context;
pub mod data;
pub mod render;

use std::collections::BTreeMap;
use std::sync::Arc;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};

pub use context::Context;
pub use data::{data_context, json_value, lazy_map, render_data};
pub use render::{
    eval_expr, missing_variables, render_error, render_error_in, render_file, render_str,
    render_value,
};

/// The most work one render may do: about one unit per instruction and per 64 bytes of data
/// it makes, so a render stops with an error before it makes about 256 MiB (a template of
/// fleet's own renders 10,000 nodes in well under a tenth of that).
pub const FUEL: u64 = 4 * 1024 * 1024;

/// The largest indent `tojson` takes.
const MAX_JSON_INDENT: usize = 64;

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
    (
        "services/newsyslog.conf.j2",
        include_str!("../../templates/services/newsyslog.conf.j2"),
    ),
    // The package manifests: a repo with a catalog/ but no templates/packaging/ (one made by
    // `fleet init`, or HQ's) renders them too.
    (
        "packaging/arch-prod.PKGBUILD.j2",
        include_str!("../../templates/packaging/arch-prod.PKGBUILD.j2"),
    ),
    (
        "packaging/arch-prod.SRCINFO.j2",
        include_str!("../../templates/packaging/arch-prod.SRCINFO.j2"),
    ),
    (
        "packaging/arch-dev.PKGBUILD.j2",
        include_str!("../../templates/packaging/arch-dev.PKGBUILD.j2"),
    ),
    (
        "packaging/arch-dev.SRCINFO.j2",
        include_str!("../../templates/packaging/arch-dev.SRCINFO.j2"),
    ),
    (
        "packaging/homebrew-prod.rb.j2",
        include_str!("../../templates/packaging/homebrew-prod.rb.j2"),
    ),
    (
        "packaging/homebrew-dev.rb.j2",
        include_str!("../../templates/packaging/homebrew-dev.rb.j2"),
    ),
    // fleet's own release (`fleet render release`).
    (
        "packaging/release-install.sh.j2",
        include_str!("../../templates/packaging/release-install.sh.j2"),
    ),
    (
        "packaging/release-homebrew.rb.j2",
        include_str!("../../templates/packaging/release-homebrew.rb.j2"),
    ),
    (
        "packaging/release-arch.PKGBUILD.j2",
        include_str!("../../templates/packaging/release-arch.PKGBUILD.j2"),
    ),
    (
        "packaging/release-arch.SRCINFO.j2",
        include_str!("../../templates/packaging/release-arch.SRCINFO.j2"),
    ),
    (
        "browser/check-extensions.j2",
        include_str!("../../templates/browser/check-extensions.j2"),
    ),
    (
        "browser/extensions-policy.json.j2",
        include_str!("../../templates/browser/extensions-policy.json.j2"),
    ),
    (
        "browser/com.google.Chrome.plist.j2",
        include_str!("../../templates/browser/com.google.Chrome.plist.j2"),
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
    env.set_fuel(Some(FUEL));
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
    // Values from the environment are secrets: whatever reads one is secret as a whole.
    env.add_function("env", |name: String| -> Result<String, minijinja::Error> {
        match std::env::var(&name) {
            Ok(v) => {
                crate::secret::remember(&v);
                crate::secret::note_read();
                Ok(v)
            }
            Err(_) => Err(minijinja::Error::new(
                minijinja::ErrorKind::UndefinedError,
                format!("environment variable `{name}` is not set"),
            )),
        }
    });
    // `fail("why")`: a template's own check of its variables stops the render with this
    // message, located at the template (`fleet validate` and `fleet plan` report it).
    env.add_function("fail", |msg: String| -> Result<String, minijinja::Error> {
        Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            msg,
        ))
    });
    env.add_filter("rbquote", |s: String| rbquote(&s));
    env.add_filter("systemd_quote", |s: String| systemd_quote(&s));
    env.add_filter("xml", |s: String| xml_escape(&s));
    // minijinja's `tojson` charges fuel for its output only once it is made: an indent of
    // 2**31 spaces would be allocated first. Indents beyond any use are an error.
    env.add_filter(
        "tojson",
        |value: &minijinja::Value,
         indent: Option<minijinja::Value>,
         args: minijinja::value::Kwargs|
         -> Result<minijinja::Value, minijinja::Error> {
            let width = match &indent {
                Some(v) => Some(v.clone()),
                None => args.get::<Option<minijinja::Value>>("indent")?,
            };
            if let Some(w) = width
                && bool::try_from(w.clone()).is_err()
                && usize::try_from(w.clone()).map_or(true, |n| n > MAX_JSON_INDENT)
            {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!(
                        "tojson: the indent must be a number from 0 to {MAX_JSON_INDENT}, found {w}"
                    ),
                ));
            }
            minijinja::filters::tojson(value, indent, args)
        },
    );
    // JSON a command printed (a registered `stdout`) as a value; serde_json bounds the depth.
    env.add_filter(
        "from_json",
        |s: String| -> Result<minijinja::Value, minijinja::Error> {
            serde_json::from_str::<serde_json::Value>(&s)
                .map(|v| minijinja::Value::from(minijinja::value::Serde(v)))
                .map_err(|e| {
                    minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        format!("from_json: not JSON: {e}"),
                    )
                })
        },
    );
    env
}

pub use crate::script::shquote;

/// Escapes text for XML content or an attribute (plists): `&`, `<`, `>`, `"`, `'`.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Quotes a string as one word of a systemd unit's `ExecStart=`: double quotes with `\`
/// and `"` escaped, `%` (a specifier) and `$` (a variable) doubled.
pub fn systemd_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shquote("abc-1.2"), "abc-1.2");
        assert_eq!(shquote("it's $HOME"), "'it'\\''s $HOME'");
        assert_eq!(rbquote("a \"b\" #{x}"), "\"a \\\"b\\\" \\#{x}\"");
        assert_eq!(systemd_quote("a b%c$d\"e"), "\"a b%%c$$d\\\"e\"");
        assert_eq!(
            xml_escape("/a?b=1&c=<'\">"),
            "/a?b=1&amp;c=&lt;&apos;&quot;&gt;"
        );
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
