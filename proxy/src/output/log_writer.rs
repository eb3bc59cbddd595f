//! One record log being written: a JSON Lines file that only ever ends
//! with a whole record, staged in whole records and written at least every
//! [`STAGE_MAX_AGE`], moving on to its next numbered file when its
//! [`LogRotation`] says so (between two records, so every file of a set
//! holds whole records too).
//!
//! On a write error (disk full, I/O error) the file is cut back to its
//! last whole line and the staged records are dropped and counted, the
//! way the recorder keeps whole blocks. A next file that cannot be created
//! keeps the records in the current one (tried again after a second):
//! rotation never costs a record.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::directory::{create_new_private_file, open_append_private_file};
use super::log_rotation::{ClosedLog, LogRotation};
use super::logset::Log;

/// Records staged before a write: a write is a whole number of records,
/// so a failed one can be cut back to the last whole record.
pub const STAGE_BYTES: usize = 64 * 1024;

/// Longest time a staged record waits for its write, even when the
/// observer is too busy for its tick: what a killed run can lose.
pub const STAGE_MAX_AGE: Duration = Duration::from_millis(250);

/// How often a failing records file may warn.
const WRITE_WARN_EVERY: Duration = Duration::from_secs(60);

/// After the next file could not be created, wait this long before trying
/// again.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// What staging one record did.
#[derive(Debug, Default)]
pub struct Pushed {
    /// Records lost to a failed write.
    pub lost: u64,
    /// The file the log moved on from, if it rotated.
    pub closed: Option<ClosedLog>,
}

/// One record log.
#[derive(Debug)]
pub struct LogWriter {
    log: Log,
    dir: PathBuf,
    rotation: LogRotation,
    /// Number of the current file (0 when the log does not rotate).
    index: u32,
    file: File,
    path: PathBuf,
    staged: Vec<u8>,
    /// Records in `staged`.
    staged_records: u64,
    /// Bytes in the file, all of them whole records.
    len: u64,
    /// Records in the file.
    records: u64,
    /// When the current file was opened.
    opened: Instant,
    /// Its place among all files of both logs.
    order: u64,
    last_warning: Option<Instant>,
    /// When the staged bytes were last written out.
    last_write: Instant,
    /// When creating the next file last failed.
    open_failed: Option<Instant>,
}

impl LogWriter {
    /// Creates the first file of `log` in `dir` (mode 0600, never over an
    /// existing file): `exchanges.jsonl`, or `exchanges-0001.jsonl` when it
    /// rotates. `order` is its place among the files of both logs.
    pub fn create(
        dir: &Path,
        log: Log,
        rotation: LogRotation,
        order: u64,
    ) -> std::io::Result<LogWriter> {
        let index = u32::from(rotation.enabled());
        let path = dir.join(name(log, index));
        Ok(LogWriter {
            log,
            dir: dir.to_path_buf(),
            rotation,
            index,
            file: create_new_private_file(&path)?,
            path,
            staged: Vec::with_capacity(STAGE_BYTES),
            staged_records: 0,
            len: 0,
            records: 0,
            opened: Instant::now(),
            order,
            last_warning: None,
            last_write: Instant::now(),
            open_failed: None,
        })
    }

