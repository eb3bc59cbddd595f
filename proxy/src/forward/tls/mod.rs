//! ICAP over TLS ("ICAPS", usually port 11344) on either leg: icaptap
//! terminates TLS from the ICAP client ([`TlsListen`]: a certificate given,
//! or one it generates and prints), originates TLS to the sensor
//! ([`TlsUpstream`]: verified against a CA file or the system store, with
//! SNI and an optional client certificate, or explicitly unverified), or
//! both. The decrypted ICAP bytes are forwarded unchanged between the two
//! sessions, so decoding, records and capture are those of plain ICAP; what
//! each handshake settled travels as [`crate::tap::TlsFacts`].
//!
//! - [`args`]: the command-line flags, turned into a [`TlsSetup`]; the
//!   same server and client configurations for the toolkit's mock sensor
//!   (`icaptap sensor --tls`) and client (`icaptap client --tls`);
//! - [`stream`]: [`LegStream`], a leg that is plain TCP or TLS over it;
//! - [`handshake`]: accepting and connecting, with the facts and the
//!   failure classes (`tls-*` anomalies);
//! - [`self_signed`]: the generated certificate;
//! - [`keylog`]: the NSS key log (`--tls-keylog`) for decrypting a tcpdump
//!   capture of the real encrypted traffic in Wireshark.
//!
//! rustls (with the `ring` provider, no C toolchain needed) and
//! tokio-rustls do the TLS; rcgen makes the certificate; x509-parser reads
//! the peer's certificate for the records.

pub mod args;
pub mod handshake;
pub mod keylog;
pub mod self_signed;
pub mod stream;

use std::sync::Arc;

pub use args::{tls_client, tls_server, ClientFlags, TlsArgs, TlsClientOptions, TlsSetupError};
pub use self_signed::GeneratedCert;
pub use stream::LegStream;

/// The TLS legs of a listener; both `None` is plain ICAP.
#[derive(Clone, Default)]
pub struct TlsSetup {
    /// TLS from the ICAP client, terminated by icaptap.
    pub listen: Option<Arc<TlsListen>>,
    /// TLS to the sensor, originated by icaptap.
    pub upstream: Option<Arc<TlsUpstream>>,
}

impl TlsSetup {
    /// Whether either leg speaks TLS.
    pub fn any(&self) -> bool {
        self.listen.is_some() || self.upstream.is_some()
    }

    /// The run's TLS in words, for the capture's comment and the console:
    /// `None` for plain ICAP.
    pub fn describe(&self) -> Option<String> {
        let leg = |tls: bool| if tls { "TLS" } else { "plain" };
        self.any().then(|| {
            let mut s = format!(
                "ICAP client leg {}, sensor leg {}; the packets are the decrypted ICAP bytes, \
                 as forwarded (TLS terminated by icaptap)",
                leg(self.listen.is_some()),
                leg(self.upstream.is_some())
            );
            if self.upstream.as_ref().is_some_and(|u| !u.verify) {
                s.push_str("; the sensor's certificate was NOT verified (--upstream-tls-insecure)");
            }
            s
        })
    }
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("listen", &self.listen.is_some())
            .field("upstream", &self.upstream.as_ref().map(|u| &u.server_name))
            .finish()
    }
}

/// Two setups are the same when they share the same TLS configurations.
impl PartialEq for TlsSetup {
    fn eq(&self, other: &Self) -> bool {
        fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
        }
        same(&self.listen, &other.listen) && same(&self.upstream, &other.upstream)
    }
}

impl Eq for TlsSetup {}

/// icaptap as the TLS server of the ICAP client.
pub struct TlsListen {
    acceptor: tokio_rustls::TlsAcceptor,
    /// The certificate icaptap made for itself, when none was given.
    pub generated: Option<GeneratedCert>,
}

impl std::fmt::Debug for TlsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListen")
            .field("generated", &self.generated.as_ref().map(|g| &g.sha256))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TlsUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsUpstream")
            .field("server_name", &self.server_name)
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

/// icaptap as the TLS client of the sensor.
pub struct TlsUpstream {
    connector: tokio_rustls::TlsConnector,
    /// The name asked for (SNI) and verified against.
    pub server_name: rustls_pki_types::ServerName<'static>,
    /// Whether the sensor's certificate is verified.
    pub verify: bool,
    /// The flags a failed handshake's error tells the user to change.
    flags: ClientFlags,
}
