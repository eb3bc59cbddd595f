//! Connection life cycle through icaptap on 127.0.0.1 with in-test peers:
//! resets are mirrored both ways, a refused sensor connect closes the client
//! and is reported, the connection limit holds, shutdown stops accepting
//! and drains, connections left after the drain are cut and reported, and
//! bind errors say what to do.

mod forward_support;

use std::io::ErrorKind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use forward_support::*;
use icaptap::forward::{self, ForwardConfig};
use icaptap::tap::{CloseKind, Direction, TapEvent, TapQueue, TapSinks};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

#[tokio::test]
async fn sensor_reset_reaches_the_client_as_a_reset() {
    let (sensor, sensor_addr) = sensor_listener().await;
    let (queue, mut rx) = TapQueue::bounded(1024);
    let proxy = start_proxy(sensor_addr, observer_only(queue), |_| {}).await;
    let sensor_side = tokio::spawn(async move {
        let (mut s, _) = sensor.accept().await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(b"partial answer").await.unwrap();
        s.set_zero_linger().unwrap();
        drop(s);
    });
    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    c.write_all(b"hello").await.unwrap();
    timeout(PATIENCE, sensor_side).await.unwrap().unwrap();
    let mut got = Vec::new();
    let err = timeout(PATIENCE, c.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::ConnectionReset,
        "client saw {err:?} after {got:?}"
    );

    let taps = collect_taps(&mut rx, 1).await;
    let ends = closes(&taps);
    assert_eq!(
        ends.first(),
        Some(&(Direction::Response, CloseKind::Reset)),
        "{ends:?}"
    );
    // The client did not reset: icaptap reset the client leg on the
    // sensor's behalf, and says so.
    assert!(
        ends.contains(&(Direction::Request, CloseKind::IcaptapReset)),
        "{ends:?}"
    );
    assert_eq!(taps.last().map(|t| &t.event), Some(&TapEvent::Finished));
    assert_eq!(proxy.stop().await.resets, 1);
}

#[tokio::test]
async fn client_reset_reaches_the_sensor_as_a_reset() {
    let (sensor, sensor_addr) = sensor_listener().await;
    let (queue, mut rx) = TapQueue::bounded(1024);
    let proxy = start_proxy(sensor_addr, observer_only(queue), |_| {}).await;
    let sensor_side = tokio::spawn(async move {
        let (mut s, _) = sensor.accept().await.unwrap();
        let mut got = Vec::new();
        let err = timeout(PATIENCE, s.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap_err();
        (err.kind(), got)
    });
    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    c.write_all(b"REQMOD icap://x/ ICAP/1.0\r\n").await.unwrap();
    // Let the bytes reach the sensor before the reset overtakes them.
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.set_zero_linger().unwrap();
    drop(c);
    let (kind, got) = timeout(PATIENCE, sensor_side).await.unwrap().unwrap();
    assert_eq!(kind, ErrorKind::ConnectionReset);
    assert_eq!(got, b"REQMOD icap://x/ ICAP/1.0\r\n");

    let taps = collect_taps(&mut rx, 1).await;
    let ends = closes(&taps);
    assert_eq!(
        ends.first(),
        Some(&(Direction::Request, CloseKind::Reset)),
        "{ends:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn refused_sensor_connect_closes_the_client_and_is_reported() {
    // A port that was just free: nothing listens there.
    let (gone, gone_addr) = sensor_listener().await;
    drop(gone);
    let (queue, mut rx) = TapQueue::bounded(1024);
    let proxy = start_proxy(gone_addr, observer_only(queue), |_| {}).await;
    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    let mut got = Vec::new();
    match timeout(PATIENCE, c.read_to_end(&mut got)).await.unwrap() {
        Ok(n) => assert_eq!(n, 0, "client got bytes from nowhere"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
    }
    let taps = collect_taps(&mut rx, 1).await;
    let events: Vec<&TapEvent> = taps.iter().map(|t| &t.event).collect();
    assert_eq!(events.len(), 2, "{events:?}");
    match events[0] {
        TapEvent::ConnectFailed { error, .. } => {
            assert!(error.contains(&gone_addr.to_string()), "{error}")
        }
        other => panic!("expected ConnectFailed, got {other:?}"),
    }
    assert_eq!(events[1], &TapEvent::Finished);
    assert_eq!(taps[0].conn.upstream_local, None);
    let stats = proxy.stop().await;
    assert_eq!(stats.connect_failures, 1);
    assert_eq!(stats.connections_total, 1);
}

#[tokio::test]
async fn the_connection_limit_holds_a_third_client_until_one_finishes() {
    let (sensor, sensor_addr) = sensor_listener().await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = sensor.accept().await else {
                return;
            };
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // Echo until the client half-closes, then close.
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    let proxy = start_proxy(sensor_addr, TapSinks::default(), |c| c.max_connections = 2).await;
    let mut first = TcpStream::connect(proxy.addr).await.unwrap();
    let mut second = TcpStream::connect(proxy.addr).await.unwrap();
    for (c, msg) in [(&mut first, b"one"), (&mut second, b"two")] {
        c.write_all(msg).await.unwrap();
        let mut back = [0u8; 3];
        timeout(PATIENCE, c.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back, msg);
    }
    // The kernel completes the third handshake (backlog), but icaptap does
    // not take it on while both permits are held.
    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    third.write_all(b"333").await.unwrap();
    let mut back = [0u8; 3];
    assert!(
        timeout(Duration::from_millis(500), third.read_exact(&mut back))
            .await
            .is_err(),
        "third client served past the limit"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(proxy.counters.connections_open.load(Ordering::Relaxed), 2);

    first.shutdown().await.unwrap();
    assert!(read_to_end(&mut first).await.is_empty());
    timeout(PATIENCE, third.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"333");
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    drop(second);
    drop(third);
    let stats = proxy.stop().await;
    assert_eq!(stats.connections_total, 3);
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_open_connections_finish() {
    let (sensor, sensor_addr) = sensor_listener().await;
    let proxy = start_proxy(sensor_addr, TapSinks::default(), |c| {
        c.drain = Duration::from_secs(30)
    })
    .await;
    let sensor_side = tokio::spawn(async move {
        let (mut s, _) = sensor.accept().await.unwrap();
        let got = read_to_end(&mut s).await;
        s.write_all(b"verdict after shutdown began").await.unwrap();
        s.shutdown().await.unwrap();
        got
    });
    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    c.write_all(b"request before shutdown").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    proxy.shutdown.cancel();
    // Stopped accepting at once...
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        TcpStream::connect(proxy.addr).await.is_err(),
        "still accepting after shutdown"
    );
    // ...while the open connection goes on to its natural end.
    c.write_all(b", and more after").await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut c).await, b"verdict after shutdown began");
    assert_eq!(
        timeout(PATIENCE, sensor_side).await.unwrap().unwrap(),
        b"request before shutdown, and more after"
    );
    // Well before the 30 s drain: serve returns once the last one is done.
    let stats = timeout(Duration::from_secs(5), proxy.served)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stats.cut_at_shutdown, 0);
    assert_eq!(stats.connections_open, 0);
}

#[tokio::test]
async fn connections_left_after_the_drain_period_are_cut_and_reported() {
    let (sensor, sensor_addr) = sensor_listener().await;
    let (queue, mut rx) = TapQueue::bounded(1024);
    let proxy = start_proxy(sensor_addr, observer_only(queue), |c| {
        c.drain = Duration::from_millis(300)
    })
    .await;
    let sensor_side = tokio::spawn(async move {
        let (mut s, _) = sensor.accept().await.unwrap();
        // A sensor that never answers.
        let mut got = Vec::new();
        let _ = timeout(PATIENCE, s.read_to_end(&mut got)).await;
        got
    });
    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    c.write_all(b"waiting forever").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    proxy.shutdown.cancel();
    let stats = timeout(PATIENCE, proxy.served).await.unwrap().unwrap();
    assert_eq!(stats.cut_at_shutdown, 1);
    let mut got = Vec::new();
    let end = timeout(PATIENCE, c.read_to_end(&mut got)).await.unwrap();
    assert!(got.is_empty());
    assert!(end.is_err() || end.is_ok_and(|n| n == 0));
    assert_eq!(
        timeout(PATIENCE, sensor_side).await.unwrap().unwrap(),
        b"waiting forever"
    );
    let taps = collect_taps(&mut rx, 1).await;
    let mut ends = closes(&taps);
    ends.sort_by_key(|(d, _)| *d == Direction::Response);
    assert_eq!(
        ends,
        vec![
            (Direction::Request, CloseKind::Shutdown),
            (Direction::Response, CloseKind::Shutdown)
        ]
    );
}

#[tokio::test]
async fn bind_errors_say_which_address_and_what_to_do() {
    let (taken, taken_addr) = sensor_listener().await;
    let cfg = ForwardConfig::new(taken_addr, "127.0.0.1:1".parse().unwrap());
    let err = forward::bind(&cfg).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&taken_addr.to_string()), "{text}");
    assert!(text.contains("already in use"), "{text}");
    assert!(text.contains("--listen"), "{text}");
    drop(taken);
}

