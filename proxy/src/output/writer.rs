//! Where records go. The observer is handed a [`RecordSink`] and knows
//! nothing of files; [`JsonlSink`] writes the two record logs of an
//! output directory (each file by a [`LogWriter`], rotated and bounded as
//! [`super::log_rotation`] says; with `--log-schema ecs` also the two ECS
//! files beside them), [`MemorySink`] keeps records for tests and for the
//! report; [`Tee`] and [`SinkFanout`] hand each record to several sinks.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::ecs::{self, LogSchema};
use super::log_rotation::{LogRotation, RecordsPruned, Retention};
use super::log_writer::{LogWriter, Pushed};
use super::logset::Log;
use super::records::{ConnectionRecord, ExchangeRecord};
use icap_codec::Exchange;

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

/// Writes the two record logs (`exchanges.jsonl` and `connections.jsonl`,
/// or their rotated sets), staged in whole records, and deletes what
/// their bound no longer keeps, counting it.
#[derive(Debug)]
pub struct JsonlSink {
    exchanges: LogWriter,
    connections: LogWriter,
    /// The ECS files (exchanges, connections), when asked for; they do not
    /// rotate (start-up refuses `--log-schema ecs` with log rotation).
    ecs: Option<(LogWriter, LogWriter)>,
    /// Which closed files the bound deletes.
    retention: Retention,
    /// The next file's place among the files of both logs.
    next_order: u64,
    /// What the bound deleted, shared with whoever writes the summary.
    pruned: Arc<Mutex<RecordsPruned>>,
    /// Records that could not be written (disk full, directory removed),
    /// shared with whoever writes the summary.
    lost: Arc<AtomicU64>,
    /// Bumped when the output directory is recreated; the value the open
    /// files belong to.
    dir_epoch: Arc<AtomicU64>,
    seen_epoch: u64,
}

impl JsonlSink {
    /// Creates both files in `dir` (mode 0600), neither rotating.
    pub fn create(dir: &Path) -> std::io::Result<JsonlSink> {
        JsonlSink::create_rotating(dir, LogRotation::default())
    }

    /// Creates the first file of both logs in `dir` (mode 0600); they
    /// rotate and are bounded as `rotation` says.
    pub fn create_rotating(dir: &Path, rotation: LogRotation) -> std::io::Result<JsonlSink> {
        JsonlSink::create_with(dir, rotation, LogSchema::Icaptap)
    }

    /// [`create_rotating`](Self::create_rotating), with the ECS files
    /// beside the native ones when `schema` asks for them.
    pub fn create_with(
        dir: &Path,
        rotation: LogRotation,
        schema: LogSchema,
    ) -> std::io::Result<JsonlSink> {
        let ecs = match schema {
            LogSchema::Icaptap => None,
            LogSchema::Ecs => Some((
                LogWriter::create_fixed(dir, ecs::EXCHANGES_ECS_FILE, Log::Exchanges)?,
                LogWriter::create_fixed(dir, ecs::CONNECTIONS_ECS_FILE, Log::Connections)?,
            )),
        };
        Ok(JsonlSink {
            exchanges: LogWriter::create(dir, Log::Exchanges, rotation, 0)?,
            connections: LogWriter::create(dir, Log::Connections, rotation, 1)?,
            ecs,
            retention: Retention::new(&rotation),
            next_order: 2,
            pruned: Arc::new(Mutex::new(RecordsPruned {
                ring_bytes: rotation.total,
                keep_files: rotation.keep,
                ..RecordsPruned::default()
            })),
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
        // The closed files went with the directory: the summary says the
        // directory was removed, the bound has nothing of them to delete.
        self.retention.forget();
        let ecs = self.ecs.iter_mut().flat_map(|(x, c)| [x, c]);
        for file in [&mut self.exchanges, &mut self.connections]
            .into_iter()
            .chain(ecs)
        {
            match file.reopen() {
                Ok(()) => tracing::info!(
                    "records: {} opened again in the recreated output directory",
                    file.path().display()
                ),
                Err(e) => tracing::warn!(
                    "records: cannot open {} again in the recreated output directory: {e}",
                    file.path().display()
                ),
            }
        }
    }

    /// The count of records that could not be written, live.
    pub fn write_errors(&self) -> Arc<AtomicU64> {
        self.lost.clone()
    }

    /// What the bound deleted so far, live.
    pub fn pruned(&self) -> Arc<Mutex<RecordsPruned>> {
        self.pruned.clone()
    }

    fn count(&self, lost: u64) {
        if lost > 0 {
            self.lost.fetch_add(lost, Ordering::Relaxed);
        }
    }

    /// Takes what staging a record did: counts losses, and deletes the
    /// oldest files when both logs together are past their bound.
    fn pushed(&mut self, pushed: Pushed) {
        self.count(pushed.lost);
        if !self.retention.bounds() {
            return;
        }
        if let Some(closed) = pushed.closed {
            self.retention.closed(closed);
        }
        let open = self.exchanges.open_bytes() + self.connections.open_bytes();
        let due = self.retention.due(open);
        if due.is_empty() {
            return;
        }
        let mut pruned = self.pruned.lock().unwrap_or_else(PoisonError::into_inner);
        for file in due {
            match std::fs::remove_file(&file.path) {
                // Gone already (an operator removed it): its records are
                // gone from the start all the same.
                Ok(()) => pruned.count(&file),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => pruned.count(&file),
                Err(e) => tracing::warn!(
                    "records: cannot delete {} to keep the record bound: {e}; it stays (nothing is lost)",
                    file.path.display()
                ),
            }
        }
    }
}

impl RecordSink for JsonlSink {
    fn exchange(&mut self, record: &ExchangeRecord) {
        self.follow();
        let pushed = self.exchanges.push(record, &mut self.next_order);
        self.pushed(pushed);
        if let Some((exchanges, _)) = &mut self.ecs {
            let lost = exchanges.push(&ecs::exchange_event(record), &mut 0).lost;
            self.count(lost);
        }
    }

    fn connection(&mut self, record: &ConnectionRecord) {
        self.follow();
        let pushed = self.connections.push(record, &mut self.next_order);
        self.pushed(pushed);
        if let Some((_, connections)) = &mut self.ecs {
            let lost = connections
                .push(&ecs::connection_event(record), &mut 0)
                .lost;
            self.count(lost);
        }
    }

    fn flush(&mut self) {
        self.follow();
        let mut lost = self.exchanges.flush() + self.connections.flush();
        if let Some((exchanges, connections)) = &mut self.ecs {
            lost += exchanges.flush() + connections.flush();
        }
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
