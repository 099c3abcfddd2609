//! TLS for HQ: the fleet's own certificate authority, HQ's certificate signed by it, the
//! HTTPS listener of `fleet serve`, and the pinned client configuration agents and CLI
//! commands use (they trust exactly the fleet CA, never the system roots).
//!
//! Files of a fleet repo:
//! - `tls/ca.pem`: the CA certificate, committed (agents and the CLI pin it);
//! - `.fleet/tls/ca.key`: the CA key, mode 0600, never leaves the controller (`.fleet/` is
//!   git-ignored);
//! - `.fleet/tls/hq.pem` and `.fleet/tls/hq.key`: HQ's certificate and key (0600), re-issued by
//!   the controller when within the renewal window and shipped to HQ by the hq role.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// The CA certificate, relative to the repo (committed).
pub const CA_CERT: &str = "tls/ca.pem";
/// The CA key, relative to the repo (git-ignored, 0600).
pub const CA_KEY: &str = ".fleet/tls/ca.key";
/// HQ's certificate on the controller, relative to the repo.
pub const HQ_CERT: &str = ".fleet/tls/hq.pem";
/// HQ's key on the controller, relative to the repo (0600).
pub const HQ_KEY: &str = ".fleet/tls/hq.key";
/// Where the hq role places HQ's certificate on the HQ node.
pub const NODE_HQ_CERT: &str = "/var/lib/fleet/tls/hq.pem";
/// Where the hq role places HQ's key on the HQ node.
pub const NODE_HQ_KEY: &str = "/var/lib/fleet/tls/hq.key";
/// Where the agent role places the fleet CA on every node.
pub const NODE_CA: &str = "/etc/fleet/ca.pem";
/// Validity of HQ's certificate.
pub const HQ_DAYS: u32 = 90;
/// HQ's certificate is re-issued when it expires within this many days.
pub const RENEW_WITHIN_DAYS: u32 = 30;
/// Validity of the CA.
const CA_DAYS: u32 = 3650;

/// Why a TLS file could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("cannot {action} `{}`: {source}", .path.display())]
    Io {
        /// What fleet was doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is there but holds no usable certificate or key.
    #[error("`{}` {why}", .path.display())]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The repo has no fleet CA yet.
    #[error(
        "this fleet has no CA (`{}` is missing)\n  help: run `fleet tls init` on the controller",
        .0.display()
    )]
    NoCa(PathBuf),
    /// The repo has the CA certificate but not its key: not the controller that made it.
    #[error(
        "cannot issue HQ's certificate: the fleet CA's key `{}` is not on this machine\n  help: run this on the controller that made the CA (it holds `{CA_KEY}`), or copy HQ's certificate and key from there into `.fleet/tls/`",
        .0.display()
    )]
    NoCaKey(PathBuf),
    /// Making a key or certificate failed.
    #[error("cannot make the certificate: {0}")]
    Make(String),
}

