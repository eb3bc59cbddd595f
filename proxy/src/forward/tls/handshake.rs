//! The two handshakes: accepting TLS from the ICAP client (after making
//! sure it speaks TLS at all) and connecting TLS to the sensor. Each gives
//! the leg and what it settled ([`TlsLeg`]), or why it failed, classified
//! into the `tls-*` anomalies with the reason in words.

use std::io;
use std::time::Duration;

use rustls::{CertificateError, Error as TlsError};
use tokio::net::TcpStream;

use super::stream::LegStream;
use super::{TlsListen, TlsUpstream};
use crate::tap::{TlsFailure, TlsLeg};

/// A handshake that did not complete.
#[derive(Debug)]
pub struct Failed {
    /// Its class.
    pub failure: TlsFailure,
    /// What happened, in words.
    pub error: String,
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

impl TlsListen {
    /// Accepts TLS from the ICAP client on `tcp`, within `timeout`. A
    /// client that sends something else first (plain ICAP to a TLS port)
    /// is refused as such, its first line quoted.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        timeout: Duration,
    ) -> Result<(LegStream, TlsLeg), Failed> {
        let mut first = [0u8; 64];
        let peeked = tokio::time::timeout(timeout, tcp.peek(&mut first)).await;
        match peeked {
            Err(_) => {
                return Err(Failed {
                    failure: TlsFailure::Handshake,
                    error: format!("the ICAP client sent no TLS handshake within {timeout:?}"),
                })
            }
            Ok(Err(e)) => {
                return Err(Failed {
                    failure: TlsFailure::Handshake,
                    error: format!(
                        "the ICAP client's connection failed before the TLS handshake: {e}"
                    ),
                })
            }
            Ok(Ok(0)) => {
                return Err(Failed {
                    failure: TlsFailure::Handshake,
                    error: "the ICAP client closed the connection before the TLS handshake".into(),
                })
            }
            Ok(Ok(n)) if first[0] != TLS_HANDSHAKE_RECORD => {
                let text = String::from_utf8_lossy(&first[..n]);
                let line = text.lines().next().unwrap_or_default();
                return Err(Failed {
                    failure: TlsFailure::PlainOnTlsPort,
                    error: format!(
                        "the ICAP client sent {line:?}, not a TLS handshake, to icaptap's TLS port: \
                         configure it for ICAP over TLS (Squid: an icaps:// service URL), or run \
                         icaptap without --tls"
                    ),
                });
            }
            Ok(Ok(_)) => {}
        }
        let accepted = tokio::time::timeout(timeout, self.acceptor.accept(tcp)).await;
        let stream = match accepted {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(Failed {
                    failure: TlsFailure::Handshake,
                    error: format!("TLS handshake with the ICAP client failed: {}", reason(&e)),
                })
            }
            Err(_) => {
                return Err(Failed {
                    failure: TlsFailure::Handshake,
                    error: format!(
                        "TLS handshake with the ICAP client took longer than {timeout:?}"
                    ),
                })
            }
        };
        let (_, session) = stream.get_ref();
        let mut leg = facts(session);
        leg.sni = session.server_name().map(str::to_owned);
        // A client certificate is not asked for: none is verified.
        leg.verified = false;
        Ok((LegStream::Server(Box::new(stream)), leg))
    }
}

impl TlsUpstream {
    /// Connects TLS to the sensor on `tcp`, within `timeout`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        timeout: Duration,
    ) -> Result<(LegStream, TlsLeg), Failed> {
        let connecting = self.connector.connect(self.server_name.clone(), tcp);
        let stream = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                let failure = classify(&e);
                let name = self.server_name.to_str();
                let error = match failure {
                    TlsFailure::CertificateExpired => format!(
                        "the sensor's TLS certificate has expired (or is not valid yet): {}; renew it, or check the clocks",
                        reason(&e)
                    ),
                    TlsFailure::CertificateUntrusted => format!(
                        "the sensor's TLS certificate is not trusted: {}; give its CA with {}",
                        reason(&e),
                        self.flags.ca
                    ),
                    TlsFailure::CertificateNameMismatch => format!(
                        "the sensor's TLS certificate is not valid for {name:?}: {}; give the name it is issued for with {}",
                        reason(&e),
                        self.flags.name
                    ),
                    _ => format!("TLS handshake with the sensor failed: {}", reason(&e)),
                };
                return Err(Failed { failure, error });
            }
            Err(_) => {
                return Err(Failed {
                    failure: TlsFailure::Handshake,
                    error: format!("TLS handshake with the sensor took longer than {timeout:?}"),
                })
            }
        };
        let (_, session) = stream.get_ref();
        let mut leg = facts(session);
        leg.sni = match &self.server_name {
            rustls_pki_types::ServerName::DnsName(name) => Some(name.as_ref().to_owned()),
            _ => None,
        };
        leg.verified = self.verify;
        Ok((LegStream::Client(Box::new(stream)), leg))
    }
}

/// The rustls error inside an I/O error, if there is one.
fn tls_error(e: &io::Error) -> Option<&TlsError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsError>())
}

/// Which `tls-*` class a failed connect to the sensor is.
fn classify(e: &io::Error) -> TlsFailure {
    match tls_error(e) {
        Some(TlsError::InvalidCertificate(cert)) => match cert {
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => TlsFailure::CertificateExpired,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsFailure::CertificateNameMismatch
            }
            CertificateError::UnknownIssuer
            | CertificateError::BadSignature
            | CertificateError::InvalidPurpose => TlsFailure::CertificateUntrusted,
            _ => TlsFailure::Handshake,
        },
        _ => TlsFailure::Handshake,
    }
}

/// An error in words: rustls's own when it has one.
fn reason(e: &io::Error) -> String {
    match tls_error(e) {
        Some(tls) => tls.to_string(),
        None => e.to_string(),
    }
}

/// What a finished handshake settled, and the peer's certificate.
fn facts<D>(session: &rustls::ConnectionCommon<D>) -> TlsLeg {
    let version = match session.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "unknown".to_owned(),
    };
    let cipher = session
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    let alpn = session
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let mut leg = TlsLeg {
        version,
        cipher,
        alpn,
        ..TlsLeg::default()
    };
    if let Some(cert) = session.peer_certificates().and_then(|c| c.first()) {
        if let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) {
            leg.peer_subject = Some(parsed.subject().to_string());
            leg.peer_issuer = Some(parsed.issuer().to_string());
            leg.peer_not_after = parsed
                .validity()
                .not_after
                .to_datetime()
                .format(&time::format_description::well_known::Rfc3339)
                .ok();
        }
    }
    leg
}
