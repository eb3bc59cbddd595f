//! Load mode of the client: many requests over keep-alive connections, at
//! full speed or a fixed rate, for a count or a duration; latency in an HDR
//! histogram, errors counted by kind. `run_load` is public for benches.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::exchange::IcapConnection;
use super::request::BuiltRequest;
use crate::forward::tls::TlsUpstream;

/// Pause after a failed connect, so a dead sensor is not hammered in a
/// tight loop (each failure is still counted).
const RECONNECT_BACKOFF: Duration = Duration::from_millis(20);

/// The smallest upper bound of the latency histogram, in microseconds,
/// whatever the timeout (HDR needs at least twice the lowest value).
const LOWEST_HIGHEST_US: u64 = 1_000_000;

/// When a load run stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadStop {
    /// After this many requests (answered or failed).
    Count(u64),
    /// After this long.
    Duration(Duration),
}

/// A load run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The sensor.
    pub target: SocketAddr,
    /// The request sent every time.
    pub request: BuiltRequest,
    /// Connections used at once.
    pub concurrency: usize,
    /// When to stop.
    pub stop: LoadStop,
    /// Requests per second over all connections; `None` = as fast as
    /// answers come.
    pub rate: Option<f64>,
    /// Time allowed for each connect and each answer.
    pub timeout: Duration,
    /// ICAP over TLS: every connection's handshake (`None`: plain ICAP).
    pub tls: Option<Arc<TlsUpstream>>,
}

/// What a load run measured.
#[derive(Debug)]
pub struct LoadReport {
    /// Requests that got a final answer (any status).
    pub completed: u64,
    /// Answers by ICAP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Failures and ICAP error answers, by kind (`timeout`, `reset`,
    /// `closed`, `connect`, `status-503`...).
    pub errors: BTreeMap<String, u64>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Request bytes written.
    pub bytes_sent: u64,
    /// Response bytes read.
    pub bytes_received: u64,
    /// Connections opened.
    pub connections: u64,
    /// Latency (first request byte written to final response head) in
    /// microseconds.
    pub latency_us: Histogram<u64>,
}

impl LoadReport {
    /// Answered requests per second.
    pub fn requests_per_second(&self) -> f64 {
        per_second(self.completed, self.elapsed)
    }

    /// Bytes per second, both directions together.
    pub fn bytes_per_second(&self) -> f64 {
        per_second(self.bytes_sent + self.bytes_received, self.elapsed)
    }

    /// All errors together.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

fn per_second(n: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "answered {} requests in {:.2} s over {} connections: {:.1} req/s, {:.2} MB/s ({} B sent, {} B received)",
            self.completed,
            self.elapsed.as_secs_f64(),
            self.connections,
            self.requests_per_second(),
            self.bytes_per_second() / 1e6,
            self.bytes_sent,
            self.bytes_received,
        )?;
        let h = &self.latency_us;
        if h.is_empty() {
            writeln!(f, "latency: no answers")?;
        } else {
            writeln!(
                f,
                "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3})",
                ms(h.value_at_quantile(0.50)),
                ms(h.value_at_quantile(0.90)),
                ms(h.value_at_quantile(0.99)),
                ms(h.value_at_quantile(0.999)),
                ms(h.max()),
                h.mean() / 1000.0,
            )?;
        }
        writeln!(f, "ICAP statuses: {}", tally_text(&self.statuses))?;
        writeln!(f, "errors: {}", tally_text(&self.errors))
    }
}

/// `key xN, key xN` in key order, or `none`.
fn tally_text<K: fmt::Display>(counts: &BTreeMap<K, u64>) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k} x{n}")).collect();
    parts.join(", ")
}

/// What one worker measured.
#[derive(Debug)]
struct WorkerTally {
    completed: u64,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    bytes_sent: u64,
    bytes_received: u64,
    connections: u64,
    latency_us: Histogram<u64>,
}

/// Shared pacing: request tickets are numbered, and with a rate ticket i
/// is due at `start + i / rate`, so the rate holds over all workers.
#[derive(Debug)]
struct Schedule {
    next: AtomicU64,
    start: Instant,
    stop: LoadStop,
    rate: Option<f64>,
}

