//! Pairing: the [`Correlator`] follows both streams of one connection and
//! fills each [`Exchange`] from the events that belong to it (RFC 3507
//! sections 4.5 and 4.6: preview and `100 Continue`, pipelined requests),
//! releasing exchanges in request order once they are over.

use std::collections::VecDeque;

use super::checks::{
    check_content_lost, check_continue, check_cut_short, check_final, options_leniency,
};
use super::exchange::{add_body, finish_hash, BodyHasher, Exchange, PreviewFacts, Stamp};
use crate::anomaly::{Anomaly, AnomalyCode, Side};
use crate::event::{Event, MessageEnd, RequestHead, ResponseHead};

/// Most exchanges a connection may have waiting for an answer by default
/// ([`Correlator::with_limit`] sets another). A client that pipelines more
/// than this would otherwise grow memory without bound; the oldest is then
/// given up undecided (`pipeline-too-deep`) and its answer, when it comes,
/// is skipped, so every later answer still pairs with its own request.
pub const MAX_OPEN_EXCHANGES: usize = 1024;

/// Where a response-direction message is going, by the `seq` of its
/// exchange: the key stays true however many exchanges leave `open`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResponseTarget {
    /// No response message in progress.
    Idle,
    /// A `100 Continue` for the exchange with this seq.
    Interim(u64),
    /// The final response of the exchange with this seq.
    Final(u64),
    /// A response of an exchange already given up (`pipeline-too-deep`):
    /// decoded for framing, belonging to no open exchange.
    GivenUp,
}

/// Pairs the requests and responses of one connection into exchanges.
#[derive(Debug)]
pub struct Correlator {
    next_seq: u64,
    /// Exchanges not yet over, oldest first, so in increasing `seq`.
    open: VecDeque<Exchange>,
    /// Exchanges over, waiting to be taken.
    done: VecDeque<Exchange>,
    /// Whether the newest exchange in `open` is still receiving its request.
    request_in_progress: bool,
    response_target: ResponseTarget,
    /// Anomalies found between messages, held for the next message head.
    held_request: Vec<Anomaly>,
    held_response: Vec<Anomaly>,
    /// Anomalies that never found an exchange (end of connection).
    connection_anomalies: Vec<Anomaly>,
    /// Most exchanges kept open.
    max_open: usize,
    /// Exchanges given up before their final response head came: the next
    /// this many final responses are theirs.
    given_up_unanswered: u64,
    /// Bytes of the connection were lost, so the exchanges seen since may
    /// not pair with their own answers: whose bytes, where in that side's
    /// stream, and the sentence that says so.
    uncertain: Option<(Side, u64, String)>,
    /// Whether request bodies get a SHA-256 (see
    /// [`Correlator::set_file_hashing`]).
    file_hashing: bool,
}

impl Default for Correlator {
    fn default() -> Self {
        Correlator::new()
    }
}

impl Correlator {
    /// A correlator for a new connection, keeping at most
    /// [`MAX_OPEN_EXCHANGES`] exchanges open.
    pub fn new() -> Self {
        Correlator::with_limit(MAX_OPEN_EXCHANGES)
    }

    /// A correlator keeping at most `max_open` exchanges (at least one)
    /// waiting for answers.
    pub fn with_limit(max_open: usize) -> Self {
        Correlator {
            next_seq: 0,
            open: VecDeque::new(),
            done: VecDeque::new(),
            request_in_progress: false,
            response_target: ResponseTarget::Idle,
            held_request: Vec::new(),
            held_response: Vec::new(),
            connection_anomalies: Vec::new(),
            max_open: max_open.max(1),
            given_up_unanswered: 0,
            uncertain: None,
            file_hashing: true,
        }
    }

