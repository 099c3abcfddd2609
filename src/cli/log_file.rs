//! `--log-file`: a log file that follows its path across rotation.
//!
//! newsyslog (macOS) and logrotate (Linux, without `copytruncate`) rotate a log by renaming it
//! and putting a new, empty file at its path. A process that keeps its descriptor writes on
//! into the renamed file — which is then compressed and deleted. Before each line,
//! [`LogFile`] compares the file at its path with the one it has open (device and inode, one
//! `stat`) and opens the path again when they differ, so lines land in the new file without
//! a signal or a pid file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The mode of a log file fleet creates: the fleet user's, readable by its group (as the
/// newsyslog rule for it says).
const MODE: u32 = 0o640;

/// How long a missing path is waited for before fleet creates the file itself. A rotator
/// renames the log and then moves a new file into place (newsyslog: `mktemp`, `mv`): a file
/// fleet created in between would be replaced, and the lines in it lost. Until then, lines
/// go on into the renamed file, where they are kept. The wait counts from the open file's
/// last change (a rename changes it), or from when fleet first found the path missing.
const MISSING_GRACE: Duration = Duration::from_secs(1);

/// A log file, opened for appending, reopened when its path names another file.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    grace: Duration,
    state: Mutex<Open>,
}

#[derive(Debug)]
struct Open {
    file: File,
    /// The open file's device and inode.
    id: (u64, u64),
    /// Since when the path has had no file (while writing on into the open one).
    missing_since: Option<Instant>,
}

impl LogFile {
    /// Opens (creating it, mode 0640, and its directory) `path` for appending.
    pub fn open(path: &Path) -> io::Result<LogFile> {
        LogFile::with_grace(path, MISSING_GRACE)
    }

    fn with_grace(path: &Path, grace: Duration) -> io::Result<LogFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        Ok(LogFile {
            path: path.to_path_buf(),
            grace,
            state: Mutex::new(open(path)?),
        })
    }

    /// Makes sure `o` is the file at the path: reopens after a rename or a removal.
    fn follow(&self, o: &mut Open) {
        match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == o.id => o.missing_since = None,
            Ok(_) => {
                if let Ok(new) = open(&self.path) {
                    *o = new;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let since = *o.missing_since.get_or_insert_with(Instant::now);
                let quiet = o
                    .file
                    .metadata()
                    .ok()
                    .and_then(|m| changed_ago(&m))
                    .is_some_and(|d| d >= self.grace);
                if (quiet || since.elapsed() >= self.grace)
                    && let Ok(new) = open(&self.path)
                {
                    *o = new;
                }
            }
            // Unreadable for now (a directory being replaced, say): write on into the open
            // file and look again at the next line.
            Err(_) => {}
        }
    }
}

/// How long ago the file last changed (its ctime: a write, a rename, a removal).
fn changed_ago(m: &std::fs::Metadata) -> Option<Duration> {
    let secs = u64::try_from(m.ctime()).ok()?;
    let nanos = u32::try_from(m.ctime_nsec()).ok()?;
    let ctime = std::time::UNIX_EPOCH + Duration::new(secs, nanos);
    std::time::SystemTime::now().duration_since(ctime).ok()
}

fn open(path: &Path) -> io::Result<Open> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(MODE)
        .open(path)?;
    let m = file.metadata()?;
    Ok(Open {
        file,
        id: (m.dev(), m.ino()),
        missing_since: None,
    })
}

impl Write for &LogFile {
    /// Writes `buf` whole (one log line) into the file now at the path.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A poisoned lock only means another thread panicked mid-line: logging goes on.
        let mut o = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.follow(&mut o);
        o.file.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogFile {
    type Writer = &'a LogFile;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn line(mut f: &LogFile, s: &str) {
        f.write_all(format!("{s}\n").as_bytes()).expect("write");
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_default()
    }

    #[test]
    fn a_renamed_file_is_followed_by_a_new_one_at_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("logs/agent.log");
        let log = LogFile::with_grace(&path, Duration::ZERO).expect("open");
        line(&log, "one");
        line(&log, "two");
        // What newsyslog and logrotate do: rename the file away.
        let rotated = dir.path().join("logs/agent.log.0");
        std::fs::rename(&path, &rotated).expect("rename");
        line(&log, "three");
        line(&log, "four");
        assert_eq!(read(&rotated), "one\ntwo\n");
        assert_eq!(read(&path), "three\nfour\n");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, MODE & !umask(), "{mode:o}");
    }

    #[test]
    fn a_file_the_rotator_put_in_place_is_the_one_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hq.log");
        let log = LogFile::open(&path).expect("open");
        line(&log, "before");
        let rotated = dir.path().join("hq.log.0");
        std::fs::rename(&path, &rotated).expect("rename");
        // Between the rename and the new file (within the grace): kept in the renamed file.
        line(&log, "between");
        // newsyslog: a temporary file moved onto the path, with its owner and mode.
        let tmp = dir.path().join("hq.log.zX1");
        std::fs::write(&tmp, "").expect("tmp");
        std::fs::rename(&tmp, &path).expect("mv");
        line(&log, "after");
        assert_eq!(read(&rotated), "before\nbetween\n");
        assert_eq!(read(&path), "after\n");
    }

    #[test]
    fn a_removed_file_is_created_again_after_the_grace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.log");
        let log = LogFile::with_grace(&path, Duration::from_millis(50)).expect("open");
        line(&log, "gone");
        std::fs::remove_file(&path).expect("rm");
        line(&log, "lost with the removed file");
        assert!(!path.exists());
        std::thread::sleep(Duration::from_millis(60));
        line(&log, "back");
        assert_eq!(read(&path), "back\n");
    }

    #[test]
    fn a_file_renamed_a_while_ago_is_followed_at_the_next_line() {
        // logrotate without `create` (or `mv` by hand), then a quiet spell: the next line
        // is not the rotated file's, which may be compressed and gone by now.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.log");
        let log = LogFile::with_grace(&path, Duration::from_millis(100)).expect("open");
        line(&log, "one");
        std::fs::rename(&path, dir.path().join("agent.log.1")).expect("rename");
        std::thread::sleep(Duration::from_millis(150));
        line(&log, "two");
        assert_eq!(read(&path), "two\n");
    }

    #[test]
    fn an_unchanged_file_is_appended_to() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.log");
        std::fs::write(&path, "old\n").expect("write");
        let log = LogFile::open(&path).expect("open");
        line(&log, "new");
        assert_eq!(read(&path), "old\nnew\n");
    }

    fn umask() -> u32 {
        // The test process's umask, read from /proc (std has no getter); 022 when unknown.
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022)
    }
}