impl From<TlsError> for crate::error::Error {
    fn from(e: TlsError) -> Self {
        crate::error::Error::Usage(e.to_string())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
            action: "create",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    crate::util::write_atomic_mode(path, bytes, mode).map_err(|e| TlsError::Io {
        action: "write",
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

fn make(e: rcgen::Error) -> TlsError {
    TlsError::Make(e.to_string())
}

/// The certificates of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Bad {
            path: path.to_path_buf(),
            why: format!("is not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Bad {
            path: path.to_path_buf(),
            why: "holds no PEM certificate".into(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Bad {
        path: path.to_path_buf(),
        why: format!("holds no PEM private key: {e}"),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn days(n: u32) -> Duration {
    Duration::from_secs(u64::from(n) * 86_400)
}

fn random_serial() -> rcgen::SerialNumber {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b[0] &= 0x7f;
    rcgen::SerialNumber::from_slice(&b)
}

/// Creates the fleet CA of the repo at `root` unless it has one; true when it made one.
/// A CA certificate without its key (a clone of the repo on another machine) is an error:
/// only the controller that holds the key can issue certificates.
pub fn init_ca(root: &Path, fleet_name: &str) -> Result<bool, TlsError> {
    let (cert_path, key_path) = (root.join(CA_CERT), root.join(CA_KEY));
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => return Ok(false),
        (true, false) => {
            return Err(TlsError::Bad {
                path: cert_path,
                why: format!(
                    "exists but its key `{CA_KEY}` does not: this is not the controller that made the CA\n  help: run `fleet tls` on the controller that holds `{CA_KEY}`, or move `{CA_CERT}` away to start a new CA (every node then needs the new one)"
                ),
            });
        }
        _ => {}
    }
    let key = rcgen::KeyPair::generate().map_err(make)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(make)?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("fleet {fleet_name} CA"));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = offset(now - Duration::from_secs(3600));
    params.not_after = offset(now + days(CA_DAYS));
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key).map_err(make)?;
    // The key first: a CA certificate is never left without its key.
    write(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(true)
}

/// The names HQ's certificate covers: the host of `hq_url`, the HQ node's `host` and
/// `address`, and the loopback names.
pub fn hq_names(repo: &crate::repo::Repo) -> Vec<String> {
    let inv = &repo.inventory;
    let node = inv
        .fleet
        .hq
        .as_ref()
        .and_then(|hq| inv.nodes.get(&hq.value));
    names_for(
        inv.fleet.hq_url.as_ref().map(|u| u.value.as_str()),
        node.map(|n| n.host.as_str()),
        node.and_then(|n| n.address.as_ref())
            .map(|a| a.value.as_str()),
    )
}

/// The names of HQ's certificate from the `hq_url`, the HQ node's `host` and `address`, plus
/// `localhost`, `127.0.0.1` and `::1`; lowercased, without duplicates, in that order.
pub fn names_for(hq_url: Option<&str>, host: Option<&str>, address: Option<&str>) -> Vec<String> {
    let mut names = Vec::new();
    if let Some((h, _)) = hq_url.and_then(crate::cli::serve::url_host_port) {
        names.push(h);
    }
    names.extend(host.map(String::from));
    names.extend(address.map(String::from));
    names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let n = n.trim().trim_end_matches('.').to_ascii_lowercase();
        if !n.is_empty() && !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// A new certificate and key for HQ covering `names`, valid `valid_days`, signed by the CA.
pub fn issue(root: &Path, names: &[String], valid_days: u32) -> Result<(String, String), TlsError> {
    let (ca_cert_path, ca_key_path) = (root.join(CA_CERT), root.join(CA_KEY));
    if !ca_cert_path.exists() {
        return Err(TlsError::NoCa(ca_cert_path));
    }
    if !ca_key_path.exists() {
        return Err(TlsError::NoCaKey(ca_key_path));
    }
    let ca_pem = String::from_utf8_lossy(&read(&ca_cert_path)?).into_owned();
    let ca_key_pem = String::from_utf8_lossy(&read(&ca_key_path)?).into_owned();
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).map_err(|e| TlsError::Bad {
        path: ca_key_path.clone(),
        why: format!("holds no usable key: {e}"),
    })?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| TlsError::Bad {
        path: ca_cert_path.clone(),
        why: format!("is not a usable CA certificate: {e}"),
    })?;
    let key = rcgen::KeyPair::generate().map_err(make)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(make)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names.first().map_or("hq", |n| n));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let now = SystemTime::now();
    params.not_before = offset(now - Duration::from_secs(3600));
    params.not_after = offset(now + days(valid_days));
    params.serial_number = Some(random_serial());
    let cert = params.signed_by(&key, &issuer).map_err(make)?;
    // A CA key that is not the CA certificate's signs certificates no client accepts.
    if let Some(why) = renewal_reason(
        cert.pem().as_bytes(),
        ca_pem.as_bytes(),
        names,
        Duration::ZERO,
    ) {
        return Err(TlsError::Bad {
            path: ca_key_path,
            why: format!("does not go with `{CA_CERT}`: a certificate it signs {why}"),
        });
    }
    Ok((cert.pem(), key.serialize_pem()))
}

/// Why the certificate `cert_pem` must be re-issued, if it must: not signed by the CA at
/// `ca_pem`, not covering one of `names`, expired or expiring within `renew_within`.
pub fn renewal_reason(
    cert_pem: &[u8],
    ca_pem: &[u8],
    names: &[String],
    renew_within: Duration,
) -> Option<String> {
    let Some(Ok(cert)) = CertificateDer::pem_slice_iter(cert_pem).next() else {
        return Some("is not a PEM certificate".into());
    };
    let verifier = match pinned_verifier(ca_pem) {
        Ok(v) => v,
        Err(e) => return Some(format!("cannot be checked: the CA is unusable: {e}")),
    };
    let check = |name: &str, at: SystemTime| -> Result<(), rustls::Error> {
        let sn = ServerName::try_from(name.to_string())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let t = UnixTime::since_unix_epoch(
            at.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        verifier
            .verify_server_cert(&cert, &[], &sn, &[], t)
            .map(|_| ())
    };
    let now = SystemTime::now();
    for name in names {
        if let Err(e) = check(name, now) {
            return Some(match e {
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
                | rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext { .. },
                ) => format!("does not cover `{name}`"),
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Expired
                    | rustls::CertificateError::ExpiredContext { .. },
                ) => "has expired".into(),
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                    | rustls::CertificateError::BadSignature,
                ) => "is not signed by this fleet's CA".into(),
                other => format!("does not verify: {other}"),
            });
        }
    }
    if let Some(name) = names.first()
        && check(name, now + renew_within).is_err()
    {
        return Some(format!(
            "expires within {} days",
            renew_within.as_secs() / 86_400
        ));
    }
    None
}

/// What [`ensure_hq`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issued {
    /// The certificate is fresh; nothing was written.
    Fresh,
    /// A new certificate was written, for this reason.
    Renewed(String),
}

