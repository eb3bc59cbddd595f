//! Rotation and bounds of the record logs, in the style of the capture's
//! `--rotate-size`, `--rotate-time`, `--keep` and `--ring`:
//! `--log-rotate-size`, `--log-rotate-time`, `--log-keep` and `--log-ring`.
//! The records get flags of their own because their budget is not the
//! capture's: records are small and come first (the capture stops before
//! it takes their disk space), so a user bounding the capture does not
//! silently bound the records too.
//!
//! [`LogRotation::due`] decides when a log starts its next file (before a
//! record, so every file holds whole records); [`Retention`] decides which
//! closed files the bound deletes, oldest first across both logs, so the
//! two logs keep about the same stretch of time. What it deletes is
//! counted in [`RecordsPruned`], which summary.json carries: a bound never
//! loses a record silently.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::logset::Log;

/// The smallest record file: smaller files only add rotations.
pub const MIN_LOG_FILE_BYTES: u64 = 64 * 1024;

/// Files per log in a `--log-ring`: each file holds 1/8 of SIZE, so the
/// oldest file deleted at a time is a small part of what is kept.
pub const LOG_RING_FILES: u64 = 8;

/// The smallest `--log-ring`: [`LOG_RING_FILES`] files of
/// [`MIN_LOG_FILE_BYTES`].
pub const MIN_LOG_RING_BYTES: u64 = LOG_RING_FILES * MIN_LOG_FILE_BYTES;

/// Options of the record logs (`icaptap proxy`).
#[derive(Clone, Debug, Default, clap::Args)]
#[command(group(
    clap::ArgGroup::new("log_rotation")
        .args(["log_rotate_size", "log_rotate_time"])
        .multiple(true)
))]
pub struct LogArgs {
    /// Start a new file of exchanges.jsonl and of connections.jsonl before
    /// one exceeds this size: exchanges-0001.jsonl, exchanges-0002.jsonl...
    /// (K, M, G suffixes; at least 64K). Readers take the set as one log.
    #[arg(long, env = "ICAPTAP_LOG_ROTATE_SIZE", value_name = "SIZE",
          value_parser = parse_log_file_size)]
    pub log_rotate_size: Option<u64>,
    /// Start a new record file every this long (wall time), in whole
    /// seconds: 10m, 1h, or a bare number of seconds.
    #[arg(long, env = "ICAPTAP_LOG_ROTATE_TIME", value_name = "DURATION",
          value_parser = crate::units::parse_whole_seconds)]
    pub log_rotate_time: Option<u64>,
    /// Keep only the newest N files of each record log (with
    /// --log-rotate-size or --log-rotate-time); summary.json counts the
    /// records deleted.
    #[arg(long, env = "ICAPTAP_LOG_KEEP", value_name = "N", requires = "log_rotation",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub log_keep: Option<u64>,
    /// Keep only the newest SIZE of records on disk, both logs together, in
    /// rotating files (K, M, G suffixes; at least 512K); the oldest are
    /// deleted and counted in summary.json. Records are unbounded without
    /// it, whatever --ring says.
    #[arg(long, env = "ICAPTAP_LOG_RING", value_name = "SIZE",
          value_parser = parse_log_ring_size,
          conflicts_with_all = ["log_rotate_size", "log_keep"])]
    pub log_ring: Option<u64>,
}

impl LogArgs {
    /// The rotation these options ask for.
    pub fn rotation(&self) -> LogRotation {
        if let Some(total) = self.log_ring {
            return LogRotation {
                seconds: self.log_rotate_time,
                ..LogRotation::ring(total)
            };
        }
        LogRotation {
            size: self.log_rotate_size,
            seconds: self.log_rotate_time,
            keep: self.log_keep,
            total: None,
        }
    }
}

/// Parses `--log-rotate-size`: a size of at least [`MIN_LOG_FILE_BYTES`].
pub fn parse_log_file_size(text: &str) -> Result<u64, String> {
    at_least(text, MIN_LOG_FILE_BYTES, "64K")
}

