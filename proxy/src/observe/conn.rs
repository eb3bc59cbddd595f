//! One connection as the observer follows it: a [`Leg`] per direction (its
//! decoder, the next offset expected, when bytes last came, how it ended),
//! the correlator pairing the two legs into exchanges, and what the
//! connection's record will say. Rules read this state; they do not live
//! here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use icap_codec::{Correlator, Decoder, Direction, Event, Side, Stamp};

use super::finding::Finding;
use super::rules::FirstClose;
use crate::tap::{CloseKind, ConnMeta, Micros};

/// One direction of a connection: the bytes of one side.
pub(super) struct Leg {
    /// Decodes this side's messages.
    pub decoder: Decoder,
    /// Next expected stream offset (a hole shows as a jump).
    pub expected: u64,
    /// When bytes of this side last came.
    pub last_data: Micros,
    /// How this side ended its stream, once it did.
    pub closed: Option<CloseKind>,
}

impl Leg {
    fn new(dir: Direction, opened: Micros) -> Leg {
        Leg {
            decoder: Decoder::new(dir),
            expected: 0,
            last_data: opened,
            closed: None,
        }
    }
}

/// Bytes of a stream the observer never saw, before the bytes that came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Hole {
    /// Stream offset of the first byte missed.
    pub at: u64,
    /// Bytes missed.
    pub len: u64,
}

/// What a data tap brought.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Arrival {
    /// New bytes, decoded; after a hole when one is given.
    New(Option<Hole>),
    /// Nothing new: every byte was seen before.
    Seen,
}

/// One connection's decoding state.
pub(super) struct Conn {
    pub meta: Arc<ConnMeta>,
    /// The client's stream (ICAP requests).
    pub request: Leg,
    /// The sensor's stream (ICAP responses).
    pub response: Leg,
    pub correlator: Correlator,
    /// The side that ended its stream first, how and when.
    pub first_close: Option<FirstClose>,
    /// Bytes never seen (holes), both directions.
    pub unobserved: u64,
    /// Bytes read from the sender but never written to the receiver (it
    /// went away), per direction (`Direction::index`).
    pub undelivered: [u64; 2],
    /// Exchange records written.
    pub exchanges: u64,
    /// Findings of the connection rather than of one exchange.
    pub findings: Vec<Finding>,
    pub connect_error: Option<String>,
    /// What the TLS handshakes of its legs settled, when a leg speaks TLS.
    pub tls: Option<crate::tap::TlsFacts>,
    /// Exchanges already written by the verdict timeout.
    pub timed_out: HashSet<u64>,
    /// Clock findings per open exchange (written with its record).
    pub pending: HashMap<u64, Vec<Finding>>,
    /// When the last final response ended, and no request followed yet.
    pub answered_at: Option<Micros>,
    /// While this connection sat answered and idle, its client opened
    /// another connection to the same sensor: it did not count this one as
    /// free (the sign of a client waiting for the end of the connection).
    pub passed_over: bool,
    /// The service path of the connection's first request.
    pub service: Option<String>,
    /// Whether the service book counts this connection as open.
    pub counted_open: bool,
}

impl Conn {
    pub fn new(meta: Arc<ConnMeta>, max_pipeline: usize) -> Conn {
        let opened = meta.opened;
        Conn {
            meta,
            request: Leg::new(Direction::Request, opened),
            response: Leg::new(Direction::Response, opened),
            correlator: Correlator::with_limit(max_pipeline),
            first_close: None,
            unobserved: 0,
            undelivered: [0, 0],
            exchanges: 0,
            findings: Vec::new(),
            connect_error: None,
            tls: None,
            timed_out: HashSet::new(),
            pending: HashMap::new(),
            answered_at: None,
            passed_over: false,
            service: None,
            counted_open: false,
        }
    }

    /// The leg of `dir`.
    pub fn leg(&self, dir: Direction) -> &Leg {
        match dir {
            Direction::Request => &self.request,
            Direction::Response => &self.response,
        }
    }

    fn leg_mut(&mut self, dir: Direction) -> &mut Leg {
        match dir {
            Direction::Request => &mut self.request,
            Direction::Response => &mut self.response,
        }
    }

    /// How long both sides have been silent at `now`.
    pub fn idle(&self, now: Micros) -> u64 {
        now.saturating_sub(self.request.last_data.max(self.response.last_data))
    }

    /// Decodes bytes of `dir` at stream `offset`: a hole before them is
    /// counted and told to the decoder and the correlator, bytes seen
    /// before are skipped.
    pub fn data(
        &mut self,
        dir: Direction,
        offset: u64,
        mut bytes: Bytes,
        stamp: Stamp,
        scratch: &mut Vec<Event>,
    ) -> Arrival {
        let expected = self.leg(dir).expected;
        let mut hole = None;
        if offset > expected {
            let len = offset - expected;
            self.unobserved += len;
            self.leg_mut(dir).decoder.gap(len, scratch);
            self.correlator.mark_gap(Side::of(dir), expected, len);
            self.feed(dir, scratch, stamp);
            hole = Some(Hole { at: expected, len });
        } else if offset < expected {
            let seen = (expected - offset) as usize;
            if seen >= bytes.len() {
                return Arrival::Seen;
            }
            bytes = bytes.slice(seen..);
        }
        let leg = self.leg_mut(dir);
        leg.expected = offset.max(expected) + bytes.len() as u64;
        leg.last_data = stamp.at;
        if dir == Direction::Request {
            self.answered_at = None;
            self.passed_over = false;
        }
        self.leg_mut(dir).decoder.decode(bytes, scratch);
        self.feed(dir, scratch, stamp);
        Arrival::New(hole)
    }

    /// Bytes of `dir` from `offset` on were dropped before the observer got
    /// them (said as it happened): the exchanges they may belong to, and
    /// every later one on this connection, are marked before anything
    /// later is decoded. The next data of `dir` gives the length.
    pub fn lost(&mut self, dir: Direction, offset: u64) {
        if offset >= self.leg(dir).expected {
            self.correlator.mark_gap(Side::of(dir), offset, 0);
        }
    }

    /// The stream of `dir` ended `how`.
    pub fn close(
        &mut self,
        dir: Direction,
        how: CloseKind,
        stamp: Stamp,
        scratch: &mut Vec<Event>,
    ) {
        self.leg_mut(dir).closed.get_or_insert(how);
        if how == CloseKind::IcaptapReset {
            // The sender did not end its stream: icaptap cut it because the
            // other side went away. Its message is as far as it was seen,
            // and no truncation is the sender's.
            if dir == Direction::Response {
                self.correlator.mark_response_cut();
            }
            return;
        }
        self.first_close.get_or_insert(FirstClose {
            side: Side::of(dir),
            how,
            at: stamp.at,
        });
        self.leg_mut(dir).decoder.finish(scratch);
        self.feed(dir, scratch, stamp);
    }

    /// Ends both streams as they are (the run or the capture is over).
    pub fn finish_streams(&mut self, now: Micros, scratch: &mut Vec<Event>) {
        for dir in [Direction::Request, Direction::Response] {
            self.leg_mut(dir).decoder.finish(scratch);
            self.feed(
                dir,
                scratch,
                Stamp {
                    at: now,
                    frame: None,
                },
            );
        }
    }

    fn feed(&mut self, dir: Direction, events: &mut Vec<Event>, stamp: Stamp) {
        for event in events.drain(..) {
            match dir {
                Direction::Request => self.correlator.on_request(event, stamp),
                Direction::Response => self.correlator.on_response(event, stamp),
            }
        }
    }
}
