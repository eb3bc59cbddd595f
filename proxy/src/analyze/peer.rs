//! Two-sided correlation: the same ICAP traffic captured on the ICAP client
//! side and on the sensor side, matched exchange by exchange. Exchanges are
//! matched by content (method, URIs, request body digest), not by time
//! alone, because the two captures' clocks differ; time only breaks ties
//! between identical requests, after the clock offset is estimated from the
//! unambiguous matches.
//!
//! The result says where traffic is lost (exchanges seen on one side only),
//! which verdicts differ between the sides (something in between changed
//! them), the clock offset between the captures (median of the time
//! differences of matched pairs) and the one-way network delay.
//!
//! The fingerprint is independent of the observer's exchange record so the
//! matching can be fed from any source; [`FingerprintSink`] takes them from
//! the records as an observer writes them (live or offline).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::output::records::{ConnectionRecord, ExchangeRecord};
use crate::output::writer::RecordSink;
use crate::tap::Micros;

/// What identifies one exchange across two captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeFingerprint {
    /// ICAP method (`REQMOD`, `RESPMOD`, `OPTIONS`).
    pub method: String,
    /// The ICAP request URI.
    pub icap_uri: String,
    /// The encapsulated HTTP request URL, when there is one.
    pub http_url: Option<String>,
    /// SHA-256 of the de-chunked request body (hex), when it had one.
    pub body_sha256: Option<String>,
    /// Length of the de-chunked request body.
    pub body_len: u64,
    /// When the request started, in that capture's clock.
    pub request_at: Micros,
    /// When the response head arrived, in that capture's clock.
    pub response_at: Option<Micros>,
    /// The verdict (`clean`, `blocked`, `missing`...).
    pub verdict: String,
    /// The ICAP status code, when a response came.
    pub icap_status: Option<u16>,
    /// Where the user can find it (e.g. the frame number), carried through.
    pub locator: String,
}

impl ExchangeFingerprint {
    /// The parts that must agree for two exchanges to be the same request.
    /// The ICAP URI is left out on purpose: a proxy or NAT in between may
    /// rewrite the host part.
    fn content_key(&self) -> (String, Option<String>, Option<String>, u64) {
        (
            self.method.clone(),
            self.http_url.clone(),
            self.body_sha256.clone(),
            self.body_len,
        )
    }
}

impl ExchangeFingerprint {
    /// The fingerprint of one exchange record.
    pub fn of(r: &ExchangeRecord) -> ExchangeFingerprint {
        let at = r.ts_us;
        let frame = r.frames.as_ref().and_then(|f| f.request);
        ExchangeFingerprint {
            method: r.method.clone().unwrap_or_else(|| "-".to_string()),
            icap_uri: r.uri.clone().unwrap_or_default(),
            http_url: r.http_url.clone(),
            body_sha256: r.request_body_sha256.clone(),
            body_len: r.request_body_bytes,
            request_at: at,
            response_at: r.timings.response_head_us.map(|d| at + d),
            verdict: r.verdict.clone(),
            icap_status: r.icap_status,
            locator: match frame {
                Some(f) => format!("exchange {}/{} (frame {f})", r.conn, r.seq),
                None => format!("exchange {}/{}", r.conn, r.seq),
            },
        }
    }
}

/// Collects a fingerprint of every exchange record, for `--peer`. Clones
/// share one list: one goes to the observer, one stays to [`take`] it.
///
/// [`take`]: FingerprintSink::take
#[derive(Clone, Debug, Default)]
pub struct FingerprintSink(Arc<Mutex<Vec<ExchangeFingerprint>>>);

impl FingerprintSink {
    /// The fingerprints collected so far, in record order; the list is
    /// left empty.
    pub fn take(&self) -> Vec<ExchangeFingerprint> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl RecordSink for FingerprintSink {
    fn exchange(&mut self, r: &ExchangeRecord) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ExchangeFingerprint::of(r));
    }

    fn connection(&mut self, _: &ConnectionRecord) {}
}

/// Two sides of one exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedPair {
    /// Index into the client-side list.
    pub client: usize,
    /// Index into the sensor-side list.
    pub sensor: usize,
    /// Sensor-side request time minus client-side request time.
    pub delta: i64,
}

/// A matched exchange whose verdicts differ between the captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictDifference {
    /// The pair.
    pub pair: MatchedPair,
    /// The client side's verdict.
    pub client_verdict: String,
    /// The sensor side's verdict.
    pub sensor_verdict: String,
}

