//! Parsing, refusing and matching filter expressions, table-driven.

use super::*;
use crate::output::records::{AnomalyRecord, ConnectionRecord};
use crate::output::writer::{RecordSink, SharedMemorySink};

/// 2026-12-03T17:00:00Z.
const T0: u64 = 1_796_317_200_000_000;

/// A blocked RESPMOD exchange with one anomaly, for tests here and elsewhere.
pub(crate) fn record(conn: u64, seq: u64) -> ExchangeRecord {
    ExchangeRecord {
        schema: 1,
        ts: crate::output::rfc3339(T0),
        ts_us: T0,
        conn,
        seq,
        client: "10.1.2.3:40000".into(),
        server: "10.9.9.9:1344".into(),
        method: Some("RESPMOD".into()),
        uri: Some("icap://10.9.9.9:1344/av/respmod".into()),
        service: Some("/av/respmod".into()),
        icap_status: Some(200),
        verdict: "blocked".into(),
        threat: None,
        block_reason: None,
        anomalies: vec![AnomalyRecord {
            code: "verdict-timeout".into(),
            side: "server".into(),
            severity: "error".into(),
            detail: String::new(),
            offset: None,
        }],
        latency_us: None,
        istag: None,
        http_method: Some("GET".into()),
        http_url: Some("http://example.com/setup.exe".into()),
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
    }
}

fn holds(expr: &str, r: &ExchangeRecord) -> bool {
    Filter::parse(expr)
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
        .matches(r)
}

