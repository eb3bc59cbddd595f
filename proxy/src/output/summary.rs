//! The run's summary (`summary.json`): totals by method, verdict and anomaly
//! code, latency percentiles, the products each side named, and what the
//! side paths missed. It is built
//! from the records themselves, so a live run, an offline analysis and a
//! report re-reading a directory all count the same way.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::records::{ConnectionRecord, ExchangeRecord, ProductsRecord, SHA256_SHED};
use super::writer::RecordSink;
use super::SCHEMA_VERSION;

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// How many latencies were measured.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

/// What the side paths could not keep up with or store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drops {
    /// Taps the observer's queue dropped.
    pub observer_taps: u64,
    /// Payload bytes in taps the observer's queue dropped.
    pub observer_bytes: u64,
    /// Taps the recorder's queue dropped.
    pub recorder_taps: u64,
    /// Payload bytes the recorder could not write (queue full, disk errors).
    pub recorder_bytes: u64,
    /// Records that could not be written to disk.
    pub record_write_errors: u64,
}

/// What the forwarding path itself counted (live runs only): the facts the
/// records are checked against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarded {
    /// Client connections accepted.
    pub connections: u64,
    /// Bytes forwarded from ICAP clients to the sensor.
    pub bytes_client_to_sensor: u64,
    /// Bytes forwarded from the sensor to ICAP clients.
    pub bytes_sensor_to_client: u64,
}

/// The capture stopped during the run so that records kept their disk
/// space (docs/deploy.md, "Disk"); records went on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureStopped {
    /// `disk-reserve` (free space reached the space kept for records) or
    /// `disk-full` (a capture write failed with ENOSPC).
    pub reason: String,
    /// When (RFC 3339).
    pub at: String,
    /// Bytes of capture written before it stopped.
    pub capture_bytes: u64,
    /// Bytes free on the output file system then, when known.
    pub free_bytes: Option<u64>,
    /// The space kept for records, when known.
    pub reserve_bytes: Option<u64>,
}

/// Whether the run's records and capture hold everything icaptap
/// forwarded (or the capture held): written near the top of summary.json,
/// and shown first by the console table and the report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// True only when nothing was dropped, unseen or left unwritten.
    pub complete: bool,
    /// What is missing, one sentence each; empty when complete.
    pub gaps: Vec<String>,
}

impl Evidence {
    /// Judges `s`: its drop counts, unseen bytes and exchanges, and (live)
    /// the bytes the forwarding path counted against those the records
    /// account for.
    pub fn of(s: &Summary) -> Evidence {
        let mut gaps = Vec::new();
        let d = &s.drops;
        if d.observer_taps > 0 {
            gaps.push(format!(
                "the observer fell behind and missed {} taps ({} bytes)",
                d.observer_taps, d.observer_bytes
            ));
        }
        if s.unobserved_bytes > 0 {
            gaps.push(format!(
                "{} bytes of ICAP traffic were not decoded",
                s.unobserved_bytes
            ));
        }
        let unobserved = s.by_verdict.get("unobserved").copied().unwrap_or(0);
        if unobserved > 0 {
            gaps.push(format!(
                "{unobserved} of {} exchanges are unobserved (no verdict claimed)",
                s.exchanges
            ));
        }
        if s.hashes_shed > 0 {
            gaps.push(format!(
                "{} request bodies have no SHA-256: the observer was behind and shed the hashing (the bodies were decoded)",
                s.hashes_shed
            ));
        }
        if d.recorder_taps > 0 || d.recorder_bytes > 0 {
            gaps.push(format!(
                "the capture lacks {} bytes ({} taps dropped; disk or queue)",
                d.recorder_bytes, d.recorder_taps
            ));
        }
        if let Some(c) = &s.capture_stopped {
            gaps.push(format!(
                "the capture stopped at {} ({}) after {} bytes to keep disk space for the records; records went on, packets after that are not in the capture",
                c.at, c.reason, c.capture_bytes
            ));
        }
        if s.output_dir_recreated > 0 {
            gaps.push(format!(
                "the output directory was removed during the run and recreated {} time(s): records and capture written before that are gone (these totals still count them)",
                s.output_dir_recreated
            ));
        }
        if d.record_write_errors > 0 {
            gaps.push(format!(
                "{} records could not be written to disk",
                d.record_write_errors
            ));
        }
        if let Some(f) = &s.forwarded {
            for (dir, forwarded, recorded) in [
                (
                    "client→sensor",
                    f.bytes_client_to_sensor,
                    s.bytes_client_to_server,
                ),
                (
                    "sensor→client",
                    f.bytes_sensor_to_client,
                    s.bytes_server_to_client,
                ),
            ] {
                if forwarded != recorded {
                    gaps.push(format!(
                        "{forwarded} bytes were forwarded {dir}; the connection records account for {recorded}"
                    ));
                }
            }
            if f.connections != s.connections {
                gaps.push(format!(
                    "{} connections were accepted; {} have a connection record",
                    f.connections, s.connections
                ));
            }
        }
        Evidence {
            complete: gaps.is_empty(),
            gaps,
        }
    }
}

