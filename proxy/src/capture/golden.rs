//! Byte-for-byte checks of what the recorder writes: fixed taps (fixed
//! times, addresses and bytes) go through the recorder and the files must
//! equal the committed captures in `testdata/`, which were written by the
//! recorder before it built packets by hand. Any change a user could see in
//! a capture (a packet, a sequence number, a checksum, a comment, where a
//! file rotates) fails here.
//!
//! The section header block names the icaptap version, so it is left out of
//! the comparison. To rewrite the fixtures after a deliberate change of the
//! output, run the tests with `ICAPTAP_BLESS_CAPTURES=1`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::annotate::Annotation;
use super::body::BodyCapture;
use super::recorder::Recorder;
use super::writer::{CaptureWriter, Rotation};
use super::{LegChoice, PcapFormat, RecordCounters, RecordOptions};
use crate::tap::{CloseKind, ConnMeta, ConnectFailure, Direction, Tap, TapEvent};

const T0: u64 = 1_700_000_000_123_456;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn meta(id: u64, client: &str, upstream: Option<&str>, server: &str) -> Arc<ConnMeta> {
    Arc::new(ConnMeta {
        id,
        client: addr(client),
        listen: addr("127.0.0.1:1344"),
        upstream_local: upstream.map(addr),
        server: addr(server),
        opened: T0,
    })
}

/// Deterministic bytes that are not all alike (so checksums mean something).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn reqmod(body_len: usize, seed: u64) -> Vec<u8> {
    let http = b"GET http://example.test/x HTTP/1.1\r\nHost: example.test\r\n\r\n";
    let mut m = format!(
        "REQMOD icap://sensor/req ICAP/1.0\r\nHost: sensor\r\nEncapsulated: req-hdr=0, req-body={}\r\n\r\n",
        http.len()
    )
    .into_bytes();
    m.extend_from_slice(http);
    m.extend_from_slice(format!("{body_len:x}\r\n").as_bytes());
    m.extend(noise(seed, body_len));
    m.extend_from_slice(b"\r\n0\r\n\r\n");
    m
}

fn respmod_reply(body_len: usize, seed: u64) -> Vec<u8> {
    let http = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n";
    let mut m = format!(
        "ICAP/1.0 200 OK\r\nISTag: \"golden\"\r\nEncapsulated: res-hdr=0, res-body={}\r\n\r\n",
        http.len()
    )
    .into_bytes();
    m.extend_from_slice(http);
    m.extend_from_slice(format!("{body_len:x}\r\n").as_bytes());
    m.extend(noise(seed, body_len));
    m.extend_from_slice(b"\r\n0\r\n\r\n");
    m
}

enum Step {
    Tap(Tap),
    Annotate(Annotation),
}

fn tap(conn: &Arc<ConnMeta>, at: u64, event: TapEvent) -> Step {
    Step::Tap(Tap {
        conn: Arc::clone(conn),
        at,
        frame: None,
        event,
    })
}

fn data(conn: &Arc<ConnMeta>, at: u64, dir: Direction, offset: u64, bytes: &[u8]) -> Step {
    tap(
        conn,
        at,
        TapEvent::Data {
            dir,
            offset,
            bytes: Bytes::copy_from_slice(bytes),
        },
    )
}

fn note(conn: u64, dir: Direction, offset: u64, comment: &str) -> Step {
    Step::Annotate(Annotation {
        conn,
        dir,
        offset,
        comment: comment.to_owned(),
    })
}