/// What correlating two captures found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerReport {
    /// Exchanges found on both sides.
    pub matched: Vec<MatchedPair>,
    /// Client-side exchanges the sensor side never saw (lost in between).
    pub client_only: Vec<usize>,
    /// Sensor-side exchanges the client side never saw.
    pub sensor_only: Vec<usize>,
    /// Matched exchanges with different verdicts.
    pub verdict_differences: Vec<VerdictDifference>,
    /// Median of (sensor time - client time) over matched requests: the
    /// clock offset plus the one-way delay.
    pub request_offset_us: Option<i64>,
    /// Estimated clock offset of the sensor-side capture relative to the
    /// client-side one, in microseconds (sensor clock - client clock),
    /// from the request and response crossings (NTP-style).
    pub clock_offset_us: Option<i64>,
    /// Estimated one-way network delay between the two capture points.
    pub network_delay_us: Option<i64>,
    /// The time both captures cover, in the client-side capture's clock
    /// (set by [`restrict_to_overlap`]; `None` before, or when the captures
    /// do not overlap at all).
    pub window: Option<(i64, i64)>,
    /// Client-side exchanges without a match that started outside the
    /// window: the other capture could not have seen them.
    pub client_outside: Vec<usize>,
    /// Sensor-side exchanges without a match that started outside it.
    pub sensor_outside: Vec<usize>,
    /// What the user must know to read the comparison (a capture that
    /// started late or ended early).
    pub warnings: Vec<String>,
}

/// Exchanges further than this outside the other capture's time make a
/// late start or an early end worth a warning even without exchanges.
const EDGE_TOLERANCE_US: i64 = 1_000_000;

fn seconds(us: i64) -> String {
    format!("{:.3} s", us as f64 / 1e6)
}

/// Compares only the time both captures cover: unmatched exchanges that
/// started before the later capture began or after the earlier one ended
/// are moved out of `client_only` / `sensor_only` (they were never "lost
/// on the way"), and a capture that started late or ended early is named
/// in `warnings`. `client_span` and `sensor_span` are the first and last
/// packet times of each capture in its own clock; the sensor capture's
/// times are brought into the client's clock with the request offset of
/// the matched exchanges (zero when nothing matched).
pub fn restrict_to_overlap(
    report: &mut PeerReport,
    client: &[ExchangeFingerprint],
    sensor: &[ExchangeFingerprint],
    client_span: Option<(Micros, Micros)>,
    sensor_span: Option<(Micros, Micros)>,
) {
    let shift = report.request_offset_us.unwrap_or(0);
    let (Some((c0, c1)), Some((s0, s1))) = (client_span, sensor_span) else {
        return;
    };
    let (c0, c1) = (c0 as i64, c1 as i64);
    let (s0, s1) = (s0 as i64 - shift, s1 as i64 - shift);
    let (from, to) = (c0.max(s0), c1.min(s1));
    let inside = |t: i64| from <= t && t <= to;
    report.window = (from <= to).then_some((from, to));
    let (lost, outside): (Vec<usize>, Vec<usize>) = report
        .client_only
        .iter()
        .partition(|i| inside(client[**i].request_at as i64));
    report.client_only = lost;
    report.client_outside = outside;
    let (lost, outside): (Vec<usize>, Vec<usize>) = report
        .sensor_only
        .iter()
        .partition(|i| inside(sensor[**i].request_at as i64 - shift));
    report.sensor_only = lost;
    report.sensor_outside = outside;
    let count = |list: &[usize], of: &[ExchangeFingerprint], before: bool, offset: i64| {
        list.iter()
            .filter(|i| {
                let t = of[**i].request_at as i64 - offset;
                if before {
                    t < from
                } else {
                    t > to
                }
            })
            .count()
    };
    let client_before = count(&report.client_outside, client, true, 0);
    let client_after = count(&report.client_outside, client, false, 0);
    let sensor_before = count(&report.sensor_outside, sensor, true, shift);
    let sensor_after = count(&report.sensor_outside, sensor, false, shift);
    if report.window.is_none() {
        report.warnings.push(format!(
            "the two captures do not overlap in time (the peer capture covers {} to {} after the first capture's start, the first capture {}): nothing could be compared",
            seconds(s0 - c0),
            seconds(s1 - c0),
            seconds(c1 - c0)
        ));
        return;
    }
    let mut edge = |late: i64, n: usize, what: &str, whose: &str| {
        if late > EDGE_TOLERANCE_US || (late > 0 && n > 0) {
            report.warnings.push(format!(
                "{what} by {}: {n} exchanges of the {whose} fall outside the time both captures cover and were not compared",
                seconds(late)
            ));
        }
    };
    let (first, peer) = ("first capture", "peer capture");
    edge(
        s0 - c0,
        client_before,
        "the peer capture started after the first capture",
        first,
    );
    edge(
        c1 - s1,
        client_after,
        "the peer capture ended before the first capture",
        first,
    );
    edge(
        c0 - s0,
        sensor_before,
        "the first capture started after the peer capture",
        peer,
    );
    edge(
        s1 - c1,
        sensor_after,
        "the first capture ended before the peer capture",
        peer,
    );
}

