//! Inputs the fuzz targets of proxy/fuzz found, kept as regression tests:
//! each file under tests/fixtures/corpus/fuzz/<target>/ runs through the
//! same harness as the target, without libFuzzer.
//!
//! - `observer/data-after-fin.bin`: the first crash of the observer target.
//!   The script sent data after a direction's FIN, which no tap source
//!   produces (the session and the reassembly stop a direction at its
//!   close); the observer rightly ignores such bytes and the target now
//!   skips them too. Kept so the harness stays honest about the contract.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use icap_codec::Direction;
use icaptap::analyze::{read_captures, AnalyzeOptions};
use icaptap::tap::TapEvent;

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/corpus/fuzz")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    files
}

/// The observer target's own harness, not a copy of it.
#[path = "../../proxy/fuzz/fuzz_targets/observer_harness.rs"]
mod observer_harness;

#[test]
fn observer_inputs_found_by_fuzzing() {
    for path in inputs("observer") {
        let data = std::fs::read(&path).unwrap();
        let observer_harness::Outcome {
            started,
            exchanges,
            connections,
        } = observer_harness::run(&data);
        assert_eq!(connections, 1, "{}", path.display());
        assert!(
            exchanges >= started,
            "{}: {started} requests started, {exchanges} exchange records",
            path.display()
        );
    }
}

#[test]
fn capture_reader_inputs_found_by_fuzzing() {
    for path in inputs("capture_reader") {
        let mut next: HashMap<(u64, bool), u64> = HashMap::new();
        let _ = read_captures(
            std::slice::from_ref(&path),
            &AnalyzeOptions::default(),
            &mut |tap| {
                if let TapEvent::Data { dir, offset, bytes } = &tap.event {
                    let expected = next
                        .entry((tap.conn.id, *dir == Direction::Request))
                        .or_insert(0);
                    assert!(
                        *offset >= *expected,
                        "{}: a stream offset went back",
                        path.display()
                    );
                    *expected = offset + bytes.len() as u64;
                }
            },
        );
    }
}
