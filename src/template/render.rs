//! Rendering a user's template strings, expressions and files for one host: located errors
//! that name the variable that was missing, a panic inside minijinja or a filter turned into
//! such an error, and every result paired with whether its rendering read a secret.

use minijinja::{Environment, Value};

use crate::error::{Diagnostic, Loc};
use crate::secret::Rendered;
use crate::template::Context;

/// Names referenced by `source` that the context lacks (`node.hardware.gpu`, `ollama_prt`).
pub fn missing_variables(
    env: &Environment<'_>,
    source: &str,
    ctx: &Context,
    is_expr: bool,
) -> Vec<String> {
    let names = crate::panic::catch(|| {
        if is_expr {
            env.compile_expression(source)
                .map(|e| e.undeclared_variables(true))
        } else {
            env.template_from_str(source)
                .map(|t| t.undeclared_variables(true))
        }
    });
    let Ok(Ok(names)) = names else {
        return Vec::new();
    };
    let mut missing: Vec<String> = names
        .into_iter()
        .filter(|path| !ctx.has_path(path) && !global_has_path(env, path))
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

/// Why an inline template (a string of a YAML file, starting at `loc`) failed, located in
/// the user's file.
pub fn render_error(
    err: &minijinja::Error,
    loc: &Loc,
    missing: &[String],
    context: &str,
) -> Diagnostic {
    render_error_in(err, loc, missing, context, None)
}

/// Why a template failed: `own` names the template file that starts at `loc` (`None`: an
/// inline string). An error inside another template it imports, includes or extends is
/// located at `loc`, and its message says which template and line.
pub fn render_error_in(
    err: &minijinja::Error,
    loc: &Loc,
    missing: &[String],
    context: &str,
    own: Option<&str>,
) -> Diagnostic {
    let foreign = err
        .name()
        .filter(|n| !matches!(*n, "<string>" | "<expression>") && Some(*n) != own);
    if let Some(other) = foreign {
        let at_line = err.line().map(|l| format!(" line {l}")).unwrap_or_default();
        let inner = render_error_in(
            err,
            &Loc::file_start(&other.into()),
            missing,
            context,
            Some(other),
        );
        return Diagnostic {
            loc: Some(loc.clone()),
            message: format!("{} (in template `{other}`{at_line})", inner.message),
            ..inner
        };
    }
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
        minijinja::ErrorKind::OutOfFuel => {
            return Diagnostic::error(
                at,
                format!("template too large {context}: it would make more than fleet's limit of data or work (about {} MB)", crate::template::FUEL / 16_384),
            )
            .with_help("look for a filter or loop with an extreme argument (`indent`, `*`, `range`)");
        }
        _ => "template error",
    };
    Diagnostic::error(at, format!("{what} {context}: {detail}"))
}

/// A panic inside minijinja or a filter, as an error at the template.
fn panicked(c: &crate::panic::Caught, loc: &Loc, context: &str) -> Diagnostic {
    Diagnostic::error(
        loc.clone(),
        format!("template error {context}: the template engine failed ({c})"),
    )
    .with_help("an argument of a filter is out of range; this is a bug of the template engine, please report it")
}

/// Renders a string template (a YAML value) against a context; tells whether it read a
/// secret.
pub fn render_str(
    env: &Environment<'_>,
    text: &str,
    ctx: &Context,
    loc: &Loc,
    context: &str,
) -> Result<(String, bool), Diagnostic> {
    if !text.contains("{{") && !text.contains("{%") {
        return Ok((text.to_string(), false));
    }
    let (r, read) =
        crate::secret::tracking(|| crate::panic::catch(|| env.render_str(text, ctx.to_value())));
    match r {
        Ok(Ok(s)) => Ok((s, read)),
        Ok(Err(e)) => {
            let missing = missing_variables(env, text, ctx, false);
            Err(render_error(&e, loc, &missing, context))
        }
        Err(c) => Err(panicked(&c, loc, context)),
    }
}

