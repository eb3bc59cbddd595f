//! Judging each case from what the user got (the downloads) and what the
//! sensor saw (the exchanges and connections icaptap recorded in front of
//! it): RFC 3507 section 4.5 for previews, 4.10.2 for Max-Connections, and
//! the field guide's fail-open rule (a dead sensor must not go unnoticed).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

use super::download::Download;
use super::suite::DownPolicy;
use crate::output::parse_rfc3339;
use crate::output::records::{ConnectionRecord, ExchangeRecord, IdentityRecord};
use crate::toolkit::sample::EICAR;

/// A case's verdict: passed or not, and why in words.
pub type Judgement = (bool, String);

/// What the sensor saw of the downloads under one URL directory.
#[derive(Debug)]
pub struct SensorView<'a> {
    records: Vec<&'a ExchangeRecord>,
}

impl<'a> SensorView<'a> {
    /// The REQMOD/RESPMOD exchanges whose HTTP URL contains `needle`.
    pub fn of(all: &'a [ExchangeRecord], needle: &str) -> SensorView<'a> {
        SensorView {
            records: all
                .iter()
                .filter(|r| r.method.as_deref().is_some_and(|m| m != "OPTIONS"))
                .filter(|r| r.http_url.as_deref().is_some_and(|u| u.contains(needle)))
                .collect(),
        }
    }

    fn respmod(&self) -> Option<&'a ExchangeRecord> {
        self.records
            .iter()
            .copied()
            .find(|r| r.method.as_deref() == Some("RESPMOD"))
    }

    fn any_verdict(&self, verdict: &str) -> bool {
        self.records.iter().any(|r| r.verdict == verdict)
    }

    /// `sensor: REQMOD clean, RESPMOD infected (EICAR-Test-File)`.
    pub fn summary(&self) -> String {
        if self.records.is_empty() {
            return "sensor: saw nothing".to_owned();
        }
        let parts: Vec<String> = self
            .records
            .iter()
            .map(|r| {
                let mut s = format!("{} {}", r.method.as_deref().unwrap_or("-"), r.verdict);
                if let Some(t) = &r.threat {
                    s.push_str(&format!(" ({t})"));
                }
                s
            })
            .collect();
        format!("sensor: {}", parts.join(", "))
    }
}

/// A clean file must arrive intact, and the sensor must have seen it.
pub fn clean_intact(d: &Download, want: &Bytes, view: &SensorView) -> Judgement {
    if !d.got(want) {
        return (
            false,
            format!(
                "the clean file did not arrive intact: {}; {}",
                d.seen(),
                view.summary()
            ),
        );
    }
    if view.respmod().is_none() {
        return (
            false,
            format!(
                "HTTP 200 intact, but the sensor never saw the download (no RESPMOD): unscanned; {}",
                view.summary()
            ),
        );
    }
    (true, format!("{} intact; {}", d.seen(), view.summary()))
}

/// The EICAR file must not reach the user, because the sensor said so.
pub fn infected_blocked(d: &Download, view: &SensorView) -> Judgement {
    let delivered =
        matches!(&d.result, Ok((_, body)) if memchr::memmem::find(body, EICAR).is_some());
    if delivered {
        return (
            false,
            format!(
                "the user got the EICAR file ({}); {}",
                d.seen(),
                view.summary()
            ),
        );
    }
    if !view.any_verdict("infected") {
        return (
            false,
            format!(
                "the EICAR file was not delivered ({}), but not on the sensor's verdict; {}",
                d.seen(),
                view.summary()
            ),
        );
    }
    (
        true,
        format!(
            "blocked: {}, the EICAR file was not delivered; {}",
            d.seen(),
            view.summary()
        ),
    )
}

/// A slow sensor: the user waits for the verdict and then gets the file.
pub fn sensor_slow(d: &Download, want: &Bytes, delay: Duration, view: &SensorView) -> Judgement {
    let took = d.elapsed.as_secs_f64();
    if !d.got(want) {
        return (
            false,
            format!(
                "sensor slow: {} after {took:.1} s; the vendor gave up on a sensor that answers in {:.1} s; {}",
                d.seen(),
                delay.as_secs_f64(),
                view.summary()
            ),
        );
    }
    if d.elapsed < delay || view.respmod().is_none() {
        return (
            false,
            format!(
                "sensor slow: user got the file unscanned after {took:.1} s, before the sensor's verdict ({:.1} s); {}",
                delay.as_secs_f64(),
                view.summary()
            ),
        );
    }
    (
        true,
        format!(
            "{} intact after {took:.1} s (sensor delay {:.1} s); {}",
            d.seen(),
            delay.as_secs_f64(),
            view.summary()
        ),
    )
}