    /// Turns the SHA-256 of request bodies on or off. Off, it is the first
    /// work an observer behind on its input sheds: request bodies that
    /// start are not hashed, and bodies being hashed stop; each such body
    /// says so ([`BodyStats::sha256_shed`]). Decoding, framing and the
    /// cheap fingerprint that tells an echo from a change go on. On again,
    /// bodies that start from then on are hashed.
    ///
    /// [`BodyStats::sha256_shed`]: super::BodyStats::sha256_shed
    pub fn set_file_hashing(&mut self, on: bool) {
        if self.file_hashing == on {
            return;
        }
        self.file_hashing = on;
        if on {
            return;
        }
        for x in self.open.iter_mut() {
            if let Some(h) = x.body_hashers.request.as_mut() {
                if h.shed_sha256() {
                    x.request_body.sha256_shed = true;
                }
            }
        }
    }

    /// Feeds one event of the request (client-to-server) stream.
    pub fn on_request(&mut self, event: Event, stamp: Stamp) {
        match event {
            Event::RequestHead(head) => self.request_head(head, stamp),
            Event::HttpHead(http) => {
                if let Some(x) = self.receiving_request() {
                    x.request_http.push(*http);
                }
            }
            Event::Body(data) => self.request_body(&data),
            Event::PreviewEnd { ieof, .. } => {
                if let Some(x) = self.receiving_request() {
                    let sent = x.request_body.bytes;
                    if let Some(p) = x.preview.as_mut() {
                        p.ended = true;
                        p.ieof = ieof;
                        p.sent = sent;
                    }
                    x.timings.request_sent.get_or_insert(stamp);
                }
            }
            Event::MessageEnd { end, offset, .. } => self.request_end(end, offset, stamp),
            Event::Anomaly(a) => self.request_anomaly(a),
            Event::ResponseHead(_) => {}
        }
        self.settle();
    }

    /// Feeds one event of the response (server-to-client) stream.
    pub fn on_response(&mut self, event: Event, stamp: Stamp) {
        match event {
            Event::ResponseHead(head) => self.response_head(head, stamp),
            Event::HttpHead(http) => {
                if let Some(x) = self.receiving_final_response() {
                    x.response_http.push(*http);
                }
            }
            Event::Body(data) => {
                if let Some(x) = self.receiving_final_response() {
                    add_body(&mut x.response_body, &mut x.body_hashers.response, &data);
                }
            }
            Event::MessageEnd {
                use_original_body, ..
            } => self.response_end(use_original_body, stamp),
            Event::Anomaly(a) => self.response_anomaly(a),
            Event::RequestHead(_) | Event::PreviewEnd { .. } => {}
        }
        self.settle();
    }

    /// Bytes of the connection were not seen: `len` bytes of `side`'s
    /// stream at `offset`. Every exchange in progress is incompletely
    /// decoded. A request or an answer may have been lost whole, and ICAP
    /// answers carry nothing that names their request, so pairing by order
    /// can no longer be trusted for every exchange that begins later on
    /// this connection, nor, when the server's bytes were lost, for those
    /// still waiting for their final answer (`pairing-uncertain`). An
    /// exchange already open when only the client's bytes were lost still
    /// gets its own answer: answers come in request order.
    /// `len` 0 means the length is not known yet: the loss was reported as
    /// it happened, and the bytes after it have not come.
    pub fn mark_gap(&mut self, side: Side, offset: u64, len: u64) {
        let lost = if len == 0 {
            format!(
                "bytes of the {}'s stream from offset {offset} on",
                side.as_str()
            )
        } else {
            format!(
                "{len} bytes of the {}'s stream at offset {offset}",
                side.as_str()
            )
        };
        for x in self.open.iter_mut() {
            // The client's loss cuts only a request still being sent; the
            // server's, any answer not yet over.
            let cut = match side {
                Side::Client => !x.request_over(),
                Side::Server => !x.response_ended,
            };
            if cut {
                x.incomplete = true;
            }
            // A final answer whose head was seen is this request's own.
            if side == Side::Server && x.response.is_none() && !x.pairing_uncertain {
                x.pairing_uncertain = true;
                x.anomalies.push(Anomaly::new(
                    AnomalyCode::PairingUncertain,
                    Side::Server,
                    offset,
                    format!(
                        "{lost} were not seen while this request waited for its answer; the \
                         answer recorded may be another request's"
                    ),
                ));
            }
        }
        let why = format!(
            "{lost} were not seen before this request; which answer belongs to it cannot be told"
        );
        self.uncertain = Some((side, offset, why));
    }

