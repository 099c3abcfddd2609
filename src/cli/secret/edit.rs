//! `fleet secret edit FILE.age`: the one place plain text touches a disk. An editor
//! ($VISUAL, $EDITOR, `vi`) is another program that opens a path, so the text must be in a
//! file for it; fleet keeps that file as private and as short-lived as it can:
//!
//! - on `/dev/shm` (memory, never a disk) when there is one, else the temporary directory;
//! - in a fresh directory of mode 0700, the file itself 0600, named like the plain file
//!   (`all.yaml`: the editor's highlighting) but in no repo;
//! - removed on every way out: the editor saved, quit, failed or was killed, fleet got
//!   SIGTERM or SIGHUP (it stops the editor first), or a panic (the directory's guard is
//!   dropped while unwinding). SIGINT (Ctrl-C at the terminal) goes to the editor too, which
//!   decides; fleet ignores it while the editor runs, as git does, so it is there to clean up.
//!
//! The new text is encrypted and replaces the file atomically; a text equal to the old one
//! rewrites nothing. A `.yaml` file that no longer parses is not saved (on a terminal fleet
//! offers to edit it again).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::secret::Secret;

/// Where the private directory is made.
fn temp_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let writable = tempfile::Builder::new()
        .prefix(".fleet-probe-")
        .tempfile_in(shm)
        .is_ok();
    if shm.is_dir() && writable {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// A private directory (0700) holding the plain file (0600); removed when dropped.
struct Scratch {
    dir: tempfile::TempDir,
    file: PathBuf,
}

impl Scratch {
    fn new(name: &std::ffi::OsStr, text: &[u8]) -> Result<Scratch> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let base = temp_base();
        let dir = tempfile::Builder::new()
            .prefix("fleet-secret-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(&base)
            .map_err(|e| Error::io("create a private directory in", &base, e))?;
        // Whatever the umask made of it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("set the mode of", dir.path(), e))?;
        let file = dir.path().join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)
            .map_err(|e| Error::io("create", &file, e))?;
        f.write_all(text)
            .map_err(|e| Error::io("write", &file, e))?;
        Ok(Scratch { dir, file })
    }
}

/// How the editor's run ended.
enum Ended {
    Exited(std::process::ExitStatus),
    Signalled(&'static str),
}

/// Runs the editor on `file` and waits; SIGTERM/SIGHUP stop it, SIGINT is its own.
fn run_editor(file: &Path) -> Result<Ended> {
    let editor = ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "vi".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Failed(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mk = |k| signal(k).map_err(|e| Error::Failed(format!("cannot handle signals: {e}")));
        // Listening to SIGINT is what keeps it from ending fleet (the editor, a new program,
        // gets the default action back).
        let (mut int, mut term, mut hup) = (
            mk(SignalKind::interrupt())?,
            mk(SignalKind::terminate())?,
            mk(SignalKind::hangup())?,
        );
        // The user's editor command as git runs it (`code --wait`): the path is an argument.
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{editor} \"$@\""))
            .arg(&editor)
            .arg(file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Failed(format!("cannot start the editor `{editor}`: {e}")))?;
        loop {
            tokio::select! {
                st = child.wait() => {
                    return st
                        .map(Ended::Exited)
                        .map_err(|e| Error::Failed(format!("the editor `{editor}`: {e}")));
                }
                _ = int.recv() => continue,
                _ = term.recv() => {
                    let _ = child.kill().await;
                    return Ok(Ended::Signalled("SIGTERM"));
                }
                _ = hup.recv() => {
                    let _ = child.kill().await;
                    return Ok(Ended::Signalled("SIGHUP"));
                }
            }
        }
    })
}

/// Where a `.yaml` text stops parsing (line and column only: the parser's words may quote it).
fn yaml_problem(name: &Path, text: &[u8]) -> Option<String> {
    let yaml = matches!(
        name.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    if !yaml {
        return None;
    }
    let Ok(t) = std::str::from_utf8(text) else {
        return Some("it is not UTF-8 text".into());
    };
    match crate::spec::yaml::parse(&"edited".into(), t) {
        Ok(n) if n.as_map().is_some() || n.is_null() => None,
        Ok(_) => Some("it is not a mapping of variable names to values".into()),
        Err(d) => Some(match d.loc {
            Some(l) => format!("it is not valid YAML at line {}, column {}", l.line, l.col),
            None => "it is not valid YAML".into(),
        }),
    }
}

/// Asks on the terminal whether to edit again.
fn again(problem: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    crate::errln!("{problem}; edit it again? [Y/n]");
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    !matches!(line.trim(), "n" | "N" | "no")
}

/// Runs `fleet secret edit`.
pub fn run(root: &Path, file: &Path) -> Result<u8> {
    if !crate::vault::is_encrypted(file) {
        return Err(Error::Usage(format!(
            "`{}` is not an encrypted file: `fleet secret edit` takes `….age` (`fleet secret encrypt` makes one)",
            file.display()
        )));
    }
    // The recipients first: a repo without any stops before any plain text exists.
    super::recipients(root)?;
    let old: Secret<Vec<u8>> = if file.exists() {
        super::open(file)?
    } else {
        Secret::new(Vec::new())
    };
    let plain_name = crate::vault::plain_name(file);
    let name = plain_name
        .file_name()
        .map(ToOwned::to_owned)
        .unwrap_or_else(|| "secret".into());
    let scratch = Scratch::new(&name, old.expose())?;
    tracing::debug!(dir = %scratch.dir.path().display(), "plain text for the editor");
    loop {
        match run_editor(&scratch.file)? {
            Ended::Signalled(sig) => {
                drop(scratch);
                return Err(Error::Failed(format!(
                    "stopped by {sig}: the editor was stopped and its file removed; `{}` is unchanged",
                    file.display()
                )));
            }
            Ended::Exited(st) if !st.success() => {
                drop(scratch);
                return Err(Error::Failed(format!(
                    "the editor ended with {st}: its file was removed; `{}` is unchanged",
                    file.display()
                )));
            }
            Ended::Exited(_) => {}
        }
        let new = Secret::new(
            std::fs::read(&scratch.file).map_err(|e| Error::io("read", &scratch.file, e))?,
        );
        if new.expose() == old.expose() {
            crate::noteln!("no change: `{}` is not rewritten", file.display());
            return Ok(0);
        }
        if let Some(problem) = yaml_problem(&plain_name, new.expose()) {
            if again(&problem) {
                continue;
            }
            return Err(Error::Usage(format!(
                "`{}`: {problem}; nothing was saved",
                file.display()
            )));
        }
        super::seal(root, new.expose(), file)?;
        crate::noteln!("encrypted `{}`", file.display());
        return Ok(0);
    }
}
