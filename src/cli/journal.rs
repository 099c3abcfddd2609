//! Log lines for systemd's journal: when stderr is the journal, each line starts with its
//! syslog priority (`<3>` error … `<7>` debug), which journald takes as the entry's priority
//! (`journalctl -p err`) and strips, and carries no timestamp (the journal stamps each entry).
//!
//! Why not `tracing-journald` (the journal's native protocol, fields as journal fields): it
//! writes to the journal's socket itself, past the writer that masks secrets in every log
//! line ([`crate::secret::mask`]); and journald already reads a service's stderr.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Whether this process's stderr is the journal: systemd sets `JOURNAL_STREAM` to the
/// `device:inode` of the stream it connects a service's stderr to; a child whose stderr was
/// sent elsewhere inherits the variable, so the stream itself is compared (as systemd's docs
/// ask).
pub fn stderr_is_journal() -> bool {
    let Some(want) = std::env::var("JOURNAL_STREAM")
        .ok()
        .as_deref()
        .and_then(parse_stream)
    else {
        return false;
    };
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    // A duplicate of the descriptor, as a File, for its metadata (fstat) without `unsafe`.
    std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| std::fs::File::from(fd).metadata())
        .is_ok_and(|m| (m.dev(), m.ino()) == want)
}

/// `JOURNAL_STREAM`'s `device:inode`.
fn parse_stream(v: &str) -> Option<(u64, u64)> {
    let (dev, ino) = v.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The syslog priority of a level: error 3, warning 4, info 6, debug and trace 7.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// An event format that puts the line's priority (`<N>`) before what `F` writes, and the
/// level's name when `F` leaves it out (text: `<4>WARN heartbeat 3 failed …`; JSON has its
/// `level` field).
#[derive(Debug)]
pub struct Prioritized<F> {
    /// The format of the rest of the line.
    pub format: F,
    /// Whether to write the level's name after the priority.
    pub level_name: bool,
}

impl<S, N, F> FormatEvent<S, N> for Prioritized<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = event.metadata().level();
        let mut line = String::new();
        self.format
            .format_event(ctx, Writer::new(&mut line), event)?;
        // journald makes each line of the stream an entry: a message of several lines (an
        // error with its `help:`) keeps its priority on every one.
        let prio = priority(level);
        for (i, part) in line.trim_end_matches('\n').split('\n').enumerate() {
            if i == 0 && self.level_name {
                writeln!(writer, "<{prio}>{level} {part}")?;
            } else {
                writeln!(writer, "<{prio}>{part}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_is_device_colon_inode() {
        assert_eq!(parse_stream("8:123456"), Some((8, 123456)));
        assert_eq!(parse_stream("8:"), None);
        assert_eq!(parse_stream("x:1"), None);
        assert_eq!(parse_stream(""), None);
    }

    /// What `Prioritized` (text, as for the journal) writes for the events `f` logs.
    fn journal_lines(f: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(Level::DEBUG)
            .event_format(Prioritized {
                format: tracing_subscriber::fmt::format()
                    .without_time()
                    .with_target(false)
                    .with_level(false),
                level_name: true,
            })
            .with_writer(move || buf.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = out.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn each_line_carries_its_priority() {
        let text = journal_lines(|| {
            tracing::info!(node = "n1", "heartbeat stored");
            tracing::error!("inventory not reloaded: bad role\n  help: fix it");
            tracing::debug!("detail");
        });
        assert_eq!(
            text,
            "<6>INFO heartbeat stored node=\"n1\"\n<3>ERROR inventory not reloaded: bad role\n<3>  help: fix it\n<7>DEBUG detail\n"
        );
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
    }
}
