//! Fault injection on the client side, through the real in-process proxy:
//! a client that aborts mid-body, a slowloris client, half-closes in each
//! direction, pipelined requests and idle keep-alive connections. Each case
//! checks byte-exact forwarding, a record for every exchange that started,
//! and that one misbehaving client does not hold up another.
//!
//! The keep-alive case idles for `ICAPTAP_FAULTS_IDLE_SECS` seconds (3 by
//! default so CI stays quick; the field case is minutes: run it with
//! `ICAPTAP_FAULTS_IDLE_SECS=300`).

mod faults_support;

use std::time::Duration;

use faults_support::*;

fn idle_secs() -> u64 {
    std::env::var("ICAPTAP_FAULTS_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

#[tokio::test]
async fn client_abort_mid_body_is_recorded_and_mirrored() {
    let (_, req, _) = simple_pairs().remove(6);
    let cut = req.len() - 20;
    let server = RecordingServer::start(vec![vec![Act::ReadEof]]).await;
    let run = start_in_process(server.addr).await;
    let mut client = RecordingClient::connect(run.listen()).await;
    client.send(&req[..cut]).await;
    let _ = server.leg(0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let local = client.local;
    client.abort().await;
    let leg = server.ended_leg(0).await;
    assert_eq!(leg.received, req[..cut]);
    assert_ne!(
        leg.end.as_deref(),
        Some("eof"),
        "the client's reset must be mirrored"
    );
    let (records, _, _tmp) = run.finish().await;
    let c = records.connection_from(local).unwrap();
    assert_eq!(c.close.client.as_deref(), Some("reset"), "{c:#?}");
    let x = records.exchanges_of(c.conn);
    assert_eq!(x.len(), request_methods(&req).len(), "{records:#?}");
    for x in x {
        assert_eq!(x.verdict, "missing", "{x:#?}");
    }
}

#[tokio::test]
async fn slowloris_client_is_served_and_holds_up_nobody() {
    let req = fixture("options.req");
    let resp = fixture("options.resp");
    let server = RecordingServer::start(vec![vec![
        Act::ReadTo(req.len()),
        Act::Send(resp.clone()),
        Act::ReadEof,
    ]])
    .await;
    let run = start_in_process(server.addr).await;
    let listen = run.listen();
    let (req2, resp2) = (req.clone(), resp.clone());
    let slow = tokio::spawn(async move {
        let mut client = RecordingClient::connect(listen).await;
        for b in &req2 {
            client.send(std::slice::from_ref(b)).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(client.wait_for(resp2.len()).await, resp2);
        client.shutdown().await;
        client.wait_end().await;
        client.local
    });
    // One that starts its head and never finishes it.
    let mut stuck = RecordingClient::connect(listen).await;
    stuck.send(&req[..40]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut quick = RecordingClient::connect(listen).await;
    quick.send(&req).await;
    assert_eq!(quick.wait_for(resp.len()).await, resp);
    assert!(
        !slow.is_finished(),
        "the quick client waited for the slow one"
    );
    quick.shutdown().await;
    quick.wait_end().await;
    let slow_local = slow.await.unwrap();
    stuck.shutdown().await;
    stuck.wait_end().await;
    let (records, _, _tmp) = run.finish().await;
    for local in [slow_local, quick.local] {
        let c = records.connection_from(local).unwrap();
        let x = records.exchanges_of(c.conn);
        assert_eq!(x.len(), 1, "{records:#?}");
        assert_eq!(x[0].verdict, "options");
        assert!(x[0].anomalies.is_empty(), "{:#?}", x[0]);
    }
    let c = records.connection_from(stuck.local).unwrap();
    assert!(
        !records.exchanges_of(c.conn).is_empty() || !c.anomalies.is_empty(),
        "a request head that never ended left no trace: {c:#?}"
    );
    for i in 0..3 {
        let leg = server.ended_leg(i).await;
        assert!(
            leg.received == req || leg.received == req[..40],
            "leg {i} got {} bytes",
            leg.received.len()
        );
    }
}

#[tokio::test]
async fn client_half_close_still_gets_the_answer() {
    let (_, req, resp) = simple_pairs().remove(1);
    let server = RecordingServer::start(vec![vec![
        Act::ReadEof,
        Act::Sleep(Duration::from_millis(100)),
        Act::Send(resp.clone()),
        Act::Shutdown,
    ]])
    .await;
    let run = start_in_process(server.addr).await;
    let mut client = RecordingClient::connect(run.listen()).await;
    client.send(&req).await;
    client.shutdown().await;
    let (how, got) = client.wait_end().await;
    assert_eq!(how, "eof");
    assert_eq!(got, resp);
    let leg = server.ended_leg(0).await;
    assert_eq!(leg.received, req);
    assert_eq!(leg.end.as_deref(), Some("eof"));
    let (records, _, _tmp) = run.finish().await;
    let c = records.connection_from(client.local).unwrap();
    let x = records.exchanges_of(c.conn);
    assert_eq!(x.len(), request_methods(&req).len(), "{records:#?}");
    for x in x {
        assert!(
            !["missing", "malformed"].contains(&x.verdict.as_str()),
            "{x:#?}"
        );
    }
    assert_eq!(c.close.client.as_deref(), Some("fin"));
    assert_eq!(c.close.server.as_deref(), Some("fin"));
}

#[tokio::test]
async fn sensor_half_close_still_carries_the_client_bytes() {
    let (_, req, resp) = simple_pairs().remove(1);
    let server = RecordingServer::start(vec![vec![
        Act::ReadTo(req.len()),
        Act::Send(resp.clone()),
        Act::Shutdown,
        Act::ReadEof,
    ]])
    .await;
    let run = start_in_process(server.addr).await;
    let mut client = RecordingClient::connect(run.listen()).await;
    client.send(&req).await;
    let (how, got) = client.wait_end().await;
    assert_eq!((how.as_str(), got.as_slice()), ("eof", resp.as_slice()));
    // The sensor stopped sending but still reads: the client's next bytes
    // must reach it.
    assert!(client.send(&req).await);
    client.shutdown().await;
    let leg = server.ended_leg(0).await;
    assert_eq!(leg.received, [req.clone(), req.clone()].concat());
    let (records, _, _tmp) = run.finish().await;
    let c = records.connection_from(client.local).unwrap();
    let x = records.exchanges_of(c.conn);
    let n = request_methods(&req).len();
    assert_eq!(x.len(), 2 * n, "{records:#?}");
    for (i, x) in x.iter().enumerate() {
        if i < n {
            assert!(
                !["missing", "malformed"].contains(&x.verdict.as_str()),
                "{x:#?}"
            );
        } else {
            assert_eq!(x.verdict, "missing", "{x:#?}");
        }
    }
}

#[tokio::test]
async fn pipelined_requests_each_get_their_record() {
    let pairs = simple_pairs();
    let chosen = [&pairs[0], &pairs[1], &pairs[3]];
    let reqs: Vec<u8> = chosen.iter().flat_map(|p| p.1.clone()).collect();
    let resps: Vec<u8> = chosen.iter().flat_map(|p| p.2.clone()).collect();
    let server = RecordingServer::start(vec![vec![
        Act::ReadTo(reqs.len()),
        Act::Send(resps.clone()),
        Act::ReadEof,
    ]])
    .await;
    let run = start_in_process(server.addr).await;
    let mut client = RecordingClient::connect(run.listen()).await;
    client.send(&reqs).await;
    assert_eq!(client.wait_for(resps.len()).await, resps);
    client.shutdown().await;
    client.wait_end().await;
    assert_eq!(server.ended_leg(0).await.received, reqs);
    let (records, _, _tmp) = run.finish().await;
    let c = records.connection_from(client.local).unwrap();
    let x = records.exchanges_of(c.conn);
    let methods: Vec<_> = x
        .iter()
        .map(|x| x.method.clone().unwrap_or_default())
        .collect();
    assert_eq!(methods, request_methods(&reqs), "{records:#?}");
    assert!(methods.len() >= 5);
    let seqs: Vec<_> = x.iter().map(|x| x.seq).collect();
    let mut sorted = seqs.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), methods.len(), "sequence numbers {seqs:?}");
    for x in x {
        assert!(
            !["missing", "malformed"].contains(&x.verdict.as_str()),
            "{x:#?}"
        );
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_live_on() {
    const CONNECTIONS: usize = 20;
    let (_, req, resp) = simple_pairs().remove(3);
    let server = RecordingServer::start(vec![vec![
        Act::ReadTo(req.len()),
        Act::Send(resp.clone()),
        Act::ReadTo(req.len() * 2),
        Act::Send(resp.clone()),
        Act::ReadEof,
    ]])
    .await;
    let run = start_in_process(server.addr).await;
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut c = RecordingClient::connect(run.listen()).await;
        c.send(&req).await;
        assert_eq!(c.wait_for(resp.len()).await, resp);
        clients.push(c);
    }
    tokio::time::sleep(Duration::from_secs(idle_secs())).await;
    for c in &mut clients {
        assert!(
            c.ended.lock().unwrap().is_none(),
            "an idle connection was closed"
        );
        c.send(&req).await;
        assert_eq!(c.wait_for(resp.len() * 2).await, resp.repeat(2));
        c.shutdown().await;
        c.wait_end().await;
    }
    for i in 0..CONNECTIONS {
        assert_eq!(server.ended_leg(i).await.received, req.repeat(2));
    }
    let (records, summary, _tmp) = run.finish().await;
    let per_send = request_methods(&req).len();
    assert_eq!(
        records.exchanges.len(),
        CONNECTIONS * 2 * per_send,
        "{records:#?}"
    );
    assert_eq!(records.connections.len(), CONNECTIONS);
    for x in &records.exchanges {
        assert!(
            !["missing", "malformed"].contains(&x.verdict.as_str()),
            "{x:#?}"
        );
    }
    assert_eq!(summary.drops.observer_taps, 0);
}
