//! One client connection of the mock sensor: decodes requests with
//! `icap_codec::Decoder`, decides at the end of a preview (RFC 3507 section
//! 4.5: answer now, or `100 Continue`) or at the end of the message, and
//! writes answers in request order, so keep-alive and pipelining work.
//!
//! Memory stays bounded: reads are at most `READ_CHUNK` bytes, and a body
//! is kept only up to the scenario's `max_body_bytes` (hashed beyond).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use icap_codec::event::MessageEnd;
use icap_codec::{
    AnomalyCode, Decoder, Direction, EntityKind, Event, HttpHead, Method, RequestHead,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::answers::{self, After, Original};
use super::malformed;
use super::SensorStats;
use crate::forward::tls::LegStream;
use crate::toolkit::scenario::{Action, Decision, RequestFacts, Scenario};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// What the connection does after handling an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    /// Go on reading.
    Continue,
    /// Close with FIN (after flushing what was written).
    Close,
    /// Close with RST.
    Reset,
    /// Never answer again; keep the socket open until the client leaves.
    Silence,
}

/// Where a request is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Head and body arriving; no decision yet.
    Receiving,
    /// `100 Continue` was sent; waiting for the rest of the body.
    AwaitingRest,
    /// Answered (after a preview); the rest of the message is ignored.
    Answered,
}

/// An answer refused before looking at rules (unsupported method, version,
/// unknown service method).
#[derive(Clone, Copy, Debug)]
struct Refusal {
    status: u16,
}

/// The request being received.
#[derive(Debug)]
struct Pending {
    head: Box<RequestHead>,
    service: String,
    http: Vec<HttpHead>,
    body: Vec<u8>,
    body_len: u64,
    kept_whole: bool,
    hasher: Sha256,
    phase: Phase,
    refusal: Option<Refusal>,
}

impl Pending {
    fn url(&self) -> Option<String> {
        let req = self.http.iter().find(|h| h.entity == EntityKind::ReqHdr)?;
        let target = String::from_utf8_lossy(req.target.as_ref()?).into_owned();
        if target.contains("://") || req.method.as_deref() == Some(b"CONNECT".as_slice()) {
            return Some(target);
        }
        let host = req.headers.get_str("Host").unwrap_or("");
        Some(format!("http://{host}{target}"))
    }

    fn has_body(&self) -> bool {
        self.head
            .encapsulated
            .as_ref()
            .is_some_and(|e| e.has_body())
    }
}

/// The service path of an ICAP URI (`icap://host:port/path?query`).
pub(super) fn service_path(uri: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(uri).ok()?;
    let rest = text
        .strip_prefix("icap://")
        .or_else(|| text.strip_prefix("icaps://"))?;
    let path = match rest.find('/') {
        Some(i) => &rest[i..],
        None => "/",
    };
    let path = path.split('?').next().unwrap_or(path);
    Some(path.to_owned())
}

/// Client anomalies after which the request stream cannot be trusted: the
/// sensor answers 400 and closes, as real servers do.
fn breaks_framing(code: AnomalyCode) -> bool {
    matches!(
        code,
        AnomalyCode::StartLineInvalid
            | AnomalyCode::HeaderLineInvalid
            | AnomalyCode::LimitExceeded
            | AnomalyCode::EncapsulatedMissing
            | AnomalyCode::EncapsulatedSyntax
            | AnomalyCode::EncapsulatedOrder
            | AnomalyCode::EncapsulatedOffsetOrder
            | AnomalyCode::EncapsulatedForm
            | AnomalyCode::EncapsulatedOffsetMismatch
            | AnomalyCode::HttpHeadInvalid
            | AnomalyCode::ChunkSizeInvalid
            | AnomalyCode::ChunkCrlfMissing
            | AnomalyCode::PreviewInvalid
            | AnomalyCode::PreviewOverrun
            | AnomalyCode::TlsOnPlainPort
    )
}

