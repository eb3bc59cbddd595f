//! Byte-exactness of the forwarding path on 127.0.0.1 with in-test peers:
//! random streams (sizes, write splits, half-closes in either order) arrive
//! identical in both directions; the taps reconstruct the forwarded
//! streams with contiguous offsets; a stalled observer loses taps, never
//! bytes; single bytes cross without waiting for more; bytes read but never
//! delivered to a client that hung up are told as such.

mod forward_support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use forward_support::*;
use icaptap::tap::{CloseKind, Direction, Tap, TapEvent, TapQueue, TapSinks};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

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
    let sinks = observer_only(queue);
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
async fn taps_reconstruct_the_forwarded_bytes_over_many_connections() {
    let (sensor, sensor_addr) = sensor_listener().await;
    let (queue, mut rx) = TapQueue::bounded(1 << 16);
    let drops = queue.drops().clone();
    let proxy = start_proxy(sensor_addr, observer_only(queue), |c| c.buffer_size = 1024).await;
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
    let proxy = start_proxy(sensor_addr, observer_only(queue), |_| {}).await;
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
    drop(c);
    proxy.stop().await;
}

/// A client that stops reading and hangs up while the sensor's answer is
/// still on its way: the data taps carry all icaptap read from the sensor,
/// one `Undelivered` tap says how much of it never reached the client (the
/// end of it), the forwarding counter agrees, and every `Pending` (a write
/// that could not finish at once) is ended by a `Sent` or that
/// `Undelivered`.
#[tokio::test]
async fn a_client_hanging_up_mid_answer_is_told_in_an_undelivered_tap() {
    const ANSWER: usize = 32 << 20;
    let (l, sensor) = sensor_listener().await;
    let answer = pattern(7, ANSWER);
    let expected = answer.clone();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut ping = [0u8; 4];
        s.read_exact(&mut ping).await.unwrap();
        // Until icaptap resets the sensor leg.
        for chunk in answer.chunks(64 * 1024) {
            if s.write_all(chunk).await.is_err() {
                break;
            }
        }
    });
    let (queue, mut rx) = TapQueue::with_budget(1 << 20, 1 << 30);
    let proxy = start_proxy(sensor, observer_only(queue), |_| {}).await;
    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    c.write_all(b"ping").await.unwrap();
    let mut head = [0u8; 100];
    c.read_exact(&mut head).await.unwrap();
    assert_eq!(head[..], expected[..100]);
    // The answer fills both sides' socket buffers: icaptap is in the middle
    // of a write when the client goes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(c);
    let taps = collect_taps(&mut rx, 1).await;
    let stats = proxy.stop().await;

    let read = reassemble(&taps, Direction::Response);
    assert_eq!(read[..], expected[..read.len()]);
    assert!(
        read.len() < ANSWER,
        "the sensor was cut off: {}",
        read.len()
    );
    let undelivered: Vec<(u64, u64)> = taps
        .iter()
        .filter_map(|t| match t.event {
            TapEvent::Undelivered { dir, offset, len } => {
                assert_eq!(dir, Direction::Response);
                Some((offset, len))
            }
            _ => None,
        })
        .collect();
    assert_eq!(undelivered.len(), 1, "{undelivered:?}");
    let (offset, len) = undelivered[0];
    assert!(len > 0);
    assert!(offset >= 100, "the client read 100 bytes: {offset}");
    assert_eq!(offset + len, read.len() as u64, "the end of what was read");
    assert_eq!(stats.undelivered_bytes, len);
    assert_eq!(stats.bytes_sensor_to_client, read.len() as u64);

    let mut open: Option<u64> = None;
    let mut blocked = 0;
    for t in &taps {
        match t.event {
            TapEvent::Pending { dir, sent } => {
                assert_eq!(dir, Direction::Response);
                assert!(open.is_none(), "one write at a time");
                open = Some(sent);
                blocked += 1;
            }
            TapEvent::Sent { upto: end, .. } | TapEvent::Undelivered { offset: end, .. } => {
                let sent = open.take().expect("a Pending before");
                assert!(sent <= end, "{sent} > {end}");
            }
            _ => {}
        }
    }
    assert!(open.is_none());
    assert!(blocked >= 1);
    let closes = closes(&taps);
    assert!(
        closes.contains(&(Direction::Response, CloseKind::IcaptapReset)),
        "{closes:?}"
    );
}
