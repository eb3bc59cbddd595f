//! Fuzz target for the observer: both decoders, the correlator, the verdict
//! classification and the anomaly rules, fed one connection's taps as the
//! live proxy would hand them over. The input is a script of taps (see
//! `script`); the observer must not panic, and every request the client
//! started must come out as an exchange record (missing and malformed
//! included).
#![no_main]

use libfuzzer_sys::fuzz_target;

mod observer_harness;

fuzz_target!(|data: &[u8]| {
    let out = observer_harness::run(data);
    assert_eq!(out.connections, 1, "one connection record");
    assert!(
        out.exchanges >= out.started,
        "{} requests started but only {} exchange records",
        out.started,
        out.exchanges
    );
});
