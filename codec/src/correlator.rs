//! The correlator: pairs the requests and responses of one ICAP connection
//! into exchanges (RFC 3507 sections 4.5 and 4.6: preview and `100
//! Continue`, 204 inside and outside a preview, 206, pipelined requests).
//!
//! It consumes the events of both decoders of a connection, each with the
//! time it was seen, and yields each [`Exchange`] once both its request and
//! its final response are over, or when the connection closes. Rules that
//! need only the two messages of one exchange live here; rules that need
//! clocks or other connections live in the proxy.

use std::collections::VecDeque;

use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::Xxh3;

use crate::anomaly::{Anomaly, AnomalyCode, Side};
use crate::encapsulated::EntityKind;
use crate::event::{Event, HttpHead, MessageEnd, RequestHead, ResponseHead};
use crate::options::OptionsInfo;
use crate::vocabulary::Method;

/// When and where an event was seen: a time in microseconds since the UNIX
/// epoch and, for offline analysis, the capture frame that carried it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Microseconds since the UNIX epoch.
    pub at: u64,
    /// Capture frame number, when decoding a capture.
    pub frame: Option<u64>,
}

/// What was seen of one message body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BodyStats {
    /// De-chunked body bytes seen.
    pub bytes: u64,
    /// SHA-256 of the de-chunked request body, once the body ended and
    /// every byte of it was seen: what sensors log as the file's hash.
    /// Not computed for response bodies (see `fingerprint`).
    pub sha256: Option<[u8; 32]>,
    /// XXH3-128 of the de-chunked body, once the body ended and every byte
    /// of it was seen: compares a returned body with the original (an echo
    /// means nothing was changed) at a fraction of SHA-256's cost. Not a
    /// file identity; use `sha256` for that.
    pub fingerprint: Option<u128>,
    /// The first bytes of the body (at most [`BODY_SAMPLE_LEN`]), for rules
    /// that look at content (an EICAR test file coming back clean).
    pub sample: Vec<u8>,
}

/// How many leading body bytes an exchange keeps for content rules.
pub const BODY_SAMPLE_LEN: usize = 256;

/// Most exchanges a connection may have waiting for an answer. A client
/// that pipelines more than this without answers would otherwise grow
/// memory without bound; the oldest is then given up as it is (no
/// response: a missing verdict) to make room.
pub const MAX_OPEN_EXCHANGES: usize = 1024;

/// Preview facts of a request (RFC 3507 section 4.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PreviewFacts {
    /// `Preview: n` as declared.
    pub declared: u64,
    /// Body bytes sent before the preview's zero chunk.
    pub sent: u64,
    /// Whether the zero chunk carried `ieof`.
    pub ieof: bool,
    /// Whether the preview's zero chunk was seen.
    pub ended: bool,
}

/// When each step of an exchange was seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    /// The request head was complete.
    pub request_head: Option<Stamp>,
    /// The preview's zero chunk, or the end of the request.
    pub request_sent: Option<Stamp>,
    /// The whole request (including the remainder after 100 Continue).
    pub request_complete: Option<Stamp>,
    /// `100 Continue` arrived.
    pub continue_: Option<Stamp>,
    /// The final response head arrived.
    pub response_head: Option<Stamp>,
    /// The final response ended.
    pub response_complete: Option<Stamp>,
}

/// One request with its interim and final response.
#[derive(Clone, Debug, Default)]
pub struct Exchange {
    /// Index of the exchange on its connection, from 0.
    pub seq: u64,
    /// The ICAP request head; `None` for a response nobody asked for.
    pub request: Option<Box<RequestHead>>,
    /// Encapsulated HTTP heads of the request (`req-hdr`, `res-hdr`).
    pub request_http: Vec<HttpHead>,
    /// The request body (preview and remainder).
    pub request_body: BodyStats,
    /// How the request ended, when it did.
    pub request_end: Option<MessageEnd>,
    /// Preview facts, when the request declared `Preview`.
    pub preview: Option<PreviewFacts>,
    /// `100 Continue` responses seen for this request.
    pub continues: u32,
    /// The final ICAP response head.
    pub response: Option<Box<ResponseHead>>,
    /// Encapsulated HTTP heads of the final response.
    pub response_http: Vec<HttpHead>,
    /// The final response body.
    pub response_body: BodyStats,
    /// Whether the final response ended (its last chunk or head was seen).
    pub response_ended: bool,
    /// `use-original-body=N` of a 206 answer.
    pub use_original_body: Option<u64>,
    /// The OPTIONS facts, when this is an answered OPTIONS exchange.
    pub options: Option<OptionsInfo>,
    /// Every anomaly found in this exchange, in the order found.
    pub anomalies: Vec<Anomaly>,
    /// When each step was seen.
    pub timings: Timings,
    /// Whether bytes of this exchange were not seen (a stream gap): its
    /// decoding is incomplete.
    pub incomplete: bool,
    body_hashers: BodyHashers,
}

impl Exchange {
    /// The request method, when there was a request.
    pub fn method(&self) -> Option<&Method> {
        self.request.as_ref().map(|r| &r.method)
    }

