//! Shell completions and man pages, generated from the clap definitions at
//! run time (subcommands `icaptap completions SHELL` and `icaptap manpage
//! [--dir DIR]`, listed in `--help`), so they can never drift from the real options and
//! packaging needs no build step: `icaptap completions bash >
//! /usr/share/bash-completion/completions/icaptap`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Subcommands for packagers, listed in `--help` and icaptap(1) but given
/// no page of their own.
const PACKAGING: [&str; 2] = ["completions", "manpage"];

use clap::CommandFactory;

use super::{Cli, CompletionsArgs, ManpageArgs};

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

/// `icaptap completions SHELL`: the script on standard output.
pub fn completions(args: &CompletionsArgs) -> ExitCode {
    write_completions(args.shell, &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// Renders the page of `cmd`.
fn render(cmd: clap::Command) -> Result<Vec<u8>, std::io::Error> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut page)?;
    Ok(page)
}

/// `icaptap manpage`: icaptap.1 on standard output, or every page into a
/// directory; returns the pages written.
pub fn manpage(args: &ManpageArgs) -> Result<Vec<PathBuf>, ManualError> {
    let cmd = Cli::command();
    let Some(dir) = &args.dir else {
        let path = PathBuf::from("-");
        let page = render(cmd).map_err(|source| ManualError {
            path: path.clone(),
            source,
        })?;
        std::io::stdout()
            .write_all(&page)
            .map_err(|source| ManualError { path, source })?;
        return Ok(Vec::new());
    };
    let mut written = Vec::new();
    let write = |path: &Path, cmd: clap::Command| -> Result<(), ManualError> {
        let err = |source| ManualError {
            path: path.to_path_buf(),
            source,
        };
        std::fs::write(path, render(cmd).map_err(err)?).map_err(err)
    };
    let main = dir.join("icaptap.1");
    write(&main, cmd.clone())?;
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
        write(&path, sub.clone().name(name))?;
        written.push(path);
    }
    Ok(written)
}
