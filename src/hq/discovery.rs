//! How a machine that has never seen the fleet learns which CA to trust for HQ: the join token
//! carries the SHA-256 of the fleet CA's certificate (`SECRET.sha256:HEX`, as kubeadm's
//! discovery hash does); `fleet join` fetches the CA from HQ's public `GET /api/ca` without
//! checking HQ's certificate (nothing secret is sent on that connection), keeps it only when its
//! fingerprint matches, and then pins it for the request that carries the token.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// What separates a join token's secret from the CA fingerprint.
pub const CA_SEP: &str = ".sha256:";

/// A join token's secret and the CA fingerprint it carries, if any.
pub fn split_token(token: &str) -> (&str, Option<&str>) {
    match token.trim().split_once(CA_SEP) {
        Some((secret, fp)) => (secret, Some(fp)),
        None => (token.trim(), None),
    }
}

/// The SHA-256 (hex) of the first certificate of a PEM text, as join tokens carry it.
pub fn ca_fingerprint(pem: &[u8]) -> Option<String> {
    let cert = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    Some(crate::util::sha256_hex(cert.as_ref()))
}

/// Accepts any server certificate, checking only the handshake's signatures: used once, to
/// fetch the public CA certificate, whose fingerprint is then checked against the token's.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Fetches the fleet CA from `hq_url` (`https://`) and returns its PEM when its fingerprint is
/// `fingerprint`; the error says why in one line.
pub async fn fetch_ca(
    hq_url: &str,
    fingerprint: &str,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    crate::hq::client::init_tls();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("fleet/", env!("CARGO_PKG_VERSION")))
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let url = format!("{}/api/ca", hq_url.trim_end_matches('/'));
    let resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", crate::hq::client::describe(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    let pem = resp
        .bytes()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_vec();
    match ca_fingerprint(&pem) {
        Some(fp) if crate::hq::tokens::hashes_equal(&fp, &fingerprint.to_ascii_lowercase()) => {
            Ok(pem)
        }
        Some(_) => Err(format!(
            "the CA that {hq_url} offers is not the one the join token names: this is not your fleet's HQ (or someone is in between); nothing was sent"
        )),
        None => Err(format!("{url} did not answer with a PEM certificate")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_split_and_fingerprints() {
        assert_eq!(split_token("fleet_ab"), ("fleet_ab", None));
        assert_eq!(
            split_token(" fleet_ab.sha256:00ff\n"),
            ("fleet_ab", Some("00ff"))
        );
        assert_eq!(ca_fingerprint(b"not pem"), None);
    }
}
