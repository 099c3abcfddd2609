//! Encrypted files in the repo (`fleet secret`, `*.yaml.age` variables, `secrets/*.age`):
//! [age](https://age-encryption.org) X25519 encryption to the recipients the repo lists, and
//! decryption with the identity the person running fleet holds. Plain text exists in memory
//! only; the one exception is `fleet secret edit` (see `cli::secret`).
//!
//! Where the identity comes from, first found wins: `--identity FILE` or
//! `FLEET_AGE_IDENTITY_FILE`, `FLEET_AGE_IDENTITY` (the key itself, for CI), the default file
//! [`default_identity_path`] (what `fleet secret init` creates, outside the repo).

pub mod recipients;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use age::secrecy::ExposeSecret;

use crate::secret::Secret;

/// The file extension of encrypted files.
pub const EXT: &str = "age";

/// The identity file given with `--identity` (or `FLEET_AGE_IDENTITY_FILE`), set once by the
/// command line before anything decrypts.
static IDENTITY_FILE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// The identities of this process, read once.
static KEYRING: OnceLock<Result<Keyring, Locked>> = OnceLock::new();

/// Sets the identity file the command line names (call before the first decryption).
pub fn set_identity_file(path: Option<PathBuf>) {
    let _ = IDENTITY_FILE.set(path);
}

/// The identity file `--identity` or `FLEET_AGE_IDENTITY_FILE` names, if any.
pub fn identity_file() -> Option<PathBuf> {
    IDENTITY_FILE.get().cloned().flatten().or_else(|| {
        std::env::var_os("FLEET_AGE_IDENTITY_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// Why an encrypted file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locked {
    /// No identity is configured at all.
    NoIdentity,
    /// An identity is configured but cannot be used, or does not open this file.
    Failed(String),
}

impl std::fmt::Display for Locked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Locked::NoIdentity => f.write_str("no age identity to decrypt it with"),
            Locked::Failed(m) => f.write_str(m),
        }
    }
}

impl Locked {
    /// What to do about it.
    pub fn help(&self) -> String {
        match self {
            Locked::NoIdentity => format!(
                "pass `--identity FILE`, set FLEET_AGE_IDENTITY_FILE or FLEET_AGE_IDENTITY, or create `{}` with `fleet secret init`",
                default_identity_path().display()
            ),
            Locked::Failed(_) => {
                "the file is encrypted to the recipients in `secrets/recipients.txt`: ask someone who can read it to add your recipient and run `fleet secret rekey`".to_string()
            }
        }
    }
}

/// Where `fleet secret init` keeps an identity, and where fleet looks for one by default:
/// `$XDG_CONFIG_HOME/fleet/age-identity.txt` (`~/.config/…`), outside any repo.
pub fn default_identity_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from(".config"));
    base.join("fleet").join("age-identity.txt")
}

/// The identities one person holds.
pub struct Keyring {
    identities: Vec<age::x25519::Identity>,
    /// Where they came from, for messages.
    pub source: String,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({} from {})", self.identities.len(), self.source)
    }
}

impl Keyring {
    /// Parses an identity file's text: `AGE-SECRET-KEY-1…` lines; `#` comments and blank
    /// lines are skipped.
    pub fn parse(text: &str, source: &str) -> Result<Keyring, Locked> {
        let mut identities = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The line is a secret: the message names the line, never quotes it.
            let id = age::x25519::Identity::from_str(line).map_err(|e| {
                Locked::Failed(format!(
                    "{source}: line {}: not an age identity (`AGE-SECRET-KEY-1…`): {e}",
                    i + 1
                ))
            })?;
            identities.push(id);
        }
        if identities.is_empty() {
            return Err(Locked::Failed(format!("{source}: holds no age identity")));
        }
        Ok(Keyring {
            identities,
            source: source.to_string(),
        })
    }

    /// The identities from the command line, the environment or the default file.
    fn discover() -> Result<Keyring, Locked> {
        let from_file = |p: &Path| -> Result<Keyring, Locked> {
            use std::os::unix::fs::PermissionsExt;
            // As ssh does for a private key: others must not read it.
            if let Ok(m) = std::fs::metadata(p)
                && m.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(
                    "the identity file `{}` is readable by others (mode {:o}): `chmod 600` it",
                    p.display(),
                    m.permissions().mode() & 0o777
                );
            }
            let text = std::fs::read_to_string(p).map_err(|e| {
                Locked::Failed(format!(
                    "cannot read the identity file `{}`: {e}",
                    p.display()
                ))
            })?;
            let text = Secret::new(text);
            Keyring::parse(text.expose(), &format!("identity file `{}`", p.display()))
        };
        if let Some(p) = identity_file() {
            return from_file(&p);
        }
        if let Ok(text) = std::env::var("FLEET_AGE_IDENTITY")
            && !text.trim().is_empty()
        {
            crate::secret::remember(text.trim());
            return Keyring::parse(&text, "FLEET_AGE_IDENTITY");
        }
        let default = default_identity_path();
        if default.is_file() {
            return from_file(&default);
        }
        Err(Locked::NoIdentity)
    }

    /// This process's identities (found once).
    pub fn get() -> Result<&'static Keyring, Locked> {
        KEYRING
            .get_or_init(Keyring::discover)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The recipients (public keys) of these identities.
    pub fn recipients(&self) -> Vec<String> {
        self.identities
            .iter()
            .map(|i| i.to_public().to_string())
            .collect()
    }

    /// Decrypts an age file's bytes (armored or binary).
    pub fn decrypt(&self, bytes: &[u8]) -> Result<Secret<Vec<u8>>, Locked> {
        let reader = age::armor::ArmoredReader::new(bytes);
        let dec = age::Decryptor::new(reader)
            .map_err(|e| Locked::Failed(format!("not an age file: {e}")))?;
        let ids = self.identities.iter().map(|i| i as &dyn age::Identity);
        let mut r = dec.decrypt(ids).map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => Locked::Failed(format!(
                "none of the identities of {} can decrypt it (it was encrypted for other recipients)",
                self.source
            )),
            other => Locked::Failed(format!("cannot decrypt it: {other}")),
        })?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)
            .map_err(|e| Locked::Failed(format!("cannot decrypt it (damaged?): {e}")))?;
        Ok(Secret::new(out))
    }
}

