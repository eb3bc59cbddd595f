//! What `icaptap proxy --metrics` reports: the `/metrics` body in the
//! Prometheus text exposition format 0.0.4 (every name starts with
//! `icaptap_`; counters end in `_total`, histograms in `_seconds`, byte
//! counts carry `_bytes`) and the `/status` JSON (live summary, forwarding
//! counters, the last exchanges with problems). [`super::endpoint`] serves
//! them over HTTP.
//!
//! Figures come from two places: atomics the side paths already keep
//! (forwarding, queue drops, recorder), read at scrape time; and
//! [`RecordMetrics`], a record sink on the observer's thread that counts
//! exchanges by method and verdict, anomalies by code and latency per ICAP
//! service (RFC 3507 section 4.2 URI path). Scrapes never touch the
//! forwarding path.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::exposition::{float, Exposition};
use super::process::ProcessStats;
use crate::capture::RecordCounters;
use crate::forward::ForwardCounters;
use crate::output::records::{ConnectionRecord, ExchangeRecord};
use crate::output::run::SharedSummary;
use crate::output::writer::RecordSink;
use crate::tap::DropCounters;

/// Upper bounds (seconds) of the latency histogram buckets: from half a
/// millisecond (a sensor answering OPTIONS from memory) to a minute (a large
/// file in a sandbox).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Exchanges with problems that `/status` shows, newest last.
pub const RECENT_PROBLEMS: usize = 50;

/// Distinct label sets per metric family: a client sending random method
/// tokens or service paths must not grow memory without bound. Beyond it,
/// new label values are counted under `other`.
pub const MAX_LABEL_SETS: usize = 512;

