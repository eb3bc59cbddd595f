//! One run's output directory as a whole: the record files, the summary
//! built alongside them, and `summary.json` at the end. The proxy, offline
//! analysis and the demo all write their results through this.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::directory::{
    check_unused, create_new_private_file, create_private_file, is_run_entry, prepare_new,
    remove_created, Unusable,
};
use super::ecs::LogSchema;
use super::log_rotation::{LogRotation, RecordsPruned};
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
    /// What the record bound deleted.
    records_pruned: Arc<Mutex<RecordsPruned>>,
    /// The directories this run created (outermost first), removed again
    /// by [`RunOutput::discard`].
    created_dirs: Vec<PathBuf>,
    /// Bumped each time the directory is found removed and recreated
    /// ([`super::directory::watch_directory`]); the writers follow it.
    dir_epoch: Arc<AtomicU64>,
}

/// Space set aside at start-up for `summary.json`, so that a disk filled
/// by the capture still takes the summary that says what was lost.
const SUMMARY_RESERVE_BYTES: usize = 64 * 1024;

/// The file holding that space until the summary is written.
const SUMMARY_RESERVE: &str = super::directory::SUMMARY_RESERVE_NAME;

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
    /// The directory holds an earlier run, which is never written over.
    #[error(
        "the output directory {} already holds a run ({}); icaptap never writes over earlier evidence: \
         give --out a new directory (without --out every run gets a fresh ./icaptap-YYYYMMDD-HHMMSS), \
         or remove the earlier run first with `icaptap clean {}`",
        dir.display(), found.join(", "), dir.display()
    )]
    HoldsRun {
        /// The directory.
        dir: PathBuf,
        /// What of an earlier run it holds.
        found: Vec<String>,
    },
    /// The path exists and is not a directory.
    #[error("the output directory {} exists and is not a directory; give --out a new directory", dir.display())]
    NotADirectory {
        /// The path.
        dir: PathBuf,
    },
    /// summary.json could not be written anywhere: it went to stderr.
    #[error("cannot write summary.json into {dir} ({source}), nor create the directory again: the summary (the run's totals) was printed to stderr instead")]
    SummaryOnStderr {
        /// The directory.
        dir: PathBuf,
        /// Why the file could not be written.
        source: std::io::Error,
    },
}

impl RunOutput {
    /// Checks, without creating or changing anything, that `dir` can take
    /// a new run: it does not exist, or it is a directory holding nothing
    /// icaptap writes (an empty directory is fine). A run's evidence is
    /// never written over.
    pub fn check(dir: &Path) -> Result<(), OutputError> {
        check_unused(dir).map_err(|why| match why {
            Unusable::HoldsRun(mut found) => {
                // The summary, when there, first: it says a run ended here.
                found.sort_by_key(|name| name != "summary.json");
                if found.len() > 4 {
                    let more = found.len() - 3;
                    found.truncate(3);
                    found.push(format!("{more} more"));
                }
                OutputError::HoldsRun {
                    dir: dir.to_path_buf(),
                    found,
                }
            }
            Unusable::NotADirectory => OutputError::NotADirectory {
                dir: dir.to_path_buf(),
            },
            Unusable::Io(source) => OutputError::Create {
                dir: dir.to_path_buf(),
                source,
            },
        })
    }

    /// Creates `dir` (0700) and its record files (0600), after
    /// [`RunOutput::check`]. Fails without leaving anything it created.
    pub fn create(dir: &Path) -> Result<RunOutput, OutputError> {
        RunOutput::create_with(dir, LogRotation::default(), LogSchema::Icaptap)
    }

    /// [`create`](Self::create), with record logs that rotate and are
    /// bounded as `logs` says.
    pub fn create_with_logs(dir: &Path, logs: LogRotation) -> Result<RunOutput, OutputError> {
        RunOutput::create_with(dir, logs, LogSchema::Icaptap)
    }

    /// [`create`](Self::create), with record logs that rotate and are
    /// bounded as `logs` says, and the record files `schema` asks for (the
    /// ECS files beside the native ones).
    pub fn create_with(
        dir: &Path,
        logs: LogRotation,
        schema: LogSchema,
    ) -> Result<RunOutput, OutputError> {
        RunOutput::check(dir)?;
        let err = |source| OutputError::Create {
            dir: dir.to_path_buf(),
            source,
        };
        let created_dirs = prepare_new(dir).map_err(err)?;
        let undo = |source: std::io::Error| {
            // A file that existed already is someone else's: leave it.
            if source.kind() != std::io::ErrorKind::AlreadyExists {
                remove_created(&RunOutput::own_files(dir), &created_dirs);
            }
            err(source)
        };
        let mut sink = JsonlSink::create_with(dir, logs, schema).map_err(undo)?;
        let dir_epoch = Arc::new(AtomicU64::new(0));
        sink.follow_directory(dir_epoch.clone());
        // Real bytes, not a sparse file: a full tmpfs or disk must not be
        // able to take this space back.
        create_new_private_file(&dir.join(SUMMARY_RESERVE))
            .and_then(|mut f| f.write_all(&[0u8; SUMMARY_RESERVE_BYTES]))
            .map_err(undo)?;
        Ok(RunOutput {
            dir: dir.to_path_buf(),
            summary: SharedSummary::default(),
            record_write_errors: sink.write_errors(),
            records_pruned: sink.pruned(),
            sink: Some(sink),
            created_dirs,
            dir_epoch,
        })
    }

