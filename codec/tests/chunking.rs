//! Property: how the stream is cut into `decode` calls never changes the
//! events (after merging adjacent Body events), for real captures, for
//! hand-made malformed streams, and for arbitrary mutations of them.

mod common;

use bytes::Bytes;
use common::{decode_pieces, direction_of, fixture, merged};
use proptest::prelude::*;

const SAMPLES: &[&str] = &[
    "keepalive.req",
    "keepalive.resp",
    "respmod_preview_continue.resp",
    "reqmod_preview_ieof.req",
    "preview_only.req",
    "malformed/stray-bytes.req",
    "malformed/chunk-crlf-missing.resp",
    "malformed/encapsulated-entity-absent.resp",
    "malformed/preview-overrun.req",
    "malformed/tls-on-plain-port.req",
];

fn cut(input: &Bytes, cuts: &[usize]) -> Vec<Bytes> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut pieces = Vec::new();
    let mut last = 0;
    for p in points.into_iter().chain([input.len()]) {
        pieces.push(input.slice(last..p));
        last = p;
    }
    pieces
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn chunking_never_changes_the_events(
        sample in 0..SAMPLES.len(),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let name = SAMPLES[sample];
        let input = Bytes::from(fixture(name));
        let direction = direction_of(name);
        let whole = merged(decode_pieces(direction, [input.clone()]));
        let pieces = merged(decode_pieces(direction, cut(&input, &cuts)));
        prop_assert_eq!(whole, pieces);
    }

    #[test]
    fn chunking_never_changes_the_events_of_mutated_streams(
        sample in 0..SAMPLES.len(),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let name = SAMPLES[sample];
        let mut bytes = fixture(name);
        bytes.truncate(4096);
        for (at, value) in flips {
            let len = bytes.len();
            bytes[at % len] = value;
        }
        let input = Bytes::from(bytes);
        for direction in [icap_codec::Direction::Request, icap_codec::Direction::Response] {
            let whole = merged(decode_pieces(direction, [input.clone()]));
            let pieces = merged(decode_pieces(direction, cut(&input, &cuts)));
            prop_assert_eq!(whole, pieces);
        }
    }
}
