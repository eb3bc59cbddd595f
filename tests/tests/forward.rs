//! The forwarding hot path end to end on 127.0.0.1, with in-test peers on
//! both sides: bytes arrive unchanged in both directions (property test with
//! random sizes, write splits and half-closes), resets and refusals are
//! mirrored, the taps reconstruct the forwarded streams, a stalled observer
//! loses taps but never bytes, the connection limit holds, shutdown drains.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use icaptap::forward::{self, CancellationToken, ForwardConfig, ForwardCounters, ForwardStats};
use icaptap::tap::{CloseKind, Direction, Tap, TapEvent, TapQueue, TapSinks};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Upper bound on any single wait in these tests: a hang fails, not blocks.
const PATIENCE: Duration = Duration::from_secs(20);

struct Proxy {
    addr: SocketAddr,
    shutdown: CancellationToken,
    counters: Arc<ForwardCounters>,
    served: JoinHandle<ForwardStats>,
}

async fn start_proxy(
    upstream: SocketAddr,
    sinks: TapSinks,
    tweak: impl FnOnce(&mut ForwardConfig),
) -> Proxy {
    let mut cfg = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), upstream);
    tweak(&mut cfg);
    let listener = forward::bind(&cfg).await.unwrap();
    let addr = listener.local_addr();
    let counters = listener.counters();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let served = tokio::spawn(async move { forward::serve(listener, &cfg, sinks, token).await });
    Proxy {
        addr,
        shutdown,
        counters,
        served,
    }
}

impl Proxy {
    async fn stop(self) -> ForwardStats {
        self.shutdown.cancel();
        timeout(PATIENCE, self.served).await.unwrap().unwrap()
    }
}

async fn sensor_listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// Deterministic pseudo-random bytes: cheap to make in bulk, unlike a
/// proptest vector of a million `u8`s.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Writes `data` in pieces of the given sizes (cycled), yielding between
/// pieces so that they leave as separate segments.
async fn write_split(stream: &mut (impl AsyncWriteExt + Unpin), data: &[u8], splits: &[usize]) {
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let n = splits[i % splits.len()].max(1).min(data.len() - at);
        stream.write_all(&data[at..at + n]).await.unwrap();
        at += n;
        i += 1;
        tokio::task::yield_now().await;
    }
}

