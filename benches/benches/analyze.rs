//! Offline analysis against tshark on the same capture.
//!
//! Generates a capture of realistic Squid <-> c-icap traffic (at least
//! 200 MB by default: OPTIONS, then per web request a REQMOD (GET, answered
//! 204) and a RESPMOD with `Preview: 1024`, 100 Continue and an echoed or 204
//! answer; bodies mostly 200 B .. 64 KB with one in twenty 64 KB .. 4 MB;
//! eight keep-alive connections interleaved, 1448-byte segments with
//! delayed ACKs),
//! then times:
//! - `read_captures` alone (reading, link/IP/TCP parsing, reassembly);
//! - `read_captures` feeding an icap-codec decoder per stream (what
//!   `icaptap analyze` does before verdicts), counting ICAP messages;
//! - the whole `icaptap analyze` job (`jobs::analyze::analyze_into` and the report:
//!   observer with verdicts and rules, SHA-256 of every request body,
//!   exchanges.jsonl, connections.jsonl, summary.json, report.html and
//!   report.md), counting exchange records;
//! - `tshark -r FILE -Y icap` (the same filter, with the ICAP fields printed
//!   so its message count can be compared).
//!
//! Run: `cargo bench -p icaptap-benches --bench analyze`
//! (`ICAPTAP_BENCH_MB=50` for a smaller capture, `ICAPTAP_BENCH_KEEP=1` to
//! keep the file). Results are printed as a Markdown table row for
//! docs/performance.md.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use icap_codec::{Decoder, Event};
use icaptap::analyze::synthetic::{
    Conversation, Segment, SyntheticFormat, SyntheticLink, SyntheticWriter,
};
use icaptap::analyze::{read_captures, AnalyzeOptions};
use icaptap::tap::{Direction, TapEvent};

const MSS: usize = 1448;
const PREVIEW: usize = 1024;
const CONCURRENT: usize = 8;
/// Web requests per ICAP connection before Squid opens a new one.
const EXCHANGES_PER_CONNECTION: usize = 100;

/// A small deterministic generator, so every run builds the same capture.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    /// A uniform number in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() % 1_000_000) as f64 / 1e6
    }
    /// Web object sizes: most are small (200 B .. 64 KB, log-uniform), one
    /// in twenty is a download (64 KB .. 4 MB). The mean, about 57 KB, is
    /// that of web pages (about 2 MB over 70 requests).
    fn body_len(&mut self) -> usize {
        let (low, high): (f64, f64) = if self.next() % 20 < 1 {
            (64e3, 4e6)
        } else {
            (200.0, 64e3)
        };
        (low * (high / low).powf(self.unit())) as usize
    }
}

fn chunked(data: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / chunk * 8 + 16);
    for c in data.chunks(chunk) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One captured connection being generated: segments not yet written.
struct Conn {
    conv: Conversation,
    queue: std::collections::VecDeque<Segment>,
    exchanges_left: usize,
}

/// Counts of what was generated, to compare with what the tools find.
#[derive(Default, Debug)]
struct Truth {
    requests: u64,
    responses: u64,
    connections: u64,
    frames: u64,
}

fn send(conv: &mut Conversation, dir: Direction, bytes: &[u8], out: &mut Vec<Segment>) {
    let segs = conv.data(dir, bytes, MSS);
    let back = match dir {
        Direction::Request => Direction::Response,
        Direction::Response => Direction::Request,
    };
    for (i, s) in segs.into_iter().enumerate() {
        out.push(s);
        if i % 2 == 1 {
            out.push(conv.ack(back)); // delayed ACK: one per two segments
        }
    }
    out.push(conv.ack(back));
}

/// What Squid sends for one web request when both services are configured:
/// a REQMOD of the request (no body: a GET), answered 204, then a RESPMOD of
/// the response.
fn transaction(conv: &mut Conversation, rng: &mut Lcg, truth: &mut Truth, out: &mut Vec<Segment>) {
    let id = rng.next();
    let req_hdr = format!(
        "GET http://downloads.example.com/files/{id}.bin HTTP/1.1\r\nHost: downloads.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: */*\r\n\r\n"
    );
    let reqmod = format!(
        "REQMOD icap://10.0.0.2:1344/reqmod ICAP/1.0\r\nHost: 10.0.0.2:1344\r\nDate: Sat, 28 Nov 2026 10:00:00 GMT\r\nEncapsulated: req-hdr=0, null-body={}\r\nAllow: 204\r\nX-Client-IP: 192.168.1.{}\r\n\r\n{req_hdr}",
        req_hdr.len(),
        id % 250
    );
    send(conv, Direction::Request, reqmod.as_bytes(), out);
    send(
        conv,
        Direction::Response,
        b"ICAP/1.0 204 Unmodified\r\nServer: C-ICAP/0.5.10\r\nConnection: keep-alive\r\nISTag: \"CI0001-XXXXXXXXX\"\r\n\r\n",
        out,
    );
    truth.requests += 1;
    truth.responses += 1;
    respmod(conv, rng, id, &req_hdr, truth, out);
}

