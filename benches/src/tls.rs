//! ICAP over TLS in the benches: the PKI the TLS section of the
//! side-by-side harness makes for one run (a CA and a certificate for
//! 127.0.0.1 and localhost, written as PEM for c-icap, HAProxy, icaptap
//! and the bench echo server), and the rustls configurations of the bench
//! client and of the TLS echo server. Every side uses the same certificate,
//! so every configuration pays for the same key type and chain.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::client::TlsDial;

/// Why the TLS setup of a bench failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchTlsError {
    /// rcgen could not make a key or certificate.
    #[error("making the bench certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused a configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A PEM file could not be written or read.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// The certificates of one run, as files in its directory.
#[derive(Clone, Debug)]
pub struct BenchPki {
    /// The CA certificate (PEM): what the client and icaptap's sensor leg trust.
    pub ca: PathBuf,
    /// The server certificate (PEM), valid for 127.0.0.1 and localhost.
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// Certificate then key in one file, as HAProxy's `crt` wants it.
    pub bundle: PathBuf,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn write(path: &Path, text: &str) -> Result<(), BenchTlsError> {
    std::fs::write(path, text).map_err(|e| BenchTlsError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

impl BenchPki {
    /// Makes a CA and a certificate it signed (ECDSA P-256, rcgen's
    /// default) and writes them into `dir`.
    pub fn make(dir: &Path) -> Result<BenchPki, BenchTlsError> {
        std::fs::create_dir_all(dir).map_err(|e| BenchTlsError::File {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "icaptap bench CA");
        let ca_cert = ca.self_signed(&ca_key)?;
        let key = rcgen::KeyPair::generate()?;
        let mut leaf =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "icaptap bench server");
        let cert = leaf.signed_by(&key, &ca_cert, &ca_key)?;
        let pki = BenchPki {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            bundle: dir.join("server-bundle.pem"),
        };
        write(&pki.ca, &ca_cert.pem())?;
        write(&pki.cert, &cert.pem())?;
        write(&pki.key, &key.serialize_pem())?;
        write(
            &pki.bundle,
            &format!("{}{}", cert.pem(), key.serialize_pem()),
        )?;
        Ok(pki)
    }

    /// How the bench client reaches a server or proxy that presents
    /// [`BenchPki::cert`]: trusting only the CA, asking for 127.0.0.1.
    pub fn client(&self) -> Result<TlsDial, BenchTlsError> {
        let mut roots = RootCertStore::empty();
        for cert in read_certs(&self.ca)? {
            roots.add(cert)?;
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsDial {
            config: Arc::new(config),
            name: ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into()),
        })
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, BenchTlsError> {
    let bad = |reason: String| BenchTlsError::File {
        path: path.display().to_string(),
        reason,
    };
    CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))
}

/// The TLS configuration of a server presenting `cert` (PEM chain) with
/// `key` (PEM), e.g. the bench echo server.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, BenchTlsError> {
    let certs = read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| BenchTlsError::File {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pki_makes_files_the_client_and_server_configurations_accept() {
        let dir = tempfile::tempdir().unwrap();
        let pki = BenchPki::make(dir.path()).unwrap();
        let dial = pki.client().unwrap();
        assert!(matches!(dial.name, ServerName::IpAddress(_)));
        server_config(&pki.cert, &pki.key).unwrap();
        // HAProxy's bundle is the certificate followed by its key.
        let bundle = std::fs::read_to_string(&pki.bundle).unwrap();
        let cert_at = bundle.find("BEGIN CERTIFICATE").unwrap();
        let key_at = bundle.find("BEGIN PRIVATE KEY").unwrap();
        assert!(cert_at < key_at);
    }
}
