//! The flight recorder: `--ring SIZE` keeps only the newest SIZE of capture
//! on disk (a ring of [`RING_FILES`] rotating files), and `--trigger CODE`
//! turns an anomaly into an incident: the capture and records around it
//! (before and after) are kept in `OUT/incidents/NNNN-CODE/`, with a report
//! and a support bundle (`OUT/incidents/NNNN-CODE.tar.gz`), written by
//! [`crate::evidence`] exactly as for a whole run.
//!
//! How the window is kept: at the trigger, the incident takes a hold on the
//! ring ([`RingHold`]: every file the ring deletes from then on is first
//! hard-linked into the incident) and every capture file of the ring is
//! hard-linked into it (so the ring deleting a name cannot lose the data
//! before the trigger); `--trigger-after` later, files written since are
//! linked too, the file still being written is copied so the incident stops
//! growing, and the hold is released. So however often the ring turns
//! within the window, no file of it is missing. Records are kept in memory for `--trigger-before` +
//! `--trigger-after` (the JSON Lines files are buffered and cannot be read
//! back live) and those in the window are written with the incident. So the
//! capture reaches back as far as the ring does, the records as far as
//! `--trigger-before`.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::metrics::IncidentCounters;
use crate::capture::{RingHold, Rotation};
use crate::output::directory::create_private_file;
use crate::output::directory::is_capture_name;
use crate::output::records::{AnomalyRecord, ConnectionRecord, ExchangeRecord};
use crate::output::summary::SummaryBuilder;
use crate::output::writer::RecordSink;
use crate::tap::{now_micros, Micros};

/// Files in the `--ring`: the oldest file (1/8 of the ring) is what is lost
/// at each rotation, so the ring holds at least 7/8 of SIZE.
pub const RING_FILES: usize = 8;

/// The smallest ring file: smaller files only add rotations.
pub const MIN_RING_FILE_BYTES: u64 = 64 * 1024;

/// Most bytes of records (as JSON) kept in memory for incidents.
pub const MAX_KEPT_RECORD_BYTES: usize = 64 << 20;

/// How long after the window closes the capture is taken: the recorder
/// holds packets up to a second (so late annotations still land on them,
/// `RecordOptions::hold`) and flushes its file once a second.
pub const CAPTURE_SETTLE: Duration = Duration::from_millis(2500);

/// The `--trigger` value that matches every error-severity anomaly.
pub const ANY_ERROR: &str = crate::observe::codes::ANY;

/// The capture rotation that `--ring SIZE` stands for.
pub fn ring_rotation(size: u64) -> Rotation {
    Rotation {
        size: Some((size / RING_FILES as u64).max(MIN_RING_FILE_BYTES)),
        seconds: None,
        keep: Some(RING_FILES),
    }
}

/// What the flight recorder watches for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlightOptions {
    /// Anomaly codes that start an incident (or [`ANY_ERROR`]).
    pub triggers: BTreeSet<String>,
    /// Records kept from before the trigger.
    pub before: Duration,
    /// How long to keep recording after the trigger.
    pub after: Duration,
    /// Most incidents per run.
    pub max_incidents: u32,
}

/// A record as kept for incidents, with when the observer finished it.
#[derive(Clone, Debug)]
enum Kept {
    Exchange(Micros, Box<ExchangeRecord>),
    Connection(Micros, Box<ConnectionRecord>),
}

impl Kept {
    fn at(&self) -> Micros {
        match self {
            Kept::Exchange(at, _) | Kept::Connection(at, _) => *at,
        }
    }
}

/// Recent records, bounded by age and size.
#[derive(Debug, Default)]
struct RecentRecords {
    records: VecDeque<(usize, Kept)>,
    bytes: usize,
}

impl RecentRecords {
    fn push(&mut self, kept: Kept, size: usize, keep_for: Duration) {
        let oldest = kept.at().saturating_sub(keep_for.as_micros() as u64);
        self.records.push_back((size, kept));
        self.bytes += size;
        while let Some((size, front)) = self.records.front() {
            if front.at() >= oldest && self.bytes <= MAX_KEPT_RECORD_BYTES {
                break;
            }
            self.bytes -= *size;
            self.records.pop_front();
        }
    }

