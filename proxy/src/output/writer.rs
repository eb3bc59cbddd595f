//! Where records go. The observer is handed a [`RecordSink`] and knows
//! nothing of files; [`JsonlSink`] writes the two JSON Lines files of an
//! output directory, [`MemorySink`] keeps records for tests and for the
//! report.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::directory::create_private_file;
use super::records::{ConnectionRecord, ExchangeRecord};

/// Receives every record the observer produces.
pub trait RecordSink: Send {
    /// One exchange is over.
    fn exchange(&mut self, record: &ExchangeRecord);
    /// One connection is over.
    fn connection(&mut self, record: &ConnectionRecord);
    /// Push buffered records to their destination.
    fn flush(&mut self) {}
}

impl RecordSink for Box<dyn RecordSink> {
    fn exchange(&mut self, record: &ExchangeRecord) {
        self.as_mut().exchange(record);
    }

    fn connection(&mut self, record: &ConnectionRecord) {
        self.as_mut().connection(record);
    }

    fn flush(&mut self) {
        self.as_mut().flush();
    }
}

/// Writes `exchanges.jsonl` and `connections.jsonl`, buffered.
#[derive(Debug)]
pub struct JsonlSink {
    exchanges: BufWriter<File>,
    connections: BufWriter<File>,
    /// Records that could not be written (disk full, directory removed).
    pub write_errors: u64,
}

impl JsonlSink {
    /// Creates both files in `dir` (mode 0600).
    pub fn create(dir: &Path) -> std::io::Result<JsonlSink> {
        Ok(JsonlSink {
            exchanges: BufWriter::with_capacity(
                64 * 1024,
                create_private_file(&dir.join("exchanges.jsonl"))?,
            ),
            connections: BufWriter::with_capacity(
                64 * 1024,
                create_private_file(&dir.join("connections.jsonl"))?,
            ),
            write_errors: 0,
        })
    }

    fn write_line<T: serde::Serialize>(out: &mut BufWriter<File>, record: &T) -> bool {
        let Ok(mut line) = serde_json::to_vec(record) else {
            return false;
        };
        line.push(b'\n');
        out.write_all(&line).is_ok()
    }
}

impl RecordSink for JsonlSink {
    fn exchange(&mut self, record: &ExchangeRecord) {
        if !Self::write_line(&mut self.exchanges, record) {
            self.write_errors += 1;
        }
    }

    fn connection(&mut self, record: &ConnectionRecord) {
        if !Self::write_line(&mut self.connections, record) {
            self.write_errors += 1;
        }
    }

    fn flush(&mut self) {
        if self.exchanges.flush().is_err() || self.connections.flush().is_err() {
            self.write_errors += 1;
        }
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

/// Sends every record to two sinks (files, and the live status).
#[derive(Debug)]
pub struct Tee<A, B>(pub A, pub B);

impl<A: RecordSink, B: RecordSink> RecordSink for Tee<A, B> {
    fn exchange(&mut self, record: &ExchangeRecord) {
        self.0.exchange(record);
        self.1.exchange(record);
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