/// Renders a string template keeping the value's type when the whole string is one
/// expression (`"{{ node.models }}"` yields the list, not its text).
pub fn render_value(
    env: &Environment<'_>,
    text: &str,
    ctx: &Context,
    loc: &Loc,
    context: &str,
) -> Result<Rendered, Diagnostic> {
    // Only surrounding spaces: a trailing newline is content, so such a string stays a string.
    let trimmed = text.trim_matches(' ');
    if let Some(inner) = trimmed
        .strip_prefix("{{")
        .and_then(|s| s.strip_suffix("}}"))
        && !inner.contains("{{")
        && !inner.contains("}}")
    {
        let (v, secret) = eval_expr(env, inner, ctx, loc, context)?;
        let json = serde_json::to_value(&v).map_err(|e| {
            Diagnostic::error(
                loc.clone(),
                format!("template error {context}: the value cannot be used as data: {e}"),
            )
        })?;
        return Ok(Rendered::new(json, secret));
    }
    let (s, secret) = render_str(env, text, ctx, loc, context)?;
    Ok(Rendered::new(serde_json::Value::String(s), secret))
}

/// Evaluates an expression (`when:`), `{{ }}` optional; tells whether it read a secret.
pub fn eval_expr(
    env: &Environment<'_>,
    expr: &str,
    ctx: &Context,
    loc: &Loc,
    context: &str,
) -> Result<(Value, bool), Diagnostic> {
    let e = expr.trim();
    let e = e
        .strip_prefix("{{")
        .and_then(|s| s.strip_suffix("}}"))
        .unwrap_or(e)
        .trim();
    let (r, read) = crate::secret::tracking(|| {
        crate::panic::catch(|| {
            env.compile_expression(e)
                .map_err(|err| (err, false))
                .and_then(|c| c.eval(ctx.to_value()).map_err(|err| (err, true)))
        })
    });
    let value = match r {
        Ok(Ok(v)) => v,
        Ok(Err((err, evaluated))) => {
            let missing = if evaluated {
                missing_variables(env, e, ctx, true)
            } else {
                Vec::new()
            };
            return Err(render_error(&err, loc, &missing, context));
        }
        Err(c) => return Err(panicked(&c, loc, context)),
    };
    // A bare undefined name evaluates to "undefined" without an error; strict means strict.
    if value.is_undefined() {
        let missing = missing_variables(env, e, ctx, true);
        let err = minijinja::Error::new(minijinja::ErrorKind::UndefinedError, "undefined value");
        return Err(render_error(&err, loc, &missing, context));
    }
    Ok((value, read))
}