    /// A file named `file_name` in `dir` that never rotates (mode 0600,
    /// never over an existing file): another shape of `log`'s records
    /// beside it, such as the ECS files.
    pub fn create_fixed(dir: &Path, file_name: &str, log: Log) -> std::io::Result<LogWriter> {
        let path = dir.join(file_name);
        Ok(LogWriter {
            log,
            dir: dir.to_path_buf(),
            rotation: LogRotation::default(),
            index: 0,
            file: create_new_private_file(&path)?,
            path,
            staged: Vec::with_capacity(STAGE_BYTES),
            staged_records: 0,
            len: 0,
            records: 0,
            opened: Instant::now(),
            order: u64::MAX,
            last_warning: None,
            last_write: Instant::now(),
            open_failed: None,
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of the current file, staged ones included.
    pub fn open_bytes(&self) -> u64 {
        self.len + self.staged.len() as u64
    }

    /// Stages one record, moving on to the next file first when it is
    /// time; `next_order` numbers the files of both logs.
    pub fn push<T: serde::Serialize>(&mut self, record: &T, next_order: &mut u64) -> Pushed {
        let mut pushed = Pushed::default();
        let before = self.staged.len();
        if serde_json::to_writer(&mut self.staged, record).is_err() {
            self.staged.truncate(before);
            pushed.lost = 1;
            return pushed;
        }
        self.staged.push(b'\n');
        let record_len = (self.staged.len() - before) as u64;
        let used = self.len + before as u64;
        let may_open = self
            .open_failed
            .is_none_or(|t| t.elapsed() >= REOPEN_INTERVAL);
        if may_open && self.rotation.due(used, record_len, self.opened.elapsed()) {
            let record = self.staged.split_off(before);
            pushed.lost += self.flush();
            pushed.closed = self.rotate(next_order);
            self.staged.extend_from_slice(&record);
        }
        self.staged_records += 1;
        if self.staged.len() >= STAGE_BYTES || self.last_write.elapsed() >= STAGE_MAX_AGE {
            pushed.lost += self.flush();
        }
        pushed
    }

    /// Opens the next file; returns the one closed, or `None` (and keeps
    /// writing the current one) when the next cannot be created.
    fn rotate(&mut self, next_order: &mut u64) -> Option<ClosedLog> {
        let index = self.index + 1;
        let path = self.dir.join(name(self.log, index));
        let file = match create_new_private_file(&path) {
            Ok(file) => file,
            Err(e) => {
                self.open_failed = Some(Instant::now());
                self.warn(&format!(
                    "records: cannot start {}: {e}; records go on into {} (nothing is lost)",
                    path.display(),
                    self.path.display()
                ));
                return None;
            }
        };
        self.open_failed = None;
        let closed = ClosedLog {
            log: self.log,
            path: std::mem::replace(&mut self.path, path),
            bytes: self.len,
            records: self.records,
            order: self.order,
        };
        self.file = file;
        self.index = index;
        self.len = 0;
        self.records = 0;
        self.opened = Instant::now();
        self.order = *next_order;
        *next_order += 1;
        Some(closed)
    }

    /// Opens the current file again at its path (append, created when
    /// missing): the directory it was in was removed and recreated.
    pub fn reopen(&mut self) -> std::io::Result<()> {
        let file = open_append_private_file(&self.path)?;
        self.len = file.metadata()?.len();
        self.records = 0;
        self.file = file;
        Ok(())
    }

    /// Writes what is staged; returns the records lost.
    pub fn flush(&mut self) -> u64 {
        self.last_write = Instant::now();
        let staged_records = std::mem::take(&mut self.staged_records);
        let mut written = 0;
        let failure = loop {
            if written == self.staged.len() {
                break None;
            }
            match self.file.write(&self.staged[written..]) {
                Ok(0) => break Some(std::io::Error::from(std::io::ErrorKind::WriteZero)),
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e),
            }
        };
        let Some(error) = failure else {
            self.len += written as u64;
            self.records += staged_records;
            self.staged.clear();
            return 0;
        };
        // Keep the whole records that made it, cut the partial one.
        let whole = memchr::memrchr(b'\n', &self.staged[..written]).map_or(0, |i| i + 1);
        let lost = memchr::memchr_iter(b'\n', &self.staged[whole..]).count() as u64;
        let at = self.len + whole as u64;
        let cut = self
            .file
            .set_len(at)
            .and_then(|()| self.file.seek(SeekFrom::Start(at)).map(|_| ()));
        self.len = at;
        self.records += staged_records.saturating_sub(lost);
        self.staged.clear();
        let cut = match cut {
            Ok(()) => "the file ends at its last whole record".to_string(),
            Err(e) => format!("cutting the partial record off failed too ({e})"),
        };
        self.warn(&format!(
            "records: writing {} at byte offset {at} failed: {error}; {lost} records lost, {cut}; \
             free space or choose another --out (forwarding is not affected)",
            self.path.display()
        ));
        lost
    }

    fn warn(&mut self, what: &str) {
        if self
            .last_warning
            .is_some_and(|t| t.elapsed() < WRITE_WARN_EVERY)
        {
            return;
        }
        self.last_warning = Some(Instant::now());
        tracing::warn!("{what} (further warnings are held back for a minute)");
    }
}

/// File `index` of `log` (0: the plain name of a log that does not rotate).
fn name(log: Log, index: u32) -> String {
    if index == 0 {
        log.plain_name()
    } else {
        log.rotated_name(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<u64> {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
        text.lines().map(|l| l.parse().unwrap()).collect()
    }

    #[test]
    fn a_rotating_log_holds_whole_records_in_numbered_files_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let rotation = LogRotation {
            size: Some(100),
            ..LogRotation::default()
        };
        let mut w = LogWriter::create(tmp.path(), Log::Exchanges, rotation, 0).unwrap();
        let mut order = 1;
        let mut closed = Vec::new();
        // Records of 11 bytes ("1000000000\n"...): 9 to a 100-byte file.
        for n in 0..40u64 {
            let pushed = w.push(&(1_000_000_000 + n), &mut order);
            assert_eq!(pushed.lost, 0);
            closed.extend(pushed.closed);
        }
        w.flush();
        let files = super::super::logset::list(tmp.path(), Log::Exchanges);
        assert_eq!(files.len(), 5, "{files:?}");
        assert_eq!(closed.len(), 4);
        assert_eq!(closed.iter().map(|c| c.records).sum::<u64>(), 36);
        assert!(closed.iter().all(|c| c.bytes == 99));
        assert_eq!(
            closed.iter().map(|c| c.order).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        let read: Vec<u64> = files.iter().flat_map(|f| lines(f)).collect();
        assert_eq!(read, (0..40).map(|n| 1_000_000_000 + n).collect::<Vec<_>>());
        assert_eq!(w.path(), tmp.path().join("exchanges-0005.jsonl"));
    }

    #[test]
    fn a_log_that_does_not_rotate_keeps_its_plain_name() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w =
            LogWriter::create(tmp.path(), Log::Connections, LogRotation::default(), 0).unwrap();
        let mut order = 1;
        for n in 0..1000u64 {
            assert!(w.push(&n, &mut order).closed.is_none());
        }
        w.flush();
        assert_eq!(lines(&tmp.path().join("connections.jsonl")).len(), 1000);
    }

    #[test]
    fn a_next_file_that_cannot_be_made_keeps_the_records_in_the_current_one() {
        let tmp = tempfile::tempdir().unwrap();
        let rotation = LogRotation {
            size: Some(100),
            ..LogRotation::default()
        };
        let mut w = LogWriter::create(tmp.path(), Log::Exchanges, rotation, 0).unwrap();
        // Something else holds the next name: it is never written over.
        std::fs::write(tmp.path().join("exchanges-0002.jsonl"), b"not ours\n").unwrap();
        let mut order = 1;
        for n in 0..20u64 {
            let pushed = w.push(&(1_000_000_000 + n), &mut order);
            assert_eq!(pushed.lost, 0);
            assert!(pushed.closed.is_none());
        }
        w.flush();
        assert_eq!(lines(&tmp.path().join("exchanges-0001.jsonl")).len(), 20);
        assert_eq!(
            std::fs::read(tmp.path().join("exchanges-0002.jsonl")).unwrap(),
            b"not ours\n"
        );
    }
}
