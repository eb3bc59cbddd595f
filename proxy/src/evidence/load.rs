//! Reading a run's output directory back (docs/log-schema.md): which files
//! icaptap wrote there, `summary.json`, and the two JSON Lines files
//! streamed record by record so a long run never has to fit in memory.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::filter::Filter;
use crate::output::directory::is_capture_name;
use crate::output::records::{ConnectionRecord, ExchangeRecord};
use crate::output::summary::Summary;

use super::EvidenceError;

/// `exchanges.jsonl`.
pub const EXCHANGES_FILE: &str = "exchanges.jsonl";
/// `connections.jsonl`.
pub const CONNECTIONS_FILE: &str = "connections.jsonl";
/// `summary.json`.
pub const SUMMARY_FILE: &str = "summary.json";
/// `report.html`.
pub const REPORT_HTML_FILE: &str = "report.html";
/// `report.md`.
pub const REPORT_MD_FILE: &str = "report.md";

/// The files of a run directory, as icaptap names them.
#[derive(Clone, Debug, Default)]
pub struct RunFiles {
    /// The directory.
    pub dir: PathBuf,
    /// `summary.json`, when present.
    pub summary: Option<PathBuf>,
    /// `exchanges.jsonl`, when present.
    pub exchanges: Option<PathBuf>,
    /// `connections.jsonl`, when present.
    pub connections: Option<PathBuf>,
    /// Capture files, oldest first (rotation numbers sort by name).
    pub captures: Vec<PathBuf>,
    /// `report.html` / `report.md`, when present.
    pub reports: Vec<PathBuf>,
}

impl RunFiles {
    /// Lists `dir`; fails when it is not a directory or holds none of the
    /// record files.
    pub fn scan(dir: &Path) -> Result<RunFiles, EvidenceError> {
        let entries = std::fs::read_dir(dir).map_err(|source| EvidenceError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let mut files = RunFiles {
            dir: dir.to_path_buf(),
            ..RunFiles::default()
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            match name.as_str() {
                SUMMARY_FILE => files.summary = Some(path),
                EXCHANGES_FILE => files.exchanges = Some(path),
                CONNECTIONS_FILE => files.connections = Some(path),
                REPORT_HTML_FILE | REPORT_MD_FILE => files.reports.push(path),
                n if is_capture_name(n) => files.captures.push(path),
                _ => {}
            }
        }
        files.captures.sort();
        files.reports.sort();
        if files.summary.is_none() && files.exchanges.is_none() && files.connections.is_none() {
            return Err(EvidenceError::NotARunDir {
                dir: dir.to_path_buf(),
            });
        }
        Ok(files)
    }

    /// `summary.json`, or `None` when the run did not finish writing it.
    pub fn read_summary(&self) -> Result<Option<Summary>, EvidenceError> {
        let Some(path) = &self.summary else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| EvidenceError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| EvidenceError::Parse {
                path: path.clone(),
                line: e.line() as u64,
                detail: e.to_string(),
            })
    }
}

/// Streams the records of a JSON Lines file to `each`; returns how many
/// lines could not be read as records (a line cut by a crash, a newer
/// schema's surprise), which the report mentions instead of failing.
pub fn for_each_record<T: serde::de::DeserializeOwned>(
    path: Option<&Path>,
    each: &mut dyn FnMut(T),
) -> Result<u64, EvidenceError> {
    let Some(path) = path else {
        return Ok(0);
    };
    let file = File::open(path).map_err(|source| EvidenceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut bad = 0u64;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut at = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| EvidenceError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        if n == 0 {
            break;
        }
        let start = at;
        at += n as u64;
        let whole = line.last() == Some(&b'\n');
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<T>(&line) {
            Ok(record) => each(record),
            Err(_) => {
                bad += 1;
                if !whole {
                    // Only the last line can lack its newline.
                    tracing::warn!(
                        "{}: the last line was cut at byte {start} (icaptap was killed?); read up to it",
                        path.display()
                    );
                }
            }
        }
    }
    Ok(bad)
}

/// Streams `exchanges.jsonl`.
pub fn for_each_exchange(
    files: &RunFiles,
    each: &mut dyn FnMut(ExchangeRecord),
) -> Result<u64, EvidenceError> {
    for_each_record(files.exchanges.as_deref(), each)
}

/// Streams `connections.jsonl`.
pub fn for_each_connection(
    files: &RunFiles,
    each: &mut dyn FnMut(ConnectionRecord),
) -> Result<u64, EvidenceError> {
    for_each_record(files.connections.as_deref(), each)
}

/// When the run in `files` started, microseconds since the UNIX epoch:
/// its summary's `started`, else its earliest record (`None` when it has
/// none).
pub fn run_start(
    files: &RunFiles,
    summary: Option<&Summary>,
) -> Result<Option<u64>, EvidenceError> {
    if let Some(t) = summary
        .and_then(|s| s.started.as_deref())
        .and_then(crate::output::parse_rfc3339)
    {
        return Ok(Some(t));
    }
    let mut first: Option<u64> = None;
    let mut seen = |ts: &str, ts_us: u64| {
        let t = if ts_us > 0 {
            Some(ts_us)
        } else {
            crate::output::parse_rfc3339(ts)
        };
        if let Some(t) = t {
            first = Some(first.map_or(t, |f| f.min(t)));
        }
    };
    for_each_exchange(files, &mut |x| seen(&x.ts, x.ts_us))?;
    for_each_connection(files, &mut |c| seen(&c.ts, c.ts_us))?;
    Ok(first)
}

/// `filter` with the run's start given, when it counts from it.
pub fn with_run_start(
    files: &RunFiles,
    summary: Option<&Summary>,
    mut filter: Filter,
) -> Result<Filter, EvidenceError> {
    if filter.uses_run_start() && filter.run_start().is_none() {
        if let Some(start) = run_start(files, summary)? {
            filter.set_run_start(start);
        }
    }
    Ok(filter)
}

/// Parses the RFC 3339 UTC times icaptap writes (`2026-11-28T09:57:01.402311Z`,
/// fraction optional, `Z` or a numeric offset) into microseconds since the
/// UNIX epoch.
pub fn parse_rfc3339_micros(text: &str) -> Option<i64> {
    crate::output::parse_rfc3339(text).and_then(|v| i64::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_with_the_writer() {
        let micros = 1_795_427_821_402_311u64;
        let text = crate::output::rfc3339(micros);
        assert_eq!(parse_rfc3339_micros(&text), Some(micros as i64));
        assert_eq!(
            parse_rfc3339_micros("1970-01-01T00:00:01Z"),
            Some(1_000_000)
        );
        assert_eq!(
            parse_rfc3339_micros("1970-01-01T01:00:01.5+01:00"),
            Some(1_500_000)
        );
        assert_eq!(parse_rfc3339_micros("yesterday"), None);
    }

    #[test]
    fn a_last_line_cut_by_a_kill_is_counted_and_the_rest_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.jsonl");
        std::fs::write(&path, "{\"a\":1}\n\n{\"a\":2}\n{\"a\":").unwrap();
        let mut seen = Vec::new();
        let bad = for_each_record::<serde_json::Value>(Some(&path), &mut |v| seen.push(v)).unwrap();
        assert_eq!(bad, 1);
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1]["a"], 2);
    }

    #[test]
    fn capture_names() {
        assert!(is_capture_name("capture.pcapng"));
        assert!(is_capture_name("capture-0003.pcapng"));
        assert!(is_capture_name("capture.pcap"));
        assert!(!is_capture_name("capture-x.pcapng"));
        assert!(!is_capture_name("other.pcapng"));
    }
}
