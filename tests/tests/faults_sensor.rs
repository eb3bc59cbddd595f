//! Fault injection on the sensor side (RFC 3507 section 6.2's client-side
//! failures: cannot connect, server closed, server reset, no answer),
//! through the real in-process proxy. Each case checks that what crossed
//! the proxy while both peers were alive is byte-exact, that every
//! exchange that started has a record, and what the record says.

mod faults_support;

use std::time::Duration;

use faults_support::*;

fn with_istag(resp: &[u8], istag: &str) -> Vec<u8> {
    let text = String::from_utf8(resp.to_vec()).unwrap();
    text.replace("\"CI0001-XXXXXXXXX\"", &format!("\"{istag}\""))
        .into_bytes()
}

#[tokio::test]
async fn sensor_refusing_connections_is_recorded_per_client_connection() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let run = start_in_process(dead).await;
    let mut locals = Vec::new();
    for _ in 0..3 {
        let mut client = RecordingClient::connect(run.listen()).await;
        client.send(&fixture("options.req")).await;
        let (_how, got) = client.wait_end().await;
        assert!(got.is_empty(), "a refused sensor leg must not answer");
        locals.push(client.local);
    }
    let (records, summary, _tmp) = run.finish().await;
    assert_eq!(summary.connect_failures, 3);
    for local in locals {
        let c = records
            .connection_from(local)
            .unwrap_or_else(|| panic!("no record of {local}: {records:#?}"));
        assert!(c.connect_error.is_some());
        assert!(
            c.anomalies.iter().any(|a| a.code == "sensor-unreachable"),
            "{c:#?}"
        );
    }
}

#[tokio::test]
async fn sensor_reset_mid_response_leaves_a_missing_or_malformed_record() {
    let (_, req, resp) = simple_pairs().remove(3);
    let half = resp.len() / 2;
    let server = RecordingServer::start(vec![vec![
        Act::ReadTo(req.len()),
        Act::Send(resp[..half].to_vec()),
        Act::Sleep(Duration::from_millis(300)),
        Act::Reset,
    ]])
    .await;
    let run = start_in_process(server.addr).await;
    let mut client = RecordingClient::connect(run.listen()).await;
    client.send(&req).await;
    let (how, got) = client.wait_end().await;
    assert_eq!(got, resp[..half], "the half response must arrive intact");
    assert_ne!(
        how, "eof",
        "the sensor's reset must reach the client as one"
    );
    assert_eq!(server.leg(0).await.received, req);
    let (records, _, _tmp) = run.finish().await;
    let c = records.connection_from(client.local).unwrap();
    let x = records.exchanges_of(c.conn);
    assert_eq!(x.len(), request_methods(&req).len(), "{records:#?}");
    let last = x.last().unwrap();
    assert!(
        ["missing", "malformed"].contains(&last.verdict.as_str()),
        "{last:#?}"
    );
    assert_eq!(c.close.server.as_deref(), Some("reset"));
}

#[tokio::test]
async fn silent_sensor_hits_the_verdict_timeout() {
    let (_, req, _) = simple_pairs().remove(1);
    let server = RecordingServer::start(vec![vec![Act::ReadTo(req.len()), Act::Silent]]).await;
    let run = start_in_process(server.addr).await;
    let mut client = RecordingClient::connect(run.listen()).await;
    client.send(&req).await;
    // Longer than the verdict timeout of quick_timers().
    tokio::time::sleep(Duration::from_millis(2000)).await;
    client.shutdown().await;
    let (_, got) = client.wait_end().await;
    assert!(got.is_empty());
    assert_eq!(server.leg(0).await.received, req);
    let (records, _, _tmp) = run.finish().await;
    let c = records.connection_from(client.local).unwrap();
    let x = records.exchanges_of(c.conn);
    assert_eq!(x.len(), request_methods(&req).len(), "{records:#?}");
    for x in &x {
        assert_eq!(x.verdict, "missing", "{x:#?}");
    }
    assert!(
        x[0].anomalies.iter().any(|a| a.code == "verdict-timeout"),
        "{:#?}",
        x[0]
    );
}

