//! The TLS flags of `icaptap proxy` and the [`TlsSetup`] they make: files
//! read and checked at start-up, so that a wrong path or a key that does
//! not match its certificate stops icaptap before it listens. The two
//! configurations themselves ([`tls_server`], [`tls_client`]) are shared
//! with the toolkit's mock sensor, client and check.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::keylog::KeyLogFile;
use super::self_signed::{self, GeneratedCert};
use super::{TlsListen, TlsSetup, TlsUpstream};

/// ICAP over TLS, as given on the command line.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TlsArgs {
    /// Speak TLS to the ICAP client (ICAPS; Squid: an `icaps://` service):
    /// icaptap terminates it with --tls-cert/--tls-key, or with a
    /// certificate it generates, prints the fingerprint of, and writes to
    /// the run directory (icaptap-tls-cert.pem) for the client to trust.
    #[arg(long, env = "ICAPTAP_TLS")]
    pub tls: bool,

    /// icaptap's certificate chain for the client leg (PEM).
    #[arg(
        long,
        env = "ICAPTAP_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "ICAPTAP_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Names and addresses the generated certificate is valid for (repeat;
    /// default: localhost, 127.0.0.1, ::1 and the --listen address).
    #[arg(
        long = "tls-name",
        env = "ICAPTAP_TLS_NAMES",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub tls_names: Vec<String>,

    /// Speak TLS to the sensor (its ICAPS port).
    #[arg(long, env = "ICAPTAP_UPSTREAM_TLS")]
    pub upstream_tls: bool,

    /// CA certificates (PEM) the sensor's certificate must chain to
    /// (default: the system's trust store).
    #[arg(long, env = "ICAPTAP_UPSTREAM_TLS_CA", value_name = "FILE")]
    pub upstream_tls_ca: Option<PathBuf>,

    /// The name to ask the sensor for (SNI) and to verify its certificate
    /// against (default: the host of --upstream).
    #[arg(long, env = "ICAPTAP_UPSTREAM_TLS_NAME", value_name = "NAME")]
    pub upstream_tls_name: Option<String>,

    /// A client certificate (PEM) for sensors that ask for one.
    #[arg(
        long,
        env = "ICAPTAP_UPSTREAM_TLS_CERT",
        value_name = "FILE",
        requires = "upstream_tls_key"
    )]
    pub upstream_tls_cert: Option<PathBuf>,

    /// The private key of --upstream-tls-cert (PEM).
    #[arg(
        long,
        env = "ICAPTAP_UPSTREAM_TLS_KEY",
        value_name = "FILE",
        requires = "upstream_tls_cert"
    )]
    pub upstream_tls_key: Option<PathBuf>,

    /// Do not verify the sensor's certificate (a lab sensor with a
    /// self-signed one). Said in the console, the summary and the capture.
    #[arg(long, env = "ICAPTAP_UPSTREAM_TLS_INSECURE")]
    pub upstream_tls_insecure: bool,

    /// Append the TLS secrets of both legs to FILE (NSS key log format), to
    /// decrypt in Wireshark a tcpdump capture of the encrypted traffic.
    #[arg(long, env = "ICAPTAP_TLS_KEYLOG", value_name = "FILE")]
    pub tls_keylog: Option<PathBuf>,
}

/// A TLS option that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{flag} {path}: {reason}")]
    File {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// rustls refused the configuration (e.g. a key that does not match).
    #[error("{what}: {source}")]
    Rustls {
        /// Which configuration.
        what: &'static str,
        /// rustls's answer.
        source: rustls::Error,
    },
    /// A TLS flag without the one that turns that leg's TLS on.
    #[error("{flag} is given but {needs} is not: add {needs}, or leave {flag} out")]
    NeedsFlag {
        /// The flag given.
        flag: &'static str,
        /// The flag it needs.
        needs: &'static str,
    },
    /// The peer's name is not a DNS name or an IP address.
    #[error("{flag} {name:?} is not a DNS name or an IP address")]
    BadName {
        /// The flag that gave it (or whose default it is).
        flag: &'static str,
        /// The name.
        name: String,
    },
    /// The certificate could not be generated.
    #[error("cannot generate icaptap's TLS certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The system's trust store has no certificate.
    #[error("the system's TLS trust store is empty or unreadable ({why}); give the sensor's CA with {flag}")]
    NoSystemRoots {
        /// The flag that gives a CA file instead.
        flag: &'static str,
        /// What loading the store said.
        why: String,
    },
    /// The key log file cannot be opened.
    #[error("--tls-keylog {path}: {source}")]
    KeyLog {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let bad = |reason: String| TlsSetupError::File {
        flag,
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("cannot read it: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no certificate (-----BEGIN CERTIFICATE-----); give a PEM certificate file"
                .into(),
        ));
    }
    Ok(certs)
}

