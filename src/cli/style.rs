//! Terminal styling: colors only on a terminal, never with `--no-color` or NO_COLOR.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Diagnostic, Error, Severity};

static COLOR: AtomicBool = AtomicBool::new(false);

/// Decides once whether stderr/stdout get colors.
pub fn init(no_color: bool) {
    let env_off = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    COLOR.store(
        !no_color && !env_off && std::io::stderr().is_terminal(),
        Ordering::Relaxed,
    );
}

/// Whether output gets colors.
pub fn colors_on() -> bool {
    COLOR.load(Ordering::Relaxed)
}

fn paint(code: &str, s: &str) -> String {
    if COLOR.load(Ordering::Relaxed) {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// Red bold.
pub fn red(s: &str) -> String {
    paint("1;31", s)
}
/// Yellow bold.
pub fn yellow(s: &str) -> String {
    paint("1;33", s)
}
/// Green.
pub fn green(s: &str) -> String {
    paint("32", s)
}
/// Cyan.
pub fn cyan(s: &str) -> String {
    paint("36", s)
}
/// Bold.
pub fn bold(s: &str) -> String {
    paint("1", s)
}
/// Dim.
pub fn dim(s: &str) -> String {
    paint("2", s)
}

/// A diagnostic with its labels colored (every known secret value masked).
pub fn diagnostic(d: &Diagnostic) -> String {
    crate::secret::mask(&diagnostic_text(d)).into_owned()
}

fn diagnostic_text(d: &Diagnostic) -> String {
    let mut out = String::new();
    if let Some(loc) = &d.loc {
        out.push_str(&bold(&loc.to_string()));
        out.push_str(": ");
    }
    out.push_str(&match d.severity {
        Severity::Error => red("error"),
        Severity::Warning => yellow("warning"),
    });
    out.push_str(": ");
    out.push_str(&d.message);
    if let Some(h) = &d.help {
        out.push_str(&format!("\n  {}: {h}", cyan("help")));
    }
    out
}

/// The final error as printed by `main` (every known secret value masked).
pub fn error_text(e: &Error) -> String {
    crate::secret::mask(&error_text_plain(e)).into_owned()
}

fn error_text_plain(e: &Error) -> String {
    match e {
        Error::Config(ds) => {
            let mut out: Vec<String> = ds.sorted().into_iter().map(diagnostic).collect();
            let n = ds.error_count();
            out.push(format!(
                "{}: {n} error{} found; nothing was changed",
                red("error"),
                if n == 1 { "" } else { "s" }
            ));
            out.join("\n")
        }
        other => format!("{}: {other}", red("error")),
    }
}

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static QUIET: AtomicBool = AtomicBool::new(false);
static QUIET_STDOUT: AtomicBool = AtomicBool::new(false);

/// `-q`: errors only. Notes and warnings on stderr are dropped, and so is everything on
/// stdout unless `keep_stdout` (the command was asked for data: `--json`, completions, a
/// token), so cron and scripts see output only when something is wrong.
pub fn set_quiet(quiet: bool, keep_stdout: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
    QUIET_STDOUT.store(quiet && !keep_stdout, Ordering::Relaxed);
}

/// Whether `-q` is on.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Writes to stdout, with every known secret value masked. A closed pipe (`fleet apply … |
/// head -1`) is not an error: output stops, the command goes on and its exit code says how
/// it went.
pub fn emit(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    if STDOUT_CLOSED.load(Ordering::Relaxed) || QUIET_STDOUT.load(Ordering::Relaxed) {
        return;
    }
    let text = args.to_string();
    let text = crate::secret::mask(&text);
    let mut out = std::io::stdout().lock();
    let r = out.write_all(text.as_bytes()).and_then(|()| {
        if newline {
            out.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    if r.is_err() {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Writes a line to stderr, with every known secret value masked; a closed stderr is not
/// an error.
pub fn emit_err(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let text = args.to_string();
    let text = crate::secret::mask(&text);
    let mut err = std::io::stderr().lock();
    let _ = err
        .write_all(text.as_bytes())
        .and_then(|()| err.write_all(b"\n"));
}

/// A note or warning on stderr (what a command did, what it skipped): like [`emit_err`],
/// but dropped under `-q`.
pub fn emit_note(args: std::fmt::Arguments<'_>) {
    if !quiet() {
        emit_err(args);
    }
}

/// `println!` to stdout that tolerates a closed pipe and masks secrets; nothing under `-q`
/// unless the command was asked for data (see [`set_quiet`]).
#[macro_export]
macro_rules! outln {
    () => { $crate::cli::style::emit(format_args!(""), true) };
    ($($t:tt)*) => { $crate::cli::style::emit(format_args!($($t)*), true) };
}

/// `print!` to stdout that tolerates a closed pipe and masks secrets (quiet as [`outln!`]).
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::style::emit(format_args!($($t)*), false) };
}

/// `eprintln!` that tolerates a closed stderr and masks secrets.
#[macro_export]
macro_rules! errln {
    ($($t:tt)*) => { $crate::cli::style::emit_err(format_args!($($t)*)) };
}

/// `eprintln!` for a note or warning: tolerates a closed stderr, masks secrets, and says
/// nothing under `-q` (errors only).
#[macro_export]
macro_rules! noteln {
    ($($t:tt)*) => { $crate::cli::style::emit_note(format_args!($($t)*)) };
}
