//! The certificate icaptap makes for itself when `--tls` is given without
//! `--tls-cert`: self-signed, for the names and addresses the ICAP client
//! reaches it by, valid from now for 90 days. Its PEM is written into the
//! run directory (`icaptap-tls-cert.pem`) and its SHA-256 fingerprint is
//! printed, so the client can be told to trust exactly it.

use sha2::{Digest, Sha256};

/// A certificate icaptap generated.
#[derive(Clone, Debug)]
pub struct GeneratedCert {
    /// The certificate, PEM.
    pub pem: String,
    /// SHA-256 of its DER, as colon-separated upper-case hex (the form
    /// `openssl x509 -fingerprint -sha256` prints).
    pub sha256: String,
    /// The names and addresses it is valid for.
    pub names: Vec<String>,
    pub(super) der: Vec<u8>,
    pub(super) key_der: Vec<u8>,
}

/// The file name of the generated certificate in the run directory.
pub const CERT_FILE: &str = "icaptap-tls-cert.pem";

/// Makes a certificate for `names` (DNS names or IP addresses).
pub fn generate(names: Vec<String>) -> Result<GeneratedCert, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(names.clone())?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "icaptap (self-signed)");
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(90);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let der = cert.der().to_vec();
    let digest = Sha256::digest(&der);
    let sha256 = digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(GeneratedCert {
        pem: cert.pem(),
        sha256,
        names,
        der,
        key_der: key.serialize_der(),
    })
}