#[test]
fn every_field_selects_what_it_names() {
    let r = record(3, 1);
    let cases: &[(&str, bool)] = &[
        ("verdict=blocked", true),
        ("verdict=BLOCKED", true),
        ("verdict=clean", false),
        ("verdict!=clean", true),
        ("anomaly=verdict-timeout", true),
        ("anomaly=any", true),
        ("anomaly=istag-missing", false),
        ("method=respmod", true),
        ("method=REQMOD", false),
        ("service=/av/respmod", true),
        ("service=respmod", true),
        ("service=/av", false),
        ("service~^/av/", true),
        ("client=10.1.2.3", true),
        ("client=10.1.2.3:40000", true),
        ("client=10.1.2.3:40001", false),
        ("client=10.0.0.0/8", true),
        ("client=192.168.0.0/16", false),
        (r#"url~"\.exe$""#, true),
        (r#"url~"\.zip$""#, false),
        (r#"url!~"\.zip$""#, true),
        ("url=http://example.com/setup.exe", true),
        ("url=http://example.com/", false),
        ("exchange=3/1", true),
        ("exchange=3", true),
        ("exchange=3/0", false),
        ("exchange=4", false),
        ("after=2026-12-03T17:00:00Z", true),
        ("after=2026-12-03T17:00:00.000001Z", false),
        ("before=2026-12-03T17:00:00Z", false),
        ("before=2026-12-03T18:00:00+01:00", false),
        ("before=2026-12-03T18:00:01+01:00", true),
    ];
    for (expr, want) in cases {
        assert_eq!(holds(expr, &r), *want, "{expr}");
    }
}

#[test]
fn and_binds_tighter_than_or_and_not_tightest() {
    let r = record(3, 1);
    let cases: &[(&str, bool)] = &[
        ("verdict=clean or verdict=blocked and method=RESPMOD", true),
        (
            "(verdict=clean or verdict=blocked) and method=REQMOD",
            false,
        ),
        ("verdict=clean or verdict=blocked and method=REQMOD", false),
        ("not verdict=clean and method=RESPMOD", true),
        ("not (verdict=clean or method=RESPMOD)", false),
        ("not not verdict=blocked", true),
        ("NOT verdict=clean AND client=10.1.2.3 OR exchange=9", true),
        ("((verdict=blocked))", true),
    ];
    for (expr, want) in cases {
        assert_eq!(holds(expr, &r), *want, "{expr}");
    }
}

#[test]
fn a_record_without_the_field_does_not_match_it() {
    let mut r = record(1, 0);
    r.method = None;
    r.service = None;
    r.http_url = None;
    r.anomalies.clear();
    r.client = "garbage".into();
    for expr in [
        "method=RESPMOD",
        "service=respmod",
        "url~.",
        "anomaly=any",
        "client=0.0.0.0/0",
    ] {
        assert!(!holds(expr, &r), "{expr}");
    }
    assert!(holds("url!~.", &r));
}

#[test]
fn times_from_the_run_start_need_the_start() {
    let mut r = record(1, 0);
    r.ts_us = T0 + 90_000_000;
    let mut f = Filter::parse("after=+1m and before=+2m").unwrap();
    assert!(f.uses_run_start());
    assert!(!f.matches(&r), "no start, no match");
    f.set_run_start(T0);
    assert!(f.matches(&r));
    f.set_run_start(T0 + 60_000_000);
    assert!(!f.matches(&r));
    assert!(!Filter::parse("verdict=clean").unwrap().uses_run_start());
}

#[test]
fn old_records_without_ts_us_are_timed_by_ts() {
    let mut r = record(1, 0);
    r.ts_us = 0;
    assert!(holds("after=2026-12-03T16:59:59Z", &r));
    assert!(!holds("after=2026-12-03T17:00:01Z", &r));
}

/// (expression, column of the caret, width, words of the message, words
/// of the hint).
#[test]
fn bad_expressions_say_what_where_and_what_to_write() {
    let cases: &[(&str, usize, usize, &str, &str)] = &[
        ("", 0, 1, "empty", "verdict=blocked"),
        ("   ", 0, 1, "empty", "verdict=blocked"),
        (
            "verdcit=blocked",
            0,
            7,
            "unknown field `verdcit`",
            "did you mean `verdict`?",
        ),
        (
            "verdict=blokced",
            8,
            7,
            "not a verdict",
            "did you mean `verdict=blocked`?",
        ),
        (
            "anomaly=istag-misssing",
            8,
            14,
            "not an anomaly code",
            "istag-missing",
        ),
        (
            "verdict=blocked method=REQMOD",
            16,
            6,
            "without `and` or `or`",
            "write `and` or `or`",
        ),
        (
            "verdict=blocked and",
            19,
            1,
            "ends where a condition",
            "add a condition",
        ),
        (
            "verdict=blocked or or x",
            19,
            2,
            "`or` where a condition",
            "each side",
        ),
        ("(verdict=blocked", 0, 1, "never closed", "add `)`"),
        ("verdict=blocked)", 15, 1, "closes no `(`", "remove it"),
        (
            "(verdict=blocked x=1)",
            17,
            1,
            "expected `and`, `or` or `)`",
            "close the `(`",
        ),
        ("()", 1, 1, "`)` where a condition", "empty `()`"),
        ("verdict blocked", 8, 7, "expected `=`", "verdict=blocked"),
        ("verdict", 7, 1, "expected `=`", "verdict=blocked"),
        ("verdict=", 8, 1, "has no value", "right after the operator"),
        ("verdict=(", 8, 1, "has no value", "quote it"),
        ("verdict~block", 7, 1, "regular expression", "write = or !="),
        ("url~\"(\"", 4, 3, "not a regular expression", "url~"),
        (
            "client=10.0.0.0/40",
            7,
            11,
            "network (CIDR)",
            "client=10.0.0.0/24",
        ),
        (
            "client=host.example",
            7,
            12,
            "not an IP address",
            "client=10.0.0.5",
        ),
        ("exchange=3/x", 9, 3, "not an exchange id", "exchange=3/0"),
        ("after=yesterday", 6, 9, "neither an RFC 3339", "after=+5m"),
        ("before=+soon", 7, 5, "a number and a unit", "before=+1h"),
        ("=blocked", 0, 1, "without a field", "verdict=blocked"),
        ("\"x\"=1", 0, 3, "quoted value where a field", "FIELD=VALUE"),
        ("url~\"abc", 4, 4, "no closing", "end the value"),
        (
            "method=RE MOD",
            10,
            3,
            "without `and` or `or`",
            "write `and`",
        ),
        (
            "method=\"RE MOD\"",
            7,
            8,
            "not a method name",
            "method=RESPMOD",
        ),
    ];
    for (expr, column, width, what, hint) in cases {
        let e = Filter::parse(expr).expect_err(expr);
        assert_eq!((e.column, e.width), (*column, *width), "{expr}: {e}");
        assert!(e.what.contains(what), "{expr}: what = {}", e.what);
        assert!(e.hint.contains(hint), "{expr}: hint = {}", e.hint);
        let shown = e.to_string();
        let caret = format!("    {}{}", " ".repeat(*column), "^".repeat(*width));
        assert!(shown.lines().any(|l| l == caret), "{expr}:\n{shown}");
    }
}

#[test]
fn the_text_is_kept_for_summaries() {
    let f: Filter = " verdict=blocked  ".parse().unwrap();
    assert_eq!(f.text(), "verdict=blocked");
}

#[test]
fn the_sink_passes_selected_exchanges_and_their_connections_only() {
    let memory = SharedMemorySink::default();
    let mut sink = FilterSink::new(Filter::parse("exchange=2").unwrap(), memory.clone());
    let conn = |id: u64| ConnectionRecord {
        schema: 1,
        ts: String::new(),
        ts_us: 0,
        ts_close: String::new(),
        ts_close_us: 0,
        conn: id,
        client: String::new(),
        server: String::new(),
        listen: String::new(),
        upstream_local: None,
        connect_error: None,
        bytes_client_to_server: 0,
        bytes_server_to_client: 0,
        exchanges: 1,
        close: Default::default(),
        duration_us: 0,
        unobserved_bytes: 0,
        undelivered_client_to_server: 0,
        undelivered_server_to_client: 0,
        anomalies: Vec::new(),
    };
    for id in 1..=3 {
        sink.exchange(&record(id, 0));
        sink.exchange(&record(id, 1));
        sink.connection(&conn(id));
    }
    let exchanges = memory.lock().exchanges.clone();
    assert_eq!(
        exchanges
            .iter()
            .map(|x| (x.conn, x.seq))
            .collect::<Vec<_>>(),
        vec![(2, 0), (2, 1)]
    );
    let connections = memory.lock().connections.clone();
    assert_eq!(
        connections.iter().map(|c| c.conn).collect::<Vec<_>>(),
        vec![2]
    );
}

#[test]
fn the_sink_learns_the_run_start_when_it_appears() {
    let memory = SharedMemorySink::default();
    let start = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut sink = FilterSink::new(Filter::parse("before=+1s").unwrap(), memory.clone())
        .run_start_from(start.clone());
    start.store(T0, std::sync::atomic::Ordering::Release);
    sink.exchange(&record(1, 0));
    let mut late = record(2, 0);
    late.ts_us = T0 + 2_000_000;
    sink.exchange(&late);
    assert_eq!(memory.lock().exchanges.len(), 1);
}

#[test]
fn an_operator_inside_an_unquoted_value_asks_for_quotes() {
    for (expr, column) in [("url=http://x/?a=b", 15), ("(url=http://x/?a=b)", 16)] {
        let e = Filter::parse(expr).expect_err(expr);
        assert_eq!(e.column, column, "{expr}: {e}");
        assert!(e.what.contains("after a whole condition"), "{e}");
        assert!(e.hint.contains("quote a value"), "{e}");
    }
    assert!(holds("url=\"http://example.com/setup.exe\"", &record(1, 0)));
}