fn respmod(
    conv: &mut Conversation,
    rng: &mut Lcg,
    id: u64,
    req_hdr: &str,
    truth: &mut Truth,
    out: &mut Vec<Segment>,
) {
    let n = rng.body_len();
    let body: Vec<u8> = (0..n)
        .map(|i| b'a' + ((i as u64 + id) % 26) as u8)
        .collect();
    let res_hdr = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nServer: nginx\r\n\r\n"
    );
    let preview = n.min(PREVIEW);
    let ieof = n <= PREVIEW;
    let head = format!(
        "RESPMOD icap://10.0.0.2:1344/echo ICAP/1.0\r\nHost: 10.0.0.2:1344\r\nDate: Sat, 28 Nov 2026 10:00:00 GMT\r\nEncapsulated: req-hdr=0, res-hdr={}, res-body={}\r\nPreview: {preview}\r\nAllow: 204\r\nX-Client-IP: 192.168.1.{}\r\n\r\n",
        req_hdr.len(),
        req_hdr.len() + res_hdr.len(),
        id % 250
    );
    let mut msg = head.into_bytes();
    msg.extend_from_slice(req_hdr.as_bytes());
    msg.extend_from_slice(res_hdr.as_bytes());
    msg.extend_from_slice(&chunked(&body[..preview], PREVIEW));
    msg.extend_from_slice(if ieof {
        b"0; ieof\r\n\r\n"
    } else {
        b"0\r\n\r\n"
    });
    send(conv, Direction::Request, &msg, out);
    truth.requests += 1;
    let istag = "ISTag: \"CI0001-XXXXXXXXX\"\r\n";
    let no_change = format!(
        "ICAP/1.0 204 Unmodified\r\nServer: C-ICAP/0.5.10\r\nConnection: keep-alive\r\n{istag}\r\n"
    );
    if ieof {
        send(conv, Direction::Response, no_change.as_bytes(), out);
        truth.responses += 1;
        return;
    }
    send(
        conv,
        Direction::Response,
        b"ICAP/1.0 100 Continue\r\n\r\n",
        out,
    );
    truth.responses += 1;
    let mut rest = chunked(&body[preview..], 16 * 1024);
    rest.extend_from_slice(b"0\r\n\r\n");
    send(conv, Direction::Request, &rest, out);
    if id & 1 == 0 {
        send(conv, Direction::Response, no_change.as_bytes(), out);
    } else {
        let mut resp = format!(
            "ICAP/1.0 200 OK\r\nServer: C-ICAP/0.5.10\r\nConnection: keep-alive\r\n{istag}Encapsulated: res-hdr=0, res-body={}\r\n\r\n",
            res_hdr.len()
        )
        .into_bytes();
        resp.extend_from_slice(res_hdr.as_bytes());
        resp.extend_from_slice(&chunked(&body, 16 * 1024));
        resp.extend_from_slice(b"0\r\n\r\n");
        send(conv, Direction::Response, &resp, out);
    }
    truth.responses += 1;
}

fn new_conn(index: u64, rng: &mut Lcg, truth: &mut Truth) -> Conn {
    let client = format!("10.0.0.1:{}", 20000 + index % 40000)
        .parse()
        .unwrap();
    let server = "10.0.0.2:1344".parse().unwrap();
    let mut conv = Conversation::new(client, server, rng.next() as u32, rng.next() as u32);
    let mut segs = conv.handshake();
    send(
        &mut conv,
        Direction::Request,
        b"OPTIONS icap://10.0.0.2:1344/echo ICAP/1.0\r\nHost: 10.0.0.2:1344\r\nUser-Agent: squid/6.13\r\nEncapsulated: null-body=0\r\n\r\n",
        &mut segs,
    );
    send(
        &mut conv,
        Direction::Response,
        b"ICAP/1.0 200 OK\r\nMethods: RESPMOD, REQMOD\r\nService: C-ICAP/0.5.10 server - Echo demo service\r\nISTag: \"CI0001-XXXXXXXXX\"\r\nTransfer-Preview: *\r\nOptions-TTL: 3600\r\nMax-Connections: 600\r\nPreview: 1024\r\nAllow: 204\r\nEncapsulated: null-body=0\r\n\r\n",
        &mut segs,
    );
    truth.requests += 1;
    truth.responses += 1;
    truth.connections += 1;
    Conn {
        conv,
        queue: segs.into(),
        exchanges_left: EXCHANGES_PER_CONNECTION,
    }
}

