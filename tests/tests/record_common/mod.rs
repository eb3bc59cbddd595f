//! Helpers for the recorder tests: hand-built taps carrying real ICAP bytes,
//! a run of the recorder over them, and tshark read-backs of the capture.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use icaptap::capture::{self, Annotation, RecordOptions, RecordStats};
use icaptap::tap::{CloseKind, ConnMeta, Direction, Tap, TapEvent};

pub const OPTIONS_REQ: &[u8] =
    b"OPTIONS icap://127.0.0.4:1344/respmod ICAP/1.0\r\nHost: 127.0.0.4:1344\r\nEncapsulated: null-body=0\r\n\r\n";
pub const OPTIONS_RESP: &[u8] = b"ICAP/1.0 200 OK\r\nMethods: RESPMOD\r\nService: test\r\nISTag: \"t1\"\r\nAllow: 204\r\nPreview: 1024\r\nTransfer-Preview: *\r\nEncapsulated: null-body=0\r\n\r\n";

/// A RESPMOD request carrying a chunked body of `body_len` bytes (in 8 KiB chunks).
pub fn respmod_request(body_len: usize) -> Vec<u8> {
    let req_hdr = b"GET http://example.test/file.bin HTTP/1.1\r\nHost: example.test\r\n\r\n";
    let res_hdr = format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {body_len}\r\n\r\n");
    let mut m = format!(
        "RESPMOD icap://127.0.0.4:1344/respmod ICAP/1.0\r\nHost: 127.0.0.4:1344\r\nAllow: 204\r\nEncapsulated: req-hdr=0, res-hdr={}, res-body={}\r\n\r\n",
        req_hdr.len(),
        req_hdr.len() + res_hdr.len()
    )
    .into_bytes();
    m.extend_from_slice(req_hdr);
    m.extend_from_slice(res_hdr.as_bytes());
    let body: Vec<u8> = (0..body_len)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz"[i % 26])
        .collect();
    for chunk in body.chunks(8192) {
        m.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        m.extend_from_slice(chunk);
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b"0\r\n\r\n");
    m
}

pub const RESPMOD_204: &[u8] =
    b"ICAP/1.0 204 No Content\r\nISTag: \"t1\"\r\nEncapsulated: null-body=0\r\n\r\n";

pub fn meta(id: u64, v6: bool) -> Arc<ConnMeta> {
    let a = |v4: &str, port: u16| -> SocketAddr {
        if v6 {
            format!("[::1]:{port}").parse().unwrap()
        } else {
            format!("{v4}:{port}").parse().unwrap()
        }
    };
    Arc::new(ConnMeta {
        id,
        client: a("127.0.0.1", 40000 + id as u16),
        listen: a("127.0.0.2", 1344),
        upstream_local: Some(a("127.0.0.3", 50000 + id as u16)),
        server: a("127.0.0.4", 1344),
        opened: 1_700_000_000_000_000,
    })
}

/// Builds the taps of one connection, step by step.
pub struct Conn {
    pub meta: Arc<ConnMeta>,
    pub at: u64,
    pub next: [u64; 2],
    pub sent: [Vec<u8>; 2],
    pub taps: Vec<Tap>,
}

impl Conn {
    pub fn new(id: u64, v6: bool) -> Conn {
        let meta = meta(id, v6);
        let at = meta.opened;
        let mut c = Conn {
            meta,
            at,
            next: [0, 0],
            sent: [Vec::new(), Vec::new()],
            taps: Vec::new(),
        };
        c.push(TapEvent::Open);
        c
    }

    pub fn push(&mut self, event: TapEvent) {
        self.at += 137;
        self.taps.push(Tap {
            conn: Arc::clone(&self.meta),
            at: self.at,
            frame: None,
            event,
        });
    }

    /// Sends `bytes` in `dir` as reads of at most `read` bytes.
    pub fn send(&mut self, dir: Direction, bytes: &[u8], read: usize) {
        let i = if dir == Direction::Request { 0 } else { 1 };
        for part in bytes.chunks(read) {
            let offset = self.next[i];
            self.next[i] += part.len() as u64;
            self.sent[i].extend_from_slice(part);
            self.push(TapEvent::Data {
                dir,
                offset,
                bytes: Bytes::copy_from_slice(part),
            });
        }
    }

    /// Skips `n` bytes of `dir` as if the queue had dropped their taps.
    pub fn drop_bytes(&mut self, dir: Direction, n: u64) {
        let i = if dir == Direction::Request { 0 } else { 1 };
        self.next[i] += n;
    }

