//! `icaptap check [SUITE.toml]`: a test suite for a proxy vendor. icaptap
//! plays the sensor (mock sensor behind the in-process icaptap proxy, so
//! every exchange is recorded) and the web origin, downloads test files
//! through the vendor's HTTP proxy, and checks what the user sees: an
//! infected download blocked, a clean file intact, a slow or dead sensor
//! handled as the suite expects, identity headers sent, the preview
//! honoured (RFC 3507 section 4.5) and Max-Connections respected (section
//! 4.10.2). It prints a table, writes JUnit XML, and its exit status tells
//! pass (0), fail (1) or could not test (2: the check could not start, or
//! the vendor's proxy could not be reached).
//!
//! - [`suite`]: the suite file and the sensor scenario derived from it;
//! - [`origin`]: the hyper origin serving the test files, EICAR included;
//! - [`download`]: the hyper client going through the vendor's proxy;
//! - [`runner`]: starting everything, driving the cases;
//! - [`judge`]: each case's verdict from the downloads and the records;
//! - [`report`], [`junit`]: the table and the JUnit XML.

pub mod download;
pub mod judge;
pub mod junit;
pub mod origin;
pub mod report;
pub mod runner;
pub mod suite;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use junit::junit_xml;
pub use report::{CaseResult, CheckReport, CheckStatus};
pub use runner::CheckEnv;
pub use suite::{Case, Check, DownPolicy, Suite, SuiteError, DEFAULT_SUITE};

use crate::jobs::proxy::ProxyError;
use crate::output::directory::out_dir;
use crate::output::terminal::{say, sayln};
use crate::toolkit::sensor::SensorError;
use crate::units::parse_duration;

/// Options of `icaptap check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The suite file (default: the shipped suite, see --print-suite).
    pub suite: Option<PathBuf>,
    /// The vendor's HTTP proxy, overriding the suite's `proxy`.
    #[arg(long)]
    pub proxy: Option<SocketAddr>,
    /// icaptap's ICAP address, overriding the suite's `sensor.listen`.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// icaptap's ICAP port, keeping the address of `sensor.listen` (or
    /// --listen): the port the vendor's ICAP service URLs name.
    #[arg(long)]
    pub port: Option<u16>,
    /// Write a JUnit XML report to this file.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Output directory for the recorded exchanges, new or empty: one
    /// holding an earlier run is refused (default: ./icaptap-YYYYMMDD-HHMMSS).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Before the first case, wait this long for the vendor's OPTIONS
    /// probe (start icaptap check, then start or reload the vendor).
    #[arg(long, value_parser = parse_duration)]
    pub wait_options: Option<Duration>,
    /// Print the default suite and exit.
    #[arg(long)]
    pub print_suite: bool,
}

/// Why a check could not run (a failed case is not an error).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The suite is invalid.
    #[error(transparent)]
    Suite(Box<SuiteError>),
    /// The sensor could not start.
    #[error("the check's sensor: {0}")]
    Sensor(#[from] SensorError),
    /// icaptap's proxy in front of the sensor could not start or stop.
    #[error("icaptap in front of the check's sensor: {0}")]
    Proxy(Box<ProxyError>),
    /// The origin could not listen.
    #[error("the check's web origin cannot listen on {addr}: {source}; pick another [origin] listen address")]
    Origin {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The recorded exchanges could not be read back.
    #[error("cannot read the recorded {path}: {what}")]
    Records {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        what: String,
    },
    /// The JUnit report could not be written.
    #[error("cannot write the JUnit report {path}: {source}; check the --junit path")]
    Junit {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The suite could not be printed (--print-suite).
    #[error("cannot write the suite to standard output: {0}")]
    Stdout(std::io::Error),
    /// The async runtime could not start.
    #[error("cannot start the async runtime for the check: {0}")]
    Runtime(std::io::Error),
    /// The suite's TLS (`sensor.tls`) cannot be set up.
    #[error("the check's TLS (sensor.tls): {0}")]
    Tls(Box<crate::forward::tls::TlsSetupError>),
}

impl From<SuiteError> for CheckError {
    fn from(e: SuiteError) -> Self {
        CheckError::Suite(Box::new(e))
    }
}

impl From<ProxyError> for CheckError {
    fn from(e: ProxyError) -> Self {
        // Boxed: the proxy's error is large and this one travels far.
        CheckError::Proxy(Box::new(e))
    }
}

/// Runs `icaptap check`; returns the run's status (its exit code).
pub fn run(args: CheckArgs) -> Result<CheckStatus, CheckError> {
    if args.print_suite {
        crate::output::terminal::print_output(DEFAULT_SUITE.as_bytes())
            .map_err(CheckError::Stdout)?;
        return Ok(CheckStatus::Passed);
    }
    let mut suite = match &args.suite {
        Some(path) => Suite::load(path)?,
        None => Suite::default_suite()?,
    };
    if let Some(p) = args.proxy {
        suite.proxy = p;
    }
    if let Some(l) = args.listen {
        suite.sensor.listen = l;
    }
    if let Some(port) = args.port {
        suite.sensor.listen.set_port(port);
    }
    let out = out_dir(args.out.as_deref());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CheckError::Runtime)?;
    let report = runtime.block_on(async {
        let env = CheckEnv::start(suite.clone(), &out).await?;
        sayln!(
            "icaptap check: {} ({} cases)\n  {}",
            suite.name,
            suite.cases.len(),
            env.vendor_setup()
        );
        if let Some(limit) = args.wait_options {
            sayln!("  waiting up to {limit:?} for the vendor's OPTIONS request...");
            if !env.wait_for_options(limit).await {
                sayln!("  no OPTIONS came; running anyway (is the vendor pointed at icaptap?)");
            }
        }
        env.run(None).await
    })?;
    say!("{report}");
    if let Some(path) = &args.junit {
        std::fs::write(path, junit_xml(&report)).map_err(|source| CheckError::Junit {
            path: path.clone(),
            source,
        })?;
    }
    Ok(report.status())
}
