//! Reading a task's rendered arguments into typed values. Every error names the argument
//! and shows the value as printers may (a secret shows as `***`); the caller locates it at the
//! argument in the task's file.

use serde_json::Value as J;

use crate::secret::MASK;

/// Why an argument cannot be used, after templating.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ArgError {
    /// The argument, when one is to blame (the error is located at it).
    pub key: Option<&'static str>,
    /// What is wrong: the argument, what was expected, what was found.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
    /// A place of its own (a template file), instead of the argument's.
    pub at: Option<crate::error::Loc>,
}

impl ArgError {
    /// An error about one argument.
    pub fn arg(key: &'static str, message: impl Into<String>) -> ArgError {
        ArgError {
            key: Some(key),
            message: message.into(),
            help: None,
            at: None,
        }
    }

    /// An error about the task as a whole.
    pub fn task(message: impl Into<String>) -> ArgError {
        ArgError {
            key: None,
            message: message.into(),
            help: None,
            at: None,
        }
    }

    /// The error with every occurrence of `value` shown as `***` (a secret argument quoted by
    /// a lower layer).
    pub fn hiding(mut self, value: &str) -> ArgError {
        if !value.is_empty() {
            self.message = self.message.replace(value, crate::secret::MASK);
            self.help = self.help.map(|h| h.replace(value, crate::secret::MASK));
        }
        self
    }

    /// Adds advice.
    pub fn help(mut self, help: impl Into<String>) -> ArgError {
        self.help = Some(help.into());
        self
    }
}

/// A task's rendered arguments (a mapping) and their printable twin.
#[derive(Debug, Clone, Copy)]
pub struct ArgReader<'a> {
    value: &'a J,
    shown: &'a J,
    module: &'static str,
}

fn kind(v: &J) -> &'static str {
    match v {
        J::Null => "nothing",
        J::Bool(_) => "a boolean",
        J::Number(_) => "a number",
        J::String(_) => "a string",
        J::Array(_) => "a list",
        J::Object(_) => "a mapping",
    }
}

impl<'a> ArgReader<'a> {
    /// Reads `value` (shown as `shown`) as the arguments of `module`.
    pub fn new(module: &'static str, value: &'a J, shown: &'a J) -> ArgReader<'a> {
        ArgReader {
            value,
            shown,
            module,
        }
    }

    /// The module's name.
    pub fn module(&self) -> &'static str {
        self.module
    }

