//! Where records go. The observer is handed a [`RecordSink`] and knows
//! nothing of files; [`JsonlSink`] writes the two JSON Lines files of an
//! output directory, [`MemorySink`] keeps records for tests and for the
//! report; [`Tee`] and [`SinkFanout`] hand each record to several sinks.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::directory::{create_new_private_file, open_append_private_file};
use icap_codec::Exchange;

use super::records::{ConnectionRecord, ExchangeRecord};

/// Receives every record the observer produces.
pub trait RecordSink: Send {
    /// One exchange is over.
    fn exchange(&mut self, record: &ExchangeRecord);
    /// One exchange is over, with the decoded exchange its record was
    /// built from, for a sink that shows more than the record holds (the
    /// ICAP and HTTP heads of `icaptap proxy -v`). Every other sink takes
    /// the record alone.
    fn exchange_seen(&mut self, record: &ExchangeRecord, exchange: &Exchange) {
        let _ = exchange;
        self.exchange(record);
    }
    /// One connection is over.
    fn connection(&mut self, record: &ConnectionRecord);
    /// Push buffered records to their destination.
    fn flush(&mut self) {}
}

impl RecordSink for Box<dyn RecordSink> {
    fn exchange(&mut self, record: &ExchangeRecord) {
        self.as_mut().exchange(record);
    }

    fn exchange_seen(&mut self, record: &ExchangeRecord, exchange: &Exchange) {
        self.as_mut().exchange_seen(record, exchange);
    }

    fn connection(&mut self, record: &ConnectionRecord) {
        self.as_mut().connection(record);
    }

    fn flush(&mut self) {
        self.as_mut().flush();
    }
}

/// Records staged before a write: a write is a whole number of records,
/// so a failed one can be cut back to the last whole record.
const STAGE_BYTES: usize = 64 * 1024;

/// Longest time a staged record waits for its write, even when the
/// observer is too busy for its tick: what a killed run can lose.
const STAGE_MAX_AGE: Duration = Duration::from_millis(250);

/// How often a failing records file may warn.
const WRITE_WARN_EVERY: Duration = Duration::from_secs(60);

/// One JSON Lines file that only ever ends with a whole record: on a write
/// error (disk full, I/O error) the file is cut back to its last whole
/// line and the staged records are dropped and counted, the way the
/// recorder keeps whole blocks.
#[derive(Debug)]
struct LineFile {
    file: File,
    path: PathBuf,
    staged: Vec<u8>,
    /// Bytes in the file, all of them whole records.
    len: u64,
    last_warning: Option<Instant>,
    /// When the staged bytes were last written out.
    last_write: Instant,
}

impl LineFile {
    fn create(path: PathBuf) -> std::io::Result<LineFile> {
        Ok(LineFile {
            file: create_new_private_file(&path)?,
            path,
            staged: Vec::with_capacity(STAGE_BYTES),
            len: 0,
            last_warning: None,
            last_write: Instant::now(),
        })
    }

    /// Stages one record; returns the records lost if a write failed.
    fn push<T: serde::Serialize>(&mut self, record: &T) -> u64 {
        let before = self.staged.len();
        if serde_json::to_writer(&mut self.staged, record).is_err() {
            self.staged.truncate(before);
            return 1;
        }
        self.staged.push(b'\n');
        if self.staged.len() >= STAGE_BYTES || self.last_write.elapsed() >= STAGE_MAX_AGE {
            self.flush()
        } else {
            0
        }
    }

    /// Opens the file again at its path (append, created when missing):
    /// the directory it was in was removed and recreated.
    fn reopen(&mut self) -> std::io::Result<()> {
        let file = open_append_private_file(&self.path)?;
        self.len = file.metadata()?.len();
        self.file = file;
        Ok(())
    }

    /// Writes what is staged; returns the records lost.
    fn flush(&mut self) -> u64 {
        self.last_write = Instant::now();
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
        self.staged.clear();
        if self
            .last_warning
            .is_none_or(|t| t.elapsed() >= WRITE_WARN_EVERY)
        {
            self.last_warning = Some(Instant::now());
            let cut = match cut {
                Ok(()) => "the file ends at its last whole record".to_string(),
                Err(e) => format!("cutting the partial record off failed too ({e})"),
            };
            tracing::warn!(
                "records: writing {} at byte offset {at} failed: {error}; {lost} records lost, {cut}; \
                 free space or choose another --out (forwarding is not affected; further warnings are held back for a minute)",
                self.path.display()
            );
        }
        lost
    }
}

/// Writes `exchanges.jsonl` and `connections.jsonl`, staged in whole
/// records.
#[derive(Debug)]
pub struct JsonlSink {
    exchanges: LineFile,
    connections: LineFile,
    /// Records that could not be written (disk full, directory removed),
    /// shared with whoever writes the summary.
    lost: Arc<AtomicU64>,
    /// Bumped when the output directory is recreated; the value the open
    /// files belong to.
    dir_epoch: Arc<AtomicU64>,
    seen_epoch: u64,
}