fn generate(path: &Path, target_bytes: u64) -> Truth {
    let mut rng = Lcg(0x01ca_b7a9);
    let mut truth = Truth::default();
    let file = BufWriter::with_capacity(1 << 20, File::create(path).unwrap());
    let link = SyntheticLink::Ethernet;
    let mut w = SyntheticWriter::new(file, SyntheticFormat::Pcap, link.linktype()).unwrap();
    let mut at: u64 = 1_795_000_000_000_000;
    let mut written: u64 = 24;
    let mut conns: Vec<Conn> = (0..CONCURRENT as u64)
        .map(|i| new_conn(i, &mut rng, &mut truth))
        .collect();
    let mut next_index = CONCURRENT as u64;
    let mut turn = 0;
    while !conns.is_empty() {
        turn = (turn + 1) % conns.len();
        let c = &mut conns[turn];
        if c.queue.is_empty() {
            if c.exchanges_left == 0 || written >= target_bytes {
                let mut end = vec![
                    c.conv.fin(Direction::Request),
                    c.conv.fin(Direction::Response),
                ];
                end.push(c.conv.ack(Direction::Request));
                for s in end {
                    let frame = link.frame(&c.conv.ip_packet(&s));
                    w.frame(at, &frame).unwrap();
                    truth.frames += 1;
                    written += 16 + frame.len() as u64;
                    at += 10;
                }
                if written >= target_bytes {
                    conns.swap_remove(turn);
                } else {
                    conns[turn] = new_conn(next_index, &mut rng, &mut truth);
                    next_index += 1;
                }
                continue;
            }
            c.exchanges_left -= 1;
            let mut segs = Vec::new();
            transaction(&mut c.conv, &mut rng, &mut truth, &mut segs);
            c.queue.extend(segs);
        }
        // Interleave connections a few packets at a time, as on a busy link.
        for _ in 0..8 {
            let Some(s) = conns[turn].queue.pop_front() else {
                break;
            };
            let frame = link.frame(&conns[turn].conv.ip_packet(&s));
            w.frame(at, &frame).unwrap();
            truth.frames += 1;
            written += 16 + frame.len() as u64;
            at += 10;
        }
    }
    drop(w.into_inner());
    truth
}

struct Run {
    seconds: f64,
    messages: u64,
    bytes: u64,
    flows: u64,
}

fn icaptap_reassembly(path: &Path) -> Run {
    let start = Instant::now();
    let mut bytes = 0u64;
    let stats = read_captures(
        &[path.to_path_buf()],
        &AnalyzeOptions::default(),
        &mut |t| {
            if let TapEvent::Data { bytes: b, .. } = &t.event {
                bytes += b.len() as u64;
            }
        },
    )
    .unwrap();
    Run {
        seconds: start.elapsed().as_secs_f64(),
        messages: 0,
        bytes,
        flows: stats.flows.flows,
    }
}

fn icaptap_decode(path: &Path) -> Run {
    let start = Instant::now();
    let mut decoders: HashMap<(u64, Direction), Decoder> = HashMap::new();
    let mut events = Vec::new();
    let mut messages = 0u64;
    let mut bytes = 0u64;
    let stats = read_captures(
        &[path.to_path_buf()],
        &AnalyzeOptions::default(),
        &mut |t| match t.event {
            TapEvent::Data {
                dir,
                offset,
                bytes: b,
            } => {
                bytes += b.len() as u64;
                let d = decoders
                    .entry((t.conn.id, dir))
                    .or_insert_with(|| Decoder::new(dir));
                if offset > d.offset() {
                    d.gap(offset - d.offset(), &mut events);
                }
                d.decode(b, &mut events);
                for e in events.drain(..) {
                    if matches!(e, Event::RequestHead(_) | Event::ResponseHead(_)) {
                        messages += 1;
                    }
                }
            }
            TapEvent::Finished => {
                decoders.remove(&(t.conn.id, Direction::Request));
                decoders.remove(&(t.conn.id, Direction::Response));
            }
            _ => {}
        },
    )
    .unwrap();
    Run {
        seconds: start.elapsed().as_secs_f64(),
        messages,
        bytes,
        flows: stats.flows.flows,
    }
}

/// The whole `icaptap analyze FILE --out DIR` job, in process: what the
/// command does apart from printing its summary table.
fn icaptap_analyze(path: &Path) -> Run {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("analysis");
    let start = Instant::now();
    let side = icaptap::jobs::analyze::analyze_into(
        &[path.to_path_buf()],
        &AnalyzeOptions::default(),
        icaptap::observe::ObserverConfig::default(),
        &dir,
    )
    .unwrap();
    icaptap::evidence::write_report(&dir).unwrap();
    Run {
        seconds: start.elapsed().as_secs_f64(),
        messages: side.summary.exchanges,
        bytes: side.capture.bytes(),
        flows: side.capture.flows.flows,
    }
}

