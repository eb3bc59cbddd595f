//! The incremental decoder for one direction of an ICAP connection (RFC 3507
//! sections 4.3 to 4.5, 4.8 to 4.10): ICAP heads, the encapsulated HTTP heads
//! they announce, chunked bodies and previews, as a stream of [`Event`]s.
//!
//! Sans-I/O: it is fed `Bytes` of any size and hands body data back as
//! slices of them. Every violation becomes an anomaly event and decoding goes
//! on; when the framing is lost it skips to the next plausible start line.
//! Memory is bounded by [`Limits`] whatever the body size.

use bytes::Bytes;

use crate::anomaly::{Anomaly, AnomalyCode, Side};
use crate::chunked::{ChunkStep, ChunkedBody};
use crate::encapsulated::EntityKind;
use crate::event::{Event, MessageEnd};
use crate::framing::{HeadCollector, Line, LineReader, LineStatus};
use crate::head::{
    first_bytes, foreign_answer, is_plausible_start, looks_like_icap_start, parse_http_head,
    parse_request_line, parse_status_line, Finding, StartLineError,
};
use crate::icap_head;
use crate::limits::Limits;
use crate::vocabulary::Direction;

/// The first byte of a TLS handshake record, and the major version byte
/// that follows it.
const TLS_HANDSHAKE: [u8; 2] = [0x16, 0x03];

/// Where in the stream the decoder is. The states inside a message carry
/// what the decoder knows about it, so no message outlives its states and
/// no state inside a message lacks one.
#[derive(Debug)]
enum State {
    /// Between messages: the next line should be a start line.
    Idle,
    /// Skipping bytes up to the next plausible start line. `quiet` when the
    /// skipped bytes were already reported (a broken message, a gap).
    Resync { from: u64, quiet: bool },
    /// Collecting the ICAP header block.
    IcapHead,
    /// Collecting an encapsulated HTTP header block of this message.
    HttpHead(Message),
    /// Inside the chunked body of this message.
    Body(ChunkedBody, Message),
    /// A preview of this request ended without `ieof`: either the remainder
    /// follows (after the server's 100 Continue) or a new message starts.
    PreviewPaused(Message),
    /// A TLS handshake on a plain port: the rest of the stream is ignored.
    Tls,
}

/// Which part of a request body is flowing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyPhase {
    /// No preview: the whole body.
    Whole,
    /// The preview of at most this many bytes.
    Preview(u64),
    /// The remainder after a preview.
    Remainder,
}

/// What the decoder knows about the message in progress.
#[derive(Debug)]
struct Message {
    /// Stream offset where the encapsulated section starts (just after the
    /// ICAP head); `Encapsulated` offsets count from here.
    section_start: u64,
    /// Header entities (`req-hdr`, `res-hdr`) still to come, in listed order.
    header_entities: Vec<(EntityKind, u64)>,
    next_header: usize,
    /// The body entity, `null-body` included.
    body: Option<(EntityKind, u64)>,
    phase: BodyPhase,
    body_bytes: u64,
    /// Content-Length and chunked of the last encapsulated HTTP head.
    declared: Option<(Option<u64>, bool)>,
    overrun_reported: bool,
}

/// An incremental decoder for one direction of an ICAP connection.
#[derive(Debug)]
pub struct Decoder {
    direction: Direction,
    side: Side,
    limits: Limits,
    pos: u64,
    state: State,
    line: LineReader,
    head: HeadCollector,
    /// Findings made while an ICAP head is collected, reported after the
    /// head event so that they belong to its message.
    deferred: Vec<Finding>,
}

impl Decoder {
    /// A decoder for the stream going in `direction`, with default limits.
    pub fn new(direction: Direction) -> Decoder {
        Decoder::with_limits(direction, Limits::DEFAULT)
    }

