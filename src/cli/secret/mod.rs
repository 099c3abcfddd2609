//! `fleet secret init|encrypt|decrypt|view|edit|rekey`: age-encrypted files in the repo
//! (`*.yaml.age` variables files, `secrets/*.age`), encrypted to the recipients of
//! `secrets/recipients.txt` and read with the identity of the person running fleet
//! (see `vault`). Plain text goes to stdout, a pager or an editor, never into the repo.

mod edit;

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::vault::{self, Keyring};

/// Arguments of `fleet secret`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// Secret actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Create your age identity outside the repo (mode 0600; `--identity` or the default
    /// `~/.config/fleet/age-identity.txt`) and add its recipient to `secrets/recipients.txt`.
    Init,
    /// Encrypt FILE to FILE.age (and remove FILE unless --keep); or, when FILE ends in `.age`,
    /// encrypt standard input into it (`echo "$TOKEN" | fleet secret encrypt secrets/token.age`).
    Encrypt {
        /// The plain file, or the `.age` file to create from standard input.
        file: PathBuf,
        /// Keep the plain file.
        #[arg(long)]
        keep: bool,
        /// Replace an existing `.age` file.
        #[arg(long)]
        force: bool,
    },
    /// Print the plain text of FILE.age on stdout (or write it with --out).
    Decrypt {
        /// The encrypted file.
        file: PathBuf,
        /// Write the plain text to this file (mode 0600) instead of stdout.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// Write plain text into the repo anyway (stdout redirected to a file in it, or --out).
        #[arg(long)]
        force: bool,
    },
    /// Show the plain text of FILE.age (through $PAGER on a terminal).
    View {
        /// The encrypted file.
        file: PathBuf,
    },
    /// Edit FILE.age in $VISUAL/$EDITOR (created when missing) and encrypt it again; an
    /// unchanged file is not rewritten.
    Edit {
        /// The encrypted file.
        file: PathBuf,
    },
    /// Encrypt every `.age` file of the repo again, to the recipients listed now.
    Rekey,
}

/// Runs `fleet secret`.
pub fn run(repo_dir: Option<&Path>, args: &Args) -> Result<u8> {
    match &args.action {
        Action::Init => init(repo_dir),
        Action::Encrypt { file, keep, force } => encrypt(repo_dir, file, *keep, *force),
        Action::Decrypt { file, out, force } => decrypt(repo_dir, file, out.as_deref(), *force),
        Action::View { file } => view(file),
        Action::Edit { file } => edit::run(&root_for(repo_dir, file)?, file),
        Action::Rekey => rekey(repo_dir),
    }
}

/// The repo a file belongs to: `-i`, else the nearest directory above the file holding
/// `secrets/recipients.txt` or `inventory/`, else the repo of the working directory.
fn root_for(repo_dir: Option<&Path>, file: &Path) -> Result<PathBuf> {
    if repo_dir.is_some() {
        return crate::repo::find_root(repo_dir);
    }
    let abs = std::path::absolute(file).map_err(|e| Error::io("resolve", file, e))?;
    for dir in abs.ancestors().skip(1) {
        if crate::vault::recipients::path(dir).is_file()
            || dir.join("inventory").is_dir()
            || dir.join("inventory.yaml").is_file()
        {
            return Ok(dir.to_path_buf());
        }
    }
    crate::repo::find_root(None)
}

/// The identities to decrypt with, or a usage error saying how to give one.
fn keyring() -> Result<&'static Keyring> {
    Keyring::get().map_err(|why| Error::Usage(format!("{why}\n  help: {}", why.help())))
}

/// Decrypts `file`, or says which file and why not.
fn open(file: &Path) -> Result<crate::secret::Secret<Vec<u8>>> {
    if !vault::is_encrypted(file) {
        return Err(Error::Usage(format!(
            "`{}` is not an encrypted file (`….age`)",
            file.display()
        )));
    }
    let ring = keyring()?;
    let bytes = std::fs::read(file).map_err(|e| Error::io("read", file, e))?;
    ring.decrypt(&bytes).map_err(|why| {
        Error::Usage(format!(
            "{}: cannot decrypt it: {why}\n  help: {}",
            file.display(),
            why.help()
        ))
    })
}