/// `tshark -r FILE -Y icap` exactly as a user would run it (summary lines
/// to a pipe that only counts them).
fn tshark_plain(path: &Path) -> Option<f64> {
    let start = Instant::now();
    let out = Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-Y", "icap"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| start.elapsed().as_secs_f64())
}

/// The same filter printing the ICAP message fields, to count messages
/// (one frame can carry several; tshark joins their values with commas).
fn tshark_fields(path: &Path) -> Option<Run> {
    let start = Instant::now();
    let mut child = Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-Y", "icap", "-T", "fields"])
        .args([
            "-e",
            "icap.options",
            "-e",
            "icap.reqmod",
            "-e",
            "icap.respmod",
            "-e",
            "icap.response",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let out = child.stdout.take()?;
    let mut messages = 0u64;
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        messages += line
            .split(['\t', ','])
            .filter(|f| *f == "1" || f.eq_ignore_ascii_case("true"))
            .count() as u64;
    }
    child.wait().ok()?;
    Some(Run {
        seconds: start.elapsed().as_secs_f64(),
        messages,
        bytes: 0,
        flows: 0,
    })
}

/// The fastest of `n` runs: the machine is shared, and the minimum is the
/// least disturbed measurement.
fn best<T>(n: usize, mut run: impl FnMut() -> T, seconds: impl Fn(&T) -> f64) -> T {
    let mut best = run();
    for _ in 1..n {
        let r = run();
        if seconds(&r) < seconds(&best) {
            best = r;
        }
    }
    best
}

fn main() {
    let mb: u64 = std::env::var("ICAPTAP_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(210);
    let path: PathBuf = std::env::temp_dir().join(format!("icaptap-bench-analyze-{mb}MB.pcap"));
    let t = Instant::now();
    let truth = generate(&path, mb * 1_000_000);
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "generated {} ({:.1} MB, {} connections, {} requests, {} responses) in {:.1} s",
        path.display(),
        size as f64 / 1e6,
        truth.connections,
        truth.requests,
        truth.responses,
        t.elapsed().as_secs_f64()
    );
    // Warm the page cache so every reader starts equal.
    let _ = std::fs::read(&path);
    let r = best(5, || icaptap_reassembly(&path), |r| r.seconds);
    println!(
        "icaptap read+reassemble: {:.3} s, {:.0} MB/s, {} flows, {:.1} MB payload",
        r.seconds,
        size as f64 / 1e6 / r.seconds,
        r.flows,
        r.bytes as f64 / 1e6
    );
    let d = best(5, || icaptap_decode(&path), |r| r.seconds);
    let expected = truth.requests + truth.responses;
    println!(
        "icaptap read+reassemble+decode: {:.3} s, {:.0} MB/s, {} ICAP messages (generated {expected})",
        d.seconds,
        size as f64 / 1e6 / d.seconds,
        d.messages
    );
    let a = best(5, || icaptap_analyze(&path), |r| r.seconds);
    println!(
        "icaptap analyze (whole job): {:.3} s, {:.0} MB/s, {} exchange records (generated {} requests)",
        a.seconds,
        size as f64 / 1e6 / a.seconds,
        a.messages,
        truth.requests
    );
    let plain = (0..3).filter_map(|_| tshark_plain(&path)).reduce(f64::min);
    let fields = tshark_fields(&path);
    match (plain, fields) {
        (Some(plain), Some(fields)) => {
            println!(
                "tshark -r FILE -Y icap: {plain:.2} s ({:.1} MB/s); with -T fields -e icap.*: {:.2} s, {} ICAP messages",
                size as f64 / 1e6 / plain,
                fields.seconds,
                fields.messages
            );
            println!("| size | icaptap reassemble | icaptap reassemble+decode | icaptap analyze (whole job) | tshark -Y icap | ratio to decode / whole job | tshark -T fields | ratio to decode / whole job | messages generated / icaptap / tshark |");
            println!(
                "| {:.0} MB, {} conns, {} frames | {:.3} s | {:.3} s | {:.3} s | {:.2} s | {:.0}x / {:.1}x | {:.2} s | {:.0}x / {:.1}x | {} / {} / {} |",
                size as f64 / 1e6,
                truth.connections,
                truth.frames,
                r.seconds,
                d.seconds,
                a.seconds,
                plain,
                plain / d.seconds,
                plain / a.seconds,
                fields.seconds,
                fields.seconds / d.seconds,
                fields.seconds / a.seconds,
                expected,
                d.messages,
                fields.messages
            );
        }
        _ => println!("tshark not found: install it (Debian package tshark) to compare"),
    }
    if std::env::var_os("ICAPTAP_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_file(&path);
    }
}
