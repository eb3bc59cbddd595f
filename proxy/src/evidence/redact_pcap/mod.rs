//! Redacting a capture for `icaptap bundle --redact`, in two streaming
//! passes over the file. Pass 1 ([`scan`]) reassembles every ICAP flow and
//! finds, per direction, the stream ranges to change: the values of
//! sensitive headers in ICAP and encapsulated HTTP heads (masked with `*`,
//! same length), IPv4 text in heads (same-length stand-ins with
//! `--pseudonymise-ips`), and body bytes past the preview. Pass 2
//! ([`rewrite`]) reads the file again record by record, applies the plan to
//! every packet, cuts body bytes from the captured length and rewrites IP
//! addresses and checksums. Only the plan (ranges, not data) is held
//! between the passes.
//!
//! - [`stream_plan`]: what to change in a stream, and applying it to a
//!   payload;
//! - [`scan`]: pass 1, the flows read and their plans made;
//! - [`heads`]: the changes to one ICAP or HTTP head;
//! - [`rewrite`]: pass 2, every record of a file copied or rewritten;
//! - [`addresses`]: the IP header of a rewritten packet (pseudonyms and
//!   checksums).

mod addresses;
mod heads;
mod rewrite;
mod scan;
mod stream_plan;

pub use rewrite::rewrite;
pub use scan::plan;
pub use stream_plan::CapturePlan;
/// What redacting the captures did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureRedaction {
    /// Packets read.
    pub packets: u64,
    /// Packets whose payload was masked.
    pub masked_packets: u64,
    /// Packets cut to a shorter captured length.
    pub cut_packets: u64,
    /// Payload bytes removed from the files by cuts.
    pub cut_bytes: u64,
}
