//! Helpers shared by the forwarding tests: an icaptap forwarder on
//! 127.0.0.1 with in-test peers, cheap pseudo-random streams, split writes,
//! and reading back what the taps say was forwarded.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use icaptap::forward::{self, CancellationToken, ForwardConfig, ForwardCounters, ForwardStats};
use icaptap::tap::{CloseKind, Direction, Tap, TapEvent, TapQueue, TapReceiver, TapSinks};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::timeout;

pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Proxy {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub counters: Arc<ForwardCounters>,
    pub served: JoinHandle<ForwardStats>,
}

/// Side paths of a test proxy: only an observer queue, whose taps the test
/// reads back.
pub fn observer_only(queue: TapQueue) -> TapSinks {
    TapSinks {
        observer: Some(queue),
        recorder: None,
    }
}

pub async fn start_proxy(
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
    pub async fn stop(self) -> ForwardStats {
        self.shutdown.cancel();
        timeout(PATIENCE, self.served).await.unwrap().unwrap()
    }
}

pub async fn sensor_listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// Deterministic pseudo-random bytes: cheap to make in bulk, unlike a
/// proptest vector of a million `u8`s.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
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
pub async fn write_split(stream: &mut (impl AsyncWriteExt + Unpin), data: &[u8], splits: &[usize]) {
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

pub async fn read_to_end(stream: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    timeout(PATIENCE, stream.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    got
}

/// Collects taps until `Finished` for `count` connections.
pub async fn collect_taps(rx: &mut TapReceiver, count: usize) -> Vec<Tap> {
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
pub fn reassemble(taps: &[Tap], dir: Direction) -> Vec<u8> {
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

pub fn closes(taps: &[Tap]) -> Vec<(Direction, CloseKind)> {
    taps.iter()
        .filter_map(|t| match t.event {
            TapEvent::Closed { dir, how } => Some((dir, how)),
            _ => None,
        })
        .collect()
}
