//! Shared helpers of the decoder tests: fixtures from tests/fixtures, and
//! the "shotgun" feeding (after hyper's `all_async_cases`) that decodes one
//! input whole, byte by byte and split in two at every boundary, and asserts
//! that every way gives the same events once adjacent Body events are merged.
#![allow(dead_code)]
// Helpers of tests: a missing fixture must stop the test loudly.
#![allow(clippy::panic)]

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use icap_codec::{Decoder, Direction, Event};

/// The folder of captured and hand-made fixtures.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The bytes of fixture `name` (a path under tests/fixtures).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// Decodes `pieces` in order, then finishes the stream.
pub fn decode_pieces<I: IntoIterator<Item = Bytes>>(direction: Direction, pieces: I) -> Vec<Event> {
    let mut decoder = Decoder::new(direction);
    let mut out = Vec::new();
    let mut fed = 0u64;
    for piece in pieces {
        fed += piece.len() as u64;
        decoder.decode(piece, &mut out);
        assert_eq!(decoder.offset(), fed, "offset() counts every byte fed");
    }
    decoder.finish(&mut out);
    out
}

/// Merges adjacent Body events, so that events from differently split
/// inputs compare equal.
pub fn merged(events: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::with_capacity(events.len());
    let mut body: Option<BytesMut> = None;
    for event in events {
        match event {
            Event::Body(b) => body.get_or_insert_with(BytesMut::new).extend_from_slice(&b),
            other => {
                if let Some(b) = body.take() {
                    out.push(Event::Body(b.freeze()));
                }
                out.push(other);
            }
        }
    }
    if let Some(b) = body.take() {
        out.push(Event::Body(b.freeze()));
    }
    out
}

/// Split points to try: every one for inputs up to 8 KiB; for larger ones
/// every one in the first and last 4 KiB and every 61st in between (a
/// 100 KiB body split everywhere would take minutes in a debug build).
fn split_points(len: usize) -> Vec<usize> {
    if len <= 8192 {
        return (1..len).collect();
    }
    (1..len)
        .filter(|&i| i < 4096 || i > len - 4096 || i % 61 == 0)
        .collect()
}

/// Decodes `input` whole, byte by byte, and split in two at every
/// boundary; asserts identical (merged) events; returns them.
pub fn decode_all_ways(direction: Direction, input: &[u8]) -> Vec<Event> {
    let whole = Bytes::copy_from_slice(input);
    let reference = merged(decode_pieces(direction, [whole.clone()]));
    let bytewise = merged(decode_pieces(
        direction,
        (0..whole.len()).map(|i| whole.slice(i..i + 1)),
    ));
    assert_eq!(reference, bytewise, "fed byte by byte");
    for at in split_points(whole.len()) {
        let split = merged(decode_pieces(
            direction,
            [whole.slice(..at), whole.slice(at..)],
        ));
        assert_eq!(reference, split, "split at byte {at}");
    }
    reference
}

/// A compact line per event, for table-driven expectations.
pub fn summary(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::RequestHead(h) => format!("REQ {} @{}", h.method.as_str(), h.offset),
            Event::ResponseHead(h) => format!("RESP {} @{}", h.status, h.offset),
            Event::HttpHead(h) => format!(
                "HTTP {} {} @{}+{}",
                h.entity.as_str(),
                h.method
                    .as_ref()
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .or(h.status.map(|s| s.to_string()))
                    .unwrap_or_default(),
                h.offset,
                h.len
            ),
            Event::Body(b) => format!("BODY {}", b.len()),
            Event::PreviewEnd { offset, ieof } => {
                format!("PREVIEW-END{} @{offset}", if *ieof { " ieof" } else { "" })
            }
            Event::MessageEnd {
                offset,
                end,
                body_bytes,
                use_original_body,
            } => format!(
                "END {end:?} {body_bytes}{} @{offset}",
                use_original_body.map_or(String::new(), |n| format!(" uob={n}"))
            ),
            Event::Anomaly(a) => format!("! {} @{}", a.code.as_str(), a.offset),
        })
        .collect()
}

/// The anomaly codes among `events`, in order.
pub fn codes(events: &[Event]) -> Vec<&'static str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Anomaly(a) => Some(a.code.as_str()),
            _ => None,
        })
        .collect()
}

/// The direction a fixture file's stream goes, from its extension.
pub fn direction_of(name: &str) -> Direction {
    if name.ends_with(".req") {
        Direction::Request
    } else {
        Direction::Response
    }
}
