//! Data files rendered from templates (the routing table, the registry, package manifests):
//! their context holds data converted to template values only when a template reads it.

use std::sync::Arc;

use minijinja::Value;
use minijinja::value::Serde;

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

/// Renders a data template by name; a panic inside the template engine is an error too.
pub fn render_data(
    env: &minijinja::Environment<'_>,
    name: &str,
    ctx: Value,
) -> Result<String, minijinja::Error> {
    crate::panic::catch(|| env.get_template(name).and_then(|t| t.render(ctx))).unwrap_or_else(|c| {
        Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("the template engine failed ({c})"),
        ))
    })
}

/// A JSON value as a template value (data templates).
pub fn json_value(v: &serde_json::Value) -> Value {
    Value::from(Serde(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_context_exposes_json_and_fields() {
        let env = crate::template::base_environment();
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
