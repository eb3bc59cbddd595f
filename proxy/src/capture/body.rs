//! The body policy (`--body-capture full|preview|none`): which stream bytes
//! are encapsulated bodies (RFC 3507 section 4.4: the body entity starts at
//! its `Encapsulated` offset after the ICAP head and runs, chunked, to the
//! end of the message), so the recorder can store them with a shorter
//! captured length while lengths and sequence numbers stay true.
//!
//! An ICAP decoder runs per direction inside the recorder to find message
//! boundaries, and the codec's body planner (shared with capture redaction)
//! says where bodies are; with `full` neither runs.

use std::ops::Range;

use bytes::Bytes;
use icap_codec::body_plan::{BodyKeep, BodyPlanner};
use icap_codec::{Decoder, Direction, Event};

/// How much of each encapsulated body goes into the capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BodyCapture {
    /// Every byte.
    #[default]
    Full,
    /// The first `body_preview_bytes` of each body (chunk framing included).
    Preview,
    /// ICAP and HTTP heads only.
    None,
}

/// Finds, per direction, the stream ranges the policy cuts: the codec's
/// [`BodyPlanner`] over the events of a decoder of that direction.
#[derive(Debug)]
pub(crate) struct BodyCutter {
    decoder: Decoder,
    planner: BodyPlanner,
    events: Vec<Event>,
    found: Vec<Range<u64>>,
}

impl BodyCutter {
    /// A cutter for `dir`, or none when the policy keeps everything.
    pub fn new(dir: Direction, policy: BodyCapture, preview_bytes: u64) -> Option<BodyCutter> {
        let keep = match policy {
            BodyCapture::Full => return None,
            BodyCapture::Preview => preview_bytes,
            BodyCapture::None => 0,
        };
        Some(BodyCutter {
            decoder: Decoder::new(dir),
            planner: BodyPlanner::new(BodyKeep::First(keep)),
            events: Vec::new(),
            found: Vec::new(),
        })
    }

    /// Feeds the bytes at stream offset `offset` and appends to `cuts` the
    /// ranges of them to cut, in order.
    pub fn cuts(&mut self, offset: u64, bytes: &Bytes, cuts: &mut Vec<Range<u64>>) {
        let end = offset + bytes.len() as u64;
        self.events.clear();
        self.decoder.decode(bytes.clone(), &mut self.events);
        self.found.clear();
        for event in &self.events {
            if let Some(cut) = self.planner.event(event) {
                self.found.push(cut);
            }
        }
        // A body still open at the end is cut up to the end of these bytes.
        if let Some(start) = self.planner.open_cut() {
            self.found.push(start..u64::MAX);
        }
        for r in &self.found {
            let (s, e) = (r.start.max(offset), r.end.min(end));
            if s < e {
                cuts.push(s..e);
            }
        }
    }

    /// `len` bytes of the stream were never seen: the decoder resynchronises
    /// and nothing is cut until the next message head.
    pub fn gap(&mut self, len: u64) {
        self.events.clear();
        self.decoder.gap(len, &mut self.events);
        self.planner.gap();
    }
}