/// Distinct values kept per product header; later new values are not
/// counted (the products rarely change within a run).
pub const MAX_PRODUCT_VALUES: usize = 20;

/// The products named in ICAP heads, each value with how many exchanges
/// carried it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Products {
    /// `User-Agent` of ICAP requests (the ICAP client product).
    pub user_agents: BTreeMap<String, u64>,
    /// `Server` of ICAP responses (the sensor product).
    pub servers: BTreeMap<String, u64>,
    /// `Service` of ICAP responses (OPTIONS answers: the sensor's service
    /// description).
    pub services: BTreeMap<String, u64>,
}

impl Products {
    /// Counts the products of one exchange record.
    pub fn count(&mut self, p: &ProductsRecord) {
        for (map, value) in [
            (&mut self.user_agents, &p.user_agent),
            (&mut self.servers, &p.server),
            (&mut self.services, &p.service),
        ] {
            let Some(value) = value else {
                continue;
            };
            if let Some(n) = map.get_mut(value) {
                *n += 1;
            } else if map.len() < MAX_PRODUCT_VALUES {
                map.insert(value.clone(), 1);
            }
        }
    }
}

/// `summary.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Schema version.
    pub schema: u32,
    /// icaptap's version.
    pub icaptap_version: String,
    /// `proxy` or `analyze`.
    pub mode: String,
    /// Whether the evidence is whole, and what is missing (absent in
    /// summaries written before this field existed).
    #[serde(default)]
    pub evidence: Option<Evidence>,
    /// The command line.
    pub command: Vec<String>,
    /// First record time (RFC 3339), or run start.
    pub started: Option<String>,
    /// Run end (RFC 3339).
    pub ended: Option<String>,
    /// Connections seen.
    pub connections: u64,
    /// Connections whose sensor leg could not be opened.
    pub connect_failures: u64,
    /// Exchanges seen.
    pub exchanges: u64,
    /// Exchanges by ICAP method.
    pub by_method: BTreeMap<String, u64>,
    /// Exchanges by verdict.
    pub by_verdict: BTreeMap<String, u64>,
    /// Anomalies by code (exchange and connection anomalies together).
    pub by_anomaly: BTreeMap<String, u64>,
    /// Anomalies by severity.
    pub by_severity: BTreeMap<String, u64>,
    /// Latency (request sent to response head) over all exchanges.
    pub latency_us: Percentiles,
    /// Latency by `METHOD service`.
    pub latency_by_service: BTreeMap<String, Percentiles>,
    /// Bytes from clients to servers.
    pub bytes_client_to_server: u64,
    /// Bytes from servers to clients.
    pub bytes_server_to_client: u64,
    /// Bytes forwarded that the observer never saw.
    pub unobserved_bytes: u64,
    /// What the forwarding path counted (live runs; absent offline).
    #[serde(default)]
    pub forwarded: Option<Forwarded>,
    /// What the side paths dropped.
    pub drops: Drops,
    /// Set when the capture stopped to keep disk space for the records
    /// (absent when it did not, and in summaries written before this field
    /// existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_stopped: Option<CaptureStopped>,
    /// Times the output directory was found removed and recreated (0 when
    /// it stayed; absent in older summaries).
    #[serde(default)]
    pub output_dir_recreated: u64,
    /// Exchanges whose decoding is incomplete.
    pub incomplete_exchanges: u64,
    /// Request bodies decoded whole whose SHA-256 the observer shed because
    /// it was behind (records with `request_body_sha256_skipped:
    /// "shed-under-load"`; absent in summaries written before this field
    /// existed).
    #[serde(default)]
    pub hashes_shed: u64,
    /// Products named in ICAP heads (absent in summaries written before
    /// this field existed).
    #[serde(default)]
    pub products: Products,
    /// The filter expression that limited the records to the exchanges it
    /// selects (`--filter`; absent when every exchange was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// Builds a [`Summary`] from records as they are written.
