//! The first work an observer behind on its input sheds: the SHA-256 of
//! request bodies. Turning it off stops the digest of a body being hashed
//! and of bodies that start, and says so on each; decoding and the
//! fingerprint that tells an echo from a change go on; on again, bodies that
//! start are hashed again.

use bytes::Bytes;
use icap_codec::{Correlator, Decoder, Direction, Exchange, Stamp};

fn feed(decoder: &mut Decoder, correlator: &mut Correlator, bytes: &[u8]) {
    let mut events = Vec::new();
    decoder.decode(Bytes::copy_from_slice(bytes), &mut events);
    for e in events.drain(..) {
        match decoder.direction() {
            Direction::Request => correlator.on_request(e, Stamp::default()),
            Direction::Response => correlator.on_response(e, Stamp::default()),
        }
    }
}

/// A RESPMOD head announcing a chunked body, and the chunks of `body`.
fn respmod_head(n: usize) -> Vec<u8> {
    let http = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n";
    format!(
        "RESPMOD icap://s/av/{n} ICAP/1.0\r\nHost: s\r\nEncapsulated: res-hdr=0, res-body={}\r\n\r\n{http}",
        http.len()
    )
    .into_bytes()
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// An echo of request `n`'s body: 200 with the same HTTP head and body.
fn echo(body: &[u8]) -> Vec<u8> {
    let http = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n";
    let mut out = format!(
        "ICAP/1.0 200 OK\r\nISTag: \"t\"\r\nEncapsulated: res-hdr=0, res-body={}\r\n\r\n{http}",
        http.len()
    )
    .into_bytes();
    out.extend(chunk(body));
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn exchanges(correlator: &mut Correlator) -> Vec<Exchange> {
    correlator.close();
    std::iter::from_fn(|| correlator.pop()).collect()
}

#[test]
fn shedding_stops_the_sha256_of_bodies_in_flight_and_starting_and_keeps_the_rest() {
    let mut requests = Decoder::new(Direction::Request);
    let mut responses = Decoder::new(Direction::Response);
    let mut correlator = Correlator::new();
    let body = b"the quick brown fox";

    // 0: hashed whole before any shedding.
    feed(&mut requests, &mut correlator, &respmod_head(0));
    feed(&mut requests, &mut correlator, &chunk(body));
    feed(&mut requests, &mut correlator, b"0\r\n\r\n");
    // 1: shedding starts half way through its body.
    feed(&mut requests, &mut correlator, &respmod_head(1));
    feed(&mut requests, &mut correlator, &chunk(&body[..5]));
    correlator.set_file_hashing(false);
    feed(&mut requests, &mut correlator, &chunk(&body[5..]));
    feed(&mut requests, &mut correlator, b"0\r\n\r\n");
    // 2: starts while shedding.
    feed(&mut requests, &mut correlator, &respmod_head(2));
    feed(&mut requests, &mut correlator, &chunk(body));
    feed(&mut requests, &mut correlator, b"0\r\n\r\n");
    // 3: starts after shedding ended.
    correlator.set_file_hashing(true);
    feed(&mut requests, &mut correlator, &respmod_head(3));
    feed(&mut requests, &mut correlator, &chunk(body));
    feed(&mut requests, &mut correlator, b"0\r\n\r\n");
    for _ in 0..4 {
        feed(&mut responses, &mut correlator, &echo(body));
    }

    let xs = exchanges(&mut correlator);
    assert_eq!(xs.len(), 4);
    let hashed: Vec<(bool, bool)> = xs
        .iter()
        .map(|x| (x.request_body.sha256.is_some(), x.request_body.sha256_shed))
        .collect();
    assert_eq!(
        hashed,
        [(true, false), (false, true), (false, true), (true, false)],
        "(sha256 present, shed) per exchange"
    );
    assert_eq!(xs[0].request_body.sha256, xs[3].request_body.sha256);
    for x in &xs {
        // Decoding and the fingerprint went on: every exchange whole, its
        // body counted, the echo recognisable.
        assert!(!x.incomplete, "exchange {} decoded whole", x.seq);
        assert_eq!(x.request_body.bytes, body.len() as u64);
        assert!(x.request_body.fingerprint.is_some());
        assert_eq!(x.request_body.fingerprint, x.response_body.fingerprint);
    }
}