/// Why the controller's copy of HQ's certificate (`.fleet/tls/hq.pem` and `hq.key`) must be
/// issued again, if it must: it is missing, does not cover `names`, is not signed by the
/// repo's CA, or expires within `renew_within`. Reads only.
pub fn hq_due(
    root: &Path,
    names: &[String],
    renew_within: Duration,
) -> Result<Option<String>, TlsError> {
    let ca_path = root.join(CA_CERT);
    if !ca_path.exists() {
        return Err(TlsError::NoCa(ca_path));
    }
    let ca = read(&ca_path)?;
    let (cert_path, key_path) = (root.join(HQ_CERT), root.join(HQ_KEY));
    if !(cert_path.is_file() && key_path.is_file()) {
        return Ok(Some("there was none".into()));
    }
    let cert = read(&cert_path)?;
    Ok(renewal_reason(&cert, &ca, names, renew_within).map(|r| format!("the previous one {r}")))
}

/// Writes HQ's certificate and key as the controller's copy (the key 0600).
pub fn save_hq(root: &Path, cert: &str, key: &str) -> Result<(), TlsError> {
    write(&root.join(HQ_KEY), key.as_bytes(), 0o600)?;
    write(&root.join(HQ_CERT), cert.as_bytes(), 0o644)
}

/// Keeps the controller's copy of HQ's certificate fresh: issues a new one when [`hq_due`]
/// says so; otherwise writes nothing.
pub fn ensure_hq(
    root: &Path,
    names: &[String],
    valid_days: u32,
    renew_within: Duration,
) -> Result<Issued, TlsError> {
    let Some(reason) = hq_due(root, names, renew_within)? else {
        return Ok(Issued::Fresh);
    };
    let (cert, key) = issue(root, names, valid_days)?;
    save_hq(root, &cert, &key)?;
    Ok(Issued::Renewed(reason))
}