    /// A decoder for the stream going in `direction`, bounded by `limits`.
    pub fn with_limits(direction: Direction, limits: Limits) -> Decoder {
        Decoder {
            direction,
            side: Side::of(direction),
            limits,
            pos: 0,
            state: State::Idle,
            line: LineReader::default(),
            head: HeadCollector::default(),
            deferred: Vec::new(),
        }
    }

    /// The direction this decoder reads.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Bytes consumed so far (stream offset).
    pub fn offset(&self) -> u64 {
        self.pos
    }

    /// Whether the decoder is between messages.
    pub fn is_idle(&self) -> bool {
        match self.state {
            State::Idle => self.line.is_empty(),
            State::Resync { .. } => true,
            _ => false,
        }
    }

    /// Feed the next bytes of the stream; events are appended to `out` in
    /// stream order.
    pub fn decode(&mut self, mut input: Bytes, out: &mut Vec<Event>) {
        while !input.is_empty() {
            // Each step owns the state it starts in and leaves the next one
            // in `self.state`; states without data are put back as they were.
            match std::mem::replace(&mut self.state, State::Idle) {
                State::Tls => {
                    self.state = State::Tls;
                    self.pos += input.len() as u64;
                    return;
                }
                State::Idle => self.idle(&mut input, out),
                State::Resync { from, quiet } => {
                    self.state = State::Resync { from, quiet };
                    self.resync(&mut input, from, quiet, out);
                }
                State::IcapHead => {
                    self.state = State::IcapHead;
                    self.icap_head(&mut input, out);
                }
                State::HttpHead(msg) => self.http_head(msg, &mut input, out),
                State::Body(chunked, msg) => self.body(chunked, msg, &mut input, out),
                State::PreviewPaused(msg) => self.preview_paused(msg, &input, out),
            }
        }
    }

    /// `len` bytes of the stream were lost (capture gap, observer drop):
    /// reports message-truncated if inside a message, stream-gap always,
    /// then resynchronises at the next plausible start line.
    pub fn gap(&mut self, len: u64, out: &mut Vec<Event>) {
        if self.in_message() {
            self.anomaly(
                out,
                AnomalyCode::MessageTruncated,
                self.pos,
                "bytes were lost inside this message; its end was not seen".to_string(),
            );
        }
        self.anomaly(
            out,
            AnomalyCode::StreamGap,
            self.pos,
            format!(
                "{len} bytes of the stream were not seen; decoding resumes at the next message"
            ),
        );
        self.pos += len;
        self.line.reset();
        self.deferred.clear();
        if !matches!(self.state, State::Tls) {
            self.state = State::Resync {
                from: self.pos,
                quiet: true,
            };
        }
    }

