//! One run's output directory as a whole: the record files, the summary
//! built alongside them, and `summary.json` at the end. The proxy, offline
//! analysis and the demo all write their results through this.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::directory::{create_private_file, prepare};
use super::records::{ConnectionRecord, ExchangeRecord};
use super::summary::{Drops, Evidence, Forwarded, Summary, SummaryBuilder};
use super::writer::{JsonlSink, RecordSink, Tee};

/// A summary shared between the observer (which feeds it) and whoever
/// reports on the run while it goes (status line, metrics).
#[derive(Clone, Debug, Default)]
pub struct SharedSummary(pub Arc<Mutex<SummaryBuilder>>);

impl SharedSummary {
    /// The summary so far.
    pub fn snapshot(&self) -> Summary {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .snapshot()
    }
}

impl RecordSink for SharedSummary {
    fn exchange(&mut self, record: &ExchangeRecord) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .exchange(record);
    }

    fn connection(&mut self, record: &ConnectionRecord) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .connection(record);
    }
}

/// The output directory of a run.
#[derive(Debug)]
pub struct RunOutput {
    dir: PathBuf,
    summary: SharedSummary,
    sink: Option<JsonlSink>,
    /// Records the files could not take (disk full, directory removed).
    record_write_errors: Arc<AtomicU64>,
}

/// Space set aside at start-up for `summary.json`, so that a disk filled
/// by the capture still takes the summary that says what was lost.
const SUMMARY_RESERVE_BYTES: usize = 64 * 1024;

/// The file holding that space until the summary is written.
const SUMMARY_RESERVE: &str = ".icaptap-summary-reserve";

/// Why a run's output could not be created or completed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The directory or a file in it could not be created.
    #[error("cannot write to the output directory {dir}: {source}; choose another with --out or fix its permissions")]
    Create {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl RunOutput {
    /// Creates `dir` (0700) and its record files (0600).
    pub fn create(dir: &Path) -> Result<RunOutput, OutputError> {
        let err = |source| OutputError::Create {
            dir: dir.to_path_buf(),
            source,
        };
        prepare(dir).map_err(err)?;
        let sink = JsonlSink::create(dir).map_err(err)?;
        // Real bytes, not a sparse file: a full tmpfs or disk must not be
        // able to take this space back.
        create_private_file(&dir.join(SUMMARY_RESERVE))
            .and_then(|mut f| f.write_all(&[0u8; SUMMARY_RESERVE_BYTES]))
            .map_err(err)?;
        Ok(RunOutput {
            dir: dir.to_path_buf(),
            summary: SharedSummary::default(),
            record_write_errors: sink.write_errors(),
            sink: Some(sink),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The live summary.
    pub fn summary(&self) -> SharedSummary {
        self.summary.clone()
    }

    /// The sink the observer writes to: the record files and the summary.
    /// Can be taken once.
    pub fn take_sink(&mut self) -> Box<dyn RecordSink> {
        match self.sink.take() {
            Some(files) => Box::new(Tee(files, self.summary.clone())),
            None => Box::new(self.summary.clone()),
        }
    }

    /// Completes the summary with the run's facts (and, live, what the
    /// forwarding path counted), judges whether its evidence is whole, and
    /// writes `summary.json`.
    pub fn finish(
        &self,
        mode: &str,
        drops: Drops,
        forwarded: Option<Forwarded>,
    ) -> Result<Summary, OutputError> {
        let mut summary = self.summary.snapshot();
        summary.mode = mode.to_string();
        summary.command = std::env::args().collect();
        summary.ended = Some(super::rfc3339(crate::tap::now_micros()));
        summary.drops = drops;
        summary.drops.record_write_errors += self.record_write_errors.load(Ordering::Relaxed);
        summary.forwarded = forwarded;
        summary.evidence = Some(Evidence::of(&summary));
        // Every writer is done: the reserved space is the summary's now.
        let _ = std::fs::remove_file(self.dir.join(SUMMARY_RESERVE));
        let path = self.dir.join("summary.json");
        let write = || -> std::io::Result<()> {
            let mut file = create_private_file(&path)?;
            let json = serde_json::to_vec_pretty(&summary).map_err(std::io::Error::other)?;
            file.write_all(&json)?;
            file.write_all(b"\n")
        };
        write().map_err(|source| OutputError::Create {
            dir: self.dir.clone(),
            source,
        })?;
        Ok(summary)
    }
}
