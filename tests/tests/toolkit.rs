//! The mock sensor's scenario actions, driven by the toolkit's own client
//! and by raw TCP on loopback: every action of docs/toolkit-scenario.toml
//! has a test asserting the exact status, headers and body, ordering for
//! delays, and the close/reset/silence seen by the client.

use std::path::Path;
use std::time::Duration;

use icap_codec::{AnomalyCode, EntityKind};
use icaptap::toolkit::client::{
    build_request, send_once, threat_of, ClientError, IcapMethod, Verdict,
};
use icaptap::toolkit::sample::{Sample, EICAR};
use icaptap::toolkit::scenario::{sha256_hex, Scenario};
use icaptap::toolkit::sensor::SensorStats;

mod toolkit_support;
use toolkit_support::*;

#[test]
fn example_scenario_parses_and_names_every_action_and_defect() {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    for action in [
        "clean",
        "echo",
        "block",
        "infected",
        "error",
        "close",
        "reset",
        "silence",
        "malformed",
    ] {
        assert!(
            text.contains(&format!("action = \"{action}\"")),
            "example lacks {action}"
        );
    }
    for defect in [
        "bad-encapsulated-offsets",
        "continue-after-ieof",
        "204-without-allow",
        "missing-istag",
        "broken-chunking",
    ] {
        assert!(
            text.contains(&format!("defect = \"{defect}\"")),
            "example lacks {defect}"
        );
    }
    for style in [
        "x-infection-found",
        "x-virus-id",
        "x-violations-found",
        "x-response-info",
    ] {
        assert!(
            text.contains(&format!("style = \"{style}\"")),
            "example lacks {style}"
        );
    }
    assert!(text.contains("delay_ms"));
    Scenario::load(Path::new(EXAMPLE)).unwrap();
}

#[tokio::test]
async fn clean_is_204_when_allowed_or_in_preview_and_echo_otherwise() {
    let sensor = example_sensor().await;
    let mut s = spec(
        &sensor,
        "/av/respmod",
        "http://t.test/clean/a",
        b"clean body",
    );
    s.allow_204 = true;
    let a = send_once(&s, TIMEOUT).await.unwrap();
    assert_eq!(a.head.status, 204);
    assert_eq!(header(&a, "ISTag"), Some("\"EXAMPLE-2024-01\""));

    s.allow_204 = false;
    let a = send_once(&s, TIMEOUT).await.unwrap();
    assert_eq!(a.head.status, 200);
    assert_eq!(&a.body[..], b"clean body");
    assert_eq!(http_status(&a), Some(200));
    assert_eq!(a.verdict(), (Verdict::Clean, None));

    // Inside a preview a 204 needs no Allow: the sensor decides on the
    // preview without asking for the rest.
    let big = Sample::Large.body();
    let mut s = spec(&sensor, "/av/respmod", "http://t.test/clean/big", &big);
    s.preview = Some(1024);
    let a = send_once(&s, TIMEOUT).await.unwrap();
    assert_eq!(a.head.status, 204);
    assert!(a.interim.is_none(), "no 100 Continue expected");
    sensor.shutdown().await;
}

#[tokio::test]
async fn echo_continues_the_preview_and_returns_the_body_unchanged() {
    let sensor = example_sensor().await;
    let big = Sample::Large.body();
    let mut s = spec(&sensor, "/av/respmod", "http://t.test/echo/big", &big);
    s.preview = Some(1024);
    s.allow_204 = true;
    let a = send_once(&s, TIMEOUT).await.unwrap();
    assert_eq!(a.interim.as_ref().map(|h| h.status), Some(100));
    assert_eq!(a.head.status, 200);
    assert_eq!(a.body.len(), big.len());
    assert!(a.body == big, "echoed body differs");
    assert_eq!(SensorStats::get(&sensor.stats().continues), 1);

    // REQMOD echo returns the request head and body.
    let mut s = spec(&sensor, "/echo", "http://t.test/echo/up", b"form=data");
    s.method = IcapMethod::Reqmod;
    let a = send_once(&s, TIMEOUT).await.unwrap();
    assert_eq!(a.head.status, 200);
    let req = a
        .http
        .iter()
        .find(|h| h.entity == EntityKind::ReqHdr)
        .unwrap();
    assert_eq!(req.method.as_deref(), Some(b"POST".as_slice()));
    assert_eq!(
        req.target.as_deref(),
        Some(b"http://t.test/echo/up".as_slice())
    );
    assert_eq!(&a.body[..], b"form=data");
    sensor.shutdown().await;
}