fn median(values: &mut [i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2
    })
}

/// Matches the exchanges of a client-side capture with those of a
/// sensor-side capture of the same traffic.
///
/// Exchanges with the same content key are matched in two passes: first
/// keys that occur exactly once on each side (unambiguous), from which the
/// clock offset is estimated; then repeated requests (the same URL fetched
/// twice) are paired in time order after shifting by that offset.
pub fn correlate(client: &[ExchangeFingerprint], sensor: &[ExchangeFingerprint]) -> PeerReport {
    type Key = (String, Option<String>, Option<String>, u64);
    let mut by_key: HashMap<Key, (Vec<usize>, Vec<usize>)> = HashMap::new();
    for (i, e) in client.iter().enumerate() {
        by_key.entry(e.content_key()).or_default().0.push(i);
    }
    for (i, e) in sensor.iter().enumerate() {
        by_key.entry(e.content_key()).or_default().1.push(i);
    }
    let mut report = PeerReport::default();
    let pair = |c: usize, s: usize| MatchedPair {
        client: c,
        sensor: s,
        delta: sensor[s].request_at as i64 - client[c].request_at as i64,
    };
    // Pass 1: unambiguous keys.
    let mut deltas = Vec::new();
    for (cs, ss) in by_key.values() {
        if cs.len() == 1 && ss.len() == 1 {
            let p = pair(cs[0], ss[0]);
            deltas.push(p.delta);
            report.matched.push(p);
        }
    }
    let shift = median(&mut deltas).unwrap_or(0);
    // Pass 2: repeated keys, paired greedily in time order after the shift.
    for (cs, ss) in by_key.values() {
        if cs.len() == 1 && ss.len() == 1 {
            continue;
        }
        let mut cs = cs.clone();
        let mut ss = ss.clone();
        cs.sort_by_key(|&i| client[i].request_at);
        ss.sort_by_key(|&i| sensor[i].request_at);
        let (mut ci, mut si) = (0, 0);
        // Requests further apart than this (after the shift) are not the
        // same one: one of them was lost.
        const SAME_REQUEST_WINDOW_US: i64 = 2_000_000;
        while ci < cs.len() && si < ss.len() {
            let d = sensor[ss[si]].request_at as i64 - shift - client[cs[ci]].request_at as i64;
            if d.abs() <= SAME_REQUEST_WINDOW_US {
                report.matched.push(pair(cs[ci], ss[si]));
                ci += 1;
                si += 1;
            } else if d < 0 {
                report.sensor_only.push(ss[si]);
                si += 1;
            } else {
                report.client_only.push(cs[ci]);
                ci += 1;
            }
        }
        report.client_only.extend_from_slice(&cs[ci..]);
        report.sensor_only.extend_from_slice(&ss[si..]);
    }
    report.matched.sort_by_key(|p| (p.client, p.sensor));
    report.client_only.sort_unstable();
    report.sensor_only.sort_unstable();
    for p in &report.matched {
        let (c, s) = (&client[p.client], &sensor[p.sensor]);
        if c.verdict != s.verdict {
            report.verdict_differences.push(VerdictDifference {
                pair: p.clone(),
                client_verdict: c.verdict.clone(),
                sensor_verdict: s.verdict.clone(),
            });
        }
    }
    let mut forward: Vec<i64> = report.matched.iter().map(|p| p.delta).collect();
    report.request_offset_us = median(&mut forward);
    // Responses travel the other way: client time - sensor time is the
    // delay minus the offset. Half the sum and half the difference of the
    // two medians separate the clock offset from the delay.
    let mut backward: Vec<i64> = report
        .matched
        .iter()
        .filter_map(|p| {
            let c = client[p.client].response_at? as i64;
            let s = sensor[p.sensor].response_at? as i64;
            Some(c - s)
        })
        .collect();
    if let (Some(fwd), Some(back)) = (report.request_offset_us, median(&mut backward)) {
        report.clock_offset_us = Some((fwd - back) / 2);
        report.network_delay_us = Some(((fwd + back) / 2).max(0));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(url: &str, at: Micros, resp: Micros, verdict: &str) -> ExchangeFingerprint {
        ExchangeFingerprint {
            method: "RESPMOD".into(),
            icap_uri: "icap://sensor/av/respmod".into(),
            http_url: Some(url.into()),
            body_sha256: Some(format!("sha-of-{url}")),
            body_len: 10,
            request_at: at,
            response_at: Some(resp),
            verdict: verdict.into(),
            icap_status: Some(200),
            locator: String::new(),
        }
    }

    #[test]
    fn finds_lost_exchange_verdict_difference_offset_and_delay() {
        // Sensor clock is 5 s ahead; one-way delay 1 ms; the sensor takes
        // 10 ms to answer.
        let offset = 5_000_000;
        let delay = 1_000;
        let client: Vec<_> = (0..5)
            .map(|i| {
                let t = 1_000_000 * i;
                fp(&format!("http://h/{i}"), t, t + 2 * delay + 10_000, "clean")
            })
            .collect();
        let mut sensor: Vec<_> = client
            .iter()
            .map(|c| {
                let at = c.request_at + offset + delay;
                fp(c.http_url.as_deref().unwrap(), at, at + 10_000, "clean")
            })
            .collect();
        sensor.remove(2);
        sensor[0].verdict = "blocked".into();
        let r = correlate(&client, &sensor);
        assert_eq!(r.matched.len(), 4);
        assert_eq!(r.client_only, vec![2]);
        assert!(r.sensor_only.is_empty());
        assert_eq!(r.verdict_differences.len(), 1);
        assert_eq!(r.clock_offset_us, Some(offset as i64));
        assert_eq!(r.network_delay_us, Some(delay as i64));
    }

    #[test]
    fn a_late_peer_capture_loses_nothing_outside_its_window() {
        // The sensor-side capture starts 10 s later (5 exchanges missed)
        // and its clock runs 2 s ahead.
        let client: Vec<_> = (0..10)
            .map(|i| {
                let t = 2_000_000 * i;
                fp(&format!("http://h/{i}"), t, t + 5_000, "clean")
            })
            .collect();
        let sensor: Vec<_> = client[5..]
            .iter()
            .map(|c| {
                let at = c.request_at + 2_000_500;
                fp(c.http_url.as_deref().unwrap(), at, at + 4_000, "clean")
            })
            .collect();
        let mut r = correlate(&client, &sensor);
        assert_eq!(r.client_only.len(), 5, "before the window: unmatched");
        restrict_to_overlap(
            &mut r,
            &client,
            &sensor,
            Some((0, 18_010_000)),
            Some((11_950_500, 20_010_000)),
        );
        assert_eq!(r.matched.len(), 5);
        assert!(r.client_only.is_empty(), "{r:?}");
        assert_eq!(r.client_outside, vec![0, 1, 2, 3, 4]);
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(
            r.warnings[0].starts_with("the peer capture started after the first capture by 9.950 s: 5 exchanges of the first capture"),
            "{:?}",
            r.warnings
        );
        let (from, to) = r.window.unwrap();
        assert_eq!((from, to), (9_950_000, 18_009_500));
    }

    #[test]
    fn repeated_requests_pair_in_time_order() {
        let client = vec![
            fp("http://same", 0, 100, "clean"),
            fp("http://same", 10_000_000, 10_000_100, "clean"),
            fp("http://same", 20_000_000, 20_000_100, "clean"),
            fp("http://unique", 30_000_000, 30_000_100, "clean"),
        ];
        let sensor = vec![
            fp("http://unique", 30_000_050, 30_000_060, "clean"),
            fp("http://same", 50, 60, "clean"),
            fp("http://same", 20_000_050, 20_000_060, "infected"),
        ];
        let r = correlate(&client, &sensor);
        assert_eq!(r.client_only, vec![1]);
        assert!(r.sensor_only.is_empty());
        assert_eq!(r.matched.len(), 3);
        assert_eq!(r.verdict_differences.len(), 1);
        assert_eq!(r.verdict_differences[0].pair.client, 2);
    }
}