/// Parses `--log-ring`: a size of at least [`MIN_LOG_RING_BYTES`].
pub fn parse_log_ring_size(text: &str) -> Result<u64, String> {
    at_least(text, MIN_LOG_RING_BYTES, "512K")
}

fn at_least(text: &str, min: u64, shown: &str) -> Result<u64, String> {
    let size = crate::units::parse_size(text)?;
    if size < min {
        return Err(format!(
            "`{}` is too small: below {shown} the record files turn over every few hundred \
             exchanges; give at least {shown}, e.g. 64M",
            text.trim()
        ));
    }
    Ok(size)
}

/// When the record logs start a new file, and what they keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogRotation {
    /// Start a new file before one would grow past this many bytes (a
    /// single record larger than this still gets a file of its own).
    pub size: Option<u64>,
    /// Start a new file when the current one is this many seconds old.
    pub seconds: Option<u64>,
    /// Keep only the newest N files of each log.
    pub keep: Option<u64>,
    /// Keep at most this many bytes of both logs together.
    pub total: Option<u64>,
}

impl LogRotation {
    /// What `--log-ring SIZE` stands for: files of SIZE /
    /// [`LOG_RING_FILES`] (at least [`MIN_LOG_FILE_BYTES`]), at most SIZE
    /// on disk for both logs.
    pub fn ring(total: u64) -> LogRotation {
        LogRotation {
            size: Some((total / LOG_RING_FILES).max(MIN_LOG_FILE_BYTES)),
            seconds: None,
            keep: None,
            total: Some(total),
        }
    }

    /// Whether the logs are sets of numbered files.
    pub fn enabled(&self) -> bool {
        self.size.is_some() || self.seconds.is_some()
    }

    /// Whether a log whose current file holds `used` bytes (written and
    /// staged) and is `age` old starts a new file before a record of
    /// `record` bytes. An empty file takes any record.
    pub fn due(&self, used: u64, record: u64, age: Duration) -> bool {
        if used == 0 {
            return false;
        }
        let by_size = self.size.is_some_and(|max| used + record > max);
        let by_time = self.seconds.is_some_and(|s| age.as_secs() >= s);
        by_size || by_time
    }
}

/// A record file a log has moved on from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosedLog {
    /// Which log.
    pub log: Log,
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Records in it.
    pub records: u64,
    /// When it was opened among all files of both logs (0, 1, 2...).
    pub order: u64,
}

/// Decides which closed record files a bound deletes: with `--log-keep N`
/// the oldest beyond N files of a log (the one being written counts), with
/// `--log-ring SIZE` the oldest of both logs until both logs together fit
/// SIZE.
#[derive(Debug, Default)]
pub struct Retention {
    keep: Option<u64>,
    total: Option<u64>,
    /// Closed files, oldest first.
    closed: VecDeque<ClosedLog>,
    closed_bytes: u64,
}

impl Retention {
    /// The retention `rotation` asks for.
    pub fn new(rotation: &LogRotation) -> Retention {
        Retention {
            keep: rotation.keep,
            total: rotation.total,
            ..Retention::default()
        }
    }

    /// Whether anything is ever deleted.
    pub fn bounds(&self) -> bool {
        self.keep.is_some() || self.total.is_some()
    }

    /// `file` was closed; it may be deleted from now on.
    pub fn closed(&mut self, file: ClosedLog) {
        self.closed_bytes += file.bytes;
        let at = self.closed.partition_point(|c| c.order < file.order);
        self.closed.insert(at, file);
    }