#[tokio::test]
async fn block_sends_an_http_block_page() {
    let sensor = example_sensor().await;
    let a = respmod(&sensor, "http://t.test/block/x", b"anything").await;
    assert_eq!(a.head.status, 200);
    assert_eq!(http_status(&a), Some(403));
    assert!(std::str::from_utf8(&a.body)
        .unwrap()
        .contains("Access blocked"));
    assert_eq!(a.verdict(), (Verdict::Blocked, None));

    let a = respmod(&sensor, "http://t.test/policy/x", b"anything").await;
    assert_eq!(http_status(&a), Some(451));
    assert_eq!(&a.body[..], b"<html><body>Blocked by policy</body></html>");
    sensor.shutdown().await;
}

#[tokio::test]
async fn infected_styles_carry_each_vendor_header() {
    let sensor = example_sensor().await;
    let cases = [
        (
            "x-infection-found",
            "X-Infection-Found",
            "Type=0; Resolution=2; Threat=Trojan.Test.A;",
            "Trojan.Test.A",
        ),
        ("x-virus-id", "X-Virus-ID", "Trojan.Test.B", "Trojan.Test.B"),
        (
            "x-violations-found",
            "X-Violations-Found",
            "1 payload Trojan.Test.C 2 0",
            "Trojan.Test.C",
        ),
        (
            "x-response-info",
            "X-Response-Info",
            "Blocked",
            "Trojan.Test.D",
        ),
    ];
    for (style, name, value, threat) in cases {
        let a = respmod(
            &sensor,
            &format!("http://t.test/infected/{style}/payload"),
            b"x",
        )
        .await;
        assert_eq!(a.head.status, 200, "{style}");
        assert_eq!(header(&a, name), Some(value), "{style}");
        assert_eq!(threat_of(&a).as_deref(), Some(threat), "{style}");
        assert_eq!(http_status(&a), Some(403), "{style}");
    }
    sensor.shutdown().await;
}

#[tokio::test]
async fn eicar_matches_by_default_even_on_the_preview() {
    let sensor = sensor_with(Scenario::default_scenario().unwrap()).await;
    let mut s = spec(&sensor, "/av/reqmod", "http://t.test/upload", EICAR);
    s.method = IcapMethod::Reqmod;
    s.preview = Some(1024);
    let a = send_once(&s, TIMEOUT).await.unwrap();
    assert_eq!(a.head.status, 200);
    assert!(a.interim.is_none());
    assert_eq!(threat_of(&a).as_deref(), Some("EICAR-Test-File"));
    assert_eq!(
        a.verdict(),
        (Verdict::Infected, Some("EICAR-Test-File".to_owned()))
    );
    // EICAR past the preview: the sensor must ask for the rest first.
    let mut body = vec![b'.'; 4000];
    body.extend_from_slice(EICAR);
    let mut s = spec(&sensor, "/av/respmod", "http://t.test/late", &body);
    s.preview = Some(1024);
    let a = send_once(&s, TIMEOUT).await.unwrap();
    assert_eq!(a.interim.as_ref().map(|h| h.status), Some(100));
    assert_eq!(threat_of(&a).as_deref(), Some("EICAR-Test-File"));
    sensor.shutdown().await;
}

