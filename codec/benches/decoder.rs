//! Decoder throughput on one core: (a) OPTIONS exchanges, many small
//! messages, each fed as its own read; (b) a RESPMOD carrying a 1 MiB body
//! in 16 KiB ICAP chunks, fed in 16 KiB reads. Inputs are the captured
//! c-icap fixtures (a) and a generated RESPMOD shaped like (b).
//!
//! cargo bench -p icap-codec --bench decoder

// A bench without its fixture has nothing to measure: stop loudly.
#![allow(clippy::panic)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use icap_codec::{Decoder, Direction, Event};

const EXCHANGES: usize = 1000;
const BODY: usize = 1 << 20;
const PIECE: usize = 16 * 1024;

fn fixture(name: &str) -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/");
    std::fs::read(format!("{path}{name}")).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// `EXCHANGES` OPTIONS requests and their responses, one Bytes per message.
fn options_streams() -> (Vec<Bytes>, Vec<Bytes>) {
    let request = Bytes::from(fixture("options.req"));
    let response = Bytes::from(fixture("options.resp"));
    (vec![request; EXCHANGES], vec![response; EXCHANGES])
}

/// A RESPMOD request with a 1 MiB body, cut into 16 KiB reads.
fn respmod_pieces() -> Vec<Bytes> {
    let res_hdr = format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {BODY}\r\n\r\n");
    let req_hdr = "GET http://example.com/big.bin HTTP/1.1\r\nHost: example.com\r\n\r\n";
    let mut stream = format!(
        "RESPMOD icap://127.0.0.1:1344/av/respmod ICAP/1.0\r\nHost: 127.0.0.1\r\nAllow: 204\r\nEncapsulated: req-hdr=0, res-hdr={}, res-body={}\r\n\r\n{req_hdr}{res_hdr}",
        req_hdr.len(),
        req_hdr.len() + res_hdr.len()
    )
    .into_bytes();
    let body = vec![0x5au8; BODY];
    for chunk in body.chunks(16 * 1024) {
        stream.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        stream.extend_from_slice(chunk);
        stream.extend_from_slice(b"\r\n");
    }
    stream.extend_from_slice(b"0\r\n\r\n");
    let stream = Bytes::from(stream);
    (0..stream.len())
        .step_by(PIECE)
        .map(|i| stream.slice(i..(i + PIECE).min(stream.len())))
        .collect()
}

fn run(direction: Direction, pieces: &[Bytes], out: &mut Vec<Event>) -> usize {
    let mut decoder = Decoder::new(direction);
    let mut events = 0;
    for piece in pieces {
        out.clear();
        decoder.decode(piece.clone(), out);
        events += out.len();
    }
    black_box(events)
}

fn options(c: &mut Criterion) {
    let (requests, responses) = options_streams();
    let bytes: usize = requests.iter().chain(&responses).map(Bytes::len).sum();
    let mut out = Vec::with_capacity(64);
    let mut group = c.benchmark_group("codec/options");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("1000 exchanges", |b| {
        b.iter(|| {
            run(Direction::Request, &requests, &mut out)
                + run(Direction::Response, &responses, &mut out)
        })
    });
    group.finish();
    let mut group = c.benchmark_group("codec/options-messages");
    group.throughput(Throughput::Elements(2 * EXCHANGES as u64));
    group.bench_function("1000 exchanges", |b| {
        b.iter(|| {
            run(Direction::Request, &requests, &mut out)
                + run(Direction::Response, &responses, &mut out)
        })
    });
    group.finish();
}

fn respmod(c: &mut Criterion) {
    let pieces = respmod_pieces();
    let bytes: usize = pieces.iter().map(Bytes::len).sum();
    let mut out = Vec::with_capacity(64);
    let mut group = c.benchmark_group("codec/respmod");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("1 MiB body in 16 KiB reads", |b| {
        b.iter(|| run(Direction::Request, &pieces, &mut out))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(4));
    targets = options, respmod
}
criterion_main!(benches);