async fn read_to_end(stream: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    timeout(PATIENCE, stream.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    got
}

/// Collects taps until `Finished` for `count` connections.
async fn collect_taps(rx: &mut mpsc::Receiver<Tap>, count: usize) -> Vec<Tap> {
    let mut taps = Vec::new();
    let mut finished = 0;
    while finished < count {
        let tap = timeout(PATIENCE, rx.recv()).await.unwrap().unwrap();
        if tap.event == TapEvent::Finished {
            finished += 1;
        }
        taps.push(tap);
    }
    taps
}

/// Concatenates one direction's data taps, checking that offsets are
/// contiguous from 0.
fn reassemble(taps: &[Tap], dir: Direction) -> Vec<u8> {
    let mut out = Vec::new();
    for tap in taps {
        if let TapEvent::Data {
            dir: d,
            offset,
            bytes,
        } = &tap.event
        {
            if *d == dir {
                assert_eq!(*offset, out.len() as u64, "gap or overlap in {dir:?} taps");
                out.extend_from_slice(bytes);
            }
        }
    }
    out
}

fn closes(taps: &[Tap]) -> Vec<(Direction, CloseKind)> {
    taps.iter()
        .filter_map(|t| match t.event {
            TapEvent::Closed { dir, how } => Some((dir, how)),
            _ => None,
        })
        .collect()
}

/// How the two directions take turns in one property case.
#[derive(Clone, Copy, Debug)]
enum Turns {
    /// Both sides write at once, then each half-closes.
    Together,
    /// The client sends everything and half-closes; only then does the
    /// sensor answer (the response flows after the request's FIN).
    ClientFirst,
    /// The sensor sends everything and half-closes first; the client's data
    /// flows after that.
    SensorFirst,
}

async fn one_case(
    up: Vec<u8>,
    down: Vec<u8>,
    up_splits: Vec<usize>,
    down_splits: Vec<usize>,
    turns: Turns,
    buffer_size: usize,
) {
    let (sensor, sensor_addr) = sensor_listener().await;
    let (queue, mut rx) = TapQueue::bounded(1 << 20);
    let sinks = TapSinks {
        observer: Some(queue),
        recorder: None,
    };
    let proxy = start_proxy(sensor_addr, sinks, |c| c.buffer_size = buffer_size).await;

    let down_for_sensor = down.clone();
    let sensor_side = tokio::spawn(async move {
        let (mut s, _) = sensor.accept().await.unwrap();
        match turns {
            Turns::Together => {
                let (mut r, mut w) = s.split();
                let (got, ()) = tokio::join!(read_to_end(&mut r), async {
                    write_split(&mut w, &down_for_sensor, &down_splits).await;
                    w.shutdown().await.unwrap();
                });
                got
            }
            Turns::ClientFirst => {
                let got = read_to_end(&mut s).await;
                write_split(&mut s, &down_for_sensor, &down_splits).await;
                s.shutdown().await.unwrap();
                got
            }
            Turns::SensorFirst => {
                write_split(&mut s, &down_for_sensor, &down_splits).await;
                s.shutdown().await.unwrap();
                read_to_end(&mut s).await
            }
        }
    });

    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    let client_got = match turns {
        Turns::Together => {
            let (mut r, mut w) = c.split();
            let (got, ()) = tokio::join!(read_to_end(&mut r), async {
                write_split(&mut w, &up, &up_splits).await;
                w.shutdown().await.unwrap();
            });
            got
        }
        Turns::ClientFirst => {
            write_split(&mut c, &up, &up_splits).await;
            c.shutdown().await.unwrap();
            read_to_end(&mut c).await
        }
        Turns::SensorFirst => {
            let got = read_to_end(&mut c).await;
            write_split(&mut c, &up, &up_splits).await;
            c.shutdown().await.unwrap();
            got
        }
    };
    let sensor_got = timeout(PATIENCE, sensor_side).await.unwrap().unwrap();
    assert!(
        sensor_got == up,
        "client->sensor bytes differ ({} sent, {} arrived)",
        up.len(),
        sensor_got.len()
    );
    assert!(
        client_got == down,
        "sensor->client bytes differ ({} sent, {} arrived)",
        down.len(),
        client_got.len()
    );

    let taps = collect_taps(&mut rx, 1).await;
    assert_eq!(reassemble(&taps, Direction::Request), up);
    assert_eq!(reassemble(&taps, Direction::Response), down);
    let mut ends = closes(&taps);
    ends.sort_by_key(|(d, _)| *d == Direction::Response);
    assert_eq!(
        ends,
        vec![
            (Direction::Request, CloseKind::Fin),
            (Direction::Response, CloseKind::Fin)
        ]
    );
    assert_eq!(taps.first().map(|t| &t.event), Some(&TapEvent::Open));

    let stats = proxy.stop().await;
    assert_eq!(stats.bytes_client_to_sensor, up.len() as u64);
    assert_eq!(stats.bytes_sensor_to_client, down.len() as u64);
    assert_eq!(stats.connections_total, 1);
    assert_eq!(stats.connections_open, 0);
}

fn turns() -> impl Strategy<Value = Turns> {
    prop_oneof![
        Just(Turns::Together),
        Just(Turns::ClientFirst),
        Just(Turns::SensorFirst)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_streams_arrive_identical_both_ways(
        up_seed in any::<u64>(),
        up_len in prop_oneof![0usize..64, 0usize..300_000],
        down_seed in any::<u64>(),
        down_len in prop_oneof![0usize..64, 0usize..300_000],
        up_splits in proptest::collection::vec(1usize..40_000, 1..8),
        down_splits in proptest::collection::vec(1usize..40_000, 1..8),
        turns in turns(),
        buffer_size in prop_oneof![Just(512usize), Just(4096), Just(65536)],
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(one_case(
            pattern(up_seed, up_len),
            pattern(down_seed, down_len),
            up_splits,
            down_splits,
            turns,
            buffer_size,
        ));
    }
}

#[tokio::test]
async fn sensor_reset_reaches_the_client_as_a_reset() {
    let (sensor, sensor_addr) = sensor_listener().await;
    let (queue, mut rx) = TapQueue::bounded(1024);
    let proxy = start_proxy(
        sensor_addr,
        TapSinks {
            observer: Some(queue),
            recorder: None,
        },
        |_| {},
    )
    .await;
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
    assert!(
        ends.contains(&(Direction::Request, CloseKind::Reset)),
        "{ends:?}"
    );
    assert_eq!(taps.last().map(|t| &t.event), Some(&TapEvent::Finished));
    assert_eq!(proxy.stop().await.resets, 1);
}

#[tokio::test]
async fn client_reset_reaches_the_sensor_as_a_reset() {
    let (sensor, sensor_addr) = sensor_listener().await;
    let (queue, mut rx) = TapQueue::bounded(1024);
    let proxy = start_proxy(
        sensor_addr,
        TapSinks {
            observer: Some(queue),
            recorder: None,
        },
        |_| {},
    )
    .await;
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
    let proxy = start_proxy(
        gone_addr,
        TapSinks {
            observer: Some(queue),
            recorder: None,
        },
        |_| {},
    )
    .await;
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
        TapEvent::ConnectFailed { error } => {
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
async fn taps_reconstruct_the_forwarded_bytes_over_many_connections() {
    let (sensor, sensor_addr) = sensor_listener().await;
    let (queue, mut rx) = TapQueue::bounded(1 << 16);
    let drops = queue.drops().clone();
    let proxy = start_proxy(
        sensor_addr,
        TapSinks {
            observer: Some(queue),
            recorder: None,
        },
        |c| c.buffer_size = 1024,
    )
    .await;
    // An echo sensor that answers with every byte reversed in order of
    // arrival chunk: the two directions differ, so a mix-up would show.
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = sensor.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 3000];
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        let _ = s.shutdown().await;
                        return;
                    }
                    let answer: Vec<u8> = buf[..n].iter().map(|b| b.wrapping_add(1)).collect();
                    if s.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut clients = Vec::new();
    for i in 0..8u64 {
        let addr = proxy.addr;
        clients.push(tokio::spawn(async move {
            let sent = pattern(i + 1, 50_000 + i as usize * 1000);
            let mut c = TcpStream::connect(addr).await.unwrap();
            let (mut r, mut w) = c.split();
            let (got, ()) = tokio::join!(read_to_end(&mut r), async {
                write_split(&mut w, &sent, &[777, 1, 5000]).await;
                w.shutdown().await.unwrap();
            });
            let expected: Vec<u8> = sent.iter().map(|b| b.wrapping_add(1)).collect();
            assert!(got == expected, "connection {i}: answer differs");
            (w_local(&c), sent, got)
        }));
    }
    let mut sent_by_port = std::collections::HashMap::new();
    for c in clients {
        let (local, sent, got) = timeout(PATIENCE, c).await.unwrap().unwrap();
        sent_by_port.insert(local, (sent, got));
    }
    let taps = collect_taps(&mut rx, 8).await;
    assert_eq!(drops.taps.load(Ordering::Relaxed), 0);
    let mut ids: Vec<u64> = taps.iter().map(|t| t.conn.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids,
        (1..=8).collect::<Vec<u64>>(),
        "connection ids count from 1"
    );
    for id in ids {
        let mine: Vec<Tap> = taps.iter().filter(|t| t.conn.id == id).cloned().collect();
        let (sent, got) = &sent_by_port[&mine[0].conn.client];
        assert_eq!(&reassemble(&mine, Direction::Request), sent);
        assert_eq!(&reassemble(&mine, Direction::Response), got);
        assert!(
            mine.windows(2).all(|w| w[0].at <= w[1].at),
            "timestamps go backwards"
        );
    }
    proxy.stop().await;
}

fn w_local(c: &TcpStream) -> SocketAddr {
    c.local_addr().unwrap()
}

#[tokio::test]
async fn a_stalled_observer_loses_taps_never_bytes() {
    let (sensor, sensor_addr) = sensor_listener().await;
    // Capacity 1 and never read: everything after the first tap is dropped.
    let (queue, _never_read) = TapQueue::bounded(1);
    let drops = queue.drops().clone();
    let proxy = start_proxy(
        sensor_addr,
        TapSinks {
            observer: Some(queue),
            recorder: None,
        },
        |_| {},
    )
    .await;
    let down = pattern(99, 2_000_000);
    let down_for_sensor = down.clone();
    let sensor_side = tokio::spawn(async move {
        let (mut s, _) = sensor.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        let (got, ()) = tokio::join!(read_to_end(&mut r), async {
            write_split(&mut w, &down_for_sensor, &[65536, 3, 100_000]).await;
            w.shutdown().await.unwrap();
        });
        got
    });
    let up = pattern(7, 2_000_000);
    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut r, mut w) = c.split();
    let (got, ()) = tokio::join!(read_to_end(&mut r), async {
        write_split(&mut w, &up, &[10_000, 1, 65536]).await;
        w.shutdown().await.unwrap();
    });
    assert!(got == down, "sensor->client bytes differ");
    assert!(
        timeout(PATIENCE, sensor_side).await.unwrap().unwrap() == up,
        "client->sensor bytes differ"
    );
    assert!(drops.taps.load(Ordering::Relaxed) > 10);
    assert!(drops.bytes.load(Ordering::Relaxed) > 3_000_000);
    assert_eq!(
        proxy
            .counters
            .bytes_client_to_sensor
            .load(Ordering::Relaxed),
        2_000_000
    );
    // Not stopped: its last taps wait (bounded) for an observer that never
    // reads, which this test does not need to sit through.
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
    let proxy = start_proxy(
        sensor_addr,
        TapSinks {
            observer: Some(queue),
            recorder: None,
        },
        |c| c.drain = Duration::from_millis(300),
    )
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

#[tokio::test]
async fn bytes_are_forwarded_as_they_come_not_held_for_a_full_buffer() {
    // A single byte must cross without waiting for more: ICAP heads are
    // small and latency matters.
    let (sensor, sensor_addr) = sensor_listener().await;
    let proxy = start_proxy(sensor_addr, TapSinks::default(), |_| {}).await;
    let sensor_side = tokio::spawn(async move {
        let (mut s, _) = sensor.accept().await.unwrap();
        let mut one = [0u8; 1];
        for _ in 0..50 {
            s.read_exact(&mut one).await.unwrap();
            s.write_all(&one).await.unwrap();
        }
    });
    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    let mut one = [0u8; 1];
    for i in 0..50u8 {
        c.write_all(&[i]).await.unwrap();
        timeout(Duration::from_secs(5), c.read_exact(&mut one))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(one[0], i);
    }
    timeout(PATIENCE, sensor_side).await.unwrap().unwrap();
    let _ = Bytes::new();
    drop(c);
    proxy.stop().await;
}