#[tokio::test]
async fn sha256_and_size_rules_match_only_their_bodies() {
    let sensor = example_sensor().await;
    assert_eq!(
        sha256_hex(b"icaptap sha256 sample"),
        "0427cce59d2dc032b17dd877fe3d503fb151a142bd64a0d6f70ae68eda7eae57"
    );
    let a = respmod(&sensor, "http://t.test/any", b"icaptap sha256 sample").await;
    assert_eq!(header(&a, "X-Virus-ID"), Some("Hash.Listed"));
    let a = respmod(&sensor, "http://t.test/any", b"icaptap sha256 sample!").await;
    assert_eq!(header(&a, "X-Virus-ID"), None);

    let a = respmod(&sensor, "http://t.test/size/x", &[b'a'; 1500]).await;
    assert_eq!(
        http_status(&a),
        Some(403),
        "1500 bytes is inside 1000..=2000"
    );
    let a = respmod(&sensor, "http://t.test/size/x", &[b'a'; 2500]).await;
    assert_eq!(http_status(&a), Some(200), "2500 bytes is outside: echoed");
    // The size rule is limited to /av/respmod.
    let a = send_once(
        &spec(&sensor, "/echo", "http://t.test/size/x", &[b'a'; 1500]),
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(http_status(&a), Some(200));
    sensor.shutdown().await;
}

#[tokio::test]
async fn method_rule_and_service_methods() {
    let sensor = example_sensor().await;
    let mut s = spec(&sensor, "/av/reqmod", "http://t.test/upload/f", b"data");
    s.method = IcapMethod::Reqmod;
    let a = send_once(&s, TIMEOUT).await.unwrap();
    assert_eq!(a.verdict(), (Verdict::Blocked, None));
    // RESPMOD to the REQMOD-only service is refused with 405.
    let a = send_once(
        &spec(&sensor, "/av/reqmod", "http://t.test/x", b"data"),
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(a.head.status, 405);
    sensor.shutdown().await;
}

#[tokio::test]
async fn error_statuses_are_sent_as_configured() {
    let sensor = example_sensor().await;
    let a = respmod(&sensor, "http://t.test/error/500", b"x").await;
    assert_eq!(
        (a.head.status, &a.head.reason[..]),
        (500, b"Server Error".as_slice())
    );
    let a = respmod(&sensor, "http://t.test/error/503", b"x").await;
    assert_eq!(
        (a.head.status, &a.head.reason[..]),
        (503, b"Service Overloaded".as_slice())
    );
    assert_eq!(a.verdict().0, Verdict::Error);
    sensor.shutdown().await;
}

#[tokio::test]
async fn delay_makes_a_verdict_arrive_after_a_later_fast_one() {
    let sensor = example_sensor().await;
    for slow_url in ["http://t.test/slow/a", "http://t.test/slow-block/a"] {
        let slow = spec(&sensor, "/av/respmod", slow_url, b"x");
        let fast = spec(&sensor, "/av/respmod", "http://t.test/clean/b", b"x");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let tx2 = tx.clone();
        let slow_task = tokio::spawn(async move {
            let a = send_once(&slow, TIMEOUT).await.unwrap();
            tx.send("slow").unwrap();
            a
        });
        // The slow request is on the wire before the fast one starts.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let fast_task = tokio::spawn(async move {
            let a = send_once(&fast, TIMEOUT).await.unwrap();
            tx2.send("fast").unwrap();
            a
        });
        let first = rx.recv().await.unwrap();
        let second = rx.recv().await.unwrap();
        assert_eq!((first, second), ("fast", "slow"));
        let slow_answer = slow_task.await.unwrap();
        fast_task.await.unwrap();
        assert_eq!(slow_answer.head.status, 200);
    }
    sensor.shutdown().await;
}

#[tokio::test]
async fn close_and_reset_before_the_verdict_are_seen_by_the_client() {
    let sensor = example_sensor().await;
    let err = send_once(
        &spec(&sensor, "/av/respmod", "http://t.test/close/x", b"x"),
        TIMEOUT,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ClientError::Closed { offset: 0, .. }),
        "{err:?}"
    );
    let err = send_once(
        &spec(&sensor, "/av/respmod", "http://t.test/reset/x", b"x"),
        TIMEOUT,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ClientError::Reset { offset: 0, .. }),
        "{err:?}"
    );
    sensor.shutdown().await;
}