impl JsonlSink {
    /// Creates both files in `dir` (mode 0600).
    pub fn create(dir: &Path) -> std::io::Result<JsonlSink> {
        Ok(JsonlSink {
            exchanges: LineFile::create(dir.join("exchanges.jsonl"))?,
            connections: LineFile::create(dir.join("connections.jsonl"))?,
            lost: Arc::default(),
            dir_epoch: Arc::default(),
            seen_epoch: 0,
        })
    }

    /// Follows the output directory: when `epoch` changes (the directory
    /// was removed and recreated) both files are opened again there before
    /// the next write, so later records land in the new directory.
    pub fn follow_directory(&mut self, epoch: Arc<AtomicU64>) {
        self.seen_epoch = epoch.load(Ordering::Relaxed);
        self.dir_epoch = epoch;
    }

    /// Reopens the files when the directory was recreated since the last
    /// write.
    fn follow(&mut self) {
        let now = self.dir_epoch.load(Ordering::Relaxed);
        if now == self.seen_epoch {
            return;
        }
        self.seen_epoch = now;
        for file in [&mut self.exchanges, &mut self.connections] {
            match file.reopen() {
                Ok(()) => tracing::info!(
                    "records: {} opened again in the recreated output directory",
                    file.path.display()
                ),
                Err(e) => tracing::warn!(
                    "records: cannot open {} again in the recreated output directory: {e}",
                    file.path.display()
                ),
            }
        }
    }

    /// The count of records that could not be written, live.
    pub fn write_errors(&self) -> Arc<AtomicU64> {
        self.lost.clone()
    }

    fn count(&self, lost: u64) {
        if lost > 0 {
            self.lost.fetch_add(lost, Ordering::Relaxed);
        }
    }
}

impl RecordSink for JsonlSink {
    fn exchange(&mut self, record: &ExchangeRecord) {
        self.follow();
        let lost = self.exchanges.push(record);
        self.count(lost);
    }

    fn connection(&mut self, record: &ConnectionRecord) {
        self.follow();
        let lost = self.connections.push(record);
        self.count(lost);
    }

    fn flush(&mut self) {
        self.follow();
        let lost = self.exchanges.flush() + self.connections.flush();
        self.count(lost);
    }
}

impl Drop for JsonlSink {
    fn drop(&mut self) {
        RecordSink::flush(self);
    }
}

/// Keeps records in memory.
#[derive(Debug, Default)]
pub struct MemorySink {
    /// Exchange records, in the order written.
    pub exchanges: Vec<ExchangeRecord>,
    /// Connection records, in the order written.
    pub connections: Vec<ConnectionRecord>,
}

impl RecordSink for MemorySink {
    fn exchange(&mut self, record: &ExchangeRecord) {
        self.exchanges.push(record.clone());
    }

    fn connection(&mut self, record: &ConnectionRecord) {
        self.connections.push(record.clone());
    }
}

/// Keeps records in memory where both the observer, which owns its sink,
/// and whoever gave it can read them (tests, tools that observe in
/// process).
#[derive(Clone, Debug, Default)]
pub struct SharedMemorySink(pub std::sync::Arc<std::sync::Mutex<MemorySink>>);

impl SharedMemorySink {
    /// The records so far.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, MemorySink> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl RecordSink for SharedMemorySink {
    fn exchange(&mut self, record: &ExchangeRecord) {
        self.lock().exchange(record);
    }

    fn connection(&mut self, record: &ConnectionRecord) {
        self.lock().connection(record);
    }
}

/// Sends every record to two sinks (files, and the live status).
#[derive(Debug)]
pub struct Tee<A, B>(pub A, pub B);

impl<A: RecordSink, B: RecordSink> RecordSink for Tee<A, B> {
    fn exchange(&mut self, record: &ExchangeRecord) {
        self.0.exchange(record);
        self.1.exchange(record);
    }

    fn exchange_seen(&mut self, record: &ExchangeRecord, exchange: &Exchange) {
        self.0.exchange_seen(record, exchange);
        self.1.exchange_seen(record, exchange);
    }

    fn connection(&mut self, record: &ConnectionRecord) {
        self.0.connection(record);
        self.1.connection(record);
    }

    fn flush(&mut self) {
        self.0.flush();
        self.1.flush();
    }
}

/// Hands every record to several sinks in order: the run's files first,
/// then the operational watchers (metrics, stop conditions, flight
/// recorder), so a watcher that stops the run never races the files.
pub struct SinkFanout(pub Vec<Box<dyn RecordSink>>);

impl std::fmt::Debug for SinkFanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SinkFanout({} sinks)", self.0.len())
    }
}

impl RecordSink for SinkFanout {
    fn exchange(&mut self, record: &ExchangeRecord) {
        for sink in &mut self.0 {
            sink.exchange(record);
        }
    }

    fn exchange_seen(&mut self, record: &ExchangeRecord, exchange: &Exchange) {
        for sink in &mut self.0 {
            sink.exchange_seen(record, exchange);
        }
    }

    fn connection(&mut self, record: &ConnectionRecord) {
        for sink in &mut self.0 {
            sink.connection(record);
        }
    }

    fn flush(&mut self) {
        for sink in &mut self.0 {
            sink.flush();
        }
    }
}
