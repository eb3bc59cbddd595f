//! What a connection reports of its TLS legs (ICAP over TLS, "ICAPS"):
//! the facts each handshake settled ([`TlsLeg`], both legs in
//! [`TlsFacts`]) and why a handshake failed ([`TlsFailure`]). Plain data:
//! the forwarding path fills it in, the observer puts it on records.

use serde::{Deserialize, Serialize};

/// One TLS leg, as negotiated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsLeg {
    /// Protocol version, e.g. `TLSv1.3`.
    pub version: String,
    /// Cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The server name (SNI): what the ICAP client asked icaptap for on
    /// the client leg, what icaptap asked the sensor for on the sensor leg.
    pub sni: Option<String>,
    /// The application protocol agreed (ALPN), if any.
    pub alpn: Option<String>,
    /// The peer's certificate: the sensor's on the sensor leg, the
    /// client's (when it sent one) on the client leg.
    pub peer_subject: Option<String>,
    /// Who issued the peer's certificate.
    pub peer_issuer: Option<String>,
    /// When the peer's certificate expires (RFC 3339).
    pub peer_not_after: Option<String>,
    /// Sensor leg: whether the sensor's certificate was verified (false
    /// only with `--upstream-tls-insecure`). Client leg: whether the
    /// client's certificate was verified (false when it sent none).
    pub verified: bool,
}

/// The TLS legs of one connection; a plain leg is `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFacts {
    /// ICAP client <-> icaptap.
    pub client: Option<TlsLeg>,
    /// icaptap <-> sensor.
    pub sensor: Option<TlsLeg>,
}

/// Which leg a TLS failure was on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsSide {
    /// The ICAP client's leg (icaptap is the TLS server).
    Client,
    /// The sensor's leg (icaptap is the TLS client).
    Sensor,
}

/// Why a TLS leg never came up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFailure {
    /// The handshake failed for another reason (an alert, no common
    /// version or cipher, a timeout, the peer closed): the error says which.
    Handshake,
    /// The sensor's certificate has expired (or is not valid yet).
    CertificateExpired,
    /// The sensor's certificate chains to no trusted CA (or is self-signed
    /// and not trusted).
    CertificateUntrusted,
    /// The sensor's certificate is not valid for the name icaptap asked for.
    CertificateNameMismatch,
    /// The ICAP client sent plain ICAP to icaptap's TLS port.
    PlainOnTlsPort,
}