/// Reads and decrypts an encrypted file with this process's identities.
pub fn decrypt_file(path: &Path) -> Result<Secret<Vec<u8>>, Locked> {
    let bytes = std::fs::read(path).map_err(|e| Locked::Failed(format!("cannot read it: {e}")))?;
    Keyring::get()?.decrypt(&bytes)
}

/// Encrypts `plain` to `recipients` (age public keys), ASCII-armored: the file is text, so
/// git shows that it changed (not what) and merges never see binary.
pub fn encrypt(plain: &[u8], recipients: &[age::x25519::Recipient]) -> Result<Vec<u8>, String> {
    let rs = recipients.iter().map(|r| r as &dyn age::Recipient);
    let enc = age::Encryptor::with_recipients(rs).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .map_err(|e| e.to_string())?;
    let mut w = enc.wrap_output(armor).map_err(|e| e.to_string())?;
    w.write_all(plain).map_err(|e| e.to_string())?;
    w.finish()
        .and_then(|a| a.finish())
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// A new identity: the file's text (with its public key as a comment) and its recipient.
pub fn generate() -> (Secret<String>, String) {
    let id = age::x25519::Identity::generate();
    let public = id.to_public().to_string();
    let text = format!(
        "# fleet age identity: keep it out of git, mode 0600\n# public key: {public}\n{}\n",
        id.to_string().expose_secret()
    );
    (Secret::new(text), public)
}

/// True for a file fleet decrypts (`….age`).
pub fn is_encrypted(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some(EXT)
}

/// The path without its `.age` (`all.yaml.age` → `all.yaml`).
pub fn plain_name(path: &Path) -> PathBuf {
    if is_encrypted(path) {
        path.with_extension("")
    } else {
        path.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_a_wrong_key() {
        let (text, public) = generate();
        let ring = Keyring::parse(text.expose(), "test").expect("identity");
        assert_eq!(ring.recipients(), vec![public.clone()]);
        let r = age::x25519::Recipient::from_str(&public).expect("recipient");
        let enc = encrypt(b"token: s3cr3t\n", &[r]).expect("encrypts");
        let armored = String::from_utf8(enc.clone()).expect("armored text");
        assert!(armored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        assert!(!armored.contains("s3cr3t"));
        assert_eq!(
            ring.decrypt(&enc).expect("decrypts").expose(),
            b"token: s3cr3t\n"
        );
        let (other, _) = generate();
        let other = Keyring::parse(other.expose(), "other").expect("identity");
        let err = other.decrypt(&enc).expect_err("wrong key");
        assert!(
            err.to_string().contains("none of the identities of other"),
            "{err}"
        );
        assert!(matches!(
            ring.decrypt(b"plain text"),
            Err(Locked::Failed(m)) if m.contains("not an age file")
        ));
    }

    #[test]
    fn a_bad_identity_line_is_named_not_quoted() {
        let err = Keyring::parse("# c\n\nAGE-SECRET-KEY-1NOTREALLY\n", "f").expect_err("bad");
        let m = err.to_string();
        assert!(m.contains("line 3") && !m.contains("NOTREALLY"), "{m}");
        assert!(Keyring::parse("# only\n", "f").is_err());
    }

    #[test]
    fn names() {
        assert!(is_encrypted(Path::new("g/all.yaml.age")));
        assert!(!is_encrypted(Path::new("g/all.yaml")));
        assert_eq!(
            plain_name(Path::new("g/all.yaml.age")),
            Path::new("g/all.yaml")
        );
    }
}
