//! The command line: one subcommand per job (proxy, demo, analyze, report,
//! bundle, export, sensor, client, replay, check). Each job's options live beside the
//! code that uses them; this module only names the jobs and sets up logging.
//! The `icaptap` binary (`main.rs`) runs the job named; [`manual`] renders
//! completions and man pages from these definitions; [`exit`] is the exit
//! status table every job keeps to. `--version` names the git commit the
//! binary was built from (`build.rs`).

pub mod exit;
pub mod manual;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// icaptap: see every ICAP exchange between a web proxy and its sensor.
#[derive(Debug, Parser)]
#[command(name = "icaptap", version = env!("ICAPTAP_VERSION"), about, long_about = None)]
pub struct Cli {
    /// Format of operational logs on stderr (RUST_LOG sets the level).
    #[arg(long, global = true, env = "ICAPTAP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Print no line per exchange on standard output (everything is
    /// recorded all the same; a service's journal needs no second copy)
    /// and no progress line (long jobs draw one on stderr only when it is
    /// a terminal).
    #[arg(short = 'q', long, global = true, env = "ICAPTAP_QUIET")]
    pub quiet: bool,
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
    /// the sensor and the web origin (exit status 1 when a case fails, 2 when
    /// the check could not test the vendor).
    Check(crate::toolkit::check::CheckArgs),
    /// Write report.html and report.md for a run's output directory.
    Report(crate::evidence::ReportArgs),
    /// Pack a run into a support-ticket archive (.tar.gz), optionally
    /// redacted.
    Bundle(crate::evidence::BundleArgs),
    /// Remove the files a run wrote, when the ticket is done.
    Clean(crate::evidence::CleanArgs),
    /// Write the packets (both legs, with their comments) and records of
    /// the exchanges a filter selects to a capture of their own (exit
    /// status 1 when nothing matches).
    Export(crate::evidence::export::ExportArgs),
    /// Write shell completions to standard output (for packaging).
    Completions(CompletionsArgs),
    /// Write the man page(s) (for packaging).
    Manpage(ManpageArgs),
}

/// Sets up operational logging on stderr: `RUST_LOG` picks the level,
/// else `default` (an EnvFilter directive); icaptap's own notices follow
/// the same format.
pub fn init_logging(format: LogFormat, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A log line stderr cannot take (the terminal went away with SIGHUP)
    // is lost, never a panic that would cost the run its summary.
    // Colour on a terminal only, as the lines per exchange on stdout: a
    // log file or pipe gets no escape codes.
    let colour = crate::live::colour_wanted(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR"),
        std::env::var_os("TERM"),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .log_internal_errors(false);
    crate::output::terminal::set_json_notices(format == LogFormat::Json);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Options of `icaptap completions`.
#[derive(Clone, Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to write completions for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Options of `icaptap manpage`.
#[derive(Clone, Debug, clap::Args)]
pub struct ManpageArgs {
    /// Write icaptap.1 and one page per subcommand (icaptap-proxy.1...) into
    /// this directory instead of icaptap.1 to standard output.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}
