//! What the correlator hands out: an [`Exchange`] (a request with its
//! interim and final response), the facts kept about it (preview, bodies,
//! timings) and the streaming digests of its bodies.

use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::Xxh3;

use crate::anomaly::{Anomaly, AnomalyCode};
use crate::encapsulated::EntityKind;
use crate::event::{HttpHead, MessageEnd, RequestHead, ResponseHead};
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
    /// Whether `sha256` was not computed because the observer shed the
    /// work under load (see [`Correlator::set_file_hashing`]): the body was
    /// seen, decoded and fingerprinted, only its SHA-256 is unknown.
    ///
    /// [`Correlator::set_file_hashing`]: super::Correlator::set_file_hashing
    pub sha256_shed: bool,
    /// The first bytes of the body (at most [`BODY_SAMPLE_LEN`]), for rules
    /// that look at content (an EICAR test file coming back clean).
    pub sample: Vec<u8>,
}

/// How many leading body bytes an exchange keeps for content rules.
pub const BODY_SAMPLE_LEN: usize = 256;

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
    /// Whether the response recorded here may be another request's: its
    /// own may have been lost whole in a gap, or this request began after
    /// a gap (`pairing-uncertain`, `pipeline-too-deep`). Nothing the
    /// response says can then be claimed for this request.
    pub pairing_uncertain: bool,
    pub(super) body_hashers: BodyHashers,
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

    pub(super) fn request_over(&self) -> bool {
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

    /// Whether the server answered this request in another protocol
    /// (`response-not-icap`): no ICAP answer will come.
    pub fn answered_not_icap(&self) -> bool {
        self.response.is_none() && self.has_anomaly(AnomalyCode::ResponseNotIcap)
    }

    pub(super) fn over(&self) -> bool {
        self.request_over() && (self.response_ended || self.answered_not_icap())
    }
}

/// Incremental digests of both bodies; kept out of `Debug`/`Clone` noise.
#[derive(Clone, Default)]
pub(super) struct BodyHashers {
    pub(super) request: Option<BodyHasher>,
    pub(super) response: Option<BodyHasher>,
}

/// The digests of one body while it streams: SHA-256 only for the request
/// body (the file's identity, which costs about 0.5 ns per byte even with
/// the CPU's SHA instructions), the cheap fingerprint for both.
#[derive(Clone)]
pub(super) struct BodyHasher {
    sha256: Option<Sha256>,
    fingerprint: Box<Xxh3>,
}

impl BodyHasher {
    /// A request body's digests; SHA-256 only when `file_hash`.
    pub(super) fn request(file_hash: bool) -> Self {
        BodyHasher {
            sha256: file_hash.then(Sha256::new),
            fingerprint: Box::default(),
        }
    }

    /// Stops the SHA-256 of this body, if one runs; true if it did.
    pub(super) fn shed_sha256(&mut self) -> bool {
        self.sha256.take().is_some()
    }

    pub(super) fn response() -> Self {
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

/// Counts, samples and digests the next bytes of a body.
pub(super) fn add_body(stats: &mut BodyStats, hasher: &mut Option<BodyHasher>, data: &[u8]) {
    stats.bytes += data.len() as u64;
    if stats.sample.len() < BODY_SAMPLE_LEN {
        let take = (BODY_SAMPLE_LEN - stats.sample.len()).min(data.len());
        stats.sample.extend_from_slice(&data[..take]);
    }
    if let Some(h) = hasher.as_mut() {
        h.update(data);
    }
}

/// The body ended: its digests are final, unless bytes of it were lost.
pub(super) fn finish_hash(
    stats: &mut BodyStats,
    hasher: &mut Option<BodyHasher>,
    incomplete: bool,
) {
    if let Some(h) = hasher.take() {
        if !incomplete {
            stats.sha256 = h.sha256.map(|sha| sha.finalize().into());
            stats.fingerprint = Some(h.fingerprint.digest128());
        }
    }
}
