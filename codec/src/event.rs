//! Values the decoder hands out: message heads, encapsulated HTTP heads, body
//! data and the end of each message (RFC 3507 sections 4.3 to 4.5).
//!
//! Every byte slice here is a [`Bytes`] that shares the input buffer where the
//! bytes were contiguous in it: body data is never copied.

use bytes::Bytes;

use crate::anomaly::Anomaly;
use crate::encapsulated::{Encapsulated, EntityKind};
use crate::vocabulary::Method;

/// One header field as it appeared on the wire (folded lines joined by a
/// single space, name case preserved).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The field name, as sent.
    pub name: Bytes,
    /// The field value, leading and trailing whitespace removed.
    pub value: Bytes,
}

/// An ordered list of header fields; look-ups ignore the case of names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    /// The first value of the field `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| &h.value)
    }

    /// The first value of `name` as UTF-8 text, if it is valid UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of the field `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Bytes> + 'a {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| &h.value)
    }

    /// Whether a field `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Iterates over all fields in wire order.
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The head of an ICAP request: request line and ICAP header block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Stream offset of the first byte of the request line.
    pub offset: u64,
    /// The method.
    pub method: Method,
    /// The request URI as sent (normally `icap://host[:port]/service[?args]`).
    pub uri: Bytes,
    /// The protocol version token as sent (normally `ICAP/1.0`).
    pub version: Bytes,
    /// The ICAP header fields.
    pub headers: Headers,
    /// The parsed `Encapsulated` header, when present and valid.
    pub encapsulated: Option<Encapsulated>,
    /// `Preview: n`, when present and valid.
    pub preview: Option<u64>,
    /// Whether `Allow:` lists `204`.
    pub allow_204: bool,
    /// Whether `Allow:` lists `206`.
    pub allow_206: bool,
    /// Length in bytes of the ICAP head including its final empty line.
    pub head_len: u64,
}

/// The head of an ICAP response: status line and ICAP header block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Stream offset of the first byte of the status line.
    pub offset: u64,
    /// The status code (100, 200, 204, 206, 4xx, 5xx...).
    pub status: u16,
    /// The reason phrase as sent.
    pub reason: Bytes,
    /// The protocol version token as sent.
    pub version: Bytes,
    /// The ICAP header fields.
    pub headers: Headers,
    /// The parsed `Encapsulated` header; `None` when absent (normal on 100
    /// and 204, where it means "no body") or invalid.
    pub encapsulated: Option<Encapsulated>,
    /// The `ISTag` value as sent (quotes included), when present.
    pub istag: Option<Bytes>,
    /// Length in bytes of the ICAP head including its final empty line.
    pub head_len: u64,
}

/// An encapsulated HTTP header block (`req-hdr` or `res-hdr`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpHead {
    /// Which encapsulated entity this is: [`EntityKind::ReqHdr`] or
    /// [`EntityKind::ResHdr`].
    pub entity: EntityKind,
    /// Stream offset of the first byte of the HTTP head.
    pub offset: u64,
    /// Length of the HTTP head in bytes, including its final empty line.
    pub len: u64,
    /// Request method (for `req-hdr`), e.g. `GET`, `CONNECT`.
    pub method: Option<Bytes>,
    /// Request target (for `req-hdr`), e.g. `http://host/path`.
    pub target: Option<Bytes>,
    /// Status code (for `res-hdr`).
    pub status: Option<u16>,
    /// Reason phrase (for `res-hdr`).
    pub reason: Option<Bytes>,
    /// The HTTP header fields.
    pub headers: Headers,
    /// `Content-Length`, when present and numeric.
    pub content_length: Option<u64>,
    /// Whether `Transfer-Encoding` names `chunked`.
    pub chunked: bool,
}

/// How a message ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageEnd {
    /// The whole message was received: the head, every encapsulated header
    /// block and the final zero chunk of the body (or no body).
    Complete,
    /// A request that sent a preview without `ieof` and was not continued:
    /// the next request started (or the stream ended) without the remainder,
    /// which is what happens after a 204 or 200 answer to a preview.
    PreviewOnly,
}

/// One thing the decoder found in the stream, in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An ICAP request head (request direction).
    RequestHead(Box<RequestHead>),
    /// An ICAP response head (response direction).
    ResponseHead(Box<ResponseHead>),
    /// An encapsulated HTTP head.
    HttpHead(Box<HttpHead>),
    /// De-chunked encapsulated body data; slices of the input, never copies.
    Body(Bytes),
    /// The zero chunk that ends a preview (`0\r\n\r\n`, or `0; ieof\r\n\r\n`
    /// when the whole body fitted).
    PreviewEnd {
        /// Stream offset just after the zero chunk.
        offset: u64,
        /// Whether the zero chunk carried `ieof`.
        ieof: bool,
    },
    /// The end of a message.
    MessageEnd {
        /// Stream offset just after the last byte of the message.
        offset: u64,
        /// How it ended.
        end: MessageEnd,
        /// De-chunked body bytes in the message (preview included).
        body_bytes: u64,
        /// `use-original-body=N` from a 206 response's final chunk, if any.
        use_original_body: Option<u64>,
    },
    /// A protocol violation or oddity; decoding goes on.
    Anomaly(Anomaly),
}