    /// The server's stream was cut by the proxy in between, not ended by
    /// the server (its client went away): every final answer under way is
    /// as far as it was seen, no more, and is taken as incomplete (its
    /// head says what it says; its end was never sent on).
    pub fn mark_response_cut(&mut self) {
        for x in self.open.iter_mut() {
            if x.response.is_some() && !x.response_ended {
                x.incomplete = true;
            }
        }
    }

    /// Takes the next exchange that is over, in request order.
    pub fn pop(&mut self) -> Option<Exchange> {
        self.done.pop_front()
    }

    /// The exchanges still open (waiting for a request's end or a
    /// response), oldest first: for rules that watch the clock.
    pub fn open(&self) -> impl Iterator<Item = &Exchange> {
        self.open.iter()
    }

    /// The observer sees no more of this connection although neither side
    /// ended it (a capture that stops): every open exchange is marked
    /// incomplete, its end unseen rather than missing. Returns their
    /// sequence numbers; [`Correlator::close`] then takes them.
    pub fn end_unseen(&mut self) -> Vec<u64> {
        self.open
            .iter_mut()
            .map(|x| {
                x.incomplete = true;
                x.seq
            })
            .collect()
    }

    /// The connection is over: every open exchange is taken as it is
    /// (a request without a response is a missing verdict), and anomalies
    /// that never found an exchange are returned.
    pub fn close(&mut self) -> Vec<Anomaly> {
        while let Some(x) = self.open.pop_front() {
            self.done.push_back(x);
        }
        self.request_in_progress = false;
        self.response_target = ResponseTarget::Idle;
        let mut rest = std::mem::take(&mut self.connection_anomalies);
        rest.append(&mut self.held_request);
        rest.append(&mut self.held_response);
        rest
    }

    fn receiving_request(&mut self) -> Option<&mut Exchange> {
        if self.request_in_progress {
            self.open.back_mut()
        } else {
            None
        }
    }

    /// The open exchange with this `seq`.
    fn open_exchange(&mut self, seq: u64) -> Option<&mut Exchange> {
        let i = self.open.binary_search_by_key(&seq, |x| x.seq).ok()?;
        self.open.get_mut(i)
    }

    /// The exchange whose final response is being received.
    fn receiving_final_response(&mut self) -> Option<&mut Exchange> {
        match self.response_target {
            ResponseTarget::Final(seq) => self.open_exchange(seq),
            ResponseTarget::Interim(_) | ResponseTarget::Idle | ResponseTarget::GivenUp => None,
        }
    }

    fn request_head(&mut self, head: Box<RequestHead>, stamp: Stamp) {
        let preview = head.preview.map(|declared| PreviewFacts {
            declared,
            ..PreviewFacts::default()
        });
        let mut x = Exchange {
            seq: self.next_seq,
            preview,
            anomalies: std::mem::take(&mut self.held_request),
            ..Exchange::default()
        };
        x.body_hashers.request = Some(BodyHasher::request(self.file_hashing));
        x.request_body.sha256_shed = !self.file_hashing;
        x.timings.request_head = Some(stamp);
        if let Some((side, lost_at, why)) = &self.uncertain {
            // Named for whose bytes were lost, at an offset in that side's
            // stream: this request's own for the client, the loss for the
            // server.
            let offset = match side {
                Side::Client => head.offset,
                Side::Server => *lost_at,
            };
            x.incomplete = true;
            x.pairing_uncertain = true;
            x.anomalies.push(Anomaly::new(
                AnomalyCode::PairingUncertain,
                *side,
                offset,
                why.clone(),
            ));
        }
        x.request = Some(head);
        self.next_seq += 1;
        if self.open.len() >= self.max_open {
            self.give_up_oldest();
        }
        self.open.push_back(x);
        self.request_in_progress = true;
    }

