//! `icaptap export RUN_DIR --filter EXPR -w small.pcapng`: the exchanges a
//! filter selects, taken out of a run as a capture of their own (what
//! Wireshark calls "Export Specified Packets") with their records beside
//! it:
//!
//! - `small.pcapng`: every packet, on both legs, of each connection that
//!   carried a selected exchange, copied as stored (packet comments and
//!   all), each capture file's section header and interface blocks before
//!   its packets; a rotated or ring capture set becomes one file of one
//!   section per capture file that had packets to give;
//! - `small.exchanges.jsonl`: the selected exchange records;
//! - `small.connections.jsonl`: the connection records they were on.
//!
//! The unit of a capture is the connection: TCP needs the whole stream to
//! reassemble, so other exchanges of the same connection travel in the
//! capture too, while the records file holds only the selected ones.
//! Nothing is ever written over: each of the three files must be new.
//!
//! - [`packets`]: which packets belong to the selected connections, and
//!   copying them.

pub mod packets;

use std::collections::{BTreeSet, HashSet};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::load::{self, RunFiles};
use super::EvidenceError;
use crate::filter::Filter;
use crate::output::directory::create_new_private_file;
use crate::output::records::{ConnectionRecord, ExchangeRecord};

/// Options of `icaptap export`.
#[derive(Clone, Debug, clap::Args)]
pub struct ExportArgs {
    /// The run's output directory (written by `icaptap proxy` or `demo`
    /// with its capture).
    #[arg(value_name = "RUN_DIR")]
    pub dir: PathBuf,
    /// Which exchanges to export (docs/evidence.md), e.g.
    /// `verdict=blocked and client=10.0.0.0/8`.
    #[arg(long, value_name = "EXPR")]
    pub filter: Filter,
    /// The capture to write (new file); the records go beside it, as
    /// NAME.exchanges.jsonl and NAME.connections.jsonl.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: PathBuf,
}