impl Schedule {
    /// The next request's due time, or `None` when the run is over.
    fn take(&self) -> Option<Instant> {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        let due = match self.rate {
            Some(r) if r > 0.0 => self.start + Duration::from_secs_f64(ticket as f64 / r),
            _ => Instant::now(),
        };
        match self.stop {
            LoadStop::Count(n) if ticket >= n => None,
            LoadStop::Duration(d) if due >= self.start + d || Instant::now() >= self.start + d => {
                None
            }
            _ => Some(due),
        }
    }
}

async fn worker(
    config: Arc<LoadConfig>,
    schedule: Arc<Schedule>,
    mut tally: WorkerTally,
) -> WorkerTally {
    let mut conn: Option<IcapConnection> = None;
    while let Some(due) = schedule.take() {
        tokio::time::sleep_until(due).await;
        if conn.as_ref().is_none_or(|c| !c.is_reusable()) {
            match IcapConnection::connect_over(config.target, config.tls.as_deref(), config.timeout)
                .await
            {
                Ok(c) => {
                    tally.connections += 1;
                    conn = Some(c);
                }
                Err(e) => {
                    *tally.errors.entry(e.kind().to_owned()).or_default() += 1;
                    tokio::time::sleep(RECONNECT_BACKOFF).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match c.send(&config.request, config.timeout).await {
            Ok(answer) => {
                tally.completed += 1;
                tally.bytes_sent += answer.bytes_sent;
                tally.bytes_received += answer.bytes_received;
                *tally.statuses.entry(answer.head.status).or_default() += 1;
                if answer.head.status >= 400 {
                    *tally
                        .errors
                        .entry(format!("status-{}", answer.head.status))
                        .or_default() += 1;
                }
                if !answer.complete {
                    *tally.errors.entry("truncated".to_owned()).or_default() += 1;
                }
                let us = u64::try_from(answer.latency.as_micros()).unwrap_or(u64::MAX);
                tally.latency_us.saturating_record(us.max(1));
            }
            Err(e) => {
                *tally.errors.entry(e.kind().to_owned()).or_default() += 1;
                conn = None;
            }
        }
    }
    tally
}

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The latency histogram could not be created.
    #[error("cannot create the latency histogram: {0}")]
    Histogram(#[from] hdrhistogram::CreationError),
}

/// Runs a load test and reports what it measured.
pub async fn run_load(config: LoadConfig) -> Result<LoadReport, LoadError> {
    // Fixed bounds (1 µs to the longest allowed wait, 3 significant
    // digits): workers' copies share them, so every value fits and merges.
    let highest = u64::try_from(config.timeout.as_micros())
        .unwrap_or(u64::MAX)
        .max(LOWEST_HIGHEST_US);
    let template = Histogram::<u64>::new_with_bounds(1, highest, 3)?;
    let config = Arc::new(config);
    let start = Instant::now();
    let schedule = Arc::new(Schedule {
        next: AtomicU64::new(0),
        start,
        stop: config.stop,
        rate: config.rate,
    });
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.concurrency.max(1) {
        let tally = WorkerTally {
            completed: 0,
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            bytes_sent: 0,
            bytes_received: 0,
            connections: 0,
            latency_us: Histogram::new_from(&template),
        };
        workers.spawn(worker(Arc::clone(&config), Arc::clone(&schedule), tally));
    }
    let mut report = LoadReport {
        completed: 0,
        statuses: BTreeMap::new(),
        errors: BTreeMap::new(),
        elapsed: Duration::ZERO,
        bytes_sent: 0,
        bytes_received: 0,
        connections: 0,
        latency_us: template,
    };
    while let Some(joined) = workers.join_next().await {
        let Ok(tally) = joined else {
            *report.errors.entry("worker-failed".to_owned()).or_default() += 1;
            continue;
        };
        report.completed += tally.completed;
        report.bytes_sent += tally.bytes_sent;
        report.bytes_received += tally.bytes_received;
        report.connections += tally.connections;
        for (s, n) in tally.statuses {
            *report.statuses.entry(s).or_default() += n;
        }
        for (k, n) in tally.errors {
            *report.errors.entry(k).or_default() += n;
        }
        if report.latency_us.add(&tally.latency_us).is_err() {
            *report
                .errors
                .entry("histogram-merge".to_owned())
                .or_default() += 1;
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}