    /// The stream ended (FIN/RST): reports a truncated message if inside one.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        let state = std::mem::replace(&mut self.state, State::Idle);
        let at = self.pos;
        let truncated = "the stream ended inside this message".to_string();
        match state {
            State::Idle if !self.line.is_empty() => {
                let pending = self.line.pending();
                let start = at - pending.len() as u64;
                let icap_prefix = b"ICAP/".starts_with(&pending[..pending.len().min(5)])
                    || pending.starts_with(b"ICAP/");
                let foreign = (self.direction == Direction::Response && !icap_prefix)
                    .then(|| foreign_answer(pending, start == 0))
                    .flatten();
                match foreign {
                    Some(what) => self.not_icap(out, start, pending, what),
                    None => self.anomaly(out, AnomalyCode::MessageTruncated, at, truncated),
                }
            }
            State::Idle | State::Tls => {}
            State::Resync { from, quiet } => {
                if !quiet && at > from {
                    self.stray(out, from, at);
                }
            }
            State::IcapHead => self.anomaly(out, AnomalyCode::MessageTruncated, at, truncated),
            State::HttpHead(msg) => {
                if self.head.is_empty() && self.line.is_empty() {
                    self.entity_absent(&msg, out, at);
                }
                self.anomaly(out, AnomalyCode::MessageTruncated, at, truncated);
            }
            State::Body(body, msg) => {
                if body.is_untouched() {
                    self.entity_absent(&msg, out, at);
                } else if !body.in_trailer() {
                    self.anomaly(
                        out,
                        AnomalyCode::ChunkFinalMissing,
                        at,
                        "the stream ended inside a chunked body, before its zero chunk".to_string(),
                    );
                }
                self.anomaly(out, AnomalyCode::MessageTruncated, at, truncated);
            }
            State::PreviewPaused(msg) => self.end_message(msg, out, MessageEnd::PreviewOnly, None),
        }
        self.line.reset();
        self.deferred.clear();
        self.state = State::Idle;
    }

    fn in_message(&self) -> bool {
        match self.state {
            State::Idle => !self.line.is_empty(),
            State::Resync { .. } | State::Tls => false,
            _ => true,
        }
    }

    fn anomaly(&self, out: &mut Vec<Event>, code: AnomalyCode, offset: u64, detail: String) {
        out.push(Event::Anomaly(Anomaly::new(
            code, self.side, offset, detail,
        )));
    }

    fn findings(&self, out: &mut Vec<Event>, findings: Vec<Finding>) {
        for (code, offset, detail) in findings {
            self.anomaly(out, code, offset, detail);
        }
    }

    /// The server answered in another protocol: says what it looked like.
    /// What follows is that protocol's, skipped quietly until an ICAP
    /// status line.
    fn not_icap(&self, out: &mut Vec<Event>, at: u64, line: &[u8], what: &str) {
        self.anomaly(
            out,
            AnomalyCode::ResponseNotIcap,
            at,
            format!(
                "\"{}\": {what} (an ICAP answer starts with ICAP/1.0); check the host and \
                 port the client sends ICAP to",
                first_bytes(line)
            ),
        );
    }

    fn stray(&self, out: &mut Vec<Event>, from: u64, to: u64) {
        self.anomaly(
            out,
            AnomalyCode::StrayBytes,
            from,
            format!(
                "{} bytes between messages do not start a message; skipped",
                to - from
            ),
        );
    }

    fn entity_absent(&self, msg: &Message, out: &mut Vec<Event>, at: u64) {
        let what = msg
            .header_entities
            .get(msg.next_header)
            .or(msg.body.as_ref())
            .map(|(k, _)| k.as_str());
        self.anomaly(
            out,
            AnomalyCode::EncapsulatedEntityAbsent,
            at,
            format!(
                "`{}` is declared in Encapsulated but never arrived",
                what.unwrap_or("entity")
            ),
        );
    }

    fn idle(&mut self, input: &mut Bytes, out: &mut Vec<Event>) {
        let pending = self.line.pending();
        if pending.len() < 2 {
            let first = pending.first().or(input.first()).copied();
            let second = if pending.is_empty() {
                input.get(1)
            } else {
                input.first()
            }
            .copied();
            if first == Some(TLS_HANDSHAKE[0]) && second == Some(TLS_HANDSHAKE[1]) {
                let start = self.pos - pending.len() as u64;
                self.anomaly(
                    out,
                    AnomalyCode::TlsOnPlainPort,
                    start,
                    "a TLS handshake arrived on a plain ICAP port: the peer is set up for \
                     ICAPS (TLS); the rest of the stream is not decoded"
                        .to_string(),
                );
                self.line.reset();
                self.pos += input.len() as u64;
                input.clear();
                self.state = State::Tls;
                return;
            }
        }
        match self
            .line
            .read(input, &mut self.pos, self.limits.max_line_len)
        {
            LineStatus::Partial => {}
            LineStatus::TooLong { start } => {
                self.anomaly(
                    out,
                    AnomalyCode::LimitExceeded,
                    start,
                    format!(
                        "start line longer than {} bytes; skipped to the next message",
                        self.limits.max_line_len
                    ),
                );
                self.state = State::Resync {
                    from: start,
                    quiet: true,
                };
            }
            LineStatus::Complete(line) => self.start_line(line, out),
        }
    }

    /// Handles the first line of what should be a message.
    fn start_line(&mut self, line: Line, out: &mut Vec<Event>) {
        let verdict = match self.direction {
            Direction::Request => parse_request_line(&line.bytes).map(|_| ()),
            Direction::Response => parse_status_line(&line.bytes).map(|_| ()),
        };
        match verdict {
            Ok(()) => {
                self.head.begin(line.start);
                self.head.push(&line, self.limits.max_head_len);
                self.state = State::IcapHead;
            }
            Err(StartLineError::NotAStartLine) => {
                let foreign = (self.direction == Direction::Response)
                    .then(|| foreign_answer(&line.bytes, line.start == 0))
                    .flatten();
                if let Some(what) = foreign {
                    self.not_icap(out, line.start, &line.bytes, what);
                }
                self.state = State::Resync {
                    from: line.start,
                    quiet: foreign.is_some(),
                };
            }
            Err(StartLineError::Malformed(why)) => {
                self.anomaly(
                    out,
                    AnomalyCode::StartLineInvalid,
                    line.start,
                    format!(
                        "{why}: {:?}; skipped to the next message",
                        String::from_utf8_lossy(&line.bytes[..line.bytes.len().min(80)])
                    ),
                );
                self.state = State::Resync {
                    from: self.pos,
                    quiet: true,
                };
            }
        }
    }

    fn resync(&mut self, input: &mut Bytes, from: u64, quiet: bool, out: &mut Vec<Event>) {
        loop {
            match self
                .line
                .read(input, &mut self.pos, self.limits.max_line_len)
            {
                LineStatus::Partial => return,
                LineStatus::TooLong { .. } => {}
                LineStatus::Complete(line) => {
                    if is_plausible_start(self.direction, &line.bytes) {
                        if !quiet && line.start > from {
                            self.stray(out, from, line.start);
                        }
                        self.state = State::Idle;
                        self.start_line(line, out);
                        return;
                    }
                }
            }
        }
    }

    fn icap_head(&mut self, input: &mut Bytes, out: &mut Vec<Event>) {
        loop {
            match self
                .line
                .read(input, &mut self.pos, self.limits.max_line_len)
            {
                LineStatus::Partial => return,
                LineStatus::TooLong { start } => {
                    self.head.count(self.pos - start);
                    self.deferred.push((
                        AnomalyCode::LimitExceeded,
                        start,
                        format!(
                            "ICAP header line longer than {} bytes; skipped",
                            self.limits.max_line_len
                        ),
                    ));
                }
                LineStatus::Complete(line) if line.bytes.is_empty() => {
                    self.head.count(line.wire_len);
                    self.icap_head_done(out);
                    return;
                }
                LineStatus::Complete(line) => {
                    if self.head.push(&line, self.limits.max_head_len) {
                        self.deferred.push((
                            AnomalyCode::LimitExceeded,
                            line.start,
                            format!(
                                "ICAP head longer than {} bytes; the rest of it is ignored",
                                self.limits.max_head_len
                            ),
                        ));
                    }
                }
            }
        }
    }

    fn icap_head_done(&mut self, out: &mut Vec<Event>) {
        self.state = State::Idle;
        let head_start = self.head.start;
        let head_len = self.pos - head_start;
        let (_, lines) = self.head.finish();
        let Some((start, header_lines)) = lines.split_first() else {
            return;
        };
        let deferred = std::mem::take(&mut self.deferred);
        let Some(head) = icap_head::interpret(
            self.direction,
            start,
            header_lines,
            head_start,
            head_len,
            &self.limits,
            deferred,
        ) else {
            return;
        };
        out.push(head.event);
        self.findings(out, head.findings);
        let (preview, is_interim) = (head.preview, head.is_interim);
        let encapsulated = head.encapsulated;

        let entities = encapsulated.map(|e| e.entities).unwrap_or_default();
        let body = entities.iter().copied().find(|(k, _)| k.is_body());
        let phase = match (preview, body) {
            (Some(n), Some((kind, _))) if kind != EntityKind::NullBody => BodyPhase::Preview(n),
            _ => BodyPhase::Whole,
        };
        let msg = Message {
            section_start: self.pos,
            header_entities: entities.into_iter().filter(|(k, _)| !k.is_body()).collect(),
            next_header: 0,
            body,
            phase,
            body_bytes: 0,
            declared: None,
            overrun_reported: false,
        };
        if is_interim {
            self.end_message(msg, out, MessageEnd::Complete, None);
        } else {
            self.next_entity(msg, out);
        }
    }

    /// Checks that the entity declared at `offset` starts here.
    fn check_offset(&self, msg: &Message, out: &mut Vec<Event>, kind: EntityKind, offset: u64) {
        let actual = self.pos - msg.section_start;
        if actual != offset {
            self.anomaly(
                out,
                AnomalyCode::EncapsulatedOffsetMismatch,
                self.pos,
                format!(
                    "Encapsulated says {}={offset}, but it starts at {actual} (the end of the \
                     preceding header block)",
                    kind.as_str()
                ),
            );
        }
    }

    /// Moves on to the next declared entity, or ends the message.
    fn next_entity(&mut self, msg: Message, out: &mut Vec<Event>) {
        if let Some(&(kind, offset)) = msg.header_entities.get(msg.next_header) {
            self.check_offset(&msg, out, kind, offset);
            self.head.begin(self.pos);
            self.state = State::HttpHead(msg);
            return;
        }
        match msg.body {
            Some((EntityKind::NullBody, offset)) => {
                let declared = msg.declared;
                self.check_offset(&msg, out, EntityKind::NullBody, offset);
                if self.direction == Direction::Request {
                    if let Some((length, chunked)) = declared {
                        if chunked || length.is_some_and(|n| n > 0) {
                            self.anomaly(
                                out,
                                AnomalyCode::NullBodyWithContent,
                                self.pos,
                                format!(
                                    "null-body although the HTTP head declares {}: the body \
                                     never reaches the ICAP server",
                                    if chunked {
                                        "a chunked body".to_string()
                                    } else {
                                        format!("Content-Length {}", length.unwrap_or(0))
                                    }
                                ),
                            );
                        }
                    }
                }
                self.end_message(msg, out, MessageEnd::Complete, None);
            }
            Some((kind, offset)) => {
                self.check_offset(&msg, out, kind, offset);
                self.state = State::Body(ChunkedBody::new(), msg);
            }
            None => self.end_message(msg, out, MessageEnd::Complete, None),
        }
    }

    fn http_head(&mut self, msg: Message, input: &mut Bytes, out: &mut Vec<Event>) {
        loop {
            match self
                .line
                .read(input, &mut self.pos, self.limits.max_line_len)
            {
                LineStatus::Partial => {
                    self.state = State::HttpHead(msg);
                    return;
                }
                LineStatus::TooLong { start } => {
                    self.head.count(self.pos - start);
                    self.anomaly(
                        out,
                        AnomalyCode::LimitExceeded,
                        start,
                        format!(
                            "HTTP header line longer than {} bytes; skipped",
                            self.limits.max_line_len
                        ),
                    );
                }
                LineStatus::Complete(line)
                    if self.head.is_empty() && looks_like_icap_start(&line.bytes) =>
                {
                    self.entity_absent(&msg, out, line.start);
                    self.state = State::Idle;
                    self.start_line(line, out);
                    return;
                }
                LineStatus::Complete(line) if line.bytes.is_empty() => {
                    self.head.count(line.wire_len);
                    self.http_head_done(msg, out);
                    return;
                }
                LineStatus::Complete(line) => {
                    if self.head.push(&line, self.limits.max_head_len) {
                        self.anomaly(
                            out,
                            AnomalyCode::LimitExceeded,
                            line.start,
                            format!(
                                "HTTP head longer than {} bytes; the rest of it is ignored",
                                self.limits.max_head_len
                            ),
                        );
                    }
                }
            }
        }
    }

    fn http_head_done(&mut self, mut msg: Message, out: &mut Vec<Event>) {
        self.state = State::Idle;
        let (start, len) = (self.head.start, self.pos - self.head.start);
        let (block, _) = self.head.finish();
        let kind = msg
            .header_entities
            .get(msg.next_header)
            .map_or(EntityKind::ReqHdr, |(k, _)| *k);
        msg.next_header += 1;
        match parse_http_head(kind, &block, start, len, &self.limits) {
            Ok(head) => {
                msg.declared = Some((head.content_length, head.chunked));
                out.push(Event::HttpHead(Box::new(head)));
            }
            Err((code, detail)) => {
                msg.declared = None;
                self.anomaly(out, code, start, detail);
            }
        }
        self.next_entity(msg, out);
    }

    fn body(
        &mut self,
        mut chunked: ChunkedBody,
        mut msg: Message,
        input: &mut Bytes,
        out: &mut Vec<Event>,
    ) {
        loop {
            match chunked.step(input, &mut self.pos, &self.limits) {
                ChunkStep::NeedMore => {
                    self.state = State::Body(chunked, msg);
                    return;
                }
                ChunkStep::Data(mut data) => {
                    let before = msg.body_bytes;
                    msg.body_bytes += data.len() as u64;
                    let overrun = match msg.phase {
                        BodyPhase::Preview(n) if msg.body_bytes > n && !msg.overrun_reported => {
                            msg.overrun_reported = true;
                            Some(n)
                        }
                        _ => None,
                    };
                    let Some(n) = overrun else {
                        out.push(Event::Body(data));
                        continue;
                    };
                    // Split at the preview's limit so the anomaly sits at the
                    // same place in the events however the input was cut.
                    let within = n.saturating_sub(before) as usize;
                    let at = self.pos - (data.len() - within) as u64;
                    if within > 0 {
                        out.push(Event::Body(data.split_to(within)));
                    }
                    self.anomaly(
                        out,
                        AnomalyCode::PreviewOverrun,
                        at,
                        format!(
                            "more than the announced Preview: {n} bytes before the preview's zero chunk"
                        ),
                    );
                    out.push(Event::Body(data));
                }
                ChunkStep::Finding((code, at, detail)) => self.anomaly(out, code, at, detail),
                ChunkStep::End {
                    ieof,
                    use_original_body,
                } => {
                    self.body_end(msg, out, ieof, use_original_body);
                    return;
                }
                ChunkStep::Broken((code, at, detail)) => {
                    self.anomaly(
                        out,
                        code,
                        at,
                        format!("{detail}; skipped to the next message"),
                    );
                    self.state = State::Resync {
                        from: self.pos,
                        quiet: true,
                    };
                    return;
                }
                ChunkStep::NotABody(line) => {
                    self.entity_absent(&msg, out, line.start);
                    self.state = State::Idle;
                    self.start_line(line, out);
                    return;
                }
            }
        }
    }

    fn body_end(
        &mut self,
        mut msg: Message,
        out: &mut Vec<Event>,
        ieof: bool,
        use_original_body: Option<u64>,
    ) {
        match msg.phase {
            BodyPhase::Preview(n) => {
                if !ieof && msg.body_bytes < n {
                    let short = msg.body_bytes;
                    self.anomaly(
                        out,
                        AnomalyCode::PreviewShortWithoutIeof,
                        self.pos,
                        format!("a {short}-byte preview (Preview: {n}) ended without ieof although the body seems to have ended"),
                    );
                }
                out.push(Event::PreviewEnd {
                    offset: self.pos,
                    ieof,
                });
                if ieof {
                    self.end_message(msg, out, MessageEnd::Complete, use_original_body);
                } else {
                    msg.phase = BodyPhase::Remainder;
                    self.state = State::PreviewPaused(msg);
                }
            }
            BodyPhase::Whole | BodyPhase::Remainder => {
                if ieof {
                    self.anomaly(
                        out,
                        AnomalyCode::IeofOutsidePreview,
                        self.pos,
                        "a zero chunk with ieof outside a preview".to_string(),
                    );
                }
                self.end_message(msg, out, MessageEnd::Complete, use_original_body);
            }
        }
    }

    /// After a preview without `ieof`: a chunk-size line (a hex digit)
    /// continues the body; anything else means the server answered without
    /// asking for the rest, and the request ended with its preview.
    fn preview_paused(&mut self, msg: Message, input: &Bytes, out: &mut Vec<Event>) {
        if input.first().is_some_and(u8::is_ascii_hexdigit) {
            self.state = State::Body(ChunkedBody::new(), msg);
        } else {
            self.end_message(msg, out, MessageEnd::PreviewOnly, None);
        }
    }

    fn end_message(
        &mut self,
        msg: Message,
        out: &mut Vec<Event>,
        end: MessageEnd,
        uob: Option<u64>,
    ) {
        self.state = State::Idle;
        let real_body = matches!(msg.body, Some((k, _)) if k != EntityKind::NullBody);
        if end == MessageEnd::Complete && real_body && uob.is_none() {
            if let Some((Some(length), _)) = msg.declared {
                if length != msg.body_bytes {
                    self.anomaly(
                        out,
                        AnomalyCode::BodyLengthMismatch,
                        self.pos,
                        format!(
                            "the body has {} bytes but the HTTP head says Content-Length: {length}",
                            msg.body_bytes
                        ),
                    );
                }
            }
        }
        out.push(Event::MessageEnd {
            offset: self.pos,
            end,
            body_bytes: msg.body_bytes,
            use_original_body: uob,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever arrives, the decoder holds at most one line and one head.
    #[test]
    fn memory_stays_bounded_without_line_ends() {
        let limits = Limits::DEFAULT;
        for direction in [Direction::Request, Direction::Response] {
            let mut decoder = Decoder::new(direction);
            let mut out = Vec::new();
            let junk = Bytes::from(vec![b'A'; 64 * 1024]);
            for _ in 0..160 {
                decoder.decode(junk.clone(), &mut out);
                assert!(decoder.line.pending().len() <= limits.max_line_len);
            }
            assert_eq!(decoder.offset(), 160 * 64 * 1024);
            assert!(out.len() <= 2, "{out:?}");
        }
    }

    #[test]
    fn memory_stays_bounded_with_endless_headers() {
        let mut decoder = Decoder::new(Direction::Response);
        let mut out = Vec::new();
        decoder.decode(Bytes::from_static(b"ICAP/1.0 200 OK\r\n"), &mut out);
        let header = Bytes::from_static(b"X-Filler: 0123456789abcdef0123456789abcdef\r\n");
        for _ in 0..100_000 {
            decoder.decode(header.clone(), &mut out);
        }
        assert!(decoder.head.len > 4_000_000);
        assert!(decoder.head.overflowed);
        // Only the head that fitted is kept.
        let (block, lines) = decoder.head.finish();
        assert!(block.len() <= Limits::DEFAULT.max_head_len + 2);
        assert!(lines.len() < 2000);
    }

    #[test]
    fn a_head_fed_byte_by_byte_is_decoded_once_complete() {
        let mut decoder = Decoder::new(Direction::Response);
        let mut out = Vec::new();
        for &b in b"ICAP/1.0 204 No Content\r\nISTag: \"x\"\r\n\r\n" {
            decoder.decode(Bytes::copy_from_slice(&[b]), &mut out);
        }
        assert!(decoder.is_idle());
        assert_eq!(out.len(), 2);
    }
}