/// Why an export could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The run could not be read.
    #[error(transparent)]
    Run(#[from] EvidenceError),
    /// The run directory has no capture file.
    #[error("{dir} has no capture (capture.pcapng or capture-NNNN.pcapng): the run was made with --no-pcap, by `icaptap analyze` (whose capture is the file it read), or the capture was removed; `icaptap analyze CAPTURE --filter EXPR` selects from a capture of your own")]
    NoCapture {
        /// The run directory.
        dir: PathBuf,
    },
    /// An output file exists already.
    #[error("{path} exists already; icaptap never writes over evidence: give -w another name")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// An output file could not be written.
    #[error(
        "cannot write {path}: {source}; check free space and permissions, or give -w another place"
    )]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A capture file could not be read.
    #[error("cannot read the capture {path}: {detail}")]
    Capture {
        /// The capture file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The capture files are not all of one format.
    #[error("the run's capture files are of two formats ({first} and {other} in {path}); export them one format at a time with tshark or editcap")]
    MixedFormats {
        /// The first file's format.
        first: &'static str,
        /// The other format.
        other: &'static str,
        /// The file in the other format.
        path: PathBuf,
    },
    /// Exchanges matched but no packet of theirs is in the capture.
    #[error("{exchanges} exchanges match, but the capture holds no packet of their {connections} connections (a ring that turned past them, a capture stopped for disk space, or a capture of one leg that is not theirs); their records are in {dir}")]
    NoPackets {
        /// Matching exchanges.
        exchanges: usize,
        /// Their connections.
        connections: usize,
        /// The run directory.
        dir: PathBuf,
    },
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportOutcome {
    /// Exchange records in the run.
    pub exchanges_in_run: u64,
    /// Exchange records selected (0: nothing matched, nothing written).
    pub exchanges: usize,
    /// Connection records written.
    pub connections: usize,
    /// Selected connections without a connection record (run killed
    /// before they closed): only their client leg could be found.
    pub connections_without_record: Vec<u64>,
    /// Selected connections none of whose packets is in the capture (a
    /// ring that turned past them, a capture stopped for disk space).
    pub connections_without_packets: Vec<u64>,
    /// Packets written.
    pub packets: u64,
    /// Packets read from the run's capture.
    pub packets_read: u64,
    /// Capture files read.
    pub capture_files: usize,
    /// The three files, when written: capture, exchanges, connections.
    pub files: Vec<PathBuf>,
}

/// `small.pcapng` → `small.exchanges.jsonl` / `small.connections.jsonl`.
pub fn record_paths(capture: &Path) -> (PathBuf, PathBuf) {
    let name = capture
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = [".pcapng", ".pcap"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .unwrap_or(&name)
        .to_string();
    (
        capture.with_file_name(format!("{stem}.exchanges.jsonl")),
        capture.with_file_name(format!("{stem}.connections.jsonl")),
    )
}

/// Exports what `filter` selects in the run `dir` into `capture` and the
/// two record files beside it. Nothing matching is not an error: the
/// outcome says 0 exchanges and nothing is written.
pub fn export(dir: &Path, filter: &Filter, capture: &Path) -> Result<ExportOutcome, ExportError> {
    let files = RunFiles::scan(dir)?;
    if files.captures.is_empty() {
        return Err(ExportError::NoCapture {
            dir: dir.to_path_buf(),
        });
    }
    let (exchanges_path, connections_path) = record_paths(capture);
    let outputs = [capture, &exchanges_path, &connections_path];
    if let Some(path) = outputs.iter().find(|p| p.exists()) {
        return Err(ExportError::Exists {
            path: path.to_path_buf(),
        });
    }
    let summary = files.read_summary()?;
    let filter = load::with_run_start(&files, summary.as_ref(), filter.clone())?;
    let mut outcome = ExportOutcome::default();
    let mut exchanges: Vec<ExchangeRecord> = Vec::new();
    load::for_each_exchange(&files, &mut |x| {
        outcome.exchanges_in_run += 1;
        if filter.matches(&x) {
            exchanges.push(x);
        }
    })?;
    outcome.exchanges = exchanges.len();
    if exchanges.is_empty() {
        return Ok(outcome);
    }
    let selected: HashSet<u64> = exchanges.iter().map(|x| x.conn).collect();
    let mut connections: Vec<ConnectionRecord> = Vec::new();
    load::for_each_connection(&files, &mut |c| {
        if selected.contains(&c.conn) {
            connections.push(c);
        }
    })?;
    let recorded: HashSet<u64> = connections.iter().map(|c| c.conn).collect();
    outcome.connections = connections.len();
    outcome.connections_without_record = selected
        .difference(&recorded)
        .copied()
        .collect::<BTreeSet<u64>>()
        .into_iter()
        .collect();
    let selection = packets::Selection::new(&connections, &exchanges, &recorded);
    outcome.capture_files = files.captures.len();
    let copied = packets::copy(&files.captures, &selection, capture)?;
    outcome.packets = copied.copied.written;
    outcome.packets_read = copied.copied.read;
    outcome.connections_without_packets = selected
        .iter()
        .filter(|c| !copied.found.contains(c))
        .copied()
        .collect::<BTreeSet<u64>>()
        .into_iter()
        .collect();
    if outcome.packets == 0 {
        let _ = std::fs::remove_file(capture);
        return Err(ExportError::NoPackets {
            exchanges: exchanges.len(),
            connections: selected.len(),
            dir: dir.to_path_buf(),
        });
    }
    write_lines(&exchanges_path, &exchanges)?;
    write_lines(&connections_path, &connections)?;
    outcome.files = outputs.iter().map(|p| p.to_path_buf()).collect();
    Ok(outcome)
}

/// Writes `records` as JSON Lines into the new file `path` (0600).
fn write_lines<T: serde::Serialize>(path: &Path, records: &[T]) -> Result<(), ExportError> {
    let err = |source| ExportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file = create_new_private_file(path).map_err(err)?;
    let mut out = BufWriter::new(file);
    for r in records {
        serde_json::to_writer(&mut out, r).map_err(|e| err(std::io::Error::other(e)))?;
        out.write_all(b"\n").map_err(err)?;
    }
    out.flush().map_err(err)
}

/// `icaptap export`: exports and says what; an outcome of 0 exchanges is
/// the caller's exit status 1 (as `analyze` finding no ICAP).
pub fn run(args: ExportArgs) -> Result<ExportOutcome, ExportError> {
    let outcome = export(&args.dir, &args.filter, &args.write)?;
    // stdout or stderr may be a closed pipe: the files and the exit status
    // still say it.
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    if outcome.exchanges == 0 {
        let _ = writeln!(
            err,
            "icaptap export: no exchange of the {} in {} matches `{}`; nothing was written",
            outcome.exchanges_in_run,
            args.dir.display(),
            args.filter.text()
        );
        return Ok(outcome);
    }
    let _ = writeln!(
        out,
        "icaptap export: {} of {} exchanges match `{}`: {} packets of their {} connections (of {} packets in {} capture file(s))",
        outcome.exchanges,
        outcome.exchanges_in_run,
        args.filter.text(),
        outcome.packets,
        outcome.connections + outcome.connections_without_record.len(),
        outcome.packets_read,
        outcome.capture_files
    );
    for path in &outcome.files {
        let _ = writeln!(out, "  wrote {}", path.display());
    }
    let ids = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    if !outcome.connections_without_record.is_empty() {
        let _ = writeln!(
            err,
            "icaptap export: warning: connection(s) {} have no connection record (the run ended before they closed): only their client leg was looked for",
            ids(&outcome.connections_without_record)
        );
    }
    if !outcome.connections_without_packets.is_empty() {
        let _ = writeln!(
            err,
            "icaptap export: warning: connection(s) {} have no packet in the capture (a ring that turned past them, or a capture stopped for disk space): only their records were exported",
            ids(&outcome.connections_without_packets)
        );
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_go_beside_the_capture() {
        let (x, c) = record_paths(Path::new("/tmp/out/small.pcapng"));
        assert_eq!(x, Path::new("/tmp/out/small.exchanges.jsonl"));
        assert_eq!(c, Path::new("/tmp/out/small.connections.jsonl"));
        let (x, _) = record_paths(Path::new("cut"));
        assert_eq!(x, Path::new("cut.exchanges.jsonl"));
    }
}