#[tokio::test]
async fn sensor_closing_after_a_preview_is_a_missing_verdict() {
    // The captured preview of 1 KiB is the part of the request before the
    // rest of the body is sent (the fixture holds both).
    let full = fixture("respmod_preview_continue.req");
    let end = memchr::memmem::find(&full, b"\r\n0\r\n\r\n").unwrap() + 7;
    let preview = full[..end].to_vec();
    let server = RecordingServer::start(vec![vec![
        Act::ReadTo(preview.len()),
        Act::Sleep(Duration::from_millis(100)),
        Act::Shutdown,
        Act::ReadEof,
    ]])
    .await;
    let run = start_in_process(server.addr).await;
    let mut client = RecordingClient::connect(run.listen()).await;
    client.send(&preview).await;
    let got = client.wait_for(1).await;
    assert!(got.is_empty(), "the sensor answered nothing");
    client.shutdown().await;
    let (how, _) = client.wait_end().await;
    assert_eq!(how, "eof");
    assert_eq!(server.leg(0).await.received, preview);
    let (records, _, _tmp) = run.finish().await;
    let c = records.connection_from(client.local).unwrap();
    let x = records.exchanges_of(c.conn);
    assert_eq!(x.len(), request_methods(&preview).len(), "{records:#?}");
    for x in &x {
        assert_eq!(x.verdict, "missing", "{x:#?}");
    }
    let last = x.last().unwrap();
    assert!(last.preview.is_some(), "{last:#?}");
    assert!(!last.anomalies.is_empty(), "{last:#?}");
}

#[tokio::test]
async fn sensor_restart_during_traffic_loses_one_verdict_and_changes_istag() {
    let (_, req, resp) = simple_pairs().remove(3);
    let before = with_istag(&resp, "CI0001-AAAAAAAAA");
    let after = with_istag(&resp, "CI0002-BBBBBBBBB");
    let server = RecordingServer::start(vec![
        // The sensor answers once, then dies under the second request.
        vec![
            Act::ReadTo(req.len()),
            Act::Send(before.clone()),
            Act::ReadTo(req.len() * 2),
            Act::Reset,
        ],
        // Restarted, with new signatures.
        vec![
            Act::ReadTo(req.len()),
            Act::Send(after.clone()),
            Act::ReadTo(req.len() * 2),
            Act::Send(after.clone()),
            Act::ReadEof,
        ],
    ])
    .await;
    let run = start_in_process(server.addr).await;
    let mut first = RecordingClient::connect(run.listen()).await;
    first.send(&req).await;
    assert_eq!(first.wait_for(before.len()).await, before);
    first.send(&req).await;
    let (how, got) = first.wait_end().await;
    assert_ne!(how, "eof");
    assert_eq!(got, before);
    let mut second = RecordingClient::connect(run.listen()).await;
    for n in 1..=2 {
        second.send(&req).await;
        assert_eq!(second.wait_for(after.len() * n).await, after.repeat(n));
    }
    second.shutdown().await;
    second.wait_end().await;
    assert_eq!(
        server.leg(0).await.received,
        [req.clone(), req.clone()].concat()
    );
    assert_eq!(
        server.leg(1).await.received,
        [req.clone(), req.clone()].concat()
    );
    let (records, _, _tmp) = run.finish().await;
    let n = request_methods(&req).len();
    assert_eq!(records.exchanges.len(), 4 * n, "{records:#?}");
    let c1 = records.connection_from(first.local).unwrap();
    let lost = records.exchanges_of(c1.conn);
    assert_eq!(lost.len(), 2 * n);
    for x in &lost[n..] {
        assert_eq!(x.verdict, "missing", "{x:#?}");
    }
    assert!(
        records.codes().iter().any(|c| c == "istag-changed"),
        "{:?}",
        records.codes()
    );
}