/// Renders a named template of the environment (a file); tells whether it read a secret.
/// Errors are located at the start of `shown` (the template's path).
pub fn render_file(
    env: &Environment<'_>,
    name: &str,
    source_text: &str,
    shown: &std::sync::Arc<str>,
    ctx: &Context,
    context: &str,
) -> Result<(String, bool), Diagnostic> {
    let loc = Loc::file_start(shown);
    let (r, read) = crate::secret::tracking(|| {
        crate::panic::catch(|| {
            env.get_template(name)
                .map_err(|e| (e, false))
                .and_then(|t| t.render(ctx.to_value()).map_err(|e| (e, true)))
        })
    });
    match r {
        Ok(Ok(s)) => Ok((s, read)),
        Ok(Err((e, rendered))) => {
            let missing = if rendered {
                missing_variables(env, source_text, ctx, false)
            } else {
                Vec::new()
            };
            Err(render_error_in(&e, &loc, &missing, context, Some(name)))
        }
        Err(c) => Err(panicked(&c, &loc, context)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::base_environment;
    use serde_json::json;

    fn loc() -> Loc {
        Loc {
            file: "r.yaml".into(),
            line: 4,
            col: 7,
        }
    }

    fn ctx(v: serde_json::Value) -> Context {
        Context::from_json(v)
    }

    #[test]
    fn undefined_variables_are_named() {
        let env = base_environment();
        let c = ctx(json!({"node": {"name": "maestro"}}));
        let e = render_str(&env, "port {{ ollama_prt }}", &c, &loc(), "in task `x`")
            .expect_err("undefined");
        assert_eq!(e.message, "undefined variable `ollama_prt` in task `x`");
        assert_eq!(e.loc, Some(loc()));
        let e =
            render_str(&env, "{{ node.hardware.gpu }}", &c, &loc(), "here").expect_err("undefined");
        assert!(e.message.contains("`node.hardware.gpu`"), "{}", e.message);
    }

    #[test]
    fn a_bare_undefined_expression_is_an_error() {
        let env = base_environment();
        let e = render_value(&env, "{{ nowhere }}", &ctx(json!({})), &loc(), "in t")
            .expect_err("undefined");
        assert_eq!(e.message, "undefined variable `nowhere` in t");
        assert!(eval_expr(&env, "nowhere", &ctx(json!({})), &loc(), "in t").is_err());
    }

    #[test]
    fn whole_expressions_keep_their_type() {
        let env = base_environment();
        let c = ctx(json!({"node": {"models": ["a", "b"]}}));
        let v = render_value(&env, "{{ node.models }}", &c, &loc(), "").expect("renders");
        assert_eq!(v.value, json!(["a", "b"]));
        let v = render_value(&env, "x-{{ node.models[0] }}", &c, &loc(), "").expect("renders");
        assert_eq!(v.value, json!("x-a"));
    }

    #[test]
    fn no_autoescape_and_syntax_errors_located() {
        let env = base_environment();
        let c = ctx(json!({"a": "<b>&"}));
        assert_eq!(
            render_str(&env, "{{ a }}", &c, &loc(), "").expect("ok").0,
            "<b>&"
        );
        let e = render_str(&env, "{{ a ", &c, &loc(), "in x").expect_err("syntax");
        assert!(
            e.message.starts_with("template syntax error in x"),
            "{}",
            e.message
        );
    }

    #[test]
    fn extreme_filter_arguments_are_errors_not_crashes() {
        crate::panic::install();
        let env = base_environment();
        let c = ctx(json!({"n": {"stdout": "9223372036854775808"}, "x": "a\nb"}));
        for t in [
            "{{ x | indent(n.stdout | int) }}",
            "{{ x | indent(2**62) }}",
            "{{ 'a' * 2**62 }}",
            "{{ range(2**62) | list }}",
            "{% for i in range(100000000) %}{{ i }}{% endfor %}",
            "{{ x | center(2**62) }}",
            "{{ x | tojson(indent=2**31) }}",
            "{{ x | tojson(2**53 + 1) }}",
            "{{ '%9999999999s' | format('a') }}",
            "{{ x | wordwrap(2**62) }}",
            "{{ x | replace('a', 'b' * 2**40) }}",
            "{{ (x ~ x) * 2**40 }}",
            "{{ x | indent(2**62, true, true) }}",
            "{{ range(2**20) | join(x * 2**20) }}",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        ] {
            let r = render_str(&env, t, &c, &loc(), "in t");
            assert!(r.is_err(), "{t} rendered: {r:?}");
        }
        assert!(eval_expr(&env, "x | indent(2**62)", &c, &loc(), "in t").is_err());
        assert_eq!(
            render_str(&env, "{{ {'a': 1} | tojson(indent=2) }}", &c, &loc(), "")
                .expect("ok")
                .0,
            "{\n  \"a\": 1\n}"
        );
    }

    #[test]
    fn renders_tell_whether_they_read_a_secret() {
        let env = base_environment();
        let mut c = ctx(json!({"a": "x"}));
        c.insert("s", json!("pw"), true);
        let r = render_value(&env, "{{ s | upper }}-{{ a }}", &c, &loc(), "").expect("ok");
        assert_eq!((r.value, r.shown), (json!("PW-x"), json!("***")));
        let r = render_value(&env, "{{ a }}", &c, &loc(), "").expect("ok");
        assert_eq!(r.shown, json!("x"));
        let (_, read) = eval_expr(&env, "s == 'pw'", &c, &loc(), "").expect("ok");
        assert!(read);
    }
}