    /// The closed files to delete now, oldest first, when the files being
    /// written hold `open_bytes` (staged bytes included).
    pub fn due(&mut self, open_bytes: u64) -> Vec<ClosedLog> {
        let mut out = Vec::new();
        if let Some(keep) = self.keep {
            for log in Log::BOTH {
                let mut of_log = self.closed.iter().filter(|c| c.log == log).count() as u64;
                while of_log + 1 > keep.max(1) {
                    let Some(at) = self.closed.iter().position(|c| c.log == log) else {
                        break;
                    };
                    if let Some(file) = self.closed.remove(at) {
                        self.closed_bytes -= file.bytes;
                        out.push(file);
                    }
                    of_log -= 1;
                }
            }
        }
        if let Some(total) = self.total {
            while self.closed_bytes + open_bytes > total {
                let Some(file) = self.closed.pop_front() else {
                    break;
                };
                self.closed_bytes -= file.bytes;
                out.push(file);
            }
        }
        out.sort_by_key(|c| c.order);
        out
    }

    /// The closed files are gone another way (the output directory was
    /// removed): nothing of them is left to delete or to count.
    pub fn forget(&mut self) {
        self.closed.clear();
        self.closed_bytes = 0;
    }
}

/// What a bound deleted from one log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunedLog {
    /// Files deleted.
    pub files: u64,
    /// Records they held.
    pub records: u64,
    /// Bytes they held.
    pub bytes: u64,
    /// The oldest file of the log still on disk (its records are the
    /// oldest kept), when any was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_kept: Option<String>,
}

/// What `--log-keep` or `--log-ring` deleted from the start of the run
/// (summary.json `records_pruned`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordsPruned {
    /// From the exchanges log.
    pub exchanges: PrunedLog,
    /// From the connections log.
    pub connections: PrunedLog,
    /// The `--log-ring` bound (both logs together), if that was it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_bytes: Option<u64>,
    /// The `--log-keep` bound (files per log), if that was it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_files: Option<u64>,
}

impl RecordsPruned {
    /// Counts `file` as deleted.
    pub fn count(&mut self, file: &ClosedLog) {
        let of = match file.log {
            Log::Exchanges => &mut self.exchanges,
            Log::Connections => &mut self.connections,
        };
        of.files += 1;
        of.records += file.records;
        of.bytes += file.bytes;
        let name = file
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(next) = file.log.position_of(&name).map(|n| n + 1) {
            of.first_kept = Some(file.log.rotated_name(next));
        }
    }

    /// Whether anything was deleted.
    pub fn any(&self) -> bool {
        self.exchanges.files + self.connections.files > 0
    }