fn read_key(flag: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsSetupError::File {
        flag,
        path: path.to_path_buf(),
        reason: format!("no usable private key (PEM PKCS#8, PKCS#1 or SEC1): {e}"),
    })
}

impl TlsArgs {
    /// Reads the files, makes the certificate if asked, and builds both
    /// legs' TLS. `listen` and `upstream_host` give the generated
    /// certificate's and the sensor's default names.
    pub fn setup(&self, listen: IpAddr, upstream_host: &str) -> Result<TlsSetup, TlsSetupError> {
        if !self.tls {
            for (given, flag) in [
                (self.tls_cert.is_some(), "--tls-cert"),
                (!self.tls_names.is_empty(), "--tls-name"),
            ] {
                if given {
                    return Err(TlsSetupError::NeedsFlag {
                        flag,
                        needs: "--tls",
                    });
                }
            }
        }
        if !self.upstream_tls {
            for (given, flag) in [
                (self.upstream_tls_ca.is_some(), "--upstream-tls-ca"),
                (self.upstream_tls_name.is_some(), "--upstream-tls-name"),
                (self.upstream_tls_cert.is_some(), "--upstream-tls-cert"),
                (self.upstream_tls_insecure, "--upstream-tls-insecure"),
            ] {
                if given {
                    return Err(TlsSetupError::NeedsFlag {
                        flag,
                        needs: "--upstream-tls",
                    });
                }
            }
        }
        if self.tls_keylog.is_some() && !self.tls && !self.upstream_tls {
            return Err(TlsSetupError::NeedsFlag {
                flag: "--tls-keylog",
                needs: "--tls or --upstream-tls",
            });
        }
        let keylog: Option<Arc<dyn rustls::KeyLog>> = match &self.tls_keylog {
            Some(path) => Some(Arc::new(KeyLogFile::open(path).map_err(|source| {
                TlsSetupError::KeyLog {
                    path: path.clone(),
                    source,
                }
            })?)),
            None => None,
        };
        let listen_tls = if self.tls {
            Some(Arc::new(self.listen_side(listen, keylog.clone())?))
        } else {
            None
        };
        let upstream = if self.upstream_tls {
            Some(Arc::new(self.upstream_side(upstream_host, keylog)?))
        } else {
            None
        };
        Ok(TlsSetup {
            listen: listen_tls,
            upstream,
        })
    }

    fn listen_side(
        &self,
        listen: IpAddr,
        keylog: Option<Arc<dyn rustls::KeyLog>>,
    ) -> Result<TlsListen, TlsSetupError> {
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            _ => None,
        };
        tls_server(identity, self.tls_names.clone(), listen, keylog)
    }

    fn upstream_side(
        &self,
        upstream_host: &str,
        keylog: Option<Arc<dyn rustls::KeyLog>>,
    ) -> Result<TlsUpstream, TlsSetupError> {
        let name = self.upstream_tls_name.clone().unwrap_or_else(|| {
            upstream_host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        });
        let identity = match (&self.upstream_tls_cert, &self.upstream_tls_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            _ => None,
        };
        tls_client(TlsClientOptions {
            ca: self.upstream_tls_ca.as_deref(),
            name,
            insecure: self.upstream_tls_insecure,
            identity,
            keylog,
            flags: UPSTREAM_FLAGS,
        })
    }
}

/// The flags of a TLS client's options, named in the errors that say what
/// to do: the proxy's `--upstream-tls-*`, the client's `--tls-*`.
#[derive(Clone, Copy, Debug)]
pub struct ClientFlags {
    /// The CA file flag.
    pub ca: &'static str,
    /// The server name flag.
    pub name: &'static str,
    /// The flag that skips verification.
    pub insecure: &'static str,
    /// The client certificate and key flags.
    pub identity: (&'static str, &'static str),
}

