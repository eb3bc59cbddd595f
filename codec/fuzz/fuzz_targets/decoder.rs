//! Fuzz target for the ICAP decoder: arbitrary bytes, in both directions,
//! fed whole and cut into pieces chosen by the input itself. The decoder
//! must not panic, must count every byte, and must give the same events
//! however the input was cut (after merging adjacent Body events).
#![no_main]

use bytes::{Bytes, BytesMut};
use icap_codec::{Decoder, Direction, Event};
use libfuzzer_sys::fuzz_target;

fn decode(direction: Direction, pieces: &[Bytes]) -> Vec<Event> {
    let mut decoder = Decoder::new(direction);
    let mut out = Vec::new();
    let mut fed = 0u64;
    for piece in pieces {
        fed += piece.len() as u64;
        decoder.decode(piece.clone(), &mut out);
        assert_eq!(decoder.offset(), fed);
    }
    decoder.finish(&mut out);
    merge(out)
}

fn merge(events: Vec<Event>) -> Vec<Event> {
    let mut out = Vec::with_capacity(events.len());
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
    if let Some(b) = body {
        out.push(Event::Body(b.freeze()));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // The first byte seeds the cut points; the rest is the stream.
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = Bytes::copy_from_slice(stream);
    let mut pieces = Vec::new();
    let mut at = 0usize;
    let step = usize::from(seed % 13) + 1;
    while at < whole.len() {
        let len = step.min(whole.len() - at);
        pieces.push(whole.slice(at..at + len));
        at += len;
    }
    for direction in [Direction::Request, Direction::Response] {
        let reference = decode(direction, std::slice::from_ref(&whole));
        let cut = decode(direction, &pieces);
        assert_eq!(reference, cut, "cut every {step} bytes");
    }
});