    /// The evidence gap this is, one sentence.
    pub fn gap(&self) -> String {
        let bound = match (self.ring_bytes, self.keep_files) {
            (Some(bytes), _) => format!("--log-ring {bytes} bytes"),
            (None, Some(n)) => format!("--log-keep {n}"),
            (None, None) => "the record bound".to_string(),
        };
        let first = |p: &PrunedLog| {
            p.first_kept
                .as_deref()
                .map(|f| format!(", the oldest kept is {f}"))
                .unwrap_or_default()
        };
        format!(
            "{bound} deleted the oldest records from the start of the run: {} exchange records ({} files{}) \
             and {} connection records ({} files{}); these totals still count them",
            self.exchanges.records,
            self.exchanges.files,
            first(&self.exchanges),
            self.connections.records,
            self.connections.files,
            first(&self.connections),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(log: Log, index: u32, bytes: u64, order: u64) -> ClosedLog {
        ClosedLog {
            log,
            path: PathBuf::from(log.rotated_name(index)),
            bytes,
            records: bytes / 100,
            order,
        }
    }

    fn names(files: &[ClosedLog]) -> Vec<String> {
        files
            .iter()
            .map(|c| c.path.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_file_turns_over_before_a_record_that_would_overflow_it_or_when_old() {
        let size = LogRotation {
            size: Some(1000),
            ..LogRotation::default()
        };
        assert!(
            !size.due(0, 5000, Duration::ZERO),
            "an empty file takes any record"
        );
        assert!(!size.due(900, 100, Duration::ZERO));
        assert!(size.due(901, 100, Duration::ZERO));
        let time = LogRotation {
            seconds: Some(60),
            ..LogRotation::default()
        };
        assert!(!time.due(10, 10, Duration::from_secs(59)));
        assert!(time.due(10, 10, Duration::from_secs(60)));
        assert!(!time.due(0, 10, Duration::from_secs(600)));
        assert!(!LogRotation::default().due(u64::MAX / 2, 10, Duration::MAX));
    }

    #[test]
    fn a_ring_is_eight_files_of_an_eighth_and_never_smaller_than_64k() {
        let ring = LogRotation::ring(64 << 20);
        assert_eq!(ring.size, Some(8 << 20));
        assert_eq!(ring.total, Some(64 << 20));
        assert_eq!(LogRotation::ring(100_000).size, Some(MIN_LOG_FILE_BYTES));
        assert!(parse_log_ring_size("256K").is_err());
        assert_eq!(parse_log_ring_size("512K"), Ok(512 << 10));
        assert!(parse_log_file_size("4K").is_err());
    }

    #[test]
    fn keep_deletes_the_oldest_files_of_each_log_beyond_n() {
        let mut r = Retention::new(&LogRotation {
            size: Some(1000),
            keep: Some(2),
            ..LogRotation::default()
        });
        r.closed(closed(Log::Exchanges, 1, 1000, 0));
        r.closed(closed(Log::Connections, 1, 500, 1));
        assert!(
            r.due(0).is_empty(),
            "one closed file and the open one make 2"
        );
        r.closed(closed(Log::Exchanges, 2, 1000, 2));
        r.closed(closed(Log::Exchanges, 3, 1000, 3));
        assert_eq!(
            names(&r.due(0)),
            ["exchanges-0001.jsonl", "exchanges-0002.jsonl"]
        );
        assert!(r.due(0).is_empty());
    }

    #[test]
    fn a_ring_deletes_the_oldest_of_both_logs_until_they_fit() {
        let mut r = Retention::new(&LogRotation::ring(1000));
        // Opened in this order: x1, c1, x2, c2 (closed out of order).
        r.closed(closed(Log::Exchanges, 1, 300, 0));
        r.closed(closed(Log::Exchanges, 2, 300, 2));
        r.closed(closed(Log::Connections, 1, 200, 1));
        assert!(r.due(200).is_empty(), "800 + 200 fit 1000");
        assert_eq!(names(&r.due(201)), ["exchanges-0001.jsonl"]);
        r.closed(closed(Log::Connections, 2, 200, 3));
        // 300 + 200 + 200 closed and 500 open: 1200 > 1000; the oldest
        // (c1) goes, and 1000 fit.
        assert_eq!(names(&r.due(500)), ["connections-0001.jsonl"]);
        // Open files past the bound on their own: every closed one goes,
        // oldest first, and then there is nothing more to delete.
        assert_eq!(
            names(&r.due(5000)),
            ["exchanges-0002.jsonl", "connections-0002.jsonl"]
        );
        assert!(r.due(5000).is_empty());
    }

    #[test]
    fn what_is_deleted_is_counted_with_the_oldest_file_kept() {
        let mut p = RecordsPruned {
            ring_bytes: Some(1 << 20),
            ..RecordsPruned::default()
        };
        assert!(!p.any());
        p.count(&closed(Log::Exchanges, 1, 1000, 0));
        p.count(&closed(Log::Exchanges, 2, 500, 2));
        assert!(p.any());
        assert_eq!(p.exchanges.files, 2);
        assert_eq!(p.exchanges.records, 15);
        assert_eq!(p.exchanges.bytes, 1500);
        assert_eq!(
            p.exchanges.first_kept.as_deref(),
            Some("exchanges-0003.jsonl")
        );
        assert_eq!(p.connections, PrunedLog::default());
        let gap = p.gap();
        assert!(gap.contains("--log-ring 1048576 bytes"), "{gap}");
        assert!(gap.contains("15 exchange records (2 files"), "{gap}");
        assert!(gap.contains("exchanges-0003.jsonl"), "{gap}");
    }
}
