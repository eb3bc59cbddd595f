//! The mock sensor's connection handling and the load generator, on
//! loopback: pipelining, keep-alive, refusal of bad requests, the body
//! limit, and load runs counting statuses and errors by kind.

mod toolkit_support;

use std::time::Duration;

use bytes::Bytes;
use icap_codec::{Decoder, Direction, Event};
use icaptap::toolkit::client::load::{run_load, LoadConfig, LoadStop};
use icaptap::toolkit::client::{build_request, send_once, threat_of, IcapConnection};
use icaptap::toolkit::sample::EICAR;
use icaptap::toolkit::scenario::Scenario;
use icaptap::toolkit::sensor::SensorStats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use toolkit_support::*;

/// Reads from `stream` until the decoder has seen `n` final responses.
async fn read_responses(stream: &mut TcpStream, n: usize) -> (Vec<u16>, bool) {
    let mut decoder = Decoder::new(Direction::Response);
    let mut statuses = Vec::new();
    let mut events = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut closed = false;
    while statuses.len() < n {
        let read = tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if read == 0 {
            closed = true;
            break;
        }
        decoder.decode(Bytes::copy_from_slice(&buf[..read]), &mut events);
        for e in events.drain(..) {
            if let Event::ResponseHead(h) = e {
                statuses.push(h.status);
            }
        }
    }
    (statuses, closed)
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let sensor = example_sensor().await;
    let mut wire = Vec::new();
    for url in [
        "http://t.test/error/503",
        "http://t.test/block/x",
        "http://t.test/clean/y",
    ] {
        let mut s = spec(&sensor, "/av/respmod", url, b"body");
        s.allow_204 = true;
        wire.extend_from_slice(&build_request(&s).first);
    }
    let mut stream = TcpStream::connect(sensor.addr()).await.unwrap();
    stream.write_all(&wire).await.unwrap();
    let (statuses, closed) = read_responses(&mut stream, 3).await;
    assert_eq!(statuses, [503, 200, 204]);
    assert!(!closed);
    sensor.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_400_and_unknown_methods_501() {
    let sensor = example_sensor().await;
    let mut stream = TcpStream::connect(sensor.addr()).await.unwrap();
    stream
        .write_all(b"this is not ICAP at all\r\n\r\n")
        .await
        .unwrap();
    let (statuses, _) = read_responses(&mut stream, 1).await;
    assert_eq!(statuses, [400]);
    // After a 400 the sensor closes: framing cannot be trusted.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);

    let mut stream = TcpStream::connect(sensor.addr()).await.unwrap();
    let addr = sensor.addr();
    stream
        .write_all(
            format!("FETCH icap://{addr}/av/respmod ICAP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let (statuses, _) = read_responses(&mut stream, 1).await;
    assert_eq!(statuses, [501]);
    assert!(SensorStats::get(&sensor.stats().refused) >= 2);
    sensor.shutdown().await;
}

#[tokio::test]
async fn keep_alive_load_reuses_connections_and_counts_statuses() {
    let sensor = example_sensor().await;
    let mut s = spec(
        &sensor,
        "/av/respmod",
        "http://t.test/clean/load",
        b"load body",
    );
    s.allow_204 = true;
    let report = run_load(LoadConfig {
        target: sensor.addr(),
        request: build_request(&s),
        concurrency: 3,
        stop: LoadStop::Count(300),
        rate: None,
        timeout: TIMEOUT,
        tls: None,
    })
    .await
    .unwrap();
    assert_eq!(report.completed, 300);
    assert_eq!(report.connections, 3);
    assert_eq!(report.statuses.get(&204), Some(&300));
    assert_eq!(report.error_count(), 0);
    assert_eq!(report.latency_us.len(), 300);
    assert_eq!(SensorStats::get(&sensor.stats().connections), 3);
    let text = report.to_string();
    for word in ["req/s", "p50", "p90", "p99", "p99.9", "max", "errors: none"] {
        assert!(text.contains(word), "{word} missing in {text}");
    }

    // Errors are counted by kind: 503s and resets.
    let mut s = spec(&sensor, "/av/respmod", "http://t.test/error/503", b"x");
    s.allow_204 = true;
    let report = run_load(LoadConfig {
        target: sensor.addr(),
        request: build_request(&s),
        concurrency: 2,
        stop: LoadStop::Count(10),
        rate: None,
        timeout: TIMEOUT,
        tls: None,
    })
    .await
    .unwrap();
    assert_eq!(report.errors.get("status-503"), Some(&10));
    let s = spec(&sensor, "/av/respmod", "http://t.test/reset/x", b"x");
    let report = run_load(LoadConfig {
        target: sensor.addr(),
        request: build_request(&s),
        concurrency: 1,
        stop: LoadStop::Count(4),
        rate: None,
        timeout: TIMEOUT,
        tls: None,
    })
    .await
    .unwrap();
    assert_eq!(report.errors.get("reset"), Some(&4));
    assert_eq!(report.completed, 0);
    sensor.shutdown().await;
}

#[tokio::test]
async fn rate_limited_load_spreads_requests_over_time() {
    let sensor = example_sensor().await;
    let s = spec(&sensor, "/av/respmod", "http://t.test/clean/r", b"x");
    let report = run_load(LoadConfig {
        target: sensor.addr(),
        request: build_request(&s),
        concurrency: 2,
        stop: LoadStop::Count(10),
        rate: Some(50.0),
        timeout: TIMEOUT,
        tls: None,
    })
    .await
    .unwrap();
    assert_eq!(report.completed, 10);
    // Ticket 9 is due 9/50 s after the start: the run cannot be shorter.
    assert!(
        report.elapsed >= Duration::from_millis(180),
        "{:?}",
        report.elapsed
    );
    sensor.shutdown().await;
}

#[tokio::test]
async fn a_second_request_on_a_kept_connection_gets_its_own_verdict() {
    let sensor = example_sensor().await;
    let mut conn = IcapConnection::connect(sensor.addr(), TIMEOUT)
        .await
        .unwrap();
    let block = build_request(&spec(&sensor, "/av/respmod", "http://t.test/block/1", b"a"));
    let infected = build_request(&spec(&sensor, "/av/respmod", "http://t.test/x", EICAR));
    let a = conn.send(&block, TIMEOUT).await.unwrap();
    assert_eq!(http_status(&a), Some(403));
    assert!(conn.is_reusable());
    let b = conn.send(&infected, TIMEOUT).await.unwrap();
    assert_eq!(threat_of(&b).as_deref(), Some("EICAR-Test-File"));
    assert_eq!(SensorStats::get(&sensor.stats().connections), 1);
    sensor.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_hashed_but_not_echoed() {
    let text = "[limits]\nmax_body_bytes = 100\n";
    let sensor = sensor_with(Scenario::from_toml(text, "test").unwrap()).await;
    let body = vec![b'z'; 1000];
    // /echo must echo: it cannot, so it says so with a 500.
    let a = send_once(&spec(&sensor, "/echo", "http://t.test/big", &body), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(a.head.status, 500);
    assert_eq!(&a.head.reason[..], b"Body Over Mock Sensor Limit");
    // Clean with Allow: 204 needs no copy of the body.
    let mut s = spec(&sensor, "/av/respmod", "http://t.test/big", &body);
    s.allow_204 = true;
    assert_eq!(send_once(&s, TIMEOUT).await.unwrap().head.status, 204);
    // Within the limit the echo works on the same sensor.
    let a = send_once(
        &spec(&sensor, "/echo", "http://t.test/small", &body[..100]),
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!((a.head.status, a.body.len()), (200, 100));
    sensor.shutdown().await;
}

#[tokio::test]
async fn load_latency_includes_the_sensors_delay() {
    // The example's /slow/ rule waits 300 ms: every recorded latency must
    // be at least that (a histogram clamping large values would not be).
    let sensor = example_sensor().await;
    let s = spec(&sensor, "/av/respmod", "http://t.test/slow/l", b"x");
    let report = run_load(LoadConfig {
        target: sensor.addr(),
        request: build_request(&s),
        concurrency: 2,
        stop: LoadStop::Count(2),
        rate: None,
        timeout: TIMEOUT,
        tls: None,
    })
    .await
    .unwrap();
    assert_eq!(report.completed, 2);
    assert!(
        report.latency_us.min() >= 300_000,
        "min {} us",
        report.latency_us.min()
    );
    assert!(report.latency_us.max() < TIMEOUT.as_micros() as u64);
    sensor.shutdown().await;
}
