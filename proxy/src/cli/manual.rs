//! Shell completions and man pages, generated from the clap definitions at
//! run time (subcommands `icaptap completions SHELL` and `icaptap manpage
//! [--dir DIR]`, listed in `--help`), so they can never drift from the real options and
//! environment variables; each page adds ENVIRONMENT, EXIT STATUS (from
//! [`super::exit`]) and EXAMPLES to what clap renders. Packaging needs
//! no build step: `icaptap completions bash >
//! /usr/share/bash-completion/completions/icaptap`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Subcommands for packagers, listed in `--help` and icaptap(1) but given
/// no page of their own.
const PACKAGING: [&str; 2] = ["completions", "manpage"];

use clap::CommandFactory;

use super::{exit, Cli, CompletionsArgs, ManpageArgs};

/// The shells completions are written for.
pub use clap_complete::Shell;

/// A man page could not be written.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot write the man page {path}: {source}; check the --dir directory exists and is writable"
)]
pub struct ManualError {
    /// The page.
    pub path: PathBuf,
    /// The cause.
    pub source: std::io::Error,
}

/// Writes the completion script for `shell` to `out`.
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "icaptap", out);
}

/// `icaptap completions SHELL`: the script on standard output (a reader
/// that stops early, `| head`, is no error).
pub fn completions(args: &CompletionsArgs) -> ExitCode {
    // Rendered first: clap_complete panics on a failed write.
    let mut script = Vec::new();
    write_completions(args.shell, &mut script);
    match crate::output::terminal::print_output(&script) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            crate::output::terminal::write_notice(
                crate::output::terminal::NoticeLevel::Error,
                format_args!("icaptap: error: cannot write the completions: {e}"),
            );
            ExitCode::from(exit::FAILED)
        }
    }
}

/// Example command lines per page (`icaptap` for icaptap(1)): what a user
/// types first.
const EXAMPLES: &[(&str, &[(&str, &str)])] = &[
    (
        "icaptap",
        &[
            ("See what icaptap records, on loopback:", "icaptap demo"),
            (
                "Sit between a web proxy and its sensor:",
                "icaptap proxy --listen 0.0.0.0:1344 --upstream sensor.example:1344",
            ),
            ("Analyse a capture:", "icaptap analyze capture.pcapng"),
        ],
    ),
    (
        "proxy",
        &[
            (
                "Forward to the sensor, output in ./icaptap-YYYYMMDD-HHMMSS:",
                "icaptap proxy --listen 0.0.0.0:1344 --upstream sensor.example:1344",
            ),
            (
                "Run for an hour from the sample config, one directory per start:",
                "icaptap proxy --config /etc/icaptap/icaptap.toml --duration 1h --out /var/lib/icaptap/run-{time}",
            ),
        ],
    ),
    (
        "analyze",
        &[
            ("Analyse rotated captures as one:", "icaptap analyze a.pcap b.pcap.gz"),
            (
                "Read a capture from standard input:",
                "tcpdump -i any -w - port 1344 | icaptap analyze -",
            ),
            (
                "Match the client's capture with the sensor's:",
                "icaptap analyze client.pcap --peer sensor.pcap",
            ),
        ],
    ),
    (
        "demo",
        &[
            ("The first run:", "icaptap demo"),
            ("icaptap on a port of your choice:", "icaptap demo --port 11344"),
        ],
    ),
    (
        "check",
        &[(
            "Check a vendor's proxy at 192.0.2.8:3128, icaptap on port 1344:",
            "icaptap check --proxy 192.0.2.8:3128 --port 1344",
        )],
    ),
    (
        "sensor",
        &[("A mock sensor on port 1344:", "icaptap sensor --listen 127.0.0.1:1344")],
    ),
    (
        "report",
        &[("Write report.html of a run:", "icaptap report icaptap-20260101-120000")],
    ),
    (
        "bundle",
        &[(
            "Pack a run for a ticket, addresses and secrets redacted:",
            "icaptap bundle icaptap-20260101-120000 --redact",
        )],
    ),
];

