//! The variables a template sees for one host and task, and which of them are secret. The
//! context is handed to minijinja as an object that converts a variable only when a template
//! reads it, and notes (for [`crate::secret::tracking`]) when the variable read is secret.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use minijinja::Value;
use minijinja::value::{Enumerator, Object, Serde};
use serde_json::{Map, Value as J};

/// Variables by name, with the names whose values are secret.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    vars: Arc<Map<String, J>>,
    secret: Arc<BTreeSet<String>>,
}

impl Context {
    /// A context of these variables, none secret.
    pub fn new(vars: Map<String, J>) -> Context {
        Context {
            vars: Arc::new(vars),
            secret: Arc::default(),
        }
    }

    /// A context from a JSON object (anything else gives an empty context).
    pub fn from_json(v: J) -> Context {
        match v {
            J::Object(m) => Context::new(m),
            _ => Context::default(),
        }
    }

    /// A variable.
    pub fn get(&self, name: &str) -> Option<&J> {
        self.vars.get(name)
    }

    /// Every variable.
    pub fn vars(&self) -> &Map<String, J> {
        &self.vars
    }

    /// Sets a variable; `secret` marks it (a later plain value of the same name unmarks it).
    pub fn insert(&mut self, name: &str, value: J, secret: bool) {
        Arc::make_mut(&mut self.vars).insert(name.to_string(), value);
        if secret != self.secret.contains(name) {
            let s = Arc::make_mut(&mut self.secret);
            if secret {
                s.insert(name.to_string());
            } else {
                s.remove(name);
            }
        }
    }

    /// A nested field of a variable (`node.os`), set in place.
    pub fn set_field(&mut self, name: &str, field: &str, value: J) {
        if let Some(J::Object(o)) = Arc::make_mut(&mut self.vars).get_mut(name) {
            o.insert(field.to_string(), value);
        }
    }

    /// True when the variable is secret.
    pub fn is_secret(&self, name: &str) -> bool {
        self.secret.contains(name)
    }

    /// The names of the secret variables.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.secret.iter().map(String::as_str)
    }

    /// The variables as one JSON object.
    pub fn to_json(&self) -> J {
        J::Object((*self.vars).clone())
    }

    /// The context as minijinja reads it.
    pub fn to_value(&self) -> Value {
        Value::from_object(Root {
            vars: Arc::clone(&self.vars),
            secret: Arc::clone(&self.secret),
            converted: Mutex::new(BTreeMap::new()),
        })
    }

    /// True when `path` (`node.hardware.gpu`) names a value of the context.
    pub fn has_path(&self, path: &str) -> bool {
        let mut parts = path.split('.');
        let Some(mut cur) = parts.next().and_then(|p| self.vars.get(p)) else {
            return false;
        };
        for part in parts {
            match cur.get(part) {
                Some(v) => cur = v,
                None => return false,
            }
        }
        true
    }
}

#[derive(Debug)]
struct Root {
    vars: Arc<Map<String, J>>,
    secret: Arc<BTreeSet<String>>,
    converted: Mutex<BTreeMap<String, Value>>,
}

impl Object for Root {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        let v = self.vars.get(name)?;
        if self.secret.contains(name) {
            crate::secret::note_read();
        }
        if let Ok(mut c) = self.converted.lock() {
            return Some(
                c.entry(name.to_string())
                    .or_insert_with(|| Value::from(Serde(v)))
                    .clone(),
            );
        }
        Some(Value::from(Serde(v)))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.vars.keys().map(|k| Value::from(k.as_str())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reading_a_secret_variable_is_noticed() {
        let mut ctx = Context::from_json(json!({"a": "plain", "n": {"x": 1}}));
        ctx.insert("tok", json!("s3cr3t"), true);
        let env = minijinja::Environment::new();
        let (out, read) =
            crate::secret::tracking(|| env.render_str("{{ a }} {{ n.x }}", ctx.to_value()));
        assert_eq!(out.expect("renders"), "plain 1");
        assert!(!read);
        let (out, read) =
            crate::secret::tracking(|| env.render_str("{{ tok | upper }}", ctx.to_value()));
        assert_eq!(out.expect("renders"), "S3CR3T");
        assert!(read);
        assert!(ctx.has_path("n.x") && !ctx.has_path("n.y"));
    }
}