struct Connection {
    stream: LegStream,
    peer: SocketAddr,
    scenario: Arc<Scenario>,
    stats: Arc<SensorStats>,
    shutdown: CancellationToken,
    pending: Option<Pending>,
    close_after_answer: bool,
    /// Stream offset where the last request ended: bytes the decoder skips
    /// after it without starting a request are garbage.
    idle_from: u64,
}

/// Serves one connection until the client leaves, an action closes it, or
/// the sensor shuts down. Errors end the connection and are logged.
pub(super) async fn serve(
    stream: LegStream,
    peer: SocketAddr,
    scenario: Arc<Scenario>,
    stats: Arc<SensorStats>,
    shutdown: CancellationToken,
) {
    // Answers are small and written whole: no Nagle delay for them.
    let _ = stream.tcp().set_nodelay(true);
    let mut conn = Connection {
        stream,
        peer,
        scenario,
        stats,
        shutdown,
        pending: None,
        close_after_answer: false,
        idle_from: 0,
    };
    if let Err(e) = conn.run().await {
        tracing::debug!(peer = %conn.peer, error = %e, "sensor: connection ended with an error");
    }
}

impl Connection {
    async fn run(&mut self) -> std::io::Result<()> {
        let idle = Duration::from_secs(self.scenario.limits.idle_timeout_secs.max(1));
        let mut decoder = Decoder::new(Direction::Request);
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut events = Vec::new();
        loop {
            buf.reserve(READ_CHUNK);
            let read = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                r = tokio::time::timeout(idle, self.stream.read_buf(&mut buf)) => r,
            };
            let n = match read {
                Err(_) => {
                    tracing::debug!(peer = %self.peer, "sensor: idle timeout, closing");
                    return Ok(());
                }
                Ok(r) => r?,
            };
            if n == 0 {
                decoder.finish(&mut events);
                for event in events.drain(..) {
                    if let Event::Anomaly(a) = event {
                        tracing::debug!(peer = %self.peer, code = a.code.as_str(), "sensor: at client close");
                    }
                }
                return Ok(());
            }
            let chunk = buf.split().freeze();
            let chunk_start = decoder.offset();
            decoder.decode(chunk.clone(), &mut events);
            let batch = std::mem::take(&mut events);
            let mut flow = Flow::Continue;
            for event in batch {
                if let Event::MessageEnd { offset, .. } = &event {
                    self.idle_from = *offset;
                }
                flow = self.handle(event).await?;
                if flow != Flow::Continue {
                    break;
                }
            }
            if flow == Flow::Continue && self.skipped_garbage(&decoder, &chunk, chunk_start) {
                flow = self.refuse_garbage().await?;
            }
            match flow {
                Flow::Continue => {}
                Flow::Close => {
                    self.stream.flush().await?;
                    return self.stream.shutdown().await;
                }
                Flow::Reset => {
                    // SO_LINGER 0 makes close() send RST instead of FIN.
                    socket2::SockRef::from(self.stream.tcp()).set_linger(Some(Duration::ZERO))?;
                    return Ok(());
                }
                Flow::Silence => return self.stay_silent().await,
            }
        }
    }

    /// Whether the decoder skipped bytes of this read that start no request
    /// (it resynchronises silently until a plausible start line). Blank
    /// lines between messages are tolerated, as real servers do.
    fn skipped_garbage(&self, decoder: &Decoder, chunk: &[u8], chunk_start: u64) -> bool {
        if self.pending.is_some() || !decoder.is_idle() {
            return false;
        }
        let from = self.idle_from.max(chunk_start).saturating_sub(chunk_start);
        let to = decoder.offset().saturating_sub(chunk_start);
        let (Ok(from), Ok(to)) = (usize::try_from(from), usize::try_from(to)) else {
            return false;
        };
        chunk
            .get(from..to.min(chunk.len()))
            .is_some_and(|skipped| skipped.iter().any(|b| !matches!(b, b'\r' | b'\n')))
    }

    async fn refuse_garbage(&mut self) -> std::io::Result<Flow> {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        let istag = self.istag_now();
        self.write(&answers::error(400, None, Some(&istag), After::Close))
            .await?;
        Ok(Flow::Close)
    }

    /// Reads and discards until the client closes or the sensor stops.
    async fn stay_silent(&mut self) -> std::io::Result<()> {
        let mut sink = vec![0u8; READ_CHUNK];
        loop {
            let n = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                r = self.stream.read(&mut sink) => r?,
            };
            if n == 0 {
                return Ok(());
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        // Over TLS an answer waits in the session until flushed (a delay
        // or silence after it must not hold it back).
        self.stream.flush().await
    }

    async fn handle(&mut self, event: Event) -> std::io::Result<Flow> {
        match event {
            Event::RequestHead(head) => {
                self.start(head);
                Ok(Flow::Continue)
            }
            Event::HttpHead(h) => {
                if let Some(p) = self.pending.as_mut() {
                    p.http.push(*h);
                }
                Ok(Flow::Continue)
            }
            Event::Body(data) => {
                let limit = self.scenario.limits.max_body_bytes;
                if let Some(p) = self.pending.as_mut() {
                    p.hasher.update(&data);
                    p.body_len += data.len() as u64;
                    if p.kept_whole && p.body.len() + data.len() <= limit {
                        p.body.extend_from_slice(&data);
                    } else {
                        p.kept_whole = false;
                    }
                }
                Ok(Flow::Continue)
            }
            Event::PreviewEnd { ieof, .. } => {
                // With ieof the message end follows at once: decide there,
                // on the complete body.
                if ieof {
                    return Ok(Flow::Continue);
                }
                match self.pending.as_ref().map(|p| p.phase) {
                    Some(Phase::Receiving) => self.decide(false).await,
                    _ => Ok(Flow::Continue),
                }
            }
            Event::MessageEnd { end, .. } => {
                let phase = self.pending.as_ref().map(|p| p.phase);
                let flow = match (phase, end) {
                    (Some(Phase::Receiving), _)
                    | (Some(Phase::AwaitingRest), MessageEnd::Complete) => {
                        self.decide(true).await?
                    }
                    _ => Flow::Continue,
                };
                self.pending = None;
                Ok(flow)
            }
            Event::Anomaly(a) => {
                tracing::debug!(peer = %self.peer, code = a.code.as_str(), offset = a.offset, detail = %a.detail, "sensor: request anomaly");
                // A request already refused (unknown method, version) is
                // answered with its own status; a missing or odd
                // Encapsulated on it is no reason for a 400.
                let refused = self.pending.as_ref().is_some_and(|p| p.refusal.is_some());
                let about_encapsulated = a.code.as_str().starts_with("encapsulated-");
                if a.side == icap_codec::Side::Client
                    && breaks_framing(a.code)
                    && !(refused && about_encapsulated)
                {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    let istag = self.istag_now();
                    self.write(&answers::error(400, None, Some(&istag), After::Close))
                        .await?;
                    return Ok(Flow::Close);
                }
                Ok(Flow::Continue)
            }
            Event::ResponseHead(_) => Ok(Flow::Continue),
        }
    }

    fn start(&mut self, head: Box<RequestHead>) {
        if head
            .headers
            .get_str("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            self.close_after_answer = true;
        }
        let service = service_path(&head.uri);
        let refusal = match (&head.method, &service) {
            (Method::Other(_), _) => Some(Refusal { status: 501 }),
            _ if !head.version.eq_ignore_ascii_case(b"ICAP/1.0") => Some(Refusal { status: 505 }),
            (_, None) => Some(Refusal { status: 400 }),
            (Method::Options, _) => None,
            (method, Some(path)) => match self.scenario.service_methods(path) {
                Some(methods)
                    if !methods
                        .iter()
                        .any(|m| m.eq_ignore_ascii_case(method.as_str())) =>
                {
                    Some(Refusal { status: 405 })
                }
                _ => None,
            },
        };
        self.pending = Some(Pending {
            head,
            service: service.unwrap_or_default(),
            http: Vec::new(),
            body: Vec::new(),
            body_len: 0,
            kept_whole: true,
            hasher: Sha256::new(),
            phase: Phase::Receiving,
            refusal,
        });
    }

    /// The quoted ISTag for the current signature generation.
    fn istag_now(&self) -> String {
        let opts = &self.scenario.options;
        let done = SensorStats::get(&self.stats.requests);
        istag_for(&opts.istag, opts.istag_change_every, done)
    }

    /// Decides and answers the pending request; `complete` says whether the
    /// whole body is known (message end) or only a preview.
    async fn decide(&mut self, complete: bool) -> std::io::Result<Flow> {
        let Some(mut p) = self.pending.take() else {
            return Ok(Flow::Continue);
        };
        let flow = self.answer(&mut p, complete).await;
        self.pending = Some(p);
        let flow = flow?;
        if flow == Flow::Continue && self.close_after_answer {
            let answered = self.pending.as_ref().map(|p| p.phase) == Some(Phase::Answered);
            if answered {
                return Ok(Flow::Close);
            }
        }
        Ok(flow)
    }

    async fn answer(&mut self, p: &mut Pending, complete: bool) -> std::io::Result<Flow> {
        if let Some(Refusal { status }) = p.refusal {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            let istag = self.istag_now();
            p.phase = Phase::Answered;
            self.write(&answers::error(
                status,
                None,
                Some(&istag),
                After::KeepAlive,
            ))
            .await?;
            return Ok(Flow::Continue);
        }
        if p.head.method == Method::Options {
            self.stats.options.fetch_add(1, Ordering::Relaxed);
            let methods = match self.scenario.service_methods(&p.service) {
                Some(m) => m.join(", "),
                None => "REQMOD, RESPMOD".to_owned(),
            };
            let istag = self.istag_now();
            p.phase = Phase::Answered;
            self.write(&answers::options(&self.scenario.options, &methods, &istag))
                .await?;
            return Ok(Flow::Continue);
        }

        let url = p.url();
        let sha: Option<[u8; 32]> = complete.then(|| p.hasher.clone().finalize().into());
        let facts = RequestFacts {
            method: &p.head.method,
            service: &p.service,
            url: url.as_deref(),
            body: &p.body,
            body_len: p.body_len,
            body_complete: complete,
            sha256: sha.as_ref(),
        };
        let scenario = Arc::clone(&self.scenario);
        let (label, action, delay_ms) = match scenario.decide(&facts) {
            Decision::Matched(i, rule) => (rule.label(i), rule.answer.clone(), rule.delay_ms),
            Decision::NeedBody if !complete => return self.continue_preview(p).await,
            Decision::NeedBody | Decision::NoRule => ("default".to_owned(), Action::Clean, 0),
        };
        if !complete && action.needs_whole_body() {
            return self.continue_preview(p).await;
        }

        let generation_base = self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let opts = &scenario.options;
        let istag = istag_for(&opts.istag, opts.istag_change_every, generation_base);
        tracing::info!(
            peer = %self.peer,
            method = p.head.method.as_str(),
            service = %p.service,
            url = url.as_deref().unwrap_or("-"),
            body_bytes = p.body_len,
            on_preview = !complete,
            rule = %label,
            action = action.kind(),
            "sensor: verdict"
        );
        if delay_ms > 0 {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(Flow::Close),
                _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
            }
        }
        p.phase = Phase::Answered;
        let original = Original {
            method: &p.head.method,
            heads: &p.http,
            body: &p.body,
            has_body: p.has_body(),
        };
        // Inside a preview a 204 is always allowed (RFC 3507 section 4.6).
        let may_204 = p.head.allow_204 || !complete;
        let echo_possible = p.kept_whole;
        let bytes: Vec<BytesMut> = match &action {
            Action::Clean if may_204 => vec![answers::no_content(Some(&istag))],
            Action::Clean | Action::Echo if !echo_possible => vec![too_large(&istag)],
            Action::Clean | Action::Echo => vec![answers::echo(&original, Some(&istag))],
            Action::Block { status, page } => {
                let page = page
                    .clone()
                    .unwrap_or_else(|| answers::block_page(url.as_deref(), None));
                vec![answers::block(&istag, *status, &page, &[], &[])]
            }
            Action::Infected { threat, style } => {
                let (fields, lines) = answers::infection_headers(*style, threat, url.as_deref());
                let page = answers::block_page(url.as_deref(), Some(threat));
                vec![answers::block(&istag, 403, &page, &fields, &lines)]
            }
            Action::Error { status, reason } => {
                vec![answers::error(
                    *status,
                    reason.as_deref(),
                    Some(&istag),
                    After::KeepAlive,
                )]
            }
            Action::Close => return Ok(Flow::Close),
            Action::Reset => return Ok(Flow::Reset),
            Action::Silence => return Ok(Flow::Silence),
            Action::Malformed { .. } if !echo_possible => vec![too_large(&istag)],
            Action::Malformed { defect } => {
                malformed::answer(*defect, &original, &istag, p.head.allow_204)
            }
        };
        for part in bytes {
            self.write(&part).await?;
        }
        match action {
            // After an answer whose framing is broken the client cannot
            // find the next message; closing lets it see the end instead
            // of waiting for bytes that never come.
            Action::Malformed { defect } if malformed::breaks_framing(defect) => Ok(Flow::Close),
            _ => Ok(Flow::Continue),
        }
    }

    async fn continue_preview(&mut self, p: &mut Pending) -> std::io::Result<Flow> {
        self.stats.continues.fetch_add(1, Ordering::Relaxed);
        p.phase = Phase::AwaitingRest;
        self.write(&answers::continue_100()).await?;
        Ok(Flow::Continue)
    }
}

