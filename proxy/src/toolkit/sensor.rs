//! The mock ICAP sensor (`icaptap sensor`): an ICAP server (RFC 3507) that
//! answers OPTIONS, REQMOD and RESPMOD on any service path according to a
//! [`Scenario`], including deliberate misbehaviour, so proxy vendors and
//! icaptap itself can be tested against a sensor that fails on purpose.
//!
//! The server has the mini-redis shape: a semaphore bounds the connections
//! served at once, a cancellation token stops the accept loop and every
//! handler, and `run` waits for handlers to drain. Parsing is
//! `icap_codec::Decoder`'s; this module only decides and answers.
//!
//! With `--tls` it serves ICAP over TLS through the proxy's own TLS server
//! (`forward::tls`): a certificate given, or one it generates, prints the
//! SHA-256 of and writes to a PEM file for the client to trust.

mod answers;
mod connection;
mod malformed;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::scenario::{Scenario, ScenarioError, DEFAULT_SCENARIO};
use crate::forward::tls::{tls_server, LegStream, TlsListen, TlsSetupError};
use crate::output::terminal::{notice, sayln};

pub use answers::reason_phrase;

/// How long `run` waits for connection handlers after shutdown is asked.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Time a client has for its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where `icaptap sensor --tls` writes the certificate it generated, in
/// the current directory, unless `--tls-cert-out` says otherwise.
pub const SENSOR_CERT_FILE: &str = "icaptap-sensor-tls-cert.pem";

/// Why the sensor could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}; is another ICAP server using the port, or is the address not local?")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The listening socket's address could not be read.
    #[error("cannot read the sensor's listening address: {0}")]
    LocalAddr(std::io::Error),
    /// The scenario is invalid.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The TLS options cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The generated certificate could not be written.
    #[error("cannot write the sensor's generated TLS certificate to {path}: {source}; give another file with --tls-cert-out")]
    TlsCertificate {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Counters of what the sensor did, readable while it runs.
#[derive(Debug, Default)]
pub struct SensorStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// REQMOD/RESPMOD requests decided (this also drives ISTag changes).
    pub requests: AtomicU64,
    /// OPTIONS requests answered.
    pub options: AtomicU64,
    /// `100 Continue` answers sent.
    pub continues: AtomicU64,
    /// Requests refused as malformed (400) or unsupported (404/405/501/505).
    pub refused: AtomicU64,
}

impl SensorStats {
    /// A counter's current value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A bound, not yet running mock sensor.
#[derive(Debug)]
pub struct Sensor {
    listener: TcpListener,
    addr: SocketAddr,
    scenario: Arc<Scenario>,
    stats: Arc<SensorStats>,
    tls: Option<Arc<TlsListen>>,
}

impl Sensor {
    /// Opens the listening socket (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, scenario: Scenario) -> Result<Sensor, SensorError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SensorError::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(SensorError::LocalAddr)?;
        Ok(Sensor {
            listener,
            addr,
            scenario: Arc::new(scenario),
            stats: Arc::new(SensorStats::default()),
            tls: None,
        })
    }

    /// Serves ICAP over TLS with `tls` (see `forward::tls::tls_server`).
    pub fn with_tls(mut self, tls: Arc<TlsListen>) -> Sensor {
        self.tls = Some(tls);
        self
    }

    /// The address the sensor listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The sensor's counters.
    pub fn stats(&self) -> Arc<SensorStats> {
        Arc::clone(&self.stats)
    }

    /// Serves until `shutdown` is cancelled, then closes every connection
    /// (waiting at most a few seconds for handlers to finish).
    pub async fn run(self, shutdown: CancellationToken) {
        let limit = Arc::new(Semaphore::new(self.scenario.limits.max_connections));
        let mut handlers = JoinSet::new();
        loop {
            while handlers.try_join_next().is_some() {}
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = Arc::clone(&limit).acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "sensor: accept failed; retrying");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            self.stats.connections.fetch_add(1, Ordering::Relaxed);
            let scenario = Arc::clone(&self.scenario);
            let stats = Arc::clone(&self.stats);
            let token = shutdown.child_token();
            let tls = self.tls.clone();
            handlers.spawn(async move {
                let stream = match tls {
                    None => LegStream::Plain(stream),
                    Some(tls) => match tls.accept(stream, TLS_HANDSHAKE_TIMEOUT).await {
                        Ok((stream, _)) => stream,
                        Err(failed) => {
                            tracing::warn!(%peer, error = %failed.error, "sensor: no TLS");
                            return;
                        }
                    },
                };
                connection::serve(stream, peer, scenario, stats, token).await;
                drop(permit);
            });
        }
        drop(self.listener);
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while handlers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            handlers.abort_all();
        }
    }

    /// Runs the sensor on the current runtime; the handle stops it.
    pub fn spawn(self) -> SensorHandle {
        let addr = self.addr;
        let stats = self.stats();
        let token = CancellationToken::new();
        let task = tokio::spawn(self.run(token.clone()));
        SensorHandle {
            addr,
            stats,
            token,
            task,
        }
    }
}

