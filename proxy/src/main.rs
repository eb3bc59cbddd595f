//! The `icaptap` command: see `icaptap --help`. Reads the command line
//! (and a `--config` file), sets up logging and runs the job it names.

use std::process::ExitCode;

use icaptap::cli::{self, exit, manual, Cli, Command};
use icaptap::output::terminal::{self, NoticeLevel};

/// Prints an error the way every job reports a failure, and picks the exit
/// status (2 for a failure to start or run, see `cli::exit`).
fn fail(error: &dyn std::error::Error) -> ExitCode {
    let mut causes = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    // stderr may be gone (SIGHUP): the exit status still says it.
    let text = std::iter::once(format!("icaptap: error: {error}"))
        .chain(causes.iter().map(|c| format!("  caused by: {c}")))
        .collect::<Vec<_>>()
        .join("\n");
    if terminal::json_notices() {
        terminal::notice_with(
            NoticeLevel::Error,
            format_args!("icaptap: error: {error}"),
            serde_json::json!({ "causes": causes }),
        );
    } else {
        terminal::write_notice(NoticeLevel::Error, format_args!("{text}"));
    }
    ExitCode::from(exit::FAILED)
}

/// Whether the command line or the environment asks for JSON logs, read
/// before the command line is understood: a usage error is then one JSON
/// line too.
fn json_asked() -> bool {
    // args_os: a file name that is not UTF-8 must not panic here.
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let flag = args
        .windows(2)
        .any(|w| w[0] == "--log-format" && w[1] == "json")
        || args.iter().any(|a| a == "--log-format=json");
    flag || std::env::var("ICAPTAP_LOG_FORMAT").is_ok_and(|v| v == "json")
}

/// A command line clap refused: its usage message (exit status 2), or
/// the help and version it was asked for (0); with `--log-format json` a
/// usage error is one JSON object.
fn usage(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let code = match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => exit::OK,
        _ => exit::FAILED,
    };
    if code == exit::OK || !json_asked() {
        // clap prints help to stdout, errors to stderr; a closed stdout
        // (`icaptap --help | head -1`) is no failure.
        let _ = error.print();
        return ExitCode::from(code);
    }
    terminal::set_json_notices(true);
    let text = error.render().to_string();
    terminal::write_notice(
        NoticeLevel::Error,
        format_args!("icaptap: {}", text.trim_end()),
    );
    ExitCode::from(exit::FAILED)
}

fn main() -> ExitCode {
    let cli = match icaptap::config::parse_with_config_file::<Cli, _, _>(std::env::args_os()) {
        Ok(cli) => cli,
        Err(icaptap::config::ConfigFileError::Cli(e)) => return usage(&e),
        Err(e) => {
            terminal::set_json_notices(json_asked());
            return fail(&e);
        }
    };
    // The demo prints its own story; its parts only speak up when wrong.
    let default_level = match cli.command {
        Command::Demo(_) => "warn",
        _ => "warn,icaptap=info",
    };
    cli::init_logging(cli.log_format, default_level);
    icaptap::progress::set_quiet(cli.quiet);
    match cli.command {
        Command::Proxy(args) => match icaptap::jobs::proxy::run(*args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Analyze(args) => match icaptap::jobs::analyze::run(args) {
            // Nothing in the captures was ICAP: said on the console.
            Ok(summary) if summary.connections == 0 => ExitCode::from(exit::FOUND),
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Demo(args) => icaptap::toolkit::demo::demo_main(args),
        Command::Sensor(args) => icaptap::toolkit::sensor_main(args),
        Command::Client(args) => icaptap::toolkit::client_main(args),
        Command::Replay(args) => match icaptap::toolkit::replay::run(args) {
            Ok(report) if report.difference_count() == 0 => ExitCode::SUCCESS,
            Ok(_) => ExitCode::from(exit::FOUND),
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
                    terminal::write_notice(
                        NoticeLevel::Info,
                        format_args!("icaptap: wrote {}", page.display()),
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
    }
}