/// A sensor whose listen backlog is full: the kernel drops further SYNs,
/// so a connect to it hangs (until the connect timeout).
fn sensor_with_full_backlog() -> (tokio::net::TcpListener, Vec<std::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut filled = Vec::new();
    for _ in 0..4 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => filled.push(s),
            Err(_) => break,
        }
    }
    (listener, filled)
}

#[tokio::test]
async fn a_client_that_leaves_before_the_sensor_leg_is_up_gets_no_sensor_leg() {
    let (sensor, _filled) = sensor_with_full_backlog();
    let sensor_addr = sensor.local_addr().unwrap();
    let (queue, mut rx) = TapQueue::bounded(1024);
    let proxy = start_proxy(sensor_addr, observer_only(queue), |_| {}).await;
    // Connect and leave at once, having sent nothing: icaptap is still
    // connecting to the sensor, and stops.
    drop(TcpStream::connect(proxy.addr).await.unwrap());
    let taps = collect_taps(&mut rx, 1).await;
    let events: Vec<&TapEvent> = taps.iter().map(|t| &t.event).collect();
    match events[0] {
        TapEvent::ConnectFailed { cause, .. } => {
            assert_eq!(*cause, icaptap::tap::ConnectFailure::ClientGone)
        }
        other => panic!("expected ConnectFailed, got {other:?}"),
    }
    assert_eq!(events[1], &TapEvent::Finished);
    // The observer gives it its own code, never the sensor's.
    let records = icaptap::output::writer::SharedMemorySink::default();
    let mut observer = icaptap::observe::Observer::new(
        icaptap::observe::ObserverMode::Live,
        icaptap::observe::ObserverConfig::default(),
        Box::new(records.clone()),
    );
    for tap in taps {
        observer.handle(tap);
    }
    let codes: Vec<String> = records.lock().connections[0]
        .anomalies
        .iter()
        .map(|a| a.code.clone())
        .collect();
    assert_eq!(codes, ["client-gone-before-connect"]);
    let stats = proxy.stop().await;
    assert_eq!(stats.client_gone_before_connect, 1);
    assert_eq!(stats.connect_failures, 0, "not the sensor's failure");
}