    /// The files of icaptap's that a run which failed to start may have
    /// left in `dir` (which held none of them before it began).
    fn own_files(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .filter(|e| is_run_entry(&e.file_name().to_string_lossy()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes what this run created (its files, then the directories it
    /// made, if empty), for a run that failed to start: no half-made
    /// output directory is left for a later reader to take for a run.
    /// Everything that was there before stays.
    pub fn discard(self) {
        remove_created(&RunOutput::own_files(&self.dir), &self.created_dirs);
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The counter the writers follow to reopen their files when the
    /// directory is recreated.
    pub fn directory_epoch(&self) -> Arc<AtomicU64> {
        self.dir_epoch.clone()
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
        self.finish_at(mode, drops, forwarded, Some(crate::tap::now_micros()))
    }

    /// [`finish`](Self::finish) for a run whose end is not now: an
    /// analysis ends at its capture's last ICAP packet (`None` when it held
    /// none).
    pub fn finish_at(
        &self,
        mode: &str,
        drops: Drops,
        forwarded: Option<Forwarded>,
        ended: Option<crate::tap::Micros>,
    ) -> Result<Summary, OutputError> {
        let mut summary = self.summary.snapshot();
        summary.mode = mode.to_string();
        summary.command = std::env::args().collect();
        summary.ended = ended.map(super::rfc3339);
        summary.drops = drops;
        summary.drops.record_write_errors += self.record_write_errors.load(Ordering::Relaxed);
        summary.forwarded = forwarded;
        summary.output_dir_recreated = self.dir_epoch.load(Ordering::Relaxed);
        let pruned = self
            .records_pruned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        summary.records_pruned = pruned.any().then_some(pruned);
        summary.evidence = Some(Evidence::of(&summary));
        // Every writer is done: the reserved space is the summary's now.
        let _ = std::fs::remove_file(self.dir.join(SUMMARY_RESERVE));
        let path = self.dir.join("summary.json");
        let json = serde_json::to_vec_pretty(&summary).map_err(std::io::Error::other);
        let write = |json: &[u8]| -> std::io::Result<()> {
            let mut file = create_private_file(&path)?;
            file.write_all(json)?;
            file.write_all(b"\n")
        };
        let written = json.as_deref().map_err(|e| std::io::Error::other(e.to_string())).and_then(|json| {
            write(json).or_else(|first| {
                // The directory went away (removed at the very end, or it
                // could not be recreated during the run): make it again.
                if first.kind() != std::io::ErrorKind::NotFound {
                    return Err(first);
                }
                super::directory::prepare(&self.dir)?;
                tracing::warn!(
                    "the output directory {} was gone at the end of the run; created it again for summary.json",
                    self.dir.display()
                );
                write(json)
            })
        });
        if let Err(source) = written {
            // Never end a run without its totals.
            if super::terminal::json_notices() {
                super::terminal::notice_with(
                    super::terminal::NoticeLevel::Error,
                    format_args!("icaptap: summary.json of {}", self.dir.display()),
                    serde_json::json!({ "summary": serde_json::to_value(&summary).ok() }),
                );
            } else {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "icaptap: summary.json of {}:", self.dir.display());
                if let Ok(json) = &json {
                    let _ = err.write_all(json);
                }
                let _ = writeln!(err);
            }
            return Err(OutputError::SummaryOnStderr {
                dir: self.dir.clone(),
                source,
            });
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discarded_run_leaves_only_what_was_there() {
        let tmp = tempfile::tempdir().unwrap();
        // New directories, parents included, go again.
        let nested = tmp.path().join("a/b/run");
        let output = RunOutput::create(&nested).unwrap();
        assert!(nested.join(SUMMARY_RESERVE).is_file());
        std::fs::write(nested.join("capture.pcapng"), b"begun").unwrap();
        output.discard();
        assert!(!tmp.path().join("a").exists());

        // An existing directory stays, with what it held.
        let mine = tmp.path().join("mine");
        std::fs::create_dir(&mine).unwrap();
        std::fs::write(mine.join("notes.txt"), b"keep me").unwrap();
        RunOutput::create(&mine).unwrap().discard();
        let left: Vec<_> = std::fs::read_dir(&mine)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["notes.txt"]);
    }

    #[test]
    fn a_directory_holding_only_rotated_records_is_a_run_and_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("connections-0007.jsonl"), b"{}\n").unwrap();
        let err = RunOutput::create(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("connections-0007.jsonl"), "{err}");
        let rotating = tmp.path().join("new");
        let output = RunOutput::create_with_logs(&rotating, LogRotation::ring(1 << 20)).unwrap();
        assert!(rotating.join("exchanges-0001.jsonl").is_file());
        assert!(rotating.join("connections-0001.jsonl").is_file());
        assert!(!rotating.join("exchanges.jsonl").exists());
        output.discard();
        assert!(!rotating.exists());
    }

    #[test]
    fn a_directory_holding_a_run_is_refused_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("case");
        RunOutput::create(&dir)
            .unwrap()
            .finish("test", Drops::default(), None)
            .unwrap();
        let before = std::fs::read(dir.join("summary.json")).unwrap();
        let err = RunOutput::create(&dir).unwrap_err().to_string();
        assert!(err.contains("already holds a run"), "{err}");
        assert!(err.contains("summary.json"), "{err}");
        assert!(err.contains("icaptap clean"), "{err}");
        assert_eq!(std::fs::read(dir.join("summary.json")).unwrap(), before);
        assert!(!dir.join(SUMMARY_RESERVE).exists());

        let file = tmp.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let err = RunOutput::create(&file).unwrap_err().to_string();
        assert!(err.contains("is not a directory"), "{err}");
    }
}