    fn window(&self, from: Micros, to: Micros) -> Vec<Kept> {
        self.records
            .iter()
            .map(|(_, k)| k)
            .filter(|k| (from..=to).contains(&k.at()))
            .cloned()
            .collect()
    }
}

/// One anomaly that started an incident.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Trigger {
    /// Incident number in this run, from 1.
    pub incident: u32,
    /// The anomaly's code.
    pub code: String,
    /// Its detail.
    pub detail: String,
    /// The connection it was seen on.
    pub conn: u64,
    /// When the observer reported it (RFC 3339).
    pub ts: String,
    #[serde(skip)]
    at: Micros,
}

/// The record sink side of the flight recorder, on the observer's thread:
/// keeps recent records and reports triggers to [`run_incidents`].
#[derive(Debug)]
pub struct FlightSink {
    options: FlightOptions,
    recent: Arc<Mutex<RecentRecords>>,
    triggers: mpsc::UnboundedSender<Trigger>,
    counters: Arc<IncidentCounters>,
    started: u32,
    /// End of the current incident's window: triggers before it join it.
    busy_until: Micros,
}

/// The task side: writes incidents as their windows close.
#[derive(Debug)]
pub struct IncidentWriter {
    options: FlightOptions,
    out: PathBuf,
    recent: Arc<Mutex<RecentRecords>>,
    triggers: mpsc::UnboundedReceiver<Trigger>,
    counters: Arc<IncidentCounters>,
    /// Shared with the recorder's ring (`RecordOptions::ring_hold`).
    hold: RingHold,
}

/// The flight recorder's two halves, for the run directory `out`, holding
/// the ring that writes capture files with `hold` during incidents.
pub fn flight_recorder(
    options: FlightOptions,
    out: &Path,
    counters: Arc<IncidentCounters>,
    hold: RingHold,
) -> (FlightSink, IncidentWriter) {
    let recent = Arc::new(Mutex::new(RecentRecords::default()));
    let (tx, rx) = mpsc::unbounded_channel();
    (
        FlightSink {
            options: options.clone(),
            recent: recent.clone(),
            triggers: tx,
            counters: counters.clone(),
            started: 0,
            busy_until: 0,
        },
        IncidentWriter {
            options,
            out: out.to_path_buf(),
            recent,
            triggers: rx,
            counters,
            hold,
        },
    )
}

impl FlightSink {
    fn matches(&self, a: &AnomalyRecord) -> bool {
        self.options.triggers.contains(&a.code)
            || (self.options.triggers.contains(ANY_ERROR) && a.severity == "error")
    }

    fn keep(&mut self, kept: Kept, size: usize, anomalies: &[AnomalyRecord], conn: u64) {
        let at = kept.at();
        let keep_for = self.options.before + self.options.after + Duration::from_secs(5);
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(kept, size, keep_for);
        let Some(hit) = anomalies.iter().find(|a| self.matches(a)) else {
            return;
        };
        self.counters.triggers.fetch_add(1, Ordering::Relaxed);
        if at < self.busy_until || self.started >= self.options.max_incidents {
            return;
        }
        self.started += 1;
        self.busy_until = at + self.options.after.as_micros() as u64;
        let _ = self.triggers.send(Trigger {
            incident: self.started,
            code: hit.code.clone(),
            detail: hit.detail.clone(),
            conn,
            ts: crate::output::rfc3339(at),
            at,
        });
    }
}

impl RecordSink for FlightSink {
    fn exchange(&mut self, r: &ExchangeRecord) {
        let size = serde_json::to_vec(r).map_or(1024, |v| v.len());
        let kept = Kept::Exchange(now_micros(), Box::new(r.clone()));
        self.keep(kept, size, &r.anomalies, r.conn);
    }

    fn connection(&mut self, r: &ConnectionRecord) {
        let size = serde_json::to_vec(r).map_or(1024, |v| v.len());
        let kept = Kept::Connection(now_micros(), Box::new(r.clone()));
        self.keep(kept, size, &r.anomalies, r.conn);
    }
}

