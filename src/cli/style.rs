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

/// A diagnostic with its labels colored.
pub fn diagnostic(d: &Diagnostic) -> String {
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

/// The final error as printed by `main`.
pub fn error_text(e: &Error) -> String {
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

/// Writes to stdout; a closed pipe (`fleet nodes | head`) ends the process quietly instead
/// of panicking.
pub fn emit(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let r = out.write_fmt(args).and_then(|()| {
        if newline {
            out.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    if let Err(e) = r
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// `println!` to stdout that tolerates a closed pipe.
#[macro_export]
macro_rules! outln {
    () => { $crate::cli::style::emit(format_args!(""), true) };
    ($($t:tt)*) => { $crate::cli::style::emit(format_args!($($t)*), true) };
}

/// `print!` to stdout that tolerates a closed pipe.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::style::emit(format_args!($($t)*), false) };
}
