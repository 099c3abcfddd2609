//! Shell commands as data: arguments are quoted by construction (never by a character
//! blacklist), and secrets are masked by construction wherever a command or its output is shown.

/// Quotes a string for a POSIX shell: bare when it is plainly safe, else single quotes with
/// `'` written as `'\''`.
pub fn shquote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,%".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A command line built from parts: `Cmd::new("chmod").arg("0644").arg(path)`.
#[derive(Debug, Clone, Default)]
pub struct Cmd {
    parts: Vec<String>,
}

impl Cmd {
    /// A program.
    pub fn new(program: &str) -> Cmd {
        Cmd {
            parts: vec![shquote(program)],
        }
    }

    /// An argument, quoted.
    pub fn arg(mut self, a: impl AsRef<str>) -> Cmd {
        self.parts.push(shquote(a.as_ref()));
        self
    }

    /// Several arguments, each quoted.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, a: I) -> Cmd {
        self.parts
            .extend(a.into_iter().map(|s| shquote(s.as_ref())));
        self
    }

    /// The shell text.
    pub fn line(&self) -> String {
        self.parts.join(" ")
    }
}

/// Replaces every known secret with `***`.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    secrets: Vec<String>,
}

impl Masker {
    /// Adds a secret (values shorter than 4 characters are not masked: they would mask
    /// ordinary text everywhere).
    pub fn add(&mut self, secret: &str) {
        let s = secret.trim();
        if s.len() >= 4 && !self.secrets.iter().any(|x| x == s) {
            self.secrets.push(s.to_string());
            self.secrets.sort_by_key(|x| std::cmp::Reverse(x.len()));
        }
    }

    /// The text with secrets masked.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_by_construction() {
        assert_eq!(
            Cmd::new("chmod").arg("0644").arg("/etc/a b").line(),
            "chmod 0644 '/etc/a b'"
        );
        assert_eq!(Cmd::new("echo").arg("it's").line(), "echo 'it'\\''s'");
        assert_eq!(
            Cmd::new("echo").arg("$(rm -rf /)").line(),
            "echo '$(rm -rf /)'"
        );
        assert_eq!(shquote(""), "''");
    }

    #[test]
    fn masking() {
        let mut m = Masker::default();
        m.add("sk-secret-123");
        m.add("ab");
        assert_eq!(m.mask("key=sk-secret-123 ab"), "key=*** ab");
    }
}
