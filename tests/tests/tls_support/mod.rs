//! The test PKI of the TLS tests (a CA made with rcgen, a valid and an
//! expired sensor certificate it signed) and c-icap with a `TlsPort`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::peers::{free_port, wait_listening, CIcap};

/// The test's PKI: a CA, and sensor certificates it signed.
pub struct Pki {
    pub ca: PathBuf,
    /// Valid for `localhost` and `127.0.0.1`.
    pub good: (PathBuf, PathBuf),
    /// The same names, expired a day ago.
    pub expired: (PathBuf, PathBuf),
}

impl Pki {
    pub fn make(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "icaptap test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let write = |name: &str, text: String| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let leaf = |name: &str, expired: bool| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::new(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
            ])
            .unwrap();
            p.distinguished_name.push(
                rcgen::DnType::CommonName,
                format!("c-icap test sensor {name}"),
            );
            let now = time::OffsetDateTime::now_utc();
            if expired {
                p.not_before = now - time::Duration::days(30);
                p.not_after = now - time::Duration::days(1);
            }
            let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
            (
                write(&format!("{name}.pem"), cert.pem()),
                write(&format!("{name}.key"), key.serialize_pem()),
            )
        };
        Pki {
            ca: write("ca.pem", ca_cert.pem()),
            good: leaf("good", false),
            expired: leaf("expired", true),
        }
    }
}

/// c-icap with its echo service on a plain port and on a TLS port with
/// `cert`; returns it and the TLS address.
pub fn cicap_tls(dir: &Path, cert: &(PathBuf, PathBuf)) -> (CIcap, SocketAddr) {
    let port = free_port();
    let extra = format!(
        "TlsPort 127.0.0.1:{port} cert={} key={}\n",
        cert.0.display(),
        cert.1.display()
    );
    let cicap = CIcap::start(dir, &extra);
    let tls: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(tls, "c-icap's TlsPort");
    (cicap, tls)
}