/// A session of several connections that exercises every path of the
/// recorder: handshakes, MSS-sized and odd segments, a gap, a
/// repeated tap, notes ahead of, on and behind their bytes, FIN, RST, a
/// failed connect, IPv6 and mixed families.
fn script() -> Vec<Step> {
    use Direction::{Request as Req, Response as Resp};
    let c1 = meta(
        1,
        "127.0.0.1:40000",
        Some("127.0.0.1:50000"),
        "127.0.0.2:1344",
    );
    let c2 = meta(2, "[::1]:40001", Some("[::1]:50001"), "[::1]:1344");
    let c3 = meta(3, "127.0.0.1:40002", None, "127.0.0.2:1344");
    let c4 = meta(4, "[::1]:40003", Some("127.0.0.1:50003"), "127.0.0.2:1344");
    let c5 = meta(
        5,
        "[::ffff:127.0.0.9]:40004",
        Some("127.0.0.1:50004"),
        "127.0.0.2:1344",
    );
    let r1 = reqmod(9_001, 1);
    let a1 = respmod_reply(3_333, 2);
    let r2 = reqmod(5_000, 3);
    let mut s = vec![
        note(1, Req, 10, "icaptap: early note on the first request byte"),
        tap(&c1, T0, TapEvent::Open),
        data(&c1, T0 + 10, Req, 0, &r1[..4_096]),
        note(1, Req, 3_000, "icaptap: a note on a held packet"),
        note(1, Req, 6_000, "icaptap: a note ahead of its byte"),
        data(&c1, T0 + 20, Req, 4_096, &r1[4_096..]),
        data(&c1, T0 + 25, Req, 4_000, &r1[4_000..4_600]),
        data(&c1, T0 + 30, Resp, 0, &a1[..1_000]),
        // A gap: bytes 1000..1500 never reached the recorder.
        data(&c1, T0 + 31, Resp, 1_500, &a1[1_500..]),
        note(1, Resp, 1_200, "icaptap: a note for a byte in the gap"),
        note(1, Resp, 2_000, &"long comment ".repeat(40)),
        tap(
            &c1,
            T0 + 40,
            TapEvent::Closed {
                dir: Req,
                how: CloseKind::Fin,
            },
        ),
        tap(&c2, T0 + 50, TapEvent::Open),
        data(&c2, T0 + 51, Req, 0, &r2),
        tap(
            &c3,
            T0 + 60,
            TapEvent::ConnectFailed {
                error: "refused".into(),
                cause: ConnectFailure::Sensor,
            },
        ),
        tap(&c3, T0 + 61, TapEvent::Finished),
        data(
            &c2,
            T0 + 70,
            Resp,
            0,
            b"ICAP/1.0 204 No Content\r\nISTag: \"g\"\r\nEncapsulated: null-body=0\r\n\r\n",
        ),
        tap(
            &c2,
            T0 + 71,
            TapEvent::Closed {
                dir: Resp,
                how: CloseKind::Reset,
            },
        ),
        tap(&c2, T0 + 72, TapEvent::Finished),
        tap(&c4, T0 + 80, TapEvent::Open),
        data(&c4, T0 + 81, Req, 0, &noise(4, 1)),
        data(&c4, T0 + 82, Req, 1, &noise(5, 2_921)),
        note(4, Resp, 5, "icaptap: a note for bytes that never come"),
        tap(&c4, T0 + 90, TapEvent::Finished),
        // No Open: recorded from the middle, like a late tcpdump.
        data(&c5, T0 + 100, Req, 0, &noise(6, 1_461)),
        data(&c5, T0 + 101, Resp, 0, &noise(7, 3)),
        tap(
            &c5,
            T0 + 102,
            TapEvent::Closed {
                dir: Resp,
                how: CloseKind::Timeout,
            },
        ),
    ];
    // The rest of conn 1 after a later connection appeared.
    s.push(tap(&c1, T0 + 200, TapEvent::Finished));
    s.push(note(
        9,
        Req,
        0,
        "icaptap: a note for a connection not seen yet",
    ));
    s
}

fn run(dir: &Path, opts: RecordOptions) {
    let counters = Arc::new(RecordCounters::default());
    let writer = CaptureWriter::new(
        dir,
        opts.format,
        opts.legs.legs(),
        opts.rotation,
        Arc::clone(&counters),
    );
    let mut rec = Recorder::new(opts, writer, counters);
    for step in script() {
        match step {
            Step::Tap(t) => rec.on_tap(t),
            Step::Annotate(n) => rec.annotate(n),
        }
    }
    rec.finish();
}

/// Skips the section header block (it names the version) of a pcapng file.
fn without_version(name: &str, bytes: &[u8]) -> Vec<u8> {
    if !name.ends_with(".pcapng") || bytes.len() < 12 {
        return bytes.to_vec();
    }
    let len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    bytes[len.min(bytes.len())..].to_vec()
}

fn check(case: &str, opts: RecordOptions) {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), opts);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(!names.is_empty(), "{case}: no capture written");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/capture/testdata")
        .join(case);
    let bless = std::env::var_os("ICAPTAP_BLESS_CAPTURES").is_some();
    if bless {
        let _ = std::fs::remove_dir_all(&fixtures);
        std::fs::create_dir_all(&fixtures).unwrap();
    }
    let mut expected_names: Vec<String> = std::fs::read_dir(&fixtures)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    expected_names.sort();
    if !bless {
        assert_eq!(names, expected_names, "{case}: other files than expected");
    }
    for name in names {
        let got = without_version(&name, &std::fs::read(dir.path().join(&name)).unwrap());
        if bless {
            std::fs::write(fixtures.join(&name), &got).unwrap();
            continue;
        }
        let want = std::fs::read(fixtures.join(&name)).unwrap();
        if got != want {
            let at = got
                .iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(want.len()));
            panic!(
                "{case}/{name}: differs from the fixture at byte {at} (lengths {} and {})",
                got.len(),
                want.len()
            );
        }
    }
}

