//! The open-file limit: when accepting or connecting fails with EMFILE,
//! icaptap counts it, backs off instead of spinning, closes only what it
//! must, and recovers by itself once descriptors are free again.
//!
//! This test exhausts the descriptors of its own process, so it is alone
//! in its test binary: no other test may run beside it.

use std::fs::File;
use std::sync::atomic::Ordering;
use std::time::Duration;

use icaptap::forward::{self, CancellationToken, ForwardConfig, FD_LIMIT_BACKOFF};
use icaptap::tap::{TapEvent, TapQueue, TapSinks};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const PATIENCE: Duration = Duration::from_secs(20);

/// Opens /dev/null until the process has no descriptor left.
fn exhaust_descriptors() -> Vec<File> {
    let mut held = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(24), "expected EMFILE, got {e}");
                return held;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_file_limit_is_counted_backed_off_and_recovered_from() {
    // Keep the exhaustion small and quick; the hard limit stays as it is.
    let _ = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg("--nofile=512:")
        .status();

    let sensor = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sensor_addr = sensor.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = sensor.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let (queue, mut rx) = TapQueue::bounded(1024);
    let cfg = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), sensor_addr);
    let listener = forward::bind(&cfg).await.unwrap();
    let proxy_addr = listener.local_addr();
    let counters = listener.counters();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let sinks = TapSinks {
        observer: Some(queue),
        recorder: None,
    };
    let served = tokio::spawn(async move { forward::serve(listener, &cfg, sinks, token).await });

    // Case 1: one descriptor left. The test's own socket takes it, so
    // icaptap's accept hits the limit: counted, retried at a slow pace.
    let mut held = exhaust_descriptors();
    held.pop();
    let mut waiting = TcpStream::connect(proxy_addr).await.unwrap();
    waiting.write_all(b"ping").await.unwrap();
    tokio::time::sleep(FD_LIMIT_BACKOFF * 5).await;
    let hits = counters.fd_limit_hits.load(Ordering::Relaxed);
    assert!(hits >= 1, "the accept failure on EMFILE was not counted");
    // A spinning accept loop would have failed thousands of times.
    assert!(
        hits <= 20,
        "accept retried {hits} times in {:?}: not backing off",
        FD_LIMIT_BACKOFF * 5
    );
    assert_eq!(counters.connections_total.load(Ordering::Relaxed), 0);

    // Descriptors come back: the queued client is served without help.
    held.truncate(held.len().saturating_sub(8));
    let mut back = [0u8; 4];
    timeout(PATIENCE, waiting.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"ping");
    assert_eq!(counters.connections_total.load(Ordering::Relaxed), 1);
    drop(waiting);

    // Case 2: two descriptors left: the test's socket and icaptap's accept
    // take them, and the sensor leg cannot be opened. The client is closed
    // and the attempt reported, naming the limit.
    let _ = timeout(PATIENCE, async {
        while counters.connections_open.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    drop(held);
    let mut held = exhaust_descriptors();
    held.pop();
    held.pop();
    let hits_before = counters.fd_limit_hits.load(Ordering::Relaxed);
    let mut refused = TcpStream::connect(proxy_addr).await.unwrap();
    let mut got = Vec::new();
    let _ = timeout(PATIENCE, refused.read_to_end(&mut got))
        .await
        .unwrap();
    assert!(got.is_empty());
    drop(refused);
    drop(held);
    assert!(counters.fd_limit_hits.load(Ordering::Relaxed) > hits_before);
    assert!(counters.connect_failures.load(Ordering::Relaxed) >= 1);
    let mut failure = None;
    while failure.is_none() {
        let tap = timeout(PATIENCE, rx.recv()).await.unwrap().unwrap();
        if let TapEvent::ConnectFailed { error, .. } = tap.event {
            failure = Some(error);
        }
    }
    let error = failure.unwrap_or_default();
    assert!(
        error.to_lowercase().contains("too many open files"),
        "{error}"
    );

    // And all is well again afterwards.
    let mut fine = TcpStream::connect(proxy_addr).await.unwrap();
    fine.write_all(b"pong").await.unwrap();
    timeout(PATIENCE, fine.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"pong");
    drop(fine);
    shutdown.cancel();
    let stats = timeout(PATIENCE, served).await.unwrap().unwrap();
    assert_eq!(stats.connections_open, 0);
}