/// `icaptap proxy`'s flags for its sensor leg.
pub const UPSTREAM_FLAGS: ClientFlags = ClientFlags {
    ca: "--upstream-tls-ca",
    name: "--upstream-tls-name",
    insecure: "--upstream-tls-insecure",
    identity: ("--upstream-tls-cert", "--upstream-tls-key"),
};

/// What a TLS client (icaptap to a sensor) is made of.
#[derive(Default)]
pub struct TlsClientOptions<'a> {
    /// CA certificates the server's must chain to; the system's store
    /// when `None`.
    pub ca: Option<&'a Path>,
    /// The server name asked for (SNI) and verified against.
    pub name: String,
    /// Accept any certificate.
    pub insecure: bool,
    /// A client certificate and its key.
    pub identity: Option<(&'a Path, &'a Path)>,
    /// Where TLS secrets are logged.
    pub keylog: Option<Arc<dyn rustls::KeyLog>>,
    /// The flags named in errors.
    pub flags: ClientFlags,
}

impl Default for ClientFlags {
    fn default() -> Self {
        UPSTREAM_FLAGS
    }
}

impl std::fmt::Debug for TlsClientOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClientOptions")
            .field("ca", &self.ca)
            .field("name", &self.name)
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

/// icaptap as a TLS server (the proxy's client leg, the mock sensor):
/// with `identity` (certificate chain and key files), or with a
/// certificate generated for `names` (default: localhost, 127.0.0.1, ::1
/// and `listen` when it is a specific address).
pub fn tls_server(
    identity: Option<(&Path, &Path)>,
    names: Vec<String>,
    listen: IpAddr,
    keylog: Option<Arc<dyn rustls::KeyLog>>,
) -> Result<TlsListen, TlsSetupError> {
    let (certs, key, generated) = match identity {
        Some((cert, key)) => (
            read_certs("--tls-cert", cert)?,
            read_key("--tls-key", key)?,
            None,
        ),
        None => {
            let mut names = names;
            if names.is_empty() {
                names = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
                if !listen.is_unspecified() && !names.contains(&listen.to_string()) {
                    names.push(listen.to_string());
                }
            }
            let made = self_signed::generate(names)?;
            let certs = vec![CertificateDer::from(made.der.clone())];
            let key = PrivateKeyDer::Pkcs8(made.key_der.clone().into());
            (certs, key, Some(made))
        }
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsSetupError::Rustls {
            what: "TLS for the ICAP client",
            source,
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| TlsSetupError::Rustls {
            what: "--tls-cert and --tls-key",
            source,
        })?;
    if let Some(keylog) = keylog {
        config.key_log = keylog;
    }
    Ok(TlsListen {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        generated: generated.map(|g: GeneratedCert| g),
    })
}

/// icaptap as a TLS client of a sensor (the proxy's sensor leg, `icaptap
/// client --tls`).
pub fn tls_client(options: TlsClientOptions<'_>) -> Result<TlsUpstream, TlsSetupError> {
    let TlsClientOptions {
        ca,
        name,
        insecure,
        identity,
        keylog,
        flags,
    } = options;
    let server_name = ServerName::try_from(name.clone()).map_err(|_| TlsSetupError::BadName {
        flag: flags.name,
        name: name.clone(),
    })?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsSetupError::Rustls {
            what: "TLS to the sensor",
            source,
        })?;
    let verify = !insecure;
    let builder = if verify {
        let mut roots = RootCertStore::empty();
        match ca {
            Some(path) => {
                for cert in read_certs(flags.ca, path)? {
                    roots.add(cert).map_err(|source| TlsSetupError::Rustls {
                        what: flags.ca,
                        source,
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found
                        .errors
                        .first()
                        .map_or_else(|| "no certificates".to_owned(), ToString::to_string);
                    return Err(TlsSetupError::NoSystemRoots {
                        flag: flags.ca,
                        why,
                    });
                }
            }
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    };
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                read_certs(flags.identity.0, cert)?,
                read_key(flags.identity.1, key)?,
            )
            .map_err(|source| TlsSetupError::Rustls {
                what: "the client certificate and its key",
                source,
            })?,
        None => builder.with_no_client_auth(),
    };
    if let Some(keylog) = keylog {
        config.key_log = keylog;
    }
    Ok(TlsUpstream {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        server_name,
        verify,
        flags,
    })
}

/// `--upstream-tls-insecure`: every certificate is accepted; signatures
/// are still checked, so the session is encrypted to whoever holds the key.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
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
        dss: &DigitallySignedStruct,
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
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
