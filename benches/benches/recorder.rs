//! Recorder throughput: forwarded bytes per second turned into a pcapng of
//! both legs (synthesized TCP/IP, 1460-byte segments, ACKs) and written to a
//! file in a temporary directory. The `_tmpfs` case writes to /dev/shm
//! instead, which leaves out the disk file system (block allocation, the
//! final fdatasync) and shows the recorder's own cost more clearly.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use icaptap::capture::{self, BodyCapture, RecordOptions};
use icaptap::tap::{ConnMeta, Direction, Tap, TapEvent};

const READ: usize = 64 * 1024;
const TOTAL: usize = 16 << 20;

fn taps() -> Vec<Tap> {
    let addr = |s: &str| -> SocketAddr { s.parse().unwrap() };
    let meta = Arc::new(ConnMeta {
        id: 1,
        client: addr("127.0.0.1:40000"),
        listen: addr("127.0.0.1:1344"),
        upstream_local: Some(addr("127.0.0.1:50000")),
        server: addr("127.0.0.2:1344"),
        opened: 1_700_000_000_000_000,
    });
    let chunk = Bytes::from(vec![b'x'; READ]);
    let mut taps = vec![Tap {
        conn: Arc::clone(&meta),
        at: meta.opened,
        frame: None,
        event: TapEvent::Open,
    }];
    for i in 0..TOTAL / READ {
        taps.push(Tap {
            conn: Arc::clone(&meta),
            at: meta.opened + i as u64,
            frame: None,
            event: TapEvent::Data {
                dir: Direction::Request,
                offset: (i * READ) as u64,
                bytes: chunk.clone(),
            },
        });
    }
    taps.push(Tap {
        conn: meta,
        at: 1_700_000_001_000_000,
        frame: None,
        event: TapEvent::Finished,
    });
    taps
}

fn run(opts: RecordOptions, taps: &[Tap]) {
    run_in(std::env::temp_dir().as_path(), opts, taps)
}

fn run_in(parent: &std::path::Path, opts: RecordOptions, taps: &[Tap]) {
    let dir = tempfile::tempdir_in(parent).unwrap();
    let (tx, rx) = icaptap::tap::TapQueue::bounded(1024);
    let handle = capture::spawn(
        dir.path(),
        opts,
        rx,
        capture::AnnotationReceiver::disconnected(),
        None,
    )
    .unwrap();
    for t in taps {
        assert!(tx.deliver_blocking(t.clone()));
    }
    drop(tx);
    let stats = handle.join();
    assert!(stats.bytes_written > 0);
}

fn recorder(c: &mut Criterion) {
    let taps = taps();
    let mut g = c.benchmark_group("recorder");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.sample_size(10);
    g.bench_function("both_legs_pcapng_full", |b| {
        b.iter(|| run(RecordOptions::default(), &taps))
    });
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        g.bench_function("both_legs_pcapng_full_tmpfs", |b| {
            b.iter(|| run_in(shm, RecordOptions::default(), &taps))
        });
    }
    g.bench_function("sensor_leg_pcapng_full", |b| {
        b.iter(|| {
            run(
                RecordOptions {
                    legs: capture::LegChoice::Sensor,
                    ..RecordOptions::default()
                },
                &taps,
            )
        })
    });
    g.bench_function("both_legs_pcap_classic", |b| {
        b.iter(|| {
            run(
                RecordOptions {
                    format: capture::PcapFormat::Pcap,
                    ..RecordOptions::default()
                },
                &taps,
            )
        })
    });
    g.bench_function("both_legs_body_none", |b| {
        b.iter(|| {
            run(
                RecordOptions {
                    body: BodyCapture::None,
                    ..RecordOptions::default()
                },
                &taps,
            )
        })
    });
    g.finish();
}

criterion_group!(benches, recorder);
criterion_main!(benches);
