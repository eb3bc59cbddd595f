//! Measurements of the forwarding path, not tests: run by hand with
//! `cargo test --release -p icaptap-tests --test forward_throughput -- --ignored --nocapture`.
//! They print bulk throughput and small-message round-trip latency, direct
//! and through icaptap (with an observer queue that is drained, as in
//! production), and the resident memory growth of a bulk transfer. Nothing
//! here asserts a timing; the only assertions are byte counts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use icaptap::forward::{self, CancellationToken, ForwardConfig};
use icaptap::tap::{TapEvent, TapQueue, TapSinks};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BULK: u64 = 1 << 30;

/// A sensor that discards what it reads and answers each byte with one
/// byte (for round trips) or, for bulk, just counts.
async fn sink_sensor() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut first = [0u8; 1];
                if s.read_exact(&mut first).await.is_err() {
                    return;
                }
                if first[0] == b'B' {
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                    let _ = s.write_all(b"done").await;
                } else {
                    let _ = s.write_all(&first).await;
                    while let Ok(n) = s.read(&mut buf[..1]).await {
                        if n == 0 || s.write_all(&buf[..1]).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn bulk(to: SocketAddr) -> Duration {
    let mut c = TcpStream::connect(to).await.unwrap();
    c.set_nodelay(true).unwrap();
    let chunk = vec![b'B'; 256 * 1024];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < BULK {
        c.write_all(&chunk).await.unwrap();
        sent += chunk.len() as u64;
    }
    c.shutdown().await.unwrap();
    let mut done = Vec::new();
    c.read_to_end(&mut done).await.unwrap();
    assert_eq!(done, b"done");
    start.elapsed()
}

async fn round_trips(to: SocketAddr, n: usize) -> Vec<Duration> {
    let mut c = TcpStream::connect(to).await.unwrap();
    c.set_nodelay(true).unwrap();
    let mut one = [0u8; 1];
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        c.write_all(b"r").await.unwrap();
        c.read_exact(&mut one).await.unwrap();
        times.push(start.elapsed());
    }
    times.sort_unstable();
    times
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn pct(times: &[Duration], p: f64) -> Duration {
    times[((times.len() as f64 - 1.0) * p) as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand with --release --ignored --nocapture"]
async fn measure_forwarding() {
    let sensor = sink_sensor().await;
    let (queue, mut rx) = TapQueue::bounded(4096);
    let drops = queue.drops().clone();
    // A consumer that keeps up, as the observer should: it only counts.
    let observer = tokio::spawn(async move {
        let (mut bytes, mut chunks, mut pending) = (0u64, 0u64, 0u64);
        while let Some(tap) = rx.recv().await {
            match tap.event {
                TapEvent::Data { bytes: b, .. } => {
                    bytes += b.len() as u64;
                    chunks += 1;
                }
                // A write that could not finish at once.
                TapEvent::Pending { .. } => pending += 1,
                _ => {}
            }
        }
        println!("{chunks} chunks forwarded, {pending} of their writes blocked (Pending taps)");
        bytes
    });
    let cfg = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), sensor);
    let listener = forward::bind(&cfg).await.unwrap();
    let proxy = listener.local_addr();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let sinks = TapSinks {
        observer: Some(queue),
        recorder: None,
    };
    let served = tokio::spawn(async move { forward::serve(listener, &cfg, sinks, token).await });

    let direct = bulk(sensor).await;
    let rss_before = rss_kib();
    let via = bulk(proxy).await;
    let rss_after = rss_kib();
    let gib = BULK as f64 / (1u64 << 30) as f64;
    println!(
        "bulk 1 GiB: direct {:.2} GiB/s, through icaptap {:.2} GiB/s; RSS {} -> {} KiB (+{} KiB)",
        gib / direct.as_secs_f64(),
        gib / via.as_secs_f64(),
        rss_before,
        rss_after,
        rss_after.saturating_sub(rss_before)
    );

    let n = 20_000;
    let d = round_trips(sensor, n).await;
    let p = round_trips(proxy, n).await;
    println!(
        "1-byte round trips ({n}): direct p50 {:?} p99 {:?}; through icaptap p50 {:?} p99 {:?}",
        pct(&d, 0.5),
        pct(&d, 0.99),
        pct(&p, 0.5),
        pct(&p, 0.99)
    );
    shutdown.cancel();
    let stats = served.await.unwrap();
    let observed = observer.await.unwrap();
    println!(
        "forwarded {} bytes up, {} down; observer got {} payload bytes, queue dropped {} taps ({} bytes)",
        stats.bytes_client_to_sensor,
        stats.bytes_sensor_to_client,
        observed,
        drops.taps.load(std::sync::atomic::Ordering::Relaxed),
        drops.bytes.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(stats.bytes_client_to_sensor, BULK + n as u64);
}
