//! `ollama_model`: an Ollama model is present (pulled) or absent, through the node's Ollama
//! API. The request body is JSON made here and sent on curl's stdin.

use crate::facts::Facts;
use crate::modules::{ArgError, ArgReader, Inputs, Judged, Mode, Module, Reported, Step, values};
use crate::script::Script;
use crate::spec::module::{ArgKind, ModuleSpec, arg};

/// The module.
#[derive(Debug)]
pub struct OllamaModel;

/// Its spec.
pub const SPEC: ModuleSpec = ModuleSpec {
    name: "ollama_model",
    summary: "Ensure an Ollama model is present (or absent) through the node's Ollama API.",
    free_form: None,
    args: &[
        arg("name", ArgKind::Str, true, "model name, e.g. `llama3.1:8b`"),
        arg(
            "state",
            ArgKind::OneOf(&["present", "absent"]),
            false,
            "default `present`",
        ),
        arg(
            "url",
            ArgKind::Str,
            false,
            "Ollama base URL as seen from the node (default http://127.0.0.1:11434)",
        ),
    ],
    exactly_one_of: &[],
};

/// Decoded arguments.
#[derive(Debug, Clone)]
pub struct Args {
    name: String,
    absent: bool,
    url: String,
}

impl Module for OllamaModel {
    type Args = Args;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &ArgReader<'_>, _: &Inputs<'_>) -> Result<Args, ArgError> {
        let url = match a.str("url")? {
            Some(_) => values::url(a, "url")?,
            None => "http://127.0.0.1:11434".to_string(),
        };
        Ok(Args {
            name: values::model(a, "name")?,
            absent: a.one_of("state", &["present", "absent"])? == Some("absent"),
            url: url.trim_end_matches('/').to_string(),
        })
    }

    fn script(&self, a: &Args, _facts: &Facts) -> Result<Step, ArgError> {
        let body = serde_json::json!({ "name": a.name, "model": a.name }).to_string();
        let mut s = Script::new();
        s.set("B", a.url.as_str())
            .set("M", a.name.as_str())
            .set("BODY", body);
        // In check mode Ollama may not run yet (an earlier task would start it): a model to
        // pull is then a change, one to remove is not.
        if a.absent {
            s.code("tags=$(curl -fsS -g --max-time 10 \"$B/api/tags\" 2>/dev/null) || { [ \"$CHECK\" = 1 ] && finish 0; fail \"Ollama at $B does not answer /api/tags\"; }\n");
        } else {
            s.code("tags=$(curl -fsS -g --max-time 10 \"$B/api/tags\" 2>/dev/null) || { [ \"$CHECK\" = 1 ] && { changed=1; finish 0; }; fail \"Ollama at $B does not answer /api/tags\"; }\n");
        }
        // Names in /api/tags are "name:tag"; a bare name means ":latest".
        s.code(concat!(
            "case \"$M\" in *:*) W=\"$M\";; *) W=\"$M:latest\";; esac\n",
            "have=0; printf '%s' \"$tags\" | grep -Fq -e \"\\\"name\\\":\\\"$W\\\"\" -e \"\\\"name\\\": \\\"$W\\\"\" && have=1\n",
        ));
        if a.absent {
            s.code("if [ \"$have\" = 1 ]; then changed=1; [ \"$CHECK\" = 1 ] || printf '%s' \"$BODY\" | curl -fsS -g --max-time 60 -X DELETE --data-binary @- \"$B/api/delete\" >/dev/null || fail \"deleting $M failed\"; fi\nfinish 0\n");
        } else {
            s.code(concat!(
                "if [ \"$have\" = 0 ]; then changed=1; if [ \"$CHECK\" != 1 ]; then ",
                "out=$(printf '%s' \"$BODY\" | curl -fsS -g -N -X POST --data-binary @- \"$B/api/pull\") || fail \"pulling $M from $B failed\"\n",
                "printf '%s\\n' \"$out\" | grep -q '\"status\": *\"success\"' || fail \"pulling $M did not finish: $(printf '%s\\n' \"$out\" | tail -n1)\"\n",
                "printf '%s\\n' \"$out\" | grep -o '\"status\":\"[^\"]*\"' | uniq | sed 's/\"status\":\"//; s/\"$//' >&2; fi; fi\n",
                "finish 0\n",
            ));
        }
        Ok(Step::of(s))
    }

    fn judge(&self, _: &Args, r: &Reported, mode: Mode) -> Judged {
        Judged {
            changed: r.changed,
            failed: None,
            note: (r.changed && !mode.check)
                .then(|| {
                    r.stderr
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                })
                .filter(|n| !n.is_empty()),
        }
    }
}
