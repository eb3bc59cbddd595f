//! Anomalies: protocol violations and oddities found while decoding, each
//! with a stable kebab-case code, the side that caused it, a severity and the
//! byte offset in that side's stream. docs/anomalies.md describes every code.
//!
//! A recoverable oddity is an event, never an `Err`: the decoder reports it
//! and goes on.

use crate::vocabulary::Direction;

/// Who caused an anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The ICAP client (the web proxy).
    Client,
    /// The ICAP server (the sensor).
    Server,
}

impl Side {
    /// `client` or `server`, as written in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }

    /// The side that sends the stream going in `direction`.
    pub fn of(direction: Direction) -> Side {
        match direction {
            Direction::Request => Side::Client,
            Direction::Response => Side::Server,
        }
    }
}

/// How bad an anomaly is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing; not a violation by itself.
    Info,
    /// A violation peers usually survive, or a sign of trouble.
    Warn,
    /// A violation that breaks or loses an exchange.
    Error,
}

impl Severity {
    /// `info`, `warn` or `error`, as written in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Error => "error",
        }
    }
}

macro_rules! anomaly_codes {
    ($( $(#[$doc:meta])* $variant:ident => $code:literal, $severity:ident; )*) => {
        /// Every anomaly the codec (decoder and correlator) can report.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum AnomalyCode {
            $( $(#[$doc])* $variant, )*
        }

        impl AnomalyCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [AnomalyCode] = &[ $( AnomalyCode::$variant, )* ];

            /// The stable kebab-case code written in records.
            pub fn as_str(self) -> &'static str {
                match self { $( AnomalyCode::$variant => $code, )* }
            }

            /// The default severity of this code.
            pub fn severity(self) -> Severity {
                match self { $( AnomalyCode::$variant => Severity::$severity, )* }
            }
        }
    };
}

anomaly_codes! {
    /// The first line of a message is neither a valid ICAP request line nor
    /// a valid status line; the decoder skips to the next plausible one.
    StartLineInvalid => "start-line-invalid", Error;
    /// A request method other than OPTIONS, REQMOD or RESPMOD.
    MethodUnknown => "method-unknown", Warn;
    /// A protocol version other than `ICAP/1.0`.
    VersionUnsupported => "version-unsupported", Warn;
    /// A request URI that is not `icap://` or `icaps://`.
    UriInvalid => "uri-invalid", Warn;
    /// A response status code outside those RFC 3507 defines.
    StatusUnknown => "status-unknown", Warn;
    /// A header line without a colon, or with an invalid name.
    HeaderLineInvalid => "header-line-invalid", Error;
    /// A header that must appear once appears several times.
    HeaderDuplicate => "header-duplicate", Warn;
    /// A configured limit was exceeded (line length, header block size,
    /// header count, chunk-size digits); the excess is skipped, not buffered.
    LimitExceeded => "limit-exceeded", Error;
    /// A message that needs `Encapsulated` has none.
    EncapsulatedMissing => "encapsulated-missing", Error;
    /// The `Encapsulated` value cannot be parsed.
    EncapsulatedSyntax => "encapsulated-syntax", Error;
    /// Entities in the wrong order, repeated, or a body entity not last.
    EncapsulatedOrder => "encapsulated-order", Error;
    /// Offsets that do not increase.
    EncapsulatedOffsetOrder => "encapsulated-offset-order", Error;
    /// A form not allowed for this method and direction (RFC 3507 4.4.1).
    EncapsulatedForm => "encapsulated-form", Error;
    /// An offset that does not fall at the end of the preceding header
    /// block (its CRLFCRLF).
    EncapsulatedOffsetMismatch => "encapsulated-offset-mismatch", Error;
    /// An entity declared in `Encapsulated` never arrived.
    EncapsulatedEntityAbsent => "encapsulated-entity-absent", Error;
    /// An encapsulated HTTP head that cannot be parsed.
    HttpHeadInvalid => "http-head-invalid", Error;
    /// `null-body` although the encapsulated HTTP head declares a body
    /// (non-zero Content-Length or chunked): the body never reaches the sensor.
    NullBodyWithContent => "null-body-with-content", Warn;
    /// A chunk-size line that is not hexadecimal or overflows.
    ChunkSizeInvalid => "chunk-size-invalid", Error;
    /// Chunk data not followed by CRLF.
    ChunkCrlfMissing => "chunk-crlf-missing", Error;
    /// A chunk extension other than `ieof` or `use-original-body`.
    ChunkExtensionUnknown => "chunk-extension-unknown", Info;
    /// The stream ended inside a chunked body, before the zero chunk.
    ChunkFinalMissing => "chunk-final-missing", Error;
    /// The de-chunked body length differs from the encapsulated HTTP
    /// `Content-Length`.
    BodyLengthMismatch => "body-length-mismatch", Warn;
    /// `Preview:` is not a non-negative integer.
    PreviewInvalid => "preview-invalid", Error;
    /// More body bytes before the preview's zero chunk than `Preview: n`.
    PreviewOverrun => "preview-overrun", Error;
    /// A preview shorter than `Preview: n` ended without `ieof`.
    PreviewShortWithoutIeof => "preview-short-without-ieof", Warn;
    /// `ieof` outside a preview.
    IeofOutsidePreview => "ieof-outside-preview", Warn;
    /// A response other than 100 without `ISTag`.
    IstagMissing => "istag-missing", Error;
    /// An `ISTag` that is unquoted or longer than 32 bytes.
    IstagInvalid => "istag-invalid", Warn;
    /// The stream ended (or a gap began) in the middle of a message.
    MessageTruncated => "message-truncated", Error;
    /// Bytes between messages that do not start a message, e.g. a stray
    /// `0\r\n\r\n`; they were skipped.
    StrayBytes => "stray-bytes", Warn;
    /// A TLS handshake on a plain ICAP port.
    TlsOnPlainPort => "tls-on-plain-port", Error;
    /// The server answered in another protocol (an HTTP status line, an
    /// SSH or SMTP greeting, any first line not `ICAP/`): the client is
    /// pointed at something that is not an ICAP service.
    ResponseNotIcap => "response-not-icap", Error;
    /// Bytes of the stream were not seen (capture loss, observer overload);
    /// decoding resumed at the next plausible message.
    StreamGap => "stream-gap", Warn;
    /// The OPTIONS response does not put `*` in exactly one of
    /// Transfer-Preview, Transfer-Ignore and Transfer-Complete.
    OptionsTransferInvalid => "options-transfer-invalid", Warn;
    /// An OPTIONS response header with an invalid value (Max-Connections,
    /// Options-TTL, Preview not numeric; Methods empty).
    OptionsHeaderInvalid => "options-header-invalid", Warn;
    /// An OPTIONS answered with a status other than 200, or with a body
    /// other than `opt-body`.
    OptionsReplyInvalid => "options-reply-invalid", Error;
    /// `100 Continue` sent to a request that had no preview.
    ContinueWithoutPreview => "continue-without-preview", Error;
    /// `100 Continue` sent after the client signalled `ieof`.
    ContinueAfterIeof => "continue-after-ieof", Error;
    /// The server answered `100 Continue` but the client sent a new request
    /// instead of the rest of the body.
    ContinueIgnored => "continue-ignored", Error;
    /// The client sent the rest of a preview body without a `100 Continue`.
    ContinueUnrequested => "continue-unrequested", Error;
    /// `204` outside a preview to a request without `Allow: 204`.
    Status204NotAllowed => "status-204-not-allowed", Error;
    /// `206` to a request without `Allow: 206`.
    Status206NotAllowed => "status-206-not-allowed", Error;
    /// A response with no request waiting for it.
    ResponseUnsolicited => "response-unsolicited", Error;
    /// A RESPMOD answered 200 with `null-body` although the original
    /// response had a body: the content is lost.
    ContentLost => "content-lost", Error;
    /// A 200 whose body ended cleanly short of its own Content-Length and
    /// of the body the client sent: truncated by the sensor, a possible
    /// late detection (the sensor sent part of the body before its scan
    /// ended, then cut the rest). Replaces `body-length-mismatch`.
    BodyTruncatedBySensor => "body-truncated-by-sensor", Error;
    /// An OPTIONS 200 without `Encapsulated`: RFC 3507 asks for one in
    /// every message, clients accept its absence. Replaces
    /// `encapsulated-missing` for OPTIONS answers.
    OptionsEncapsulatedMissing => "options-encapsulated-missing", Warn;
    /// More requests waiting for answers on one connection than icaptap
    /// tracks (`--max-pipeline`): the oldest was given up undecided, its
    /// answer is skipped when it comes, and later pairs stay true.
    PipelineTooDeep => "pipeline-too-deep", Warn;
    /// A request that began after bytes of its connection were not seen:
    /// which answer belongs to it cannot be told, so no verdict is claimed.
    PairingUncertain => "pairing-uncertain", Warn;
}

/// One anomaly found in a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    /// The stable code.
    pub code: AnomalyCode,
    /// Who caused it.
    pub side: Side,
    /// The stream offset (in `side`'s stream) where it was found.
    pub offset: u64,
    /// A short human-readable detail (what was seen, what was expected).
    pub detail: String,
}

impl Anomaly {
    /// An anomaly of `code` caused by `side` at `offset`.
    pub fn new(code: AnomalyCode, side: Side, offset: u64, detail: impl Into<String>) -> Self {
        Anomaly {
            code,
            side,
            offset,
            detail: detail.into(),
        }
    }

    /// The severity of this anomaly's code.
    pub fn severity(&self) -> Severity {
        self.code.severity()
    }
}