/// 500 for a body the sensor did not keep whole and so cannot echo.
fn too_large(istag: &str) -> BytesMut {
    answers::error(
        500,
        Some("Body Over Mock Sensor Limit"),
        Some(istag),
        After::KeepAlive,
    )
}

/// The quoted ISTag after `done` decided requests: the base tag, with a
/// generation suffix once `every` requests have passed.
pub(super) fn istag_for(base: &str, every: u64, done: u64) -> String {
    let generation = done.checked_div(every).unwrap_or(0);
    if generation == 0 {
        format!("\"{base}\"")
    } else {
        let suffix = format!("-{generation}");
        // Keep the quoted tag within RFC 3507's 32 bytes.
        let keep = base.len().min(30usize.saturating_sub(suffix.len()));
        let cut = (0..=keep)
            .rev()
            .find(|&i| base.is_char_boundary(i))
            .unwrap_or(0);
        format!("\"{}{suffix}\"", &base[..cut])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_path_ignores_host_port_and_query() {
        assert_eq!(
            service_path(b"icap://127.0.0.1:1344/av/respmod?x=1").as_deref(),
            Some("/av/respmod")
        );
        assert_eq!(service_path(b"icap://sensor").as_deref(), Some("/"));
        assert_eq!(service_path(b"http://x/y"), None);
    }

    #[test]
    fn istag_changes_every_n_requests_and_stays_short() {
        assert_eq!(istag_for("A", 0, 99), "\"A\"");
        assert_eq!(istag_for("A", 3, 2), "\"A\"");
        assert_eq!(istag_for("A", 3, 3), "\"A-1\"");
        let long = "X".repeat(30);
        assert!(istag_for(&long, 1, 12345).len() <= 32);
    }
}