/// An incident that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    /// A file of the incident could not be written or linked.
    #[error("flight recorder: cannot write incident file {path}: {source}; check free space in the output directory")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The report or bundle failed.
    #[error("flight recorder: the report or bundle of {dir} failed: {source}")]
    Evidence {
        /// The incident directory.
        dir: PathBuf,
        /// The cause.
        source: crate::evidence::EvidenceError,
    },
}

/// Where incident `n` goes.
fn incident_dir(out: &Path, trigger: &Trigger) -> PathBuf {
    let code: String = trigger
        .code
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.join("incidents")
        .join(format!("{:04}-{code}", trigger.incident))
}

/// Capture files in `dir`, oldest first.
fn capture_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(is_capture_name)
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Hard-links the run's capture files not yet in `dir` into it.
fn link_captures(out: &Path, dir: &Path) -> Result<(), IncidentError> {
    for source in capture_files(out) {
        let Some(name) = source.file_name() else {
            continue;
        };
        let target = dir.join(name);
        if target.exists() {
            continue;
        }
        match std::fs::hard_link(&source, &target) {
            Ok(()) => {}
            // Rotated away between listing and linking: nothing to keep.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(IncidentError::Write {
                    path: target,
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Replaces the link to the capture file still being written with a copy,
/// so the incident keeps what was there at its end and stops growing.
fn freeze_newest(out: &Path, dir: &Path) -> Result<(), IncidentError> {
    let Some(newest) = capture_files(out).pop() else {
        return Ok(());
    };
    let Some(name) = newest.file_name() else {
        return Ok(());
    };
    let target = dir.join(name);
    // Just begun, nothing written yet: not a capture to keep (its packets,
    // still staged, are past the window).
    if std::fs::metadata(&newest).is_ok_and(|m| m.len() == 0) {
        return match std::fs::remove_file(&target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(IncidentError::Write {
                path: target,
                source: e,
            }),
            _ => Ok(()),
        };
    }
    let staged = dir.join(".capture-copy.partial");
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IncidentError::Write { path, source }
    };
    std::fs::copy(&newest, &staged).map_err(err(&staged))?;
    std::fs::rename(&staged, &target).map_err(err(&target))
}

fn write_lines<T: serde::Serialize>(path: &Path, records: &[&T]) -> Result<(), IncidentError> {
    use std::io::Write;
    let err = |source| IncidentError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::io::BufWriter::new(create_private_file(path).map_err(err)?);
    for r in records {
        let line = serde_json::to_vec(r).map_err(|e| err(std::io::Error::other(e)))?;
        file.write_all(&line).map_err(err)?;
        file.write_all(b"\n").map_err(err)?;
    }
    file.flush().map_err(err)
}

impl IncidentWriter {
    /// Writes incidents until the sink is gone; an incident whose window
    /// is still open when `run_over` is cancelled is written at once (call
    /// that after the recorder finished, so its capture is complete).
    pub async fn run(mut self, run_over: CancellationToken) {
        while let Some(trigger) = self.triggers.recv().await {
            let dir = incident_dir(&self.out, &trigger);
            tracing::warn!(
                incident = trigger.incident,
                code = %trigger.code,
                conn = trigger.conn,
                "flight recorder triggered; keeping the capture around it in {}",
                dir.display()
            );
            let started = crate::output::directory::prepare(&dir)
                .map_err(|source| IncidentError::Write {
                    path: dir.clone(),
                    source,
                })
                .and_then(|()| {
                    // Hold first, then link: a file the ring deletes in
                    // between is kept by the hold.
                    self.hold.hold(&dir);
                    link_captures(&self.out, &dir)
                });
            if let Err(e) = started {
                self.hold.release(&dir);
                self.fail(&e);
                continue;
            }
            tokio::select! {
                _ = run_over.cancelled() => {}
                _ = tokio::time::sleep(self.options.after + CAPTURE_SETTLE) => {}
            }
            let to = trigger.at + self.options.after.as_micros() as u64;
            let from = trigger
                .at
                .saturating_sub(self.options.before.as_micros() as u64);
            let records = self
                .recent
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .window(from, to);
            let out = self.out.clone();
            let finished = run_over.is_cancelled();
            let hold = self.hold.clone();
            let written = tokio::task::spawn_blocking(move || {
                write_incident(&out, &dir, &trigger, &records, finished, &hold).map(|()| dir)
            })
            .await;
            match written {
                Ok(Ok(dir)) => {
                    self.counters.written.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("flight recorder: incident written to {}", dir.display());
                }
                Ok(Err(e)) => self.fail(&e),
                Err(e) => self.fail(&IncidentError::Write {
                    path: self.out.join("incidents"),
                    source: std::io::Error::other(e),
                }),
            }
        }
    }

    fn fail(&self, e: &IncidentError) {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("{e} (forwarding is not affected)");
    }
}

/// Writes one incident's files, report and bundle.
fn write_incident(
    out: &Path,
    dir: &Path,
    trigger: &Trigger,
    records: &[Kept],
    run_finished: bool,
    hold: &RingHold,
) -> Result<(), IncidentError> {
    let linked = link_captures(out, dir).and_then(|()| {
        if run_finished {
            Ok(())
        } else {
            freeze_newest(out, dir)
        }
    });
    // Every file of the window is in the incident now (or the incident
    // failed): the ring may delete freely again.
    hold.release(dir);
    linked?;
    let exchanges: Vec<&ExchangeRecord> = records
        .iter()
        .filter_map(|k| match k {
            Kept::Exchange(_, r) => Some(r.as_ref()),
            Kept::Connection(..) => None,
        })
        .collect();
    let connections: Vec<&ConnectionRecord> = records
        .iter()
        .filter_map(|k| match k {
            Kept::Connection(_, r) => Some(r.as_ref()),
            Kept::Exchange(..) => None,
        })
        .collect();
    write_lines(&dir.join("exchanges.jsonl"), &exchanges)?;
    write_lines(&dir.join("connections.jsonl"), &connections)?;
    let mut builder = SummaryBuilder::new();
    for r in &exchanges {
        builder.exchange(r);
    }
    for r in &connections {
        builder.connection(r);
    }
    let mut summary = builder.snapshot();
    summary.mode = "proxy".to_string();
    summary.command = std::env::args().collect();
    summary.ended = Some(crate::output::rfc3339(now_micros()));
    write_lines(&dir.join("summary.json"), &[&summary])?;
    write_lines(&dir.join("incident.json"), &[trigger])?;
    crate::evidence::write_report(dir).map_err(|source| IncidentError::Evidence {
        dir: dir.to_path_buf(),
        source,
    })?;
    let args = crate::evidence::BundleArgs {
        dir: dir.to_path_buf(),
        output: None,
        redact: false,
        pseudonymise_ips: false,
        max_size: None,
    };
    crate::evidence::bundle::bundle(&args).map_err(|source| IncidentError::Evidence {
        dir: dir.to_path_buf(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_is_split_into_files() {
        let r = ring_rotation(80 << 20);
        assert_eq!(r.size, Some(10 << 20));
        assert_eq!(r.keep, Some(RING_FILES));
        assert_eq!(ring_rotation(1).size, Some(MIN_RING_FILE_BYTES));
    }

    #[test]
    fn recent_records_age_out() {
        let mut recent = RecentRecords::default();
        let conn = |at| {
            Kept::Connection(
                at,
                Box::new(ConnectionRecord {
                    schema: 1,
                    ts: String::new(),
                    ts_us: 0,
                    ts_close: String::new(),
                    ts_close_us: 0,
                    conn: at,
                    client: String::new(),
                    server: String::new(),
                    listen: String::new(),
                    upstream_local: None,
                    connect_error: None,
                    bytes_client_to_server: 0,
                    bytes_server_to_client: 0,
                    exchanges: 0,
                    close: Default::default(),
                    duration_us: 0,
                    unobserved_bytes: 0,
                    undelivered_client_to_server: 0,
                    undelivered_server_to_client: 0,
                    anomalies: Vec::new(),
                    tls: None,
                }),
            )
        };
        let keep = Duration::from_secs(10);
        recent.push(conn(1_000_000), 100, keep);
        recent.push(conn(5_000_000), 100, keep);
        recent.push(conn(20_000_000), 100, keep);
        assert_eq!(recent.records.len(), 1);
        assert_eq!(recent.window(0, u64::MAX).len(), 1);
        assert_eq!(recent.bytes, 100);
    }
}
