//! Where encapsulated bodies are in a stream, and which of their bytes a
//! policy keeps: a sans-I/O planner fed the [`Event`]s of one direction's
//! decoder. The recorder's `--body-capture` and capture redaction both ask
//! it which stream ranges to cut.
//!
//! A body entity starts at its `Encapsulated` offset after the ICAP head
//! (RFC 3507 section 4.4) and runs, chunked, to the end of the message. The
//! planner says where the cut of the body being received starts as soon as
//! the head is decoded ([`BodyPlanner::open_cut`]), and yields the whole
//! range once the message ends ([`BodyPlanner::event`]).

use std::ops::Range;

use crate::{Encapsulated, Event};

/// Which bytes of each encapsulated body are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKeep {
    /// The first `n` bytes of every body (chunk framing included); 0 cuts
    /// whole bodies.
    First(u64),
    /// What a request sent as its ICAP preview (RFC 3507 section 4.5: the
    /// body up to the zero-length chunk that ends the preview); what follows
    /// it, the bodies of requests without a preview and those of responses
    /// are cut.
    Preview,
}

/// Plans the cuts of one direction of one connection.
#[derive(Clone, Debug)]
pub struct BodyPlanner {
    keep: BodyKeep,
    /// Where the cut of the body being received starts, until its message ends.
    open: Option<u64>,
}

impl BodyPlanner {
    /// A planner keeping `keep` of every body.
    pub fn new(keep: BodyKeep) -> BodyPlanner {
        BodyPlanner { keep, open: None }
    }

    /// Takes the next event of the direction's decoder; returns the cut a
    /// message end closes (never an empty one).
    pub fn event(&mut self, event: &Event) -> Option<Range<u64>> {
        match event {
            Event::RequestHead(h) => {
                let preview = self.keep == BodyKeep::Preview && h.preview.is_some();
                // With a preview the cut opens where the preview ends.
                self.open = if preview {
                    None
                } else {
                    self.body_cut(h.offset + h.head_len, h.encapsulated.as_ref())
                };
            }
            Event::ResponseHead(h) => {
                self.open = self.body_cut(h.offset + h.head_len, h.encapsulated.as_ref());
            }
            Event::PreviewEnd { offset, .. } if self.keep == BodyKeep::Preview => {
                // The preview stays; whatever continues after a 100 is cut.
                self.open = Some(*offset);
            }
            Event::MessageEnd { offset, .. } => {
                if let Some(start) = self.open.take() {
                    if start < *offset {
                        return Some(start..*offset);
                    }
                }
            }
            _ => {}
        }
        None
    }

    /// Bytes of the stream were never seen: nothing is cut until the next
    /// message head (the decoder resynchronises there too).
    pub fn gap(&mut self) {
        self.open = None;
    }

    /// Where the cut of the body being received starts, while its message
    /// has not ended: everything from there on is cut so far.
    pub fn open_cut(&self) -> Option<u64> {
        self.open
    }

    /// Where the cut of a body in the message whose head ends at `section`
    /// starts, when it has a body.
    fn body_cut(&self, section: u64, encapsulated: Option<&Encapsulated>) -> Option<u64> {
        let keep = match self.keep {
            BodyKeep::First(n) => n,
            BodyKeep::Preview => 0,
        };
        encapsulated
            .filter(|e| e.has_body())
            .and_then(|e| e.entities.last())
            .map(|(_, body)| section + body + keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Decoder, Direction};

    fn cuts(dir: Direction, keep: BodyKeep, stream: &[u8]) -> (Vec<Range<u64>>, Option<u64>) {
        let mut decoder = Decoder::new(dir);
        let mut events = Vec::new();
        decoder.decode(bytes::Bytes::copy_from_slice(stream), &mut events);
        let mut planner = BodyPlanner::new(keep);
        let closed = events.iter().filter_map(|e| planner.event(e)).collect();
        (closed, planner.open_cut())
    }

    /// A plan of one cut.
    fn one(cut: Range<u64>) -> Vec<Range<u64>> {
        vec![cut]
    }

    const HTTP: &[u8] = b"POST /x HTTP/1.1\r\nHost: a\r\n\r\n";

    fn reqmod(preview: Option<u64>, body: &str) -> (Vec<u8>, u64) {
        let mut m = format!(
            "REQMOD icap://s/r ICAP/1.0\r\nHost: s\r\n{}Encapsulated: req-hdr=0, req-body={}\r\n\r\n",
            preview.map_or(String::new(), |p| format!("Preview: {p}\r\n")),
            HTTP.len()
        )
        .into_bytes();
        m.extend_from_slice(HTTP);
        let body_at = m.len() as u64;
        m.extend_from_slice(body.as_bytes());
        (m, body_at)
    }

    #[test]
    fn whole_bodies_and_their_first_bytes() {
        let (m, body) = reqmod(None, "5\r\nhello\r\n0\r\n\r\n");
        let end = m.len() as u64;
        let req = Direction::Request;
        assert_eq!(cuts(req, BodyKeep::First(0), &m), (one(body..end), None));
        assert_eq!(
            cuts(req, BodyKeep::First(4), &m),
            (one(body + 4..end), None)
        );
        assert_eq!(cuts(req, BodyKeep::First(1000), &m), (vec![], None));
        assert_eq!(cuts(req, BodyKeep::Preview, &m), (one(body..end), None));
    }

    #[test]
    fn a_preview_is_kept_and_what_follows_it_is_cut() {
        let (m, body) = reqmod(Some(5), "5\r\nhello\r\n0\r\n\r\n");
        let preview_end = m.len() as u64;
        let req = Direction::Request;
        // The rest of the body, sent after a 100 Continue.
        let mut all = m.clone();
        all.extend_from_slice(b"3\r\nabc\r\n0\r\n\r\n");
        let end = all.len() as u64;
        assert_eq!(
            cuts(req, BodyKeep::Preview, &m),
            (vec![], Some(preview_end))
        );
        assert_eq!(
            cuts(req, BodyKeep::Preview, &all),
            (one(preview_end..end), None)
        );
        // Keeping the first bytes pays no attention to previews.
        assert_eq!(cuts(req, BodyKeep::First(0), &m), (vec![], Some(body)));
    }

    #[test]
    fn a_body_still_coming_stays_open_until_a_gap() {
        let (m, body) = reqmod(None, "5\r\nhel");
        let mut decoder = Decoder::new(Direction::Request);
        let mut events = Vec::new();
        decoder.decode(bytes::Bytes::from(m), &mut events);
        let mut planner = BodyPlanner::new(BodyKeep::First(0));
        assert!(events.iter().all(|e| planner.event(e).is_none()));
        assert_eq!(planner.open_cut(), Some(body));
        planner.gap();
        assert_eq!(planner.open_cut(), None);
    }
}