    /// The final response status, when there was one.
    pub fn status(&self) -> Option<u16> {
        self.response.as_ref().map(|r| r.status)
    }

    /// The request's encapsulated HTTP head of `kind`.
    pub fn request_http(&self, kind: EntityKind) -> Option<&HttpHead> {
        self.request_http.iter().find(|h| h.entity == kind)
    }

    /// The response's encapsulated HTTP head of `kind`.
    pub fn response_http(&self, kind: EntityKind) -> Option<&HttpHead> {
        self.response_http.iter().find(|h| h.entity == kind)
    }

    /// Whether any anomaly of `code` was found.
    pub fn has_anomaly(&self, code: AnomalyCode) -> bool {
        self.anomalies.iter().any(|a| a.code == code)
    }

    fn request_over(&self) -> bool {
        self.request.is_none() || self.request_end.is_some() || self.preview_answered()
    }

    /// A preview without `ieof` answered with a final response and no
    /// `100 Continue`: no remainder will follow, so the request is over even
    /// though its decoder only learns so when the next request starts.
    fn preview_answered(&self) -> bool {
        self.response_ended
            && self.continues == 0
            && self.preview.is_some_and(|p| p.ended && !p.ieof)
    }

    fn over(&self) -> bool {
        self.request_over() && self.response_ended
    }
}

/// Incremental digests of both bodies; kept out of `Debug`/`Clone` noise.
#[derive(Clone, Default)]
struct BodyHashers {
    request: Option<BodyHasher>,
    response: Option<BodyHasher>,
}

/// The digests of one body while it streams: SHA-256 only for the request
/// body (the file's identity, which costs about 0.5 ns per byte even with
/// the CPU's SHA instructions), the cheap fingerprint for both.
#[derive(Clone)]
struct BodyHasher {
    sha256: Option<Sha256>,
    fingerprint: Box<Xxh3>,
}

impl BodyHasher {
    fn request() -> Self {
        BodyHasher {
            sha256: Some(Sha256::new()),
            fingerprint: Box::default(),
        }
    }

    fn response() -> Self {
        BodyHasher {
            sha256: None,
            fingerprint: Box::default(),
        }
    }

    fn update(&mut self, data: &[u8]) {
        if let Some(sha) = self.sha256.as_mut() {
            sha.update(data);
        }
        self.fingerprint.update(data);
    }
}

impl std::fmt::Debug for BodyHashers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyHashers")
    }
}

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
}

impl Default for Correlator {
    fn default() -> Self {
        Correlator::new()
    }
}