#[derive(Debug)]
pub struct SummaryBuilder {
    summary: Summary,
    latency: Option<Histogram<u64>>,
    by_service: BTreeMap<String, Histogram<u64>>,
}

impl Default for SummaryBuilder {
    fn default() -> Self {
        SummaryBuilder::new()
    }
}

fn histogram() -> Option<Histogram<u64>> {
    // Three significant digits from 1 us up to one hour.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).ok()
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles {
        count: h.len(),
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

impl SummaryBuilder {
    /// An empty summary.
    pub fn new() -> Self {
        SummaryBuilder {
            summary: Summary {
                schema: SCHEMA_VERSION,
                icaptap_version: env!("CARGO_PKG_VERSION").to_string(),
                ..Summary::default()
            },
            latency: histogram(),
            by_service: BTreeMap::new(),
        }
    }

    /// The summary so far; `drops` and the run facts are the caller's.
    pub fn snapshot(&self) -> Summary {
        let mut s = self.summary.clone();
        if let Some(h) = &self.latency {
            s.latency_us = percentiles(h);
        }
        s.latency_by_service = self
            .by_service
            .iter()
            .map(|(k, h)| (k.clone(), percentiles(h)))
            .collect();
        s
    }

    /// Notes that only the exchanges `filter` selects are recorded.
    pub fn filtered(&mut self, filter: &str) {
        self.summary.filter = Some(filter.to_string());
    }

    /// Notes that the capture stopped to keep the records' disk space.
    pub fn capture_stopped(&mut self, stop: CaptureStopped) {
        self.summary.capture_stopped = Some(stop);
    }

    fn count_anomaly(&mut self, code: &str, severity: &str) {
        *self.summary.by_anomaly.entry(code.to_string()).or_default() += 1;
        *self
            .summary
            .by_severity
            .entry(severity.to_string())
            .or_default() += 1;
    }
}

impl RecordSink for SummaryBuilder {
    fn exchange(&mut self, r: &ExchangeRecord) {
        let s = &mut self.summary;
        s.exchanges += 1;
        if s.started.as_deref().is_none_or(|t| r.ts.as_str() < t) {
            s.started = Some(r.ts.clone());
        }
        let method = r.method.clone().unwrap_or_else(|| "-".to_string());
        *s.by_method.entry(method.clone()).or_default() += 1;
        *s.by_verdict.entry(r.verdict.clone()).or_default() += 1;
        if !r.decode_complete {
            s.incomplete_exchanges += 1;
        }
        if r.request_body_sha256_skipped.as_deref() == Some(SHA256_SHED) {
            s.hashes_shed += 1;
        }
        s.products.count(&r.products);
        for a in &r.anomalies {
            self.count_anomaly(&a.code, &a.severity);
        }
        if let Some(us) = r.latency_us {
            let us = us.max(1);
            if let Some(h) = self.latency.as_mut() {
                let _ = h.record(us);
            }
            let key = format!("{} {}", method, r.service.as_deref().unwrap_or("-"));
            let slot = match self.by_service.entry(key) {
                Entry::Occupied(e) => Some(e.into_mut()),
                Entry::Vacant(v) => histogram().map(|h| v.insert(h)),
            };
            if let Some(h) = slot {
                let _ = h.record(us);
            }
        }
    }

    fn connection(&mut self, r: &ConnectionRecord) {
        let s = &mut self.summary;
        s.connections += 1;
        if r.connect_error.is_some() {
            s.connect_failures += 1;
        }
        s.bytes_client_to_server += r.bytes_client_to_server;
        s.bytes_server_to_client += r.bytes_server_to_client;
        s.unobserved_bytes += r.unobserved_bytes;
        if s.started.as_deref().is_none_or(|t| r.ts.as_str() < t) {
            s.started = Some(r.ts.clone());
        }
        for a in &r.anomalies {
            self.count_anomaly(&a.code, &a.severity);
        }
    }
}