/// A latency histogram with fixed Prometheus buckets.
#[derive(Clone, Debug, Default)]
struct LatencyHistogram {
    /// Non-cumulative counts per bucket of [`LATENCY_BUCKETS`], then `+Inf`.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl LatencyHistogram {
    fn observe(&mut self, seconds: f64) {
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[slot] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

/// What the records said so far.
#[derive(Debug, Default)]
struct RecordTotals {
    exchanges: BTreeMap<(String, String), u64>,
    anomalies: BTreeMap<(String, String), u64>,
    latency: BTreeMap<(String, String), LatencyHistogram>,
    connections: u64,
    recent_problems: VecDeque<ExchangeRecord>,
}

/// Keeps `key` unless the map is full of other keys, in which case the
/// overflow key stands in for it.
fn bounded_key<V>(map: &BTreeMap<(String, String), V>, key: (String, String)) -> (String, String) {
    if map.len() < MAX_LABEL_SETS || map.contains_key(&key) {
        key
    } else {
        ("other".to_string(), "other".to_string())
    }
}

/// A record sink counting what `/metrics` and `/status` report. Clones share
/// the counts: hand one to the observer, keep one for the server.
#[derive(Clone, Debug, Default)]
pub struct RecordMetrics(Arc<Mutex<RecordTotals>>);

impl RecordMetrics {
    fn with<T>(&self, f: impl FnOnce(&mut RecordTotals) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The last exchanges with a problem verdict or an error/warn anomaly.
    pub fn recent_problems(&self) -> Vec<ExchangeRecord> {
        self.with(|t| t.recent_problems.iter().cloned().collect())
    }
}

/// Whether an exchange belongs on the `/status` problem list.
fn is_problem(r: &ExchangeRecord) -> bool {
    crate::evidence::facts::is_problem_verdict(&r.verdict)
        || r.anomalies
            .iter()
            .any(|a| a.severity == "error" || a.severity == "warn")
}

impl RecordSink for RecordMetrics {
    fn exchange(&mut self, r: &ExchangeRecord) {
        self.with(|t| {
            let method = r.method.clone().unwrap_or_else(|| "-".to_string());
            let key = bounded_key(&t.exchanges, (method.clone(), r.verdict.clone()));
            *t.exchanges.entry(key).or_default() += 1;
            for a in &r.anomalies {
                let key = bounded_key(&t.anomalies, (a.code.clone(), a.severity.clone()));
                *t.anomalies.entry(key).or_default() += 1;
            }
            if let Some(us) = r.latency_us {
                let service = r.service.clone().unwrap_or_else(|| "-".to_string());
                let key = bounded_key(&t.latency, (method, service));
                t.latency.entry(key).or_default().observe(us as f64 / 1e6);
            }
            if is_problem(r) {
                if t.recent_problems.len() == RECENT_PROBLEMS {
                    t.recent_problems.pop_front();
                }
                t.recent_problems.push_back(r.clone());
            }
        });
    }

    fn connection(&mut self, r: &ConnectionRecord) {
        self.with(|t| {
            t.connections += 1;
            for a in &r.anomalies {
                let key = bounded_key(&t.anomalies, (a.code.clone(), a.severity.clone()));
                *t.anomalies.entry(key).or_default() += 1;
            }
        });
    }
}

/// One listener's forwarding counters and the labels its metrics carry.
#[derive(Clone, Debug)]
pub struct ListenerCounters {
    /// The address it accepts clients on (`listener` label).
    pub listener: String,
    /// The sensor it forwards to, as the user named it (`upstream` label).
    pub upstream: String,
    /// Its counters.
    pub counters: Arc<ForwardCounters>,
}

/// Everything a scrape reads: shared handles, no copies.
#[derive(Clone, Debug)]
pub struct LiveSources {
    /// Forwarding counters (connections, bytes each way), one per listener:
    /// the main one, then each `--route`.
    pub forward: Vec<ListenerCounters>,
    /// Taps the observer's queue dropped.
    pub observer_drops: Arc<DropCounters>,
    /// Taps the recorder's queue dropped, when recording.
    pub recorder_drops: Option<Arc<DropCounters>>,
    /// The recorder's own counters, when recording.
    pub recorder: Option<Arc<RecordCounters>>,
    /// Counts from the records.
    pub records: RecordMetrics,
    /// The live summary (for `/status`).
    pub summary: SharedSummary,
    /// Flight-recorder incidents (triggers seen, incidents written).
    pub incidents: Arc<IncidentCounters>,
    /// Why the run is stopping, once it is.
    pub stop_reason: Arc<Mutex<Option<String>>>,
    /// Cancelled when the proxy begins to stop (for `/healthz`).
    pub stopping: CancellationToken,
    /// When the run started.
    pub started: Instant,
}

/// Flight-recorder counters.
#[derive(Debug, Default)]
pub struct IncidentCounters {
    /// Trigger anomalies seen.
    pub triggers: AtomicU64,
    /// Incidents written (directory, report and bundle).
    pub written: AtomicU64,
    /// Incidents that could not be written.
    pub failed: AtomicU64,
}

/// The `/metrics` body.
pub fn render_metrics(src: &LiveSources) -> String {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut out = Exposition(String::with_capacity(8 * 1024));
    out.family(
        "icaptap_build_info",
        "gauge",
        "icaptap's version (always 1).",
    );
    out.sample(
        "icaptap_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    out.family(
        "icaptap_uptime_seconds",
        "gauge",
        "Seconds since this run started.",
    );
    out.sample(
        "icaptap_uptime_seconds",
        &[],
        float(src.started.elapsed().as_secs_f64()),
    );

    // Forwarding, per listener: a `--route` is its own series.
    type Field = fn(&ForwardCounters) -> &AtomicU64;
    let per_listener: [(&str, &str, &str, Field); 6] = [
        (
            "icaptap_connections_open",
            "gauge",
            "ICAP client connections being forwarded now, by listener.",
            |c| &c.connections_open,
        ),
        (
            "icaptap_connections_total",
            "counter",
            "ICAP client connections accepted, by listener.",
            |c| &c.connections_total,
        ),
        (
            "icaptap_connect_failures_total",
            "counter",
            "Connections whose sensor leg could not be opened, by listener.",
            |c| &c.connect_failures,
        ),
        (
            "icaptap_connection_resets_total",
            "counter",
            "Connections that ended in a reset from either side, by listener.",
            |c| &c.resets,
        ),
        (
            "icaptap_fd_limit_hits_total",
            "counter",
            "Accepts or sensor connects that failed on the open-file limit (raise ulimit -n), by listener.",
            |c| &c.fd_limit_hits,
        ),
        (
            "icaptap_accept_errors_total",
            "counter",
            "Accepts that failed for another reason than the open-file limit, by listener.",
            |c| &c.accept_errors,
        ),
    ];
    for (name, kind, help, field) in per_listener {
        out.family(name, kind, help);
        for l in &src.forward {
            out.sample(
                name,
                &[("listener", &l.listener), ("upstream", &l.upstream)],
                get(field(&l.counters)),
            );
        }
    }
    out.family(
        "icaptap_forwarded_bytes_total",
        "counter",
        "Bytes forwarded, by listener and direction.",
    );
    for l in &src.forward {
        for (direction, field) in [
            ("client_to_sensor", &l.counters.bytes_client_to_sensor),
            ("sensor_to_client", &l.counters.bytes_sensor_to_client),
        ] {
            out.sample(
                "icaptap_forwarded_bytes_total",
                &[
                    ("listener", &l.listener),
                    ("upstream", &l.upstream),
                    ("direction", direction),
                ],
                get(field),
            );
        }
    }

    src.records.with(|t| {
        out.family(
            "icaptap_exchanges_total",
            "counter",
            "ICAP exchanges decoded, by method and verdict.",
        );
        for ((method, verdict), n) in &t.exchanges {
            out.sample(
                "icaptap_exchanges_total",
                &[("method", method), ("verdict", verdict)],
                n,
            );
        }
        out.family(
            "icaptap_anomalies_total",
            "counter",
            "Protocol anomalies found, by code and severity (docs/anomalies.md).",
        );
        for ((code, severity), n) in &t.anomalies {
            out.sample(
                "icaptap_anomalies_total",
                &[("code", code), ("severity", severity)],
                n,
            );
        }
        let name = "icaptap_exchange_latency_seconds";
        out.family(
            name,
            "histogram",
            "Request sent to response head, by method and ICAP service.",
        );
        for ((method, service), h) in &t.latency {
            let mut cumulative = 0;
            for (i, n) in h.buckets.iter().enumerate() {
                cumulative += n;
                let le = float(LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY));
                out.sample(
                    &format!("{name}_bucket"),
                    &[("method", method), ("service", service), ("le", &le)],
                    cumulative,
                );
            }
            let labels = [("method", method.as_str()), ("service", service.as_str())];
            out.sample(&format!("{name}_sum"), &labels, float(h.sum));
            out.sample(&format!("{name}_count"), &labels, h.count);
        }
        out.single(
            "icaptap_connections_closed_total",
            "counter",
            "Connections the observer finished (written to connections.jsonl).",
            t.connections,
        );
    });

    out.single(
        "icaptap_observer_dropped_taps_total",
        "counter",
        "Taps the observer's queue dropped because it was behind (forwarding went on).",
        get(&src.observer_drops.taps),
    );
    out.single(
        "icaptap_observer_dropped_bytes_total",
        "counter",
        "Payload bytes the observer did not see because its queue was full.",
        get(&src.observer_drops.bytes),
    );
    let recorder_taps = src.recorder_drops.as_ref().map_or(0, |d| get(&d.taps));
    let recorder_bytes = src.recorder_drops.as_ref().map_or(0, |d| get(&d.bytes));
    out.single(
        "icaptap_recorder_dropped_taps_total",
        "counter",
        "Taps the recorder's queue dropped because it was behind (forwarding went on).",
        recorder_taps,
    );
    out.single(
        "icaptap_recorder_dropped_bytes_total",
        "counter",
        "Payload bytes missing from the capture because the recorder's queue was full.",
        recorder_bytes,
    );
    let rec = |f: fn(&RecordCounters) -> &AtomicU64| src.recorder.as_ref().map_or(0, |r| get(f(r)));
    out.single(
        "icaptap_recorder_written_bytes_total",
        "counter",
        "Bytes written to capture files.",
        rec(|r| &r.bytes_written),
    );
    out.single(
        "icaptap_recorder_unwritten_bytes_total",
        "counter",
        "Capture bytes lost to write errors (full or failing disk).",
        rec(|r| &r.unwritten_bytes),
    );
    out.single(
        "icaptap_recorder_write_errors_total",
        "counter",
        "Failed writes or creations of capture files.",
        rec(|r| &r.write_errors),
    );
    out.single(
        "icaptap_recorder_capture_stopped",
        "gauge",
        "1 when the capture stopped to keep disk space for the records (disk-reserve, disk-full); records go on.",
        src.recorder
            .as_ref()
            .map_or(0, |r| u64::from(r.stopped.get().is_some())),
    );
    out.single(
        "icaptap_recorder_files_total",
        "counter",
        "Capture files created.",
        rec(|r| &r.files),
    );
    out.single(
        "icaptap_flight_triggers_total",
        "counter",
        "Anomalies named by --trigger that were seen.",
        get(&src.incidents.triggers),
    );
    out.single(
        "icaptap_flight_incidents_total",
        "counter",
        "Flight-recorder incidents written (directory, report and bundle).",
        get(&src.incidents.written),
    );
    out.single(
        "icaptap_flight_incident_failures_total",
        "counter",
        "Flight-recorder incidents that could not be written.",
        get(&src.incidents.failed),
    );
    ProcessStats::read().render(&mut out);
    out.0
}

/// The `/status` body.
pub fn render_status(src: &LiveSources) -> serde_json::Value {
    let forward: Vec<_> = src
        .forward
        .iter()
        .map(|l| {
            let mut v = serde_json::to_value(l.counters.snapshot()).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("listener".into(), l.listener.clone().into());
                o.insert("upstream".into(), l.upstream.clone().into());
            }
            v
        })
        .collect();
    serde_json::json!({
        "icaptap_version": env!("CARGO_PKG_VERSION"),
        "uptime_s": src.started.elapsed().as_secs_f64(),
        "stopping": src.stopping.is_cancelled(),
        "stop_reason": src.stop_reason.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        "listeners": forward,
        "summary": src.summary.snapshot(),
        "incidents": {
            "triggers": src.incidents.triggers.load(Ordering::Relaxed),
            "written": src.incidents.written.load(Ordering::Relaxed),
            "failed": src.incidents.failed.load(Ordering::Relaxed),
        },
        "recent_problems": src.records.recent_problems(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_bounds() {
        let mut h = LatencyHistogram::default();
        h.observe(0.0005);
        h.observe(0.0006);
        h.observe(100.0);
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[LATENCY_BUCKETS.len()], 1);
        assert_eq!(h.count, 3);
    }

    #[test]
    fn label_sets_are_bounded() {
        let mut m = RecordMetrics::default();
        for i in 0..(MAX_LABEL_SETS + 10) {
            let r = crate::output::records::ExchangeRecord {
                method: Some(format!("M{i}")),
                ..sample()
            };
            m.exchange(&r);
        }
        let n = m.with(|t| t.exchanges.len());
        assert_eq!(n, MAX_LABEL_SETS + 1);
    }

    fn sample() -> ExchangeRecord {
        ExchangeRecord {
            schema: 1,
            ts: String::new(),
            ts_us: 0,
            conn: 1,
            seq: 0,
            client: String::new(),
            server: String::new(),
            method: None,
            uri: None,
            service: None,
            icap_status: None,
            verdict: "clean".into(),
            threat: None,
            block_reason: None,
            squid_outcome: None,
            anomalies: Vec::new(),
            latency_us: None,
            istag: None,
            http_method: None,
            http_url: None,
            http_status: None,
            http_status_returned: None,
            request_body_bytes: 0,
            response_body_bytes: 0,
            request_body_sha256: None,
            request_body_sha256_skipped: None,
            preview: None,
            identity: Default::default(),
            products: Default::default(),
            timings: Default::default(),
            frames: None,
            decode_complete: true,
            tls: None,
        }
    }
}
