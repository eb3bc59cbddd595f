//! The command line: one subcommand per job (proxy, demo, analyze, report,
//! bundle, sensor, client, replay, check). Each job's options live beside the
//! code that uses them; this file only dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// icaptap: see every ICAP exchange between a web proxy and its sensor.
#[derive(Debug, Parser)]
#[command(name = "icaptap", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The jobs icaptap does.
#[derive(Debug, Subcommand)]
pub enum Command {}

/// Entry point of the `icaptap` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {}
}
