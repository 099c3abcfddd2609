//! Errors the user sees: located diagnostics (`path:line:col: error: …` with a `help:` line)
//! and the top-level error type whose variants map to the documented exit codes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A position in a file the user wrote: 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Loc {
    /// The file as the user should see it (relative to the working directory when possible).
    pub file: Arc<str>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub col: u32,
}

impl Loc {
    /// A location at the start of a file, for errors about the file as a whole.
    pub fn file_start(file: &Arc<str>) -> Loc {
        Loc {
            file: file.clone(),
            line: 1,
            col: 1,
        }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Makes the command fail (exit 2 for configuration).
    Error,
    /// Printed, but the command goes on.
    Warning,
}

/// One message about the user's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where, when the problem has a place in a file.
    pub loc: Option<Loc>,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong: lowercase, names in backticks, expected vs found.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error at a location.
    pub fn error(loc: impl Into<Option<Loc>>, message: impl Into<String>) -> Self {
        Diagnostic {
            loc: loc.into(),
            severity: Severity::Error,
            message: message.into(),
            help: None,
        }
    }

    /// A warning at a location.
    pub fn warning(loc: impl Into<Option<Loc>>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(loc, message)
        }
    }

    /// Adds advice.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds advice when there is some.
    pub fn with_help_opt(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.loc {
            write!(f, "{loc}: ")?;
        }
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{kind}: {}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Diagnostics gathered while reading a fleet repo: all of them are reported, not only the first.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Records a diagnostic.
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    /// Records several.
    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    /// True when at least one error (not only warnings) was recorded.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// Number of warnings.
    pub fn warning_count(&self) -> usize {
        self.items.len() - self.error_count()
    }

    /// All diagnostics, sorted by file and position so output is stable.
    pub fn sorted(&self) -> Vec<&Diagnostic> {
        let mut v: Vec<&Diagnostic> = self.items.iter().collect();
        v.sort_by(|a, b| a.loc.cmp(&b.loc));
        v.dedup_by(|a, b| a == b);
        v
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Moves the warnings out, leaving the errors.
    pub fn take_warnings(&mut self) -> Vec<Diagnostic> {
        let (w, e): (Vec<_>, Vec<_>) = self
            .items
            .drain(..)
            .partition(|d| d.severity == Severity::Warning);
        self.items = e;
        w
    }
}

/// Everything that can end a fleet command early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The repo's files have errors; nothing was touched.
    #[error("{}", render_diagnostics(.0))]
    Config(Diagnostics),
    /// A command-line mistake.
    #[error("{0}")]
    Usage(String),
    /// A local file could not be read or written.
    #[error("cannot {action} `{}`: {source}", .path.display())]
    Io {
        /// What fleet was doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The command ran and found a failure it must report with exit 1 (drift, failed hosts).
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// The exit code scripts can rely on: 1 for failures found while running, 2 for bad
    /// configuration or usage (nothing was touched).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Failed(_) => 1,
            Error::Config(_) | Error::Usage(_) | Error::Io { .. } => 2,
        }
    }

    /// A single located configuration error.
    pub fn config(d: Diagnostic) -> Self {
        let mut ds = Diagnostics::default();
        ds.push(d);
        Error::Config(ds)
    }

    /// An I/O error with the file it concerns.
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

fn render_diagnostics(ds: &Diagnostics) -> String {
    let mut out = String::new();
    for d in ds.sorted() {
        out.push_str(&d.to_string());
        out.push('\n');
    }
    let n = ds.error_count();
    out.push_str(&format!("{n} error{} found", if n == 1 { "" } else { "s" }));
    out
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Suggests the closest known name for a misspelt one ("did you mean").
pub fn did_you_mean<'a>(found: &str, known: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for k in known {
        let score = strsim::jaro_winkler(found, k);
        if score > 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, k));
        }
    }
    best.map(|(_, k)| format!("did you mean `{k}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("hardwre", ["host", "hardware", "role"]).as_deref(),
            Some("did you mean `hardware`?")
        );
        assert_eq!(did_you_mean("zzz", ["host", "hardware"]), None);
    }

    #[test]
    fn diagnostic_renders_location_and_help() {
        let loc = Loc {
            file: "inventory/fleet.yaml".into(),
            line: 3,
            col: 5,
        };
        let d = Diagnostic::error(loc, "unknown key `hostt`").with_help("did you mean `host`?");
        assert_eq!(
            d.to_string(),
            "inventory/fleet.yaml:3:5: error: unknown key `hostt`\n  help: did you mean `host`?"
        );
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Error::Failed("x".into()).exit_code(), 1);
        assert_eq!(Error::Usage("x".into()).exit_code(), 2);
    }
}