/// The verifier of a client that trusts exactly the CA certificates in `ca_pem`.
fn pinned_verifier(ca_pem: &[u8]) -> Result<Arc<rustls::client::WebPkiServerVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        let c = c.map_err(|e| format!("not a PEM certificate: {e}"))?;
        roots
            .add(c)
            .map_err(|e| format!("not a CA certificate: {e}"))?;
        n += 1;
    }
    if n == 0 {
        return Err("holds no PEM certificate".into());
    }
    rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| e.to_string())
}

/// A rustls client configuration that trusts exactly the fleet CA at `ca` (no system roots).
pub fn client_config(ca: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let bytes = read(ca)?;
    let verifier = pinned_verifier(&bytes).map_err(|why| TlsError::Bad {
        path: ca.to_path_buf(),
        why,
    })?;
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    inner: verifier,
                    ca: ca.to_path_buf(),
                }))
                .with_no_client_auth()
        })
        .map_err(|e| TlsError::Make(e.to_string()))
}

/// HQ's certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
}

/// The rustls server configuration of HQ (HTTP/1.1 over TLS 1.2/1.3).
pub fn server_config(files: &CertFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Make(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Bad {
            path: files.key.clone(),
            why: format!("does not go with `{}`: {e}", files.cert.display()),
        })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// HQ's certificate failed the pinned check; says why in words a person can act on.
#[derive(Debug)]
struct HqCertError(String);

impl std::fmt::Display for HqCertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HqCertError {}

fn hq_cert_reason(err: &rustls::CertificateError, ca: &Path) -> String {
    use rustls::CertificateError as C;
    match err {
        C::UnknownIssuer | C::BadSignature => format!(
            "HQ's certificate is not signed by this fleet's CA ({})\n  help: HQ serves a certificate from another CA: check that `fleet.hq_url` points at this fleet's HQ, or re-issue HQ's certificate (`fleet tls issue-hq`) and apply the hq role",
            ca.display()
        ),
        C::NotValidForName | C::NotValidForNameContext { .. } => format!(
            "HQ's certificate (signed by this fleet's CA, {}) does not cover the host of `fleet.hq_url`\n  help: `fleet tls issue-hq` re-issues it for the inventory's names; then apply the hq role",
            ca.display()
        ),
        C::Expired | C::ExpiredContext { .. } => {
            "HQ's certificate has expired\n  help: `fleet tls issue-hq` re-issues it; then apply the hq role".to_string()
        }
        other => format!(
            "HQ's certificate does not verify against this fleet's CA ({}): {other}",
            ca.display()
        ),
    }
}

/// The verifier of an HQ client: webpki against the fleet CA alone, with its failures
/// reworded for people.
#[derive(Debug)]
struct Pinned {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    ca: PathBuf,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(c) => {
                    let why = hq_cert_reason(&c, &self.ca);
                    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                        rustls::OtherError(Arc::new(HqCertError(why))),
                    ))
                }
                other => other,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The reason of a failed request when HQ's certificate failed the pinned check (anywhere
/// down `e`'s source chain, including inside `std::io::Error`s).
pub fn describe_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    fn ours(err: &rustls::Error) -> Option<String> {
        match err {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) => {
                o.0.downcast_ref::<HqCertError>().map(|h| h.0.clone())
            }
            _ => None,
        }
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(inner) = src {
        if let Some(err) = inner.downcast_ref::<rustls::Error>() {
            return ours(err);
        }
        // An io::Error's source() skips the error it wraps: look inside (tokio-rustls wraps
        // the rustls error in one, hyper-util that one in another).
        let mut io = inner.downcast_ref::<std::io::Error>();
        while let Some(wrapped) = io.and_then(std::io::Error::get_ref) {
            if let Some(err) = wrapped.downcast_ref::<rustls::Error>() {
                return ours(err);
            }
            io = wrapped.downcast_ref::<std::io::Error>();
        }
        src = inner.source();
    }
    None
}

/// Whether `addr` only accepts connections from this machine.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}
