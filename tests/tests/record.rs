//! The recorder against tshark: synthetic tap streams with real ICAP bytes
//! become a pcapng that tshark decodes as ICAP, reassembles byte for byte
//! on both legs, and finds nothing wrong with.

mod record_common;

use icaptap::record::{Annotation, BodyCapture, LegChoice};
use icaptap::tap::Direction;
use record_common::*;

#[test]
fn both_legs_decode_reassemble_and_are_healthy() {
    let conn = two_exchanges(1, false, 200_000);
    let sent = conn.sent.clone();
    let (dir, stats) = record(opts(), conn.taps, vec![]);
    let files = capture_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert!(file.ends_with("capture.pcapng"));
    assert_eq!(icap_messages(file), 8, "4 ICAP messages on each leg");
    assert_healthy(file);
    for stream in 0..2 {
        let (req, resp) = follow(file, stream);
        assert_eq!(req, sent[0], "request bytes of tcp stream {stream}");
        assert_eq!(resp, sent[1], "response bytes of tcp stream {stream}");
    }
    let names = tshark(&[
        "-r",
        file.to_str().unwrap(),
        "-T",
        "fields",
        "-e",
        "frame.interface_name",
    ]);
    assert!(names.contains("client-leg") && names.contains("sensor-leg"));
    assert_eq!(stats.dropped_bytes, 0);
    assert_eq!(stats.files, 1);
    assert!(
        stats.packets > 2 * 140,
        "200 KB in <=1460-byte segments on two legs: {stats:?}"
    );
}
