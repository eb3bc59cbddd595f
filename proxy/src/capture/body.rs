//! The body policy (`--body-capture full|preview|none`): which stream bytes
//! are encapsulated bodies (RFC 3507 section 4.4: the body entity starts at
//! its `Encapsulated` offset after the ICAP head and runs, chunked, to the
//! end of the message), so the recorder can store them with a shorter
//! captured length while lengths and sequence numbers stay true.
//!
//! An ICAP decoder runs per direction inside the recorder to find message
//! boundaries; with `full` none runs.

use std::ops::Range;

use bytes::Bytes;
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

/// Finds, per direction, the stream ranges the policy cuts.
#[derive(Debug)]
pub(crate) struct BodyCutter {
    decoder: Decoder,
    keep: u64,
    /// Where the body being received starts to be cut, until its message ends.
    open_cut: Option<u64>,
    events: Vec<Event>,
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
            keep,
            open_cut: None,
            events: Vec::new(),
        })
    }

    /// Feeds the bytes at stream offset `offset` and appends to `cuts` the
    /// ranges of them to cut, in order.
    pub fn cuts(&mut self, offset: u64, bytes: &Bytes, cuts: &mut Vec<Range<u64>>) {
        let end = offset + bytes.len() as u64;
        self.events.clear();
        self.decoder.decode(bytes.clone(), &mut self.events);
        let mut found = Vec::new();
        let events = std::mem::take(&mut self.events);
        self.plan(&events, &mut found);
        self.events = events;
        for r in found {
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
        self.open_cut = None;
    }

    /// Turns decoder events into cut ranges; a body still open at the end
    /// yields a range up to `u64::MAX`.
    fn plan(&mut self, events: &[Event], found: &mut Vec<Range<u64>>) {
        for event in events {
            match event {
                Event::RequestHead(h) => self.open(h.offset + h.head_len, h.encapsulated.as_ref()),
                Event::ResponseHead(h) => self.open(h.offset + h.head_len, h.encapsulated.as_ref()),
                Event::MessageEnd { offset, .. } => {
                    if let Some(start) = self.open_cut.take() {
                        found.push(start..*offset);
                    }
                }
                _ => {}
            }
        }
        if let Some(start) = self.open_cut {
            found.push(start..u64::MAX);
        }
    }

    fn open(&mut self, section: u64, encapsulated: Option<&icap_codec::Encapsulated>) {
        self.open_cut = encapsulated
            .filter(|e| e.has_body())
            .and_then(|e| e.entities.last())
            .map(|(_, body_offset)| section + body_offset + self.keep);
    }
}