/// The repo's recipients, as a usage error when there are none.
fn recipients(root: &Path) -> Result<Vec<age::x25519::Recipient>> {
    vault::recipients::load(root).map_err(Error::Usage)
}

/// Encrypts `plain` to the repo's recipients and replaces `dest` atomically.
pub(crate) fn seal(root: &Path, plain: &[u8], dest: &Path) -> Result<()> {
    let rs = recipients(root)?;
    let sealed = vault::encrypt(plain, &rs)
        .map_err(|e| Error::Failed(format!("cannot encrypt `{}`: {e}", dest.display())))?;
    crate::util::write_atomic(dest, &sealed)
}

fn init(repo_dir: Option<&Path>) -> Result<u8> {
    let root = crate::repo::find_root(repo_dir)?;
    let path = vault::identity_file().unwrap_or_else(vault::default_identity_path);
    let abs = std::path::absolute(&path).map_err(|e| Error::io("resolve", &path, e))?;
    let root_abs = std::fs::canonicalize(&root).unwrap_or(root.clone());
    let parent_abs = abs
        .parent()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .unwrap_or_else(|| abs.clone());
    if parent_abs.starts_with(&root_abs) {
        return Err(Error::Usage(format!(
            "`{}` is inside the repo: an identity must stay out of git\n  help: use the default (`{}`) or a path outside `{}`",
            path.display(),
            vault::default_identity_path().display(),
            root.display()
        )));
    }
    let public = if path.exists() {
        let text = crate::secret::Secret::new(
            std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?,
        );
        let ring = Keyring::parse(text.expose(), &format!("`{}`", path.display()))
            .map_err(|e| Error::Usage(e.to_string()))?;
        crate::noteln!("using the identity in `{}`", path.display());
        ring.recipients().into_iter().next().unwrap_or_default()
    } else {
        let (text, public) = vault::generate();
        write_private(&path, text.expose().as_bytes())?;
        crate::noteln!(
            "created an age identity in `{}` (mode 0600; back it up, keep it out of git)",
            path.display()
        );
        public
    };
    let who = format!(
        "{} (fleet secret init)",
        std::env::var("USER").unwrap_or_else(|_| "someone".into())
    );
    if vault::recipients::add(&root, &public, &who)? {
        crate::noteln!(
            "added its recipient to `{}`; existing files: `fleet secret rekey` (by someone who can read them)",
            crate::repo::shown(&vault::recipients::path(&root))
        );
    } else {
        crate::noteln!("its recipient is already listed");
    }
    crate::outln!("{public}");
    Ok(0)
}

/// Creates a new file readable by its owner only (its directory private too when created).
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io("create directory", dir, e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("create", path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write", path, e))
}

fn encrypt(repo_dir: Option<&Path>, file: &Path, keep: bool, force: bool) -> Result<u8> {
    let root = root_for(repo_dir, file)?;
    let (plain, dest, source) = if vault::is_encrypted(file) {
        if std::io::stdin().is_terminal() {
            crate::noteln!("reading the plain text from standard input (end with Ctrl-D)");
        }
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| Error::io("read", Path::new("<stdin>"), e))?;
        (crate::secret::Secret::new(buf), file.to_path_buf(), None)
    } else {
        let bytes = std::fs::read(file).map_err(|e| Error::io("read", file, e))?;
        let mut dest = file.as_os_str().to_owned();
        dest.push(".age");
        (
            crate::secret::Secret::new(bytes),
            PathBuf::from(dest),
            Some(file),
        )
    };
    if dest.exists() && !force {
        return Err(Error::Usage(format!(
            "`{}` exists\n  help: `fleet secret edit {}` changes it; --force replaces it",
            dest.display(),
            dest.display()
        )));
    }
    seal(&root, plain.expose(), &dest)?;
    crate::noteln!("encrypted `{}`", dest.display());
    if let Some(src) = source.filter(|_| !keep) {
        std::fs::remove_file(src).map_err(|e| Error::io("remove", src, e))?;
        crate::noteln!(
            "removed the plain `{}` (if git tracked it, its history still holds it)",
            src.display()
        );
    }
    Ok(0)
}

