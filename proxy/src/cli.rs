//! The command line: one subcommand per job (proxy, demo, analyze, report,
//! bundle, sensor, client, replay, check). Each job's options live beside the
//! code that uses them; this file only dispatches and sets up logging.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// icaptap: see every ICAP exchange between a web proxy and its sensor.
#[derive(Debug, Parser)]
#[command(name = "icaptap", version, about, long_about = None)]
pub struct Cli {
    /// Format of operational logs on stderr (RUST_LOG sets the level).
    #[arg(long, global = true, env = "ICAPTAP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How operational logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// The jobs icaptap does.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Forward ICAP between a client and a sensor, decoding and recording
    /// every exchange (the main job).
    Proxy(Box<crate::jobs::proxy::ProxyArgs>),
    /// Analyse tcpdump captures (one side, or both with --peer) with the same
    /// decoder as the proxy.
    Analyze(crate::analyze::AnalyzeArgs),
    /// Run a mock sensor, icaptap and sample traffic on loopback, and show
    /// what icaptap records (start here).
    Demo(crate::toolkit::demo::DemoArgs),
    /// A mock ICAP sensor answering by scenario, misbehaving on purpose.
    Sensor(crate::toolkit::SensorArgs),
    /// Send ICAP requests and print a readable verdict, or generate load.
    Client(crate::toolkit::ClientArgs),
    /// Re-send a recording's client requests to a sensor and list the
    /// verdicts that differ (exit status 1 on any difference).
    Replay(crate::toolkit::replay::ReplayArgs),
    /// Test a proxy vendor's ICAP integration with a suite: icaptap plays
    /// the sensor and the web origin (exit status 1 when a case fails).
    Check(crate::toolkit::check::CheckArgs),
    /// Write report.html and report.md for a run's output directory.
    Report(crate::evidence::ReportArgs),
    /// Pack a run into a support-ticket archive (.tar.gz), optionally
    /// redacted.
    Bundle(crate::evidence::BundleArgs),
    /// Remove the files a run wrote, when the ticket is done.
    Clean(crate::evidence::CleanArgs),
    /// Write shell completions to standard output (for packaging).
    #[command(hide = true)]
    Completions(crate::ops::manual::CompletionsArgs),
    /// Write the man page(s) (for packaging).
    #[command(hide = true)]
    Manpage(crate::ops::manual::ManpageArgs),
}

/// Sets up operational logging on stderr: `RUST_LOG` picks the level,
/// else `default` (an EnvFilter directive).
pub fn init_logging(format: LogFormat, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Prints an error the way every job reports a failure, and picks the exit
/// status (2 for a failure to start or run).
fn fail(error: &dyn std::error::Error) -> ExitCode {
    eprintln!("icaptap: error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
    ExitCode::from(2)
}

/// Entry point of the `icaptap` binary.
pub fn main() -> ExitCode {
    let cli = match crate::config::parse_with_config_file::<Cli, _, _>(std::env::args_os()) {
        Ok(cli) => cli,
        Err(crate::config::ConfigFileError::Cli(e)) => e.exit(),
        Err(e) => return fail(&e),
    };
    // The demo prints its own story; its parts only speak up when wrong.
    let default_level = match cli.command {
        Command::Demo(_) => "warn",
        _ => "warn,icaptap=info",
    };
    init_logging(cli.log_format, default_level);
    match cli.command {
        Command::Proxy(args) => match crate::jobs::proxy::run(*args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Analyze(args) => match crate::jobs::analyze::run(args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Demo(args) => crate::toolkit::demo::demo_main(args),
        Command::Sensor(args) => crate::toolkit::sensor_main(args),
        Command::Client(args) => crate::toolkit::client_main(args),
        Command::Replay(args) => match crate::toolkit::replay::run(args) {
            Ok(report) if report.difference_count() == 0 => ExitCode::SUCCESS,
            Ok(_) => ExitCode::from(1),
            Err(e) => fail(&e),
        },
        Command::Check(args) => match crate::toolkit::check::run(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => fail(&e),
        },
        Command::Report(args) => match crate::evidence::report(args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Bundle(args) => match crate::evidence::bundle::run(args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Clean(args) => match crate::evidence::clean::run(args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Completions(args) => crate::ops::manual::completions(&args),
        Command::Manpage(args) => match crate::ops::manual::manpage(&args) {
            Ok(pages) => {
                for page in pages {
                    eprintln!("icaptap: wrote {}", page.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
    }
}