    /// Releases the oldest open exchange undecided, keeping the response
    /// pairing of the others: its final response, still to come or in
    /// progress, is skipped.
    fn give_up_oldest(&mut self) {
        let Some(mut oldest) = self.open.pop_front() else {
            return;
        };
        oldest.incomplete = true;
        oldest.pairing_uncertain = true;
        let offset = oldest.request.as_ref().map_or(0, |r| r.offset);
        oldest.anomalies.push(Anomaly::new(
            AnomalyCode::PipelineTooDeep,
            Side::Client,
            offset,
            format!(
                "more than {} requests were waiting for answers on this connection; \
                 icaptap stopped following this one, and skips its answer",
                self.max_open
            ),
        ));
        match self.response_target {
            ResponseTarget::Final(seq) if seq == oldest.seq => {
                self.response_target = ResponseTarget::GivenUp;
            }
            ResponseTarget::Interim(seq) if seq == oldest.seq => {
                self.response_target = ResponseTarget::GivenUp;
                self.given_up_unanswered += 1;
            }
            _ if oldest.response.is_none() => self.given_up_unanswered += 1,
            _ => {}
        }
        if self.request_in_progress && self.open.is_empty() {
            self.request_in_progress = false;
        }
        self.done.push_back(oldest);
    }

    fn request_body(&mut self, data: &[u8]) {
        let Some(x) = self.receiving_request() else {
            return;
        };
        let after_preview = x.preview.is_some_and(|p| p.ended && !p.ieof);
        if after_preview && x.continues == 0 && !x.has_anomaly(AnomalyCode::ContinueUnrequested) {
            let offset = x.request.as_ref().map_or(0, |r| r.offset);
            x.anomalies.push(Anomaly::new(
                AnomalyCode::ContinueUnrequested,
                Side::Client,
                offset,
                "the client sent the rest of the body without a 100 Continue",
            ));
        }
        add_body(&mut x.request_body, &mut x.body_hashers.request, data);
    }

    fn request_end(&mut self, end: MessageEnd, offset: u64, stamp: Stamp) {
        let Some(x) = self.receiving_request() else {
            return;
        };
        x.request_end = Some(end);
        x.timings.request_sent.get_or_insert(stamp);
        if end == MessageEnd::Complete {
            x.timings.request_complete = Some(stamp);
            finish_hash(
                &mut x.request_body,
                &mut x.body_hashers.request,
                x.incomplete,
            );
        } else {
            x.body_hashers.request = None;
            if x.continues > 0 && x.response.is_none() {
                x.anomalies.push(Anomaly::new(
                    AnomalyCode::ContinueIgnored,
                    Side::Client,
                    offset,
                    "the server sent 100 Continue but the client did not send the rest of the body",
                ));
            }
        }
        self.request_in_progress = false;
    }

    fn request_anomaly(&mut self, a: Anomaly) {
        match self.receiving_request() {
            Some(x) => x.anomalies.push(a),
            None => self.held_request.push(a),
        }
    }

