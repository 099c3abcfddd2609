//! `http`: make an HTTP request from the node and check the status. curl's arguments are the
//! script's positional parameters; the body goes on curl's stdin (`--data-binary @-`), so no
//! value is read as an option, a file name or a URL glob.

use crate::facts::Facts;
use crate::modules::{ArgError, ArgReader, Inputs, Module, Step, values};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct Http;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "http",
    summary: "Make an HTTP request from the node and check the answer.",
    free_form: None,
    args: &[
        arg("url", ArgKind::Str, true, "the URL (http:// or https://)"),
        arg(
            "method",
            ArgKind::OneOf(&["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]),
            false,
            "default GET",
        ),
        arg(
            "body",
            ArgKind::Any,
            false,
            "request body; a mapping or list is sent as JSON",
        ),
        arg("headers", ArgKind::Map, false, "request headers"),
        arg(
            "status",
            ArgKind::Int,
            false,
            "expected status (default 200)",
        ),
        arg("timeout", ArgKind::Str, false, "e.g. `10s` (default 30s)"),
    ],
    exactly_one_of: &[],
};

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    url: String,
    method: &'static str,
    body: Option<(String, bool)>,
    headers: Vec<(String, String)>,
    status: u64,
    secs: u64,
}

impl Module for Http {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, _: &Inputs<'_>) -> Result<Args, ArgError> {
        let headers = a.str_map("headers")?;
        for (k, v) in &headers {
            values::header(a, "headers", k, v)?;
        }
        let body = match a.any("body") {
            None => None,
            Some(serde_json::Value::String(s)) => Some((s.clone(), false)),
            Some(other) => Some((other.to_string(), true)),
        };
        if body.as_ref().is_some_and(|(b, _)| b.contains('\0')) {
            return Err(a.invalid("body", "a body without NUL bytes"));
        }
        let status = a.uint("status")?.unwrap_or(200);
        if !(100..=599).contains(&status) {
            return Err(a.invalid("status", "an HTTP status (100-599)"));
        }
        Ok(Args {
            url: values::url(a, "url")?,
            method: a
                .one_of("method", &["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"])?
                .unwrap_or("GET"),
            body,
            headers,
            status,
            secs: a.duration_secs("timeout")?.unwrap_or(30),
        })
    }

    fn script(&self, a: &Args, _facts: &Facts) -> Result<Step, ArgError> {
        let mut s = Script::new();
        if !matches!(a.method, "GET" | "HEAD") {
            // Only reads run in check mode.
            s.code("[ \"$CHECK\" = 1 ] && finish 0\n");
        }
        let mut words: Vec<String> = [
            "-sS",
            "-g",
            "--proto",
            "=http,https",
            "-w",
            "\\n%{http_code}",
            "--max-time",
        ]
        .map(String::from)
        .to_vec();
        words.push(a.secs.to_string());
        if a.method == "HEAD" {
            words.push("--head".into());
        } else {
            words.extend(["-X".to_string(), a.method.to_string()]);
        }
        for (k, v) in &a.headers {
            words.extend(["-H".to_string(), format!("{k}: {v}")]);
        }
        if let Some((_, json)) = &a.body {
            if *json {
                words.extend(["-H".to_string(), "content-type: application/json".into()]);
            }
            words.extend(["--data-binary".to_string(), "@-".into()]);
        }
        words.push(a.url.clone());
        s.set("U", a.url.as_str()).set("ST", a.status).args(words);
        match &a.body {
            Some((b, _)) => {
                s.set("B", b.as_str())
                    .code("out=$(printf '%s' \"$B\" | curl \"$@\") || fail \"the request to $U failed\"\n");
            }
            None => {
                s.code("out=$(curl \"$@\") || fail \"the request to $U failed\"\n");
            }
        }
        s.code(concat!(
            "code=${out##*\"\n\"}; body=${out%\"\n\"*}; [ \"$body\" = \"$out\" ] && body=\n",
            "printf '%s' \"$body\"\n",
            "[ \"$code\" = \"$ST\" ] || fail \"$U answered $code, expected $ST\"\n",
            "finish 0\n",
        ));
        Ok(Step::of(s))
    }

    fn batchable(&self, _: &Args) -> bool {
        false
    }
}
