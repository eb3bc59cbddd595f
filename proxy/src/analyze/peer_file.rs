//! `peer.json`: what `icaptap analyze --peer` found, as a file the report,
//! the ticket and other tools read back (docs/log-schema.md). Written by
//! the analyze job from a [`PeerReport`]; every time is RFC 3339 UTC, the
//! window in the first capture's clock.

use serde::{Deserialize, Serialize};

use super::peer::{ExchangeFingerprint, PeerReport};
use crate::tap::Micros;

/// The file's name in the output directory.
pub const PEER_FILE: &str = "peer.json";

/// One exchange of one side, as peer.json lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerExchange {
    /// ICAP method.
    pub method: String,
    /// Encapsulated HTTP URL.
    pub http_url: Option<String>,
    /// Its verdict on that side.
    pub verdict: String,
    /// ICAP status on that side.
    pub icap_status: Option<u16>,
    /// Where to find it: exchange id and request frame.
    #[serde(rename = "where")]
    pub locator: String,
    /// When its request started, in that capture's clock.
    #[serde(default)]
    pub at: Option<String>,
}

impl PeerExchange {
    /// The entry of one fingerprint.
    pub fn of(f: &ExchangeFingerprint) -> PeerExchange {
        PeerExchange {
            method: f.method.clone(),
            http_url: f.http_url.clone(),
            verdict: f.verdict.clone(),
            icap_status: f.icap_status,
            locator: f.locator.clone(),
            at: Some(crate::output::rfc3339(f.request_at)),
        }
    }
}

/// A matched exchange whose verdicts differ.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerDifference {
    /// The first capture's side.
    pub client_side: Option<PeerExchange>,
    /// The peer capture's side.
    pub sensor_side: Option<PeerExchange>,
}

/// One capture of the comparison.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCapture {
    /// The files read.
    pub files: Vec<String>,
    /// First packet time, in its own clock.
    pub first_packet: Option<String>,
    /// Last packet time.
    pub last_packet: Option<String>,
    /// Exchanges found in it.
    pub exchanges: u64,
    /// Warnings of reading it (a truncated file).
    pub warnings: Vec<String>,
}

impl PeerCapture {
    /// The entry of one side.
    pub fn of(
        files: &[std::path::PathBuf],
        span: Option<(Micros, Micros)>,
        exchanges: usize,
        warnings: &[String],
    ) -> PeerCapture {
        PeerCapture {
            files: files.iter().map(|f| f.display().to_string()).collect(),
            first_packet: span.map(|s| crate::output::rfc3339(s.0)),
            last_packet: span.map(|s| crate::output::rfc3339(s.1)),
            exchanges: exchanges as u64,
            warnings: warnings.to_vec(),
        }
    }
}

/// The time both captures cover, in the first capture's clock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerWindow {
    /// Start.
    pub from: String,
    /// End.
    pub to: String,
}

/// Exchanges outside the window, per capture.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutsideWindow {
    /// Of the first capture.
    pub client_side: Vec<PeerExchange>,
    /// Of the peer capture.
    pub sensor_side: Vec<PeerExchange>,
}

/// peer.json.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerFile {
    /// Record schema version.
    pub schema: u32,
    /// The first capture (`CAPTURE...`, taken on the ICAP client side).
    #[serde(default)]
    pub first_capture: PeerCapture,
    /// The `--peer` capture (taken on the sensor side).
    #[serde(default)]
    pub peer_capture: PeerCapture,
    /// The time both cover; `None` when they do not overlap.
    #[serde(default)]
    pub window: Option<PeerWindow>,
    /// Exchanges found in both.
    pub matched: u64,
    /// First-capture exchanges inside the window the peer never saw: lost
    /// on the way.
    pub client_side_only: Vec<PeerExchange>,
    /// Peer exchanges inside the window the first capture never saw.
    pub sensor_side_only: Vec<PeerExchange>,
    /// Exchanges outside the window: not compared.
    #[serde(default)]
    pub outside_window: OutsideWindow,
    /// Matched exchanges with different verdicts.
    pub verdict_differences: Vec<PeerDifference>,
    /// Clock offset of the peer capture (peer clock - first clock).
    pub clock_offset_us: Option<i64>,
    /// One-way network delay between the capture points.
    pub network_delay_us: Option<i64>,
    /// Median of (peer time - first time) over matched requests.
    #[serde(default)]
    pub request_offset_us: Option<i64>,
    /// What to know before reading the numbers: a late start, an early
    /// end, a truncated file.
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl PeerFile {
    /// The file for one comparison.
    pub fn of(
        report: &PeerReport,
        client: &[ExchangeFingerprint],
        sensor: &[ExchangeFingerprint],
        first_capture: PeerCapture,
        peer_capture: PeerCapture,
    ) -> PeerFile {
        let list = |idx: &[usize], of: &[ExchangeFingerprint]| -> Vec<PeerExchange> {
            idx.iter()
                .filter_map(|i| of.get(*i))
                .map(PeerExchange::of)
                .collect()
        };
        let mut warnings = report.warnings.clone();
        for w in &first_capture.warnings {
            warnings.push(format!("first capture: {w}"));
        }
        for w in &peer_capture.warnings {
            warnings.push(format!(
                "peer capture: {w}; its last exchanges may be cut or missing"
            ));
        }
        let time = |us: i64| crate::output::rfc3339(us.max(0) as u64);
        PeerFile {
            schema: crate::output::SCHEMA_VERSION,
            first_capture,
            peer_capture,
            window: report.window.map(|(a, b)| PeerWindow {
                from: time(a),
                to: time(b),
            }),
            matched: report.matched.len() as u64,
            client_side_only: list(&report.client_only, client),
            sensor_side_only: list(&report.sensor_only, sensor),
            outside_window: OutsideWindow {
                client_side: list(&report.client_outside, client),
                sensor_side: list(&report.sensor_outside, sensor),
            },
            verdict_differences: report
                .verdict_differences
                .iter()
                .map(|d| PeerDifference {
                    client_side: client.get(d.pair.client).map(PeerExchange::of),
                    sensor_side: sensor.get(d.pair.sensor).map(PeerExchange::of),
                })
                .collect(),
            clock_offset_us: report.clock_offset_us,
            network_delay_us: report.network_delay_us,
            request_offset_us: report.request_offset_us,
            warnings,
        }
    }
}