/// The regular file stdout writes to, when it is one (Linux: `/proc/self/fd/1`).
fn stdout_file() -> Option<PathBuf> {
    let target = std::fs::read_link("/proc/self/fd/1").ok()?;
    target.is_file().then_some(target)
}

/// True when `path` is (or would be created) inside `root`.
fn inside(root: &Path, path: &Path) -> bool {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = abs
        .parent()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .unwrap_or_else(|| abs.clone());
    dir.starts_with(&root)
}

fn decrypt(repo_dir: Option<&Path>, file: &Path, out: Option<&Path>, force: bool) -> Result<u8> {
    let root = root_for(repo_dir, file).ok();
    let into_repo = |p: &Path| root.as_deref().is_some_and(|r| inside(r, p));
    let plain = open(file)?;
    match out {
        Some(p) => {
            if into_repo(p) && !force {
                return Err(Error::Usage(format!(
                    "`{}` is inside the repo: plain text there ends up in git\n  help: print it (`fleet secret decrypt {}`), write it outside the repo, or pass --force",
                    p.display(),
                    file.display()
                )));
            }
            crate::util::write_atomic_mode(p, plain.expose(), 0o600)?;
        }
        None => {
            if let Some(f) = stdout_file().filter(|f| into_repo(f))
                && !force
            {
                return Err(Error::Usage(format!(
                    "standard output is `{}`, inside the repo: plain text there ends up in git\n  help: redirect it outside the repo, or pass --force",
                    f.display()
                )));
            }
            let mut o = std::io::stdout().lock();
            // The plain text as it is: not through the printers, which mask secrets.
            o.write_all(plain.expose())
                .and_then(|()| o.flush())
                .map_err(|e| Error::io("write", Path::new("<stdout>"), e))?;
        }
    }
    Ok(0)
}

fn view(file: &Path) -> Result<u8> {
    let plain = open(file)?;
    if std::io::stdout().is_terminal() {
        let pager = std::env::var("PAGER")
            .ok()
            .filter(|p| !p.trim().is_empty())
            .unwrap_or_else(|| "less".into());
        // The user's own pager command, as git runs it; the text goes to it on a pipe.
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&pager)
            .stdin(std::process::Stdio::piped())
            .spawn();
        if let Ok(mut c) = child {
            if let Some(mut i) = c.stdin.take() {
                let _ = i.write_all(plain.expose());
            }
            let _ = c.wait();
            return Ok(0);
        }
    }
    let mut o = std::io::stdout().lock();
    o.write_all(plain.expose())
        .and_then(|()| o.flush())
        .map_err(|e| Error::io("write", Path::new("<stdout>"), e))?;
    Ok(0)
}

/// Every `.age` file of the repo (not under `.git`, `.fleet` or `target`).
fn age_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_symlink() || matches!(name, ".git" | ".fleet" | "target") {
            continue;
        }
        if p.is_dir() {
            age_files(&p, out);
        } else if vault::is_encrypted(&p) {
            out.push(p);
        }
    }
}

fn rekey(repo_dir: Option<&Path>) -> Result<u8> {
    let root = crate::repo::find_root(repo_dir)?;
    let mut files = Vec::new();
    age_files(&root, &mut files);
    // Every file opens before any is rewritten: a rekey never leaves half the repo behind.
    let mut opened = Vec::new();
    for f in &files {
        opened.push((f, open(f)?));
    }
    for (f, plain) in &opened {
        seal(&root, plain.expose(), f)?;
        crate::noteln!("re-encrypted `{}`", crate::repo::shown(f));
    }
    crate::noteln!(
        "{} encrypted to the recipients of `{}`",
        crate::util::count(opened.len() as u64, "file", "files"),
        crate::repo::shown(&vault::recipients::path(&root))
    );
    Ok(0)
}