    fn response_anomaly(&mut self, a: Anomaly) {
        if a.code == AnomalyCode::ResponseNotIcap && self.response_target == ResponseTarget::Idle {
            // The answer the oldest unanswered request got, in another
            // protocol: that exchange is over, and malformed.
            // With no request waiting it belongs to the connection.
            match self.open.iter_mut().find(|x| x.response.is_none()) {
                Some(x) => x.anomalies.push(a),
                None => self.connection_anomalies.push(a),
            }
            return;
        }
        let seq = match self.response_target {
            ResponseTarget::Interim(seq) | ResponseTarget::Final(seq) => seq,
            ResponseTarget::GivenUp => {
                self.connection_anomalies.push(a);
                return;
            }
            ResponseTarget::Idle => {
                self.held_response.push(a);
                return;
            }
        };
        match self.open_exchange(seq) {
            Some(x) => {
                let a = options_leniency(x, a);
                x.anomalies.push(a);
            }
            None => self.connection_anomalies.push(a),
        }
    }

    fn response_head(&mut self, head: Box<ResponseHead>, stamp: Stamp) {
        if self.given_up_unanswered > 0 {
            // The answer of an exchange given up as too deep: skipped, so
            // that the next answer pairs with the next request.
            if head.status != 100 {
                self.given_up_unanswered -= 1;
            }
            self.connection_anomalies.append(&mut self.held_response);
            self.response_target = ResponseTarget::GivenUp;
            return;
        }
        let held = std::mem::take(&mut self.held_response);
        let index = match self.open.iter().position(|x| x.response.is_none()) {
            Some(i) => i,
            None => {
                // After bytes of the connection were lost, an answer with
                // no request waiting is most likely the answer to a request
                // in the bytes not seen: icaptap cannot tell, and says so
                // rather than blame the server.
                let x = match &self.uncertain {
                    Some((_, _, why)) => Exchange {
                        seq: self.next_seq,
                        incomplete: true,
                        pairing_uncertain: true,
                        anomalies: vec![Anomaly::new(
                            AnomalyCode::PairingUncertain,
                            Side::Server,
                            head.offset,
                            format!(
                                "ICAP {} with no request seen waiting for it: {why}, so its \
                                 request was most likely among the bytes not seen",
                                head.status
                            ),
                        )],
                        ..Exchange::default()
                    },
                    None => Exchange {
                        seq: self.next_seq,
                        anomalies: vec![Anomaly::new(
                            AnomalyCode::ResponseUnsolicited,
                            Side::Server,
                            head.offset,
                            format!("ICAP {} with no request waiting for it", head.status),
                        )],
                        ..Exchange::default()
                    },
                };
                self.next_seq += 1;
                self.open.push_back(x);
                self.open.len() - 1
            }
        };
        let Some(x) = self.open.get_mut(index) else {
            return;
        };
        x.anomalies.extend(held);
        if head.status == 100 {
            check_continue(x, &head);
            x.continues += 1;
            x.timings.continue_.get_or_insert(stamp);
            self.response_target = ResponseTarget::Interim(x.seq);
            return;
        }
        check_final(x, &head);
        x.timings.response_head = Some(stamp);
        x.body_hashers.response = Some(BodyHasher::response());
        x.response = Some(head);
        self.response_target = ResponseTarget::Final(x.seq);
    }

    fn response_end(&mut self, use_original_body: Option<u64>, stamp: Stamp) {
        if let Some(x) = self.receiving_final_response() {
            x.response_ended = true;
            x.use_original_body = use_original_body;
            x.timings.response_complete = Some(stamp);
            finish_hash(
                &mut x.response_body,
                &mut x.body_hashers.response,
                x.incomplete,
            );
            check_content_lost(x);
            check_cut_short(x);
        }
        self.response_target = ResponseTarget::Idle;
    }

    /// Moves exchanges that are over to `done`, keeping request order: an
    /// exchange is released only when every older one is.
    fn settle(&mut self) {
        while self.open.front().is_some_and(Exchange::over) {
            if let Some(mut x) = self.open.pop_front() {
                if self.open.is_empty() && self.request_in_progress {
                    // Released early by `preview_answered`.
                    self.request_in_progress = false;
                    x.request_end.get_or_insert(MessageEnd::PreviewOnly);
                    x.body_hashers.request = None;
                }
                self.done.push_back(x);
            }
        }
    }
}