fn identity_value<'r>(id: &'r IdentityRecord, header: &str) -> Option<&'r str> {
    match header.to_ascii_lowercase().as_str() {
        "x-client-ip" => id.client_ip.as_deref(),
        "x-server-ip" => id.server_ip.as_deref(),
        "x-client-username" => id.client_username.as_deref(),
        "x-authenticated-user" => id.authenticated_user.as_deref(),
        "x-authenticated-groups" => id.authenticated_groups.as_deref(),
        _ => None,
    }
}

/// The headers on every request the sensor saw for one download.
pub fn identity_headers(require: &[String], want: &[String], view: &SensorView) -> Judgement {
    let total = view.records.len();
    if total == 0 {
        return (
            false,
            "the sensor saw no request for the download".to_owned(),
        );
    }
    let mut missing = Vec::new();
    let mut notes = Vec::new();
    for (header, required) in require
        .iter()
        .map(|h| (h, true))
        .chain(want.iter().map(|h| (h, false)))
    {
        let values: Vec<&str> = view
            .records
            .iter()
            .filter_map(|r| identity_value(&r.identity, header))
            .collect();
        let note = match values.first() {
            Some(v) => format!("{header}: {v} on {} of {total} requests", values.len()),
            None => format!("{header} not sent"),
        };
        if required && values.len() < total {
            missing.push(note);
        } else {
            notes.push(note);
        }
    }
    if missing.is_empty() {
        (true, notes.join("; "))
    } else {
        missing.extend(notes);
        (
            false,
            format!("identity headers missing: {}", missing.join("; ")),
        )
    }
}

/// A body larger than the preview: at most the advertised preview first,
/// then the remainder after `100 Continue`, and the file intact.
pub fn preview_honoured(
    d: &Download,
    want: &Bytes,
    advertised: u64,
    view: &SensorView,
) -> Judgement {
    let Some(r) = view.respmod() else {
        return (
            false,
            format!(
                "the sensor never saw the download (no RESPMOD); user: {}",
                d.seen()
            ),
        );
    };
    let size = want.len() as u64;
    let Some(p) = &r.preview else {
        return (
            false,
            format!(
                "no Preview: the vendor sent {} bytes at once although the sensor advertises Preview: {advertised}",
                r.request_body_bytes
            ),
        );
    };
    let client_errors: Vec<&str> = r
        .anomalies
        .iter()
        .filter(|a| a.side == "client" && a.severity == "error")
        .map(|a| a.code.as_str())
        .collect();
    let problem = if p.size > advertised {
        Some(format!(
            "Preview: {} exceeds the advertised {advertised}",
            p.size
        ))
    } else if p.sent > p.size {
        Some(format!(
            "{} preview bytes sent for Preview: {}",
            p.sent, p.size
        ))
    } else if !client_errors.is_empty() {
        Some(format!("protocol errors: {}", client_errors.join(", ")))
    } else if !p.continued {
        Some("the remainder never followed the sensor's 100 Continue".to_owned())
    } else if r.request_body_bytes != size {
        Some(format!(
            "after 100 Continue the sensor got {} of {size} bytes",
            r.request_body_bytes
        ))
    } else if !d.got(want) {
        Some(format!("the file did not arrive intact: {}", d.seen()))
    } else {
        None
    };
    match problem {
        Some(p) => (false, p),
        None => (
            true,
            format!(
                "Preview: {} ({} bytes), 100 Continue, then all {size} bytes; user: {} intact",
                p.size,
                p.sent,
                d.seen()
            ),
        ),
    }
}

/// The most ICAP connections open at once over the run (from the
/// connection records' open and close times).
pub fn peak_connections(connections: &[ConnectionRecord]) -> usize {
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for c in connections {
        if let (Some(open), Some(close)) = (parse_rfc3339(&c.ts), parse_rfc3339(&c.ts_close)) {
            edges.push((open, 1));
            edges.push((close.max(open), -1));
        }
    }
    // Closes sort before opens at the same microsecond: a connection that
    // replaces another is not counted twice.
    edges.sort();
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        peak = peak.max(now);
    }
    usize::try_from(peak).unwrap_or(0)
}

/// The busiest service: its name and the most connections it had open at
/// once. OPTIONS is answered per service (RFC 3507 section 4.10), so
/// Max-Connections is a bound per service, as vendors apply it; a
/// connection belongs to the service of its exchanges, and one that never
/// carried a request (a failed connect) to none.
pub fn peak_per_service(
    exchanges: &[ExchangeRecord],
    connections: &[ConnectionRecord],
) -> (String, usize) {
    let mut service_of: HashMap<u64, &str> = HashMap::new();
    for x in exchanges {
        if let Some(s) = x.service.as_deref() {
            service_of.entry(x.conn).or_insert(s);
        }
    }
    let mut by_service: HashMap<&str, Vec<ConnectionRecord>> = HashMap::new();
    for c in connections {
        if let Some(s) = service_of.get(&c.conn) {
            by_service.entry(s).or_default().push(c.clone());
        }
    }
    by_service
        .into_iter()
        .map(|(s, list)| (s.to_owned(), peak_connections(&list)))
        .max_by_key(|(s, peak)| (*peak, std::cmp::Reverse(s.clone())))
        .unwrap_or_default()
}

