//! Fuzz target for the capture reader of `icaptap analyze`: arbitrary
//! bytes written to a file and read as a capture (pcap, pcapng, gzip by
//! magic), every flow reassembled into taps. It must not panic and must
//! return (an error is a fine answer to a broken file); the taps it yields
//! must keep each stream's offsets increasing.
#![no_main]

use std::collections::HashMap;
use std::io::Write;

use icaptap::analyze::{read_captures, AnalyzeOptions};
use icaptap::tap::TapEvent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut file) = tempfile_in_tmp() else {
        return;
    };
    if file.1.write_all(data).is_err() || file.1.flush().is_err() {
        return;
    }
    let opts = AnalyzeOptions::with_ports(&[]);
    let mut next: HashMap<(u64, bool), u64> = HashMap::new();
    let _ = read_captures(std::slice::from_ref(&file.0), &opts, &mut |tap| {
        if let TapEvent::Data { dir, offset, bytes } = &tap.event {
            let key = (tap.conn.id, *dir == icap_codec::Direction::Request);
            let expected = next.entry(key).or_insert(0);
            assert!(*offset >= *expected, "stream offset went back");
            *expected = offset + bytes.len() as u64;
        }
    });
    let _ = std::fs::remove_file(&file.0);
});

/// A private file of this fuzzing process (no tempfile crate: one fewer
/// dependency in the fuzz build).
fn tempfile_in_tmp() -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    let path = std::env::temp_dir().join(format!("icaptap-fuzz-capture-{}", std::process::id()));
    let file = std::fs::File::create(&path)?;
    Ok((path, file))
}
