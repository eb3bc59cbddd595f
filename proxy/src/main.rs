//! The `icaptap` command: see `icaptap --help`. Reads the command line
//! (and a `--config` file), sets up logging and runs the job it names.

use std::process::ExitCode;

use icaptap::cli::{self, manual, Cli, Command};

/// Prints an error the way every job reports a failure, and picks the exit
/// status (2 for a failure to start or run).
fn fail(error: &dyn std::error::Error) -> ExitCode {
    use std::io::Write;
    // stderr may be gone (SIGHUP): the exit status still says it.
    let mut stderr = std::io::stderr();
    let _ = writeln!(stderr, "icaptap: error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = writeln!(stderr, "  caused by: {cause}");
        source = cause.source();
    }
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = match icaptap::config::parse_with_config_file::<Cli, _, _>(std::env::args_os()) {
        Ok(cli) => cli,
        Err(icaptap::config::ConfigFileError::Cli(e)) => e.exit(),
        Err(e) => return fail(&e),
    };
    // The demo prints its own story; its parts only speak up when wrong.
    let default_level = match cli.command {
        Command::Demo(_) => "warn",
        _ => "warn,icaptap=info",
    };
    cli::init_logging(cli.log_format, default_level);
    match cli.command {
        Command::Proxy(args) => match icaptap::jobs::proxy::run(*args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Analyze(args) => match icaptap::jobs::analyze::run(args) {
            // Nothing in the captures was ICAP: said on the console.
            Ok(summary) if summary.connections == 0 => ExitCode::from(1),
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Demo(args) => icaptap::toolkit::demo::demo_main(args),
        Command::Sensor(args) => icaptap::toolkit::sensor_main(args),
        Command::Client(args) => icaptap::toolkit::client_main(args),
        Command::Replay(args) => match icaptap::toolkit::replay::run(args) {
            Ok(report) if report.difference_count() == 0 => ExitCode::SUCCESS,
            Ok(_) => ExitCode::from(1),
            Err(e) => fail(&e),
        },
        Command::Check(args) => match icaptap::toolkit::check::run(args) {
            Ok(status) => ExitCode::from(status.exit_code()),
            Err(e) => fail(&e),
        },
        Command::Report(args) => match icaptap::evidence::report(args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Bundle(args) => match icaptap::evidence::bundle::run(args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Clean(args) => match icaptap::evidence::clean::run(args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Export(args) => match icaptap::evidence::export::run(args) {
            // Nothing matched: said on stderr, nothing written.
            Ok(outcome) if outcome.exchanges == 0 => ExitCode::from(1),
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Completions(args) => manual::completions(&args),
        Command::Manpage(args) => match manual::manpage(&args) {
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