fn held() -> RecordOptions {
    RecordOptions {
        hold: Duration::from_secs(3600),
        hold_bytes: 64 << 20,
        ..RecordOptions::default()
    }
}

#[test]
fn pcapng_both_legs_with_notes() {
    check("pcapng-both", held());
}

#[test]
fn pcapng_without_hold_back_and_small_mtu() {
    check(
        "pcapng-nohold-mtu300",
        RecordOptions {
            hold: Duration::ZERO,
            mtu: 300,
            ..RecordOptions::default()
        },
    );
}

#[test]
fn pcapng_hold_back_overflowing_its_bytes() {
    check(
        "pcapng-holdbytes",
        RecordOptions {
            hold_bytes: 6_000,
            legs: LegChoice::Client,
            ..held()
        },
    );
}

#[test]
fn pcapng_body_preview_and_none() {
    check(
        "pcapng-preview",
        RecordOptions {
            body: BodyCapture::Preview,
            body_preview_bytes: 100,
            ..held()
        },
    );
    check(
        "pcapng-bodynone-sensor",
        RecordOptions {
            body: BodyCapture::None,
            legs: LegChoice::Sensor,
            ..held()
        },
    );
}

#[test]
fn classic_pcap() {
    check(
        "pcap-both",
        RecordOptions {
            format: PcapFormat::Pcap,
            ..held()
        },
    );
}

#[test]
fn rotated_by_size() {
    check(
        "pcapng-rotate",
        RecordOptions {
            rotation: Rotation {
                size: Some(12_000),
                seconds: None,
                keep: Some(3),
            },
            ..held()
        },
    );
    check(
        "pcap-rotate",
        RecordOptions {
            format: PcapFormat::Pcap,
            rotation: Rotation {
                size: Some(10_000),
                seconds: None,
                keep: None,
            },
            ..held()
        },
    );
}

/// The benchmark's traffic (64 KiB reads, so a receiver ACK every 32
/// full segments) through the recorder's thread, checked by digest.
fn long_run(opts: RecordOptions) -> String {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = crate::tap::TapQueue::bounded(1024);
    let handle = super::spawn(
        dir.path(),
        opts,
        rx,
        super::AnnotationReceiver::disconnected(),
        None,
    )
    .unwrap();
    let c = meta(
        1,
        "127.0.0.1:40000",
        Some("127.0.0.1:50000"),
        "127.0.0.2:1344",
    );
    let send = |step: Step| {
        if let Step::Tap(t) = step {
            assert!(tx.deliver_blocking(t));
        }
    };
    send(tap(&c, T0, TapEvent::Open));
    let read = 64 * 1024;
    for i in 0..24u64 {
        let bytes = noise(100 + i, read - (i as usize % 3));
        let offset = i * read as u64 - (0..i).map(|k| k % 3).sum::<u64>();
        send(data(&c, T0 + i, Direction::Request, offset, &bytes));
        send(data(&c, T0 + i, Direction::Response, i * 7, &noise(i, 7)));
    }
    send(tap(&c, T0 + 999, TapEvent::Finished));
    drop(tx);
    let stats = handle.join();
    assert_eq!(stats.dropped_bytes, 0);
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let mut h = sha2::Sha256::new();
    for p in names {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        h.update(without_version(&name, &std::fs::read(&p).unwrap()));
    }
    crate::output::hex(&h.finalize())
}

#[test]
fn digest_of_a_long_run() {
    let cases = [
        (
            "pcapng",
            RecordOptions::default(),
            "d73a86f0ec2f57ebffc14d4c4af3cddec05bd886e45e469933dd208f38f57fe7",
        ),
        (
            "pcap",
            RecordOptions {
                format: PcapFormat::Pcap,
                ..RecordOptions::default()
            },
            "dd77b1cb781a2451ef23bb231ff3d89a9c4641ec1251227d946ef5f5582ae6ff",
        ),
    ];
    for (name, opts, want) in cases {
        let got = long_run(opts);
        assert_eq!(got, want, "{name}: the capture changed");
    }
}