#[tokio::test]
async fn silence_after_a_preview_leaves_the_client_waiting() {
    let sensor = example_sensor().await;
    let big = Sample::Large.body();
    let mut s = spec(&sensor, "/av/respmod", "http://t.test/silence/x", &big);
    s.preview = Some(1024);
    let err = send_once(&s, Duration::from_millis(400)).await.unwrap_err();
    match err {
        ClientError::Timeout { stage, .. } => assert_eq!(stage, "waiting for the first answer"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(SensorStats::get(&sensor.stats().continues), 0);
    sensor.shutdown().await;
}

#[tokio::test]
async fn malformed_answers_break_exactly_what_they_say() {
    let sensor = example_sensor().await;

    let a = respmod(
        &sensor,
        "http://t.test/malformed/bad-encapsulated-offsets",
        b"hello",
    )
    .await;
    assert_eq!(a.head.status, 200);
    let enc = header(&a, "Encapsulated").unwrap();
    let res_hdr_len =
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 5\r\n\r\n"
            .len();
    assert_eq!(enc, format!("res-hdr=0, res-body={}", res_hdr_len + 10));
    assert!(
        a.anomalies
            .iter()
            .any(|x| x.code.as_str().starts_with("encapsulated-")
                || x.code == AnomalyCode::HttpHeadInvalid),
        "{:?}",
        a.anomalies
    );

    let mut s = spec(
        &sensor,
        "/av/respmod",
        "http://t.test/malformed/continue-after-ieof",
        b"small",
    );
    s.preview = Some(1024);
    let req = build_request(&s);
    assert!(req.ieof);
    let a = send_once(&s, TIMEOUT).await.unwrap();
    assert_eq!(a.interim.as_ref().map(|h| h.status), Some(100));
    assert_eq!(a.head.status, 204);

    let s = spec(
        &sensor,
        "/av/respmod",
        "http://t.test/malformed/204-without-allow",
        b"x",
    );
    assert!(!s.allow_204);
    let a = send_once(&s, TIMEOUT).await.unwrap();
    assert_eq!(a.head.status, 204);

    let a = respmod(&sensor, "http://t.test/malformed/missing-istag", b"x").await;
    assert_eq!(a.head.status, 200);
    assert!(a.head.istag.is_none());
    assert!(has_anomaly(&a, AnomalyCode::IstagMissing));

    let a = respmod(&sensor, "http://t.test/malformed/broken-chunking", b"hello").await;
    assert_eq!(a.head.status, 200);
    assert!(
        has_anomaly(&a, AnomalyCode::ChunkSizeInvalid),
        "{:?}",
        a.anomalies
    );
    sensor.shutdown().await;
}

#[tokio::test]
async fn options_advertise_the_scenario_and_istag_changes_after_n_requests() {
    let text = "[options]\nistag = \"SIG-7\"\nistag_change_every = 2\nmax_connections = 7\nallow = [204, 206]\npreview = 4096\nx_include = [\"X-Client-IP\"]\n";
    let sensor = sensor_with(Scenario::from_toml(text, "test").unwrap()).await;
    let mut s = spec(&sensor, "/av/respmod", "http://t.test/a", b"x");
    s.method = IcapMethod::Options;
    s.body = None;
    let a = send_once(&s, TIMEOUT).await.unwrap();
    assert_eq!(a.head.status, 200);
    for (name, value) in [
        ("Methods", "RESPMOD"),
        ("Max-Connections", "7"),
        ("Allow", "204, 206"),
        ("Preview", "4096"),
        ("X-Include", "X-Client-IP"),
        ("ISTag", "\"SIG-7\""),
        ("Encapsulated", "null-body=0"),
    ] {
        assert_eq!(header(&a, name), Some(value), "{name}");
    }
    let mut tags = Vec::new();
    for _ in 0..5 {
        let a = respmod(&sensor, "http://t.test/a", b"x").await;
        tags.push(header(&a, "ISTag").unwrap().to_owned());
    }
    assert_eq!(
        tags,
        [
            "\"SIG-7\"",
            "\"SIG-7\"",
            "\"SIG-7-1\"",
            "\"SIG-7-1\"",
            "\"SIG-7-2\""
        ]
    );
    sensor.shutdown().await;
}