    fn get(&self, key: &str) -> Option<&'a J> {
        self.value.get(key).filter(|v| !v.is_null())
    }

    /// How an argument's value may be printed: its text, or `***`.
    pub fn shown(&self, key: &str) -> String {
        match self.shown.get(key) {
            Some(J::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        }
    }

    /// True when the argument's value read a secret.
    pub fn is_secret(&self, key: &str) -> bool {
        self.shown.get(key).is_some_and(|s| s == MASK) && self.get(key).is_some_and(|v| v != MASK)
    }

    fn err(&self, key: &'static str, what: impl std::fmt::Display) -> ArgError {
        ArgError::arg(key, format!("module `{}`: `{key}`: {what}", self.module))
    }

    /// A error about one argument of this module, showing its value as printers may.
    pub fn invalid(&self, key: &'static str, expected: &str) -> ArgError {
        self.err(
            key,
            format!("expected {expected}, found `{}`", self.shown(key)),
        )
    }

    fn text(&self, key: &'static str, v: &J) -> Result<String, ArgError> {
        let s = match v {
            J::String(s) => s.clone(),
            J::Number(n) => n.to_string(),
            J::Bool(b) => b.to_string(),
            other => {
                return Err(self.err(key, format!("expected a string, found {}", kind(other))));
            }
        };
        if s.contains('\0') {
            return Err(self.err(
                key,
                "the value holds a NUL byte, which no host tool can take",
            ));
        }
        Ok(s)
    }

    /// An optional string (numbers and booleans read as their text).
    pub fn str(&self, key: &'static str) -> Result<Option<String>, ArgError> {
        self.get(key).map(|v| self.text(key, v)).transpose()
    }

    /// A required string.
    pub fn req(&self, key: &'static str) -> Result<String, ArgError> {
        self.str(key)?.ok_or_else(|| self.err(key, "is required"))
    }

    /// A required string that is not empty.
    pub fn req_nonempty(&self, key: &'static str) -> Result<String, ArgError> {
        let s = self.req(key)?;
        if s.is_empty() {
            return Err(self.err(key, "must not be empty"));
        }
        Ok(s)
    }

    /// An optional boolean (`true`/`false`, or their text).
    pub fn bool(&self, key: &'static str) -> Result<Option<bool>, ArgError> {
        match self.get(key) {
            None => Ok(None),
            Some(J::Bool(b)) => Ok(Some(*b)),
            Some(J::String(s)) if s == "true" || s == "yes" => Ok(Some(true)),
            Some(J::String(s)) if s == "false" || s == "no" => Ok(Some(false)),
            Some(_) => Err(self.invalid(key, "true or false")),
        }
    }

    /// An optional whole number (or its text).
    pub fn uint(&self, key: &'static str) -> Result<Option<u64>, ArgError> {
        match self.get(key) {
            None => Ok(None),
            Some(J::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(J::String(s)) if s.trim().parse::<u64>().is_ok() => Ok(s.trim().parse().ok()),
            Some(_) => Err(self.invalid(key, "a whole number")),
        }
    }

    /// One of a fixed set of words; `None` when not given.
    pub fn one_of(
        &self,
        key: &'static str,
        options: &[&'static str],
    ) -> Result<Option<&'static str>, ArgError> {
        let Some(s) = self.str(key)? else {
            return Ok(None);
        };
        options
            .iter()
            .copied()
            .find(|o| *o == s)
            .map(Some)
            .ok_or_else(|| self.invalid(key, &format!("one of {}", options.join("/"))))
    }

    /// One string or a list of strings.
    pub fn str_list(&self, key: &'static str) -> Result<Vec<String>, ArgError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(J::Array(items)) => items.iter().map(|v| self.text(key, v)).collect(),
            Some(v) => Ok(vec![self.text(key, v)?]),
        }
    }

    /// A mapping of names to strings (headers, environment).
    pub fn str_map(&self, key: &'static str) -> Result<Vec<(String, String)>, ArgError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(J::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    if k.contains('\0') {
                        return Err(self.err(key, "a name holds a NUL byte"));
                    }
                    Ok((k.clone(), self.text(key, v)?))
                })
                .collect(),
            Some(_) => Err(self.invalid(key, "a mapping")),
        }
    }

    /// A file mode: a quoted octal string such as `"0644"` (or its digits as a number).
    pub fn mode(&self, key: &'static str) -> Result<Option<u32>, ArgError> {
        let Some(s) = self.str(key)? else {
            return Ok(None);
        };
        let digits = s.trim().trim_start_matches("0o");
        match u32::from_str_radix(digits, 8) {
            Ok(m) if m <= 0o7777 && !digits.is_empty() => Ok(Some(m)),
            _ => Err(self.invalid(key, "an octal file mode such as \"0644\"")),
        }
    }

    /// A duration (`30s`, `5m`, `1h`, a number of seconds).
    pub fn duration_secs(&self, key: &'static str) -> Result<Option<u64>, ArgError> {
        let Some(s) = self.str(key)? else {
            return Ok(None);
        };
        crate::spec::task::parse_duration_secs(&s)
            .map(Some)
            .ok_or_else(|| self.invalid(key, "a duration such as `30s`, `5m` or `1h`"))
    }

    /// A value of any type as given (request bodies).
    pub fn any(&self, key: &'static str) -> Option<&'a J> {
        self.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_reads_and_errors_that_show_only_what_may_be_shown() {
        let v = json!({"path": "/x", "n": 3, "b": "yes", "m": "0640", "l": "one", "s": "sk-1", "nul": "a\u{0}b"});
        let shown = json!({"path": "/x", "n": 3, "b": "yes", "m": "0640", "l": "one", "s": "***", "nul": "a\u{0}b"});
        let a = ArgReader::new("file", &v, &shown);
        assert_eq!(a.req("path").expect("path"), "/x");
        assert_eq!(a.str("n").expect("n").as_deref(), Some("3"));
        assert_eq!(a.bool("b").expect("b"), Some(true));
        assert_eq!(a.mode("m").expect("m"), Some(0o640));
        assert_eq!(a.str_list("l").expect("l"), vec!["one".to_string()]);
        let e = a.one_of("s", &["present", "absent"]).expect_err("secret");
        assert!(
            e.message.contains("found `***`") && !e.message.contains("sk-1"),
            "{e}"
        );
        assert!(a.is_secret("s") && !a.is_secret("path"));
        assert!(a.req("nul").expect_err("nul").message.contains("NUL"));
        assert!(
            a.req("missing")
                .expect_err("missing")
                .message
                .contains("is required")
        );
        assert!(a.mode("path").is_err());
    }
}