impl Correlator {
    /// A correlator for a new connection.
    pub fn new() -> Self {
        Correlator {
            next_seq: 0,
            open: VecDeque::new(),
            done: VecDeque::new(),
            request_in_progress: false,
            response_target: ResponseTarget::Idle,
            held_request: Vec::new(),
            held_response: Vec::new(),
            connection_anomalies: Vec::new(),
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

    /// Marks every exchange in progress as incompletely decoded (bytes of
    /// the connection were not seen).
    pub fn mark_gap(&mut self) {
        for x in self.open.iter_mut() {
            x.incomplete = true;
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
            ResponseTarget::Interim(_) | ResponseTarget::Idle => None,
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
        x.body_hashers.request = Some(BodyHasher::request());
        x.timings.request_head = Some(stamp);
        x.request = Some(head);
        self.next_seq += 1;
        if self.open.len() >= MAX_OPEN_EXCHANGES {
            self.give_up_oldest();
        }
        self.open.push_back(x);
        self.request_in_progress = true;
    }

    /// Releases the oldest open exchange as it is, keeping the response
    /// pairing of the others.
    fn give_up_oldest(&mut self) {
        let Some(mut oldest) = self.open.pop_front() else {
            return;
        };
        oldest.incomplete = true;
        if let ResponseTarget::Final(seq) | ResponseTarget::Interim(seq) = self.response_target {
            if seq == oldest.seq {
                self.response_target = ResponseTarget::Idle;
            }
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
        let seq = match self.response_target {
            ResponseTarget::Interim(seq) | ResponseTarget::Final(seq) => seq,
            ResponseTarget::Idle => {
                self.held_response.push(a);
                return;
            }
        };
        match self.open_exchange(seq) {
            Some(x) => x.anomalies.push(a),
            None => self.connection_anomalies.push(a),
        }
    }

    fn response_head(&mut self, head: Box<ResponseHead>, stamp: Stamp) {
        let held = std::mem::take(&mut self.held_response);
        let index = match self.open.iter().position(|x| x.response.is_none()) {
            Some(i) => i,
            None => {
                let x = Exchange {
                    seq: self.next_seq,
                    anomalies: vec![Anomaly::new(
                        AnomalyCode::ResponseUnsolicited,
                        Side::Server,
                        head.offset,
                        format!("ICAP {} with no request waiting for it", head.status),
                    )],
                    ..Exchange::default()
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

fn add_body(stats: &mut BodyStats, hasher: &mut Option<BodyHasher>, data: &[u8]) {
    stats.bytes += data.len() as u64;
    if stats.sample.len() < BODY_SAMPLE_LEN {
        let take = (BODY_SAMPLE_LEN - stats.sample.len()).min(data.len());
        stats.sample.extend_from_slice(&data[..take]);
    }
    if let Some(h) = hasher.as_mut() {
        h.update(data);
    }
}

fn finish_hash(stats: &mut BodyStats, hasher: &mut Option<BodyHasher>, incomplete: bool) {
    if let Some(h) = hasher.take() {
        if !incomplete {
            stats.sha256 = h.sha256.map(|sha| sha.finalize().into());
            stats.fingerprint = Some(h.fingerprint.digest128());
        }
    }
}

/// RFC 3507 4.5: 100 Continue only answers a preview that did not end the body.
fn check_continue(x: &mut Exchange, head: &ResponseHead) {
    let code = match x.preview {
        None => Some((
            AnomalyCode::ContinueWithoutPreview,
            "100 Continue to a request that sent no preview",
        )),
        Some(p) if p.ieof => Some((
            AnomalyCode::ContinueAfterIeof,
            "100 Continue after the client said the preview held the whole body (ieof)",
        )),
        Some(_) => None,
    };
    if let Some((code, detail)) = code {
        x.anomalies
            .push(Anomaly::new(code, Side::Server, head.offset, detail));
    }
}

/// RFC 3507 4.6 and the 206 draft: which final statuses the request allowed.
fn check_final(x: &mut Exchange, head: &ResponseHead) {
    let Some(req) = x.request.as_ref() else {
        return;
    };
    let in_preview = x.preview.is_some() && x.continues == 0;
    let mut found = Vec::new();
    if head.status == 204 && !req.allow_204 && !in_preview {
        found.push((
            AnomalyCode::Status204NotAllowed,
            "204 outside a preview to a request without Allow: 204".to_string(),
        ));
    }
    if head.status == 206 && !req.allow_206 {
        found.push((
            AnomalyCode::Status206NotAllowed,
            "206 to a request without Allow: 206".to_string(),
        ));
    }
    if req.method == Method::Options {
        let body = head.encapsulated.as_ref().and_then(|e| e.body());
        let bad_body =
            matches!(body, Some(k) if k != EntityKind::OptBody && k != EntityKind::NullBody);
        if (200..300).contains(&head.status) && (head.status != 200 || bad_body) {
            found.push((
                AnomalyCode::OptionsReplyInvalid,
                format!(
                    "OPTIONS answered {} with {}",
                    head.status,
                    body.map_or("no body", |k| k.as_str())
                ),
            ));
        }
        if head.status == 200 {
            let (info, anomalies) = OptionsInfo::from_headers(&head.headers, head.offset);
            x.anomalies.extend(anomalies);
            x.options = Some(info);
        }
    }
    for (code, detail) in found {
        x.anomalies
            .push(Anomaly::new(code, Side::Server, head.offset, detail));
    }
}

/// A RESPMOD whose original response had a body, answered 200 with a
/// response form and `null-body`: the user gets an empty object.
fn check_content_lost(x: &mut Exchange) {
    let Some(req) = x.request.as_ref() else {
        return;
    };
    let Some(resp) = x.response.as_ref() else {
        return;
    };
    let original_had_body = req.method == Method::Respmod
        && req
            .encapsulated
            .as_ref()
            .is_some_and(|e| e.body() == Some(EntityKind::ResBody))
        && x.request_body.bytes > 0;
    let answered_empty = resp.status == 200
        && resp
            .encapsulated
            .as_ref()
            .is_some_and(|e| e.has(EntityKind::ResHdr) && e.body() == Some(EntityKind::NullBody));
    let declared_empty = x
        .response_http(EntityKind::ResHdr)
        .is_some_and(|h| h.content_length == Some(0));
    if original_had_body && answered_empty && !declared_empty {
        let offset = resp.offset;
        x.anomalies.push(Anomaly::new(
            AnomalyCode::ContentLost,
            Side::Server,
            offset,
            format!(
                "RESPMOD 200 with null-body although the original response carried {} body bytes",
                x.request_body.bytes
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::Decoder;
    use crate::vocabulary::Direction;
    use bytes::Bytes;

    #[test]
    fn unanswered_pipelined_requests_stay_bounded() {
        let mut decoder = Decoder::new(Direction::Request);
        let mut correlator = Correlator::new();
        let one =
            Bytes::from_static(b"OPTIONS icap://s/x ICAP/1.0\r\nEncapsulated: null-body=0\r\n\r\n");
        let mut events = Vec::new();
        for _ in 0..(MAX_OPEN_EXCHANGES + 10) {
            decoder.decode(one.clone(), &mut events);
            for e in events.drain(..) {
                correlator.on_request(e, Stamp::default());
            }
        }
        assert_eq!(correlator.open().count(), MAX_OPEN_EXCHANGES);
        let mut given_up = 0;
        while let Some(x) = correlator.pop() {
            assert!(x.incomplete && x.response.is_none());
            given_up += 1;
        }
        assert_eq!(given_up, 10);
    }
}