/// Parallel downloads: never more connections than Max-Connections, and
/// no download past the sensor unscanned.
pub fn max_connections(
    downloads: &[(Download, Bytes)],
    advertised: u64,
    (service, peak): (String, usize),
    unscanned: usize,
) -> Judgement {
    let intact = downloads.iter().filter(|(d, want)| d.got(want)).count();
    let n = downloads.len();
    let facts = format!(
        "peak {peak} ICAP connections at once to {service} (Max-Connections: {advertised}); {intact} of {n} downloads intact"
    );
    if peak as u64 > advertised {
        return (
            false,
            format!("the vendor exceeded Max-Connections: {facts}"),
        );
    }
    if unscanned > 0 {
        return (
            false,
            format!("{facts}; {unscanned} reached the user unscanned (the vendor bypassed a busy sensor)"),
        );
    }
    // A limit is respected by a vendor that queues: one that delivers
    // nothing respects it trivially and has not been tested.
    if intact < n {
        return (
            false,
            format!(
                "{facts}; {} did not arrive intact: a vendor that respects Max-Connections queues the \
                 downloads and still delivers them",
                n - intact
            ),
        );
    }
    (true, facts)
}

/// The sensor is down: the user gets the file (fail-open) or not
/// (fail-closed), and the suite says which is right.
pub fn sensor_down(
    d: &Download,
    want: &Bytes,
    expect: DownPolicy,
    failed_connects: usize,
) -> Judgement {
    let wire = if failed_connects > 0 {
        format!("icaptap saw {failed_connects} ICAP connection(s) fail to reach the sensor")
    } else {
        "the sensor address refused connections".to_owned()
    };
    match (expect, d.got(want)) {
        (DownPolicy::FailClosed, true) => (
            false,
            format!(
                "sensor down: user got the file unscanned ({}); the suite expects fail-closed; {wire}",
                d.seen()
            ),
        ),
        (DownPolicy::FailClosed, false) => (
            true,
            format!("sensor down: the download was refused ({}), fail-closed as expected; {wire}", d.seen()),
        ),
        (DownPolicy::FailOpen, true) => (
            true,
            format!(
                "sensor down: user got the file unscanned ({}), fail-open as the suite expects; {wire}",
                d.seen()
            ),
        ),
        (DownPolicy::FailOpen, false) => (
            false,
            format!("sensor down: the download was refused ({}); the suite expects fail-open; {wire}", d.seen()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(open: &str, close: &str) -> ConnectionRecord {
        serde_json::from_value(serde_json::json!({
            "schema": 1, "ts": open, "ts_close": close, "conn": 1,
            "client": "127.0.0.1:1", "server": "127.0.0.1:2", "listen": "127.0.0.1:3",
            "upstream_local": null, "connect_error": null,
            "bytes_client_to_server": 0, "bytes_server_to_client": 0, "exchanges": 0,
            "close": {"client": null, "server": null}, "duration_us": 0,
            "unobserved_bytes": 0, "anomalies": []
        }))
        .unwrap()
    }

    #[test]
    fn max_connections_needs_the_downloads_delivered() {
        let want = Bytes::from_static(b"file");
        let download = |body: &'static [u8]| Download {
            url: "http://origin/icaptap-check/7-max-connections/f".into(),
            started: std::time::Instant::now(),
            elapsed: std::time::Duration::ZERO,
            result: Ok((200, Bytes::from_static(body))),
            proxy_error: None,
            unreachable: None,
        };
        let delivered = vec![(download(b"file"), want.clone()); 3];
        let (passed, detail) = max_connections(&delivered, 8, ("/av/respmod".into(), 3), 0);
        assert!(passed, "{detail}");
        // The vendor's own block page for every download: nothing reached
        // the sensor, the limit was never tried.
        let blocked = vec![(download(b"<html>denied</html>"), want); 3];
        let (passed, detail) = max_connections(&blocked, 8, ("/av/respmod".into(), 0), 0);
        assert!(!passed, "{detail}");
        assert!(detail.contains("3 did not arrive intact"), "{detail}");
    }

    #[test]
    fn peak_counts_overlaps_only() {
        let t = |s: u32| format!("2026-01-01T00:00:{s:02}Z");
        let list = vec![
            conn(&t(0), &t(10)),
            conn(&t(1), &t(3)),
            conn(&t(2), &t(4)),
            conn(&t(4), &t(5)),
            conn(&t(3), &t(4)),
        ];
        assert_eq!(peak_connections(&list), 3);
        assert_eq!(peak_connections(&[]), 0);
    }
}