/// Escapes `text` for roff: backslashes, hyphens (so `--out` copies as
/// typed), and a leading dot or quote that would read as a request.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// The ENVIRONMENT, EXIT STATUS and EXAMPLES sections of the page of
/// `cmd` (`name` is the subcommand, `icaptap` for the main page).
fn extra_sections(cmd: &clap::Command, name: &str) -> String {
    let mut page = String::from(".SH ENVIRONMENT\n");
    let mut add = |var: &str, what: &str| {
        page.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", roff(var), roff(what)));
    };
    add(
        "RUST_LOG",
        "The level of operational logs on standard error (default warn,icaptap=info), \
         e.g. RUST_LOG=debug.",
    );
    for arg in cmd.get_arguments() {
        if let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) {
            let var = var.to_string_lossy();
            add(
                &var,
                &format!("The same as --{long}; a flag on the command line wins."),
            );
        }
    }
    page.push_str(".SH \"EXIT STATUS\"\n");
    for (code, what) in exit::EXIT_STATUS {
        page.push_str(&format!(".TP\n\\fB{code}\\fR\n{}\n", roff(what)));
    }
    if let Some((_, examples)) = EXAMPLES.iter().find(|(page, _)| *page == name) {
        page.push_str(".SH EXAMPLES\n");
        for (what, line) in *examples {
            page.push_str(&format!(
                ".PP\n{}\n.PP\n.RS 4\n\\fB{}\\fR\n.RE\n",
                roff(what),
                roff(line)
            ));
        }
    }
    page
}

/// Renders the page of `cmd` (subcommand `name`), the sections clap
/// knows and icaptap's own before VERSION.
fn render(cmd: clap::Command, name: &str) -> Result<Vec<u8>, std::io::Error> {
    let extra = extra_sections(&cmd, name);
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut page)?;
    let page = String::from_utf8_lossy(&page).into_owned();
    let page = match page.find("\n.SH VERSION") {
        Some(at) => format!("{}\n{extra}{}", &page[..at], &page[at + 1..]),
        None => page + &extra,
    };
    Ok(page.into_bytes())
}

/// `icaptap manpage`: icaptap.1 on standard output, or every page into a
/// directory; returns the pages written.
pub fn manpage(args: &ManpageArgs) -> Result<Vec<PathBuf>, ManualError> {
    let cmd = Cli::command();
    let Some(dir) = &args.dir else {
        let path = PathBuf::from("-");
        let page = render(cmd, "icaptap").map_err(|source| ManualError {
            path: path.clone(),
            source,
        })?;
        crate::output::terminal::print_output(&page)
            .map_err(|source| ManualError { path, source })?;
        return Ok(Vec::new());
    };
    let mut written = Vec::new();
    let write = |path: &Path, cmd: clap::Command, name: &str| -> Result<(), ManualError> {
        let err = |source| ManualError {
            path: path.to_path_buf(),
            source,
        };
        std::fs::write(path, render(cmd, name).map_err(err)?).map_err(err)
    };
    let main = dir.join("icaptap.1");
    write(&main, cmd.clone(), "icaptap")?;
    written.push(main);
    // The packaging commands are named in icaptap(1); they get no page.
    let pages = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && !PACKAGING.contains(&s.get_name()));
    for sub in pages {
        let name = format!("icaptap-{}", sub.get_name());
        let path = dir.join(format!("{name}.1"));
        // clap names are `&'static str` without its `string` feature; a
        // handful of short names leaked once by a one-shot command is the
        // smaller cost.
        let name: &'static str = Box::leak(name.into_boxed_str());
        // The global options (--log-format) belong to every page.
        let mut page = sub.clone().name(name);
        for global in cmd.get_arguments().filter(|a| a.is_global_set()) {
            page = page.arg(global.clone());
        }
        write(&path, page, sub.get_name())?;
        written.push(path);
    }
    Ok(written)
}