/// A running sensor, for tests and the demo.
#[derive(Debug)]
pub struct SensorHandle {
    addr: SocketAddr,
    stats: Arc<SensorStats>,
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl SensorHandle {
    /// The address the sensor listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The sensor's counters.
    pub fn stats(&self) -> &SensorStats {
        &self.stats
    }

    /// Stops the sensor and waits until every connection is closed.
    pub async fn shutdown(self) {
        self.token.cancel();
        // A handler that panicked is already reported by the runtime;
        // nothing more to do with the join result here.
        let _ = self.task.await;
    }
}

/// `icaptap sensor`: a mock ICAP server driven by a scenario.
#[derive(Debug, clap::Args)]
pub struct SensorArgs {
    /// Address to listen on (loopback by default; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:1344")]
    pub listen: SocketAddr,
    /// Scenario file (TOML); the built-in scenario when absent.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Print the built-in scenario and exit.
    #[arg(long)]
    pub print_scenario: bool,
    /// ICAP over TLS.
    #[command(flatten)]
    pub tls: SensorTlsArgs,
}

/// The TLS options of `icaptap sensor`: those of `icaptap proxy`'s client
/// leg, and where a generated certificate goes.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct SensorTlsArgs {
    /// Serve ICAP over TLS (ICAPS), with --tls-cert/--tls-key or with a
    /// certificate the sensor generates, prints the SHA-256 of, and writes
    /// to --tls-cert-out for clients to trust.
    #[arg(long)]
    pub tls: bool,
    /// The sensor's certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Names and addresses the generated certificate is valid for (repeat;
    /// default: localhost, 127.0.0.1, ::1 and the --listen address).
    #[arg(long = "tls-name", value_name = "NAME", value_delimiter = ',')]
    pub tls_names: Vec<String>,
    /// Where the generated certificate is written (PEM; the key stays in
    /// memory).
    #[arg(long, value_name = "FILE", default_value = SENSOR_CERT_FILE)]
    pub tls_cert_out: PathBuf,
}

impl SensorTlsArgs {
    /// The TLS server for a sensor on `listen`, or `None` for plain ICAP.
    pub fn setup(&self, listen: std::net::IpAddr) -> Result<Option<TlsListen>, TlsSetupError> {
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
            return Ok(None);
        }
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            _ => None,
        };
        tls_server(identity, self.tls_names.clone(), listen, None).map(Some)
    }
}

/// Runs `icaptap sensor` until Ctrl-C.
pub fn sensor_main(args: SensorArgs) -> ExitCode {
    if args.print_scenario {
        return match crate::output::terminal::print_output(DEFAULT_SCENARIO.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                notice!(Error, "icaptap sensor: cannot write the scenario: {e}");
                ExitCode::from(2)
            }
        };
    }
    match run_standalone(args) {
        Ok(()) => ExitCode::SUCCESS,
        // A sensor that cannot start is a start-up error, as for every job.
        Err(e) => {
            notice!(Error, "icaptap sensor: {e}");
            ExitCode::from(2)
        }
    }
}

fn run_standalone(args: SensorArgs) -> Result<(), SensorError> {
    let scenario = match &args.scenario {
        Some(path) => Scenario::load(path)?,
        None => Scenario::default_scenario()?,
    };
    let scenario_services: Vec<String> = scenario.services.iter().map(|s| s.path.clone()).collect();
    let tls = args.tls.setup(args.listen.ip())?;
    if let Some(cert) = tls.as_ref().and_then(|t| t.generated.as_ref()) {
        let path = &args.tls.tls_cert_out;
        std::fs::write(path, &cert.pem).map_err(|source| SensorError::TlsCertificate {
            path: path.clone(),
            source,
        })?;
    }
    let runtime = tokio::runtime::Runtime::new().map_err(SensorError::Runtime)?;
    runtime.block_on(async {
        let mut sensor = Sensor::bind(args.listen, scenario).await?;
        let scheme = if tls.is_some() { "icaps" } else { "icap" };
        if let Some(tls) = tls {
            match &tls.generated {
                Some(cert) => sayln!(
                    "TLS with a certificate the sensor generated for {} (SHA-256 {}), written to {}: \
                     make the client trust it (icaptap client --tls --tls-ca FILE; icaptap proxy \
                     --upstream-tls --upstream-tls-ca FILE; Squid: tls-cafile=FILE)",
                    cert.names.join(", "),
                    cert.sha256,
                    args.tls.tls_cert_out.display()
                ),
                None => sayln!("TLS with --tls-cert"),
            }
            sensor = sensor.with_tls(Arc::new(tls));
        }
        let addr = sensor.local_addr();
        let origin = args
            .scenario
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in".to_owned());
        let services: Vec<&str> = scenario_services.iter().map(String::as_str).collect();
        sayln!(
            "icaptap sensor listening on {scheme}://{addr}/ (services {}; scenario {origin}); Ctrl-C stops it",
            services.join(", ")
        );
        let token = CancellationToken::new();
        let stopper = token.clone();
        tokio::spawn(async move {
            // If Ctrl-C cannot be watched the sensor runs until killed.
            if tokio::signal::ctrl_c().await.is_ok() {
                stopper.cancel();
            }
        });
        sensor.run(token).await;
        Ok(())
    })
}
