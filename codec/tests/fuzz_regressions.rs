//! Inputs from the fuzzer (codec/fuzz), replayed with the fuzz target's
//! property: no panic, every byte counted, and the same events whether the
//! stream is fed whole or cut every N bytes (N from the input's first
//! byte). Crash inputs found later go in codec/tests/fuzz-regressions/ too;
//! the 10-minute run of 880,381 inputs found none, so the folder holds
//! inputs the fuzzer kept for reaching new code.

mod common;

use bytes::Bytes;
use common::{decode_pieces, merged};
use icap_codec::Direction;

#[test]
fn fuzz_inputs_keep_the_target_property() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let Some((&seed, stream)) = data.split_first() else {
            continue;
        };
        seen += 1;
        let whole = Bytes::copy_from_slice(stream);
        let step = usize::from(seed % 13) + 1;
        let pieces: Vec<Bytes> = (0..whole.len())
            .step_by(step)
            .map(|i| whole.slice(i..(i + step).min(whole.len())))
            .collect();
        for direction in [Direction::Request, Direction::Response] {
            let reference = merged(decode_pieces(direction, [whole.clone()]));
            let cut = merged(decode_pieces(direction, pieces.clone()));
            assert_eq!(reference, cut, "{} cut every {step} bytes", path.display());
        }
    }
    assert!(seen > 0, "no inputs in {}", dir.display());
}
