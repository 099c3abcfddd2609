//! Host scripts in which no value can change what the script does.
//!
//! A [`Script`] is made of two kinds of text only: fixed shell code, which module code can only
//! give as a string literal (`&'static str`), and values, which only enter as data — bound to
//! a shell variable as a single-quoted literal (`P='/etc/it'\''s'`) or set as the positional
//! parameters (`set -- 'a' 'b'`, then `"$@"`). Code refers to values as `"$P"`; no value is
//! ever written into double-quoted text, into a message, or into a string a shell parses a
//! second time. [`frame`] joins module scripts into what one exec runs and reads their output
//! back under a per-exec nonce.

pub mod frame;

/// Quotes a string for a POSIX shell: bare when it is plainly safe, else single quotes with
/// `'` written as `'\''`. The result is one word that the shell reads back byte for byte.
pub fn shquote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,%".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// True for a shell variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A value that can be bound into a script: its text, quoted by [`shquote`] on the way in.
pub trait ShellValue {
    /// The value's text.
    fn shell_text(&self) -> std::borrow::Cow<'_, str>;
}

impl ShellValue for str {
    fn shell_text(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(self)
    }
}

impl ShellValue for String {
    fn shell_text(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(self)
    }
}

impl<T: ShellValue + ?Sized> ShellValue for &T {
    fn shell_text(&self) -> std::borrow::Cow<'_, str> {
        (**self).shell_text()
    }
}

impl ShellValue for crate::secret::Secret<String> {
    fn shell_text(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(self.expose())
    }
}

macro_rules! number_value {
    ($($t:ty),*) => {$(
        impl ShellValue for $t {
            fn shell_text(&self) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Owned(self.to_string())
            }
        }
    )*};
}
number_value!(u8, u16, u32, u64, usize, i32, i64);

impl ShellValue for bool {
    fn shell_text(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(if *self { "1" } else { "0" })
    }
}

/// A script being built. See the module docs for the rules it enforces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    text: String,
}

impl Script {
    /// An empty script.
    pub fn new() -> Script {
        Script::default()
    }

    /// Appends fixed shell code. Only literals can be given: values go through [`Script::set`]
    /// or [`Script::args`].
    pub fn code(&mut self, code: &'static str) -> &mut Script {
        self.text.push_str(code);
        self
    }

    /// Binds `value` to the shell variable `name` as a quoted literal, on a line of its own.
    pub fn set(&mut self, name: &'static str, value: impl ShellValue) -> &mut Script {
        debug_assert!(is_var_name(name), "`{name}` is not a shell variable name");
        let v = value.shell_text();
        debug_assert!(!v.contains('\0'), "a shell value cannot hold a NUL byte");
        self.text.push_str(name);
        self.text.push('=');
        self.text.push_str(&shquote(&v));
        self.text.push('\n');
        self
    }

    /// Binds an optional value: unset stays empty (`name=''`).
    pub fn set_opt<V: ShellValue>(&mut self, name: &'static str, value: Option<V>) -> &mut Script {
        match value {
            Some(v) => self.set(name, v),
            None => self.set(name, ""),
        }
    }

    /// Sets the positional parameters (`"$@"`) to `values`, each one word.
    pub fn args<I, S>(&mut self, values: I) -> &mut Script
    where
        I: IntoIterator<Item = S>,
        S: ShellValue,
    {
        self.text.push_str("set --");
        for v in values {
            let t = v.shell_text();
            debug_assert!(!t.contains('\0'), "a shell value cannot hold a NUL byte");
            self.text.push(' ');
            self.text.push_str(&shquote(&t));
        }
        self.text.push('\n');
        self
    }

    /// Appends another script (built by the same rules).
    pub fn append(&mut self, other: &Script) -> &mut Script {
        self.text.push_str(&other.text);
        self
    }

    /// The shell text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(script: &Script) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script.text())
            .output()
            .expect("sh runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn quoting_by_construction() {
        assert_eq!(shquote("abc-1.2"), "abc-1.2");
        assert_eq!(shquote("it's $HOME"), "'it'\\''s $HOME'");
        assert_eq!(shquote(""), "''");
    }

    #[test]
    fn every_value_arrives_byte_for_byte_and_runs_nothing() {
        let mark = tempfile::tempdir().expect("tmp");
        let m = mark.path().join("MARK");
        let m = m.to_string_lossy();
        let hostile = [
            format!("$(touch {m})"),
            format!("`touch {m}`"),
            format!("\"; touch {m}; \""),
            format!("'; touch {m}; '"),
            format!("\\'$(touch {m})"),
            format!("a\nb; touch {m}"),
            "*".to_string(),
            "-n".to_string(),
            "  spaced  out ".to_string(),
            "non-ASCII ü ☃".to_string(),
            String::new(),
        ];
        for v in &hostile {
            let mut s = Script::new();
            s.set("V", v.as_str())
                .args([v.as_str(), "x"])
                .code("printf '%s|%s|%s|%s' \"$V\" \"$1\" \"$2\" \"$#\"\n");
            assert_eq!(run(&s), format!("{v}|{v}|x|2"));
        }
        assert!(!mark.path().join("MARK").exists());
    }

    #[test]
    fn variable_names() {
        assert!(is_var_name("P") && is_var_name("_a1"));
        assert!(!is_var_name("1a") && !is_var_name("a-b") && !is_var_name(""));
    }
}