    pub fn close(mut self, how: CloseKind) -> Conn {
        self.push(TapEvent::Closed {
            dir: Direction::Request,
            how,
        });
        self.push(TapEvent::Closed {
            dir: Direction::Response,
            how: CloseKind::Fin,
        });
        self.push(TapEvent::Finished);
        self
    }
}

/// An OPTIONS exchange and a RESPMOD with a `body_len` body, then a clean close.
pub fn two_exchanges(id: u64, v6: bool, body_len: usize) -> Conn {
    let mut c = Conn::new(id, v6);
    c.send(Direction::Request, OPTIONS_REQ, 65536);
    c.send(Direction::Response, OPTIONS_RESP, 65536);
    c.send(Direction::Request, &respmod_request(body_len), 65536);
    c.send(Direction::Response, RESPMOD_204, 65536);
    c.close(CloseKind::Fin)
}

/// Runs a recorder over `taps` (annotations sent first) into a new directory.
pub fn record(
    opts: RecordOptions,
    taps: Vec<Tap>,
    notes: Vec<Annotation>,
) -> (tempfile::TempDir, RecordStats) {
    let dir = tempfile::tempdir().unwrap();
    let stats = record_into(dir.path(), opts, taps, notes);
    (dir, stats)
}

pub fn record_into(
    dir: &Path,
    opts: RecordOptions,
    taps: Vec<Tap>,
    notes: Vec<Annotation>,
) -> RecordStats {
    // A small queue: the sender only gets through if the recorder drains it.
    let (tx, rx) = icaptap::tap::TapQueue::bounded(8);
    let (ntx, nrx) = capture::annotation_channel(notes.len() + 1);
    for n in notes {
        assert!(ntx.try_send(n));
    }
    let handle = capture::spawn(dir, opts, rx, nrx, None).unwrap();
    for t in taps {
        assert!(tx.deliver_blocking(t));
    }
    drop(tx);
    drop(ntx);
    handle.join()
}

pub fn capture_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("capture")
        })
        .collect();
    v.sort();
    v
}

pub fn tshark(args: &[&str]) -> String {
    let out = Command::new("tshark")
        .args(args)
        .output()
        .expect("tshark is installed");
    assert!(
        out.status.success(),
        "tshark {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Lines of `tshark -r FILE -Y FILTER -T fields -e FIELD...`.
pub fn fields(file: &Path, filter: &str, fields: &[&str]) -> Vec<String> {
    let mut args = vec!["-r", file.to_str().unwrap(), "-Y", filter, "-T", "fields"];
    for f in fields {
        args.push("-e");
        args.push(f);
    }
    tshark(&args).lines().map(str::to_owned).collect()
}

/// ICAP message starts tshark found (requests and responses).
pub fn icap_messages(file: &Path) -> usize {
    fields(
        file,
        "icap.options || icap.reqmod || icap.respmod || icap.response",
        &["frame.number"],
    )
    .len()
}

/// tshark's expert summary with checksum validation on.
pub fn expert(file: &Path) -> String {
    tshark(&[
        "-r",
        file.to_str().unwrap(),
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "ip.check_checksum:TRUE",
        "-q",
        "-z",
        "expert",
    ])
}

/// Panics when the expert info shows anything a user would take for a broken capture.
pub fn assert_healthy(file: &Path) {
    let e = expert(file);
    let lower = e.to_lowercase();
    for bad in [
        "malformed",
        "previous segment",
        "unseen segment",
        "checksum",
        "retransmission",
        "out-of-order",
        "window full",
        "bad",
        "short",
    ] {
        assert!(
            !lower.contains(bad),
            "expert info of {} mentions {bad:?}:\n{e}",
            file.display()
        );
    }
}

/// The two directions of TCP stream `n` as tshark reassembles them:
/// (bytes from the side that opened it, bytes from the other side).
pub fn follow(file: &Path, n: usize) -> (Vec<u8>, Vec<u8>) {
    let out = tshark(&[
        "-r",
        file.to_str().unwrap(),
        "-q",
        "-z",
        &format!("follow,tcp,raw,{n}"),
    ]);
    let mut a = Vec::new();
    let mut b = Vec::new();
    let mut in_data = false;
    for line in out.lines() {
        if line.starts_with("Node 1:") {
            in_data = true;
            continue;
        }
        if !in_data || line.starts_with("====") {
            continue;
        }
        let (target, hex) = match line.strip_prefix('\t') {
            Some(h) => (&mut b, h),
            None => (&mut a, line),
        };
        for i in (0..hex.trim().len()).step_by(2) {
            target.push(u8::from_str_radix(&hex.trim()[i..i + 2], 16).unwrap());
        }
    }
    (a, b)
}

pub fn opts() -> RecordOptions {
    RecordOptions {
        hold: std::time::Duration::from_millis(200),
        ..RecordOptions::default()
    }
}
