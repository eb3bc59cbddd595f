//! Writing ICAP messages, shared by the mock sensor and the client: header
//! blocks, `Encapsulated` offsets (RFC 3507 section 4.4.1) and chunked
//! bodies with the preview terminators (section 4.5).
//!
//! The toolkit writes only well-formed messages here; deliberate violations
//! live in `sensor/malformed.rs` so a reader sees them in one place.

use bytes::{BufMut, BytesMut};
use icap_codec::{EntityKind, HttpHead};

/// Largest chunk the toolkit writes. Peers accept any size; 32 KiB keeps
/// chunk headers rare without making one chunk a large allocation.
pub const MAX_CHUNK_LEN: usize = 32 * 1024;

/// An ICAP or HTTP header block being written, ending with an empty line.
#[derive(Debug, Default)]
pub struct HeadBuilder {
    out: BytesMut,
}

impl HeadBuilder {
    /// Starts a block with its first line (request line or status line).
    pub fn new(first_line: &str) -> Self {
        let mut out = BytesMut::with_capacity(256);
        out.put_slice(first_line.as_bytes());
        out.put_slice(b"\r\n");
        HeadBuilder { out }
    }

    /// Appends `name: value`.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.push(name, value);
        self
    }

    /// Appends `name: value` in place.
    pub fn push(&mut self, name: &str, value: impl AsRef<[u8]>) {
        self.out.put_slice(name.as_bytes());
        self.out.put_slice(b": ");
        self.out.put_slice(value.as_ref());
        self.out.put_slice(b"\r\n");
    }

    /// Appends a header line exactly as given (folded lines included).
    pub fn raw_line(mut self, line: &str) -> Self {
        self.out.put_slice(line.as_bytes());
        self.out.put_slice(b"\r\n");
        self
    }

    /// Ends the block with its empty line.
    pub fn finish(mut self) -> BytesMut {
        self.out.put_slice(b"\r\n");
        self.out
    }
}

/// The `Encapsulated` value for HTTP header blocks `heads` (in order)
/// followed by the body entity `body`: each offset is where its entity
/// starts in the encapsulated section.
pub fn encapsulated_value(heads: &[(EntityKind, &[u8])], body: EntityKind) -> String {
    let mut offset = 0usize;
    let mut parts = Vec::with_capacity(heads.len() + 1);
    for (kind, head) in heads {
        parts.push(format!("{}={offset}", kind.as_str()));
        offset += head.len();
    }
    parts.push(format!("{}={offset}", body.as_str()));
    parts.join(", ")
}

/// Appends `data` as chunks (without the final zero chunk).
pub fn push_chunks(out: &mut BytesMut, data: &[u8]) {
    for chunk in data.chunks(MAX_CHUNK_LEN) {
        out.put_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.put_slice(chunk);
        out.put_slice(b"\r\n");
    }
}

/// Appends the zero chunk that ends a body or a preview; `ieof` says the
/// preview held the whole body.
pub fn push_last_chunk(out: &mut BytesMut, ieof: bool) {
    if ieof {
        out.put_slice(b"0; ieof\r\n\r\n");
    } else {
        out.put_slice(b"0\r\n\r\n");
    }
}

/// Appends `data` as a complete chunked body.
pub fn push_chunked_body(out: &mut BytesMut, data: &[u8]) {
    push_chunks(out, data);
    push_last_chunk(out, false);
}

/// Re-writes a decoded encapsulated HTTP head. The decoder keeps fields
/// but not the version token, so the head is written as HTTP/1.1, the
/// version every ICAP client sends.
pub fn http_head_bytes(head: &HttpHead) -> BytesMut {
    let first = match head.entity {
        EntityKind::ResHdr => format!(
            "HTTP/1.1 {} {}",
            head.status.unwrap_or(200),
            head.reason
                .as_ref()
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .unwrap_or_else(|| "OK".to_owned())
        ),
        _ => format!(
            "{} {} HTTP/1.1",
            head.method
                .as_ref()
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .unwrap_or_else(|| "GET".to_owned()),
            head.target
                .as_ref()
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .unwrap_or_else(|| "/".to_owned())
        ),
    };
    let mut builder = HeadBuilder::new(&first);
    for field in head.headers.iter() {
        builder.out.put_slice(&field.name);
        builder.out.put_slice(b": ");
        builder.out.put_slice(&field.value);
        builder.out.put_slice(b"\r\n");
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encapsulated_offsets_add_up_head_lengths() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let res = b"HTTP/1.1 200 OK\r\n\r\n";
        let value = encapsulated_value(
            &[(EntityKind::ReqHdr, req), (EntityKind::ResHdr, res)],
            EntityKind::ResBody,
        );
        assert_eq!(
            value,
            format!(
                "req-hdr=0, res-hdr={}, res-body={}",
                req.len(),
                req.len() + res.len()
            )
        );
        assert_eq!(encapsulated_value(&[], EntityKind::NullBody), "null-body=0");
    }

    #[test]
    fn chunked_body_splits_and_terminates() {
        let data = vec![b'a'; MAX_CHUNK_LEN + 3];
        let mut out = BytesMut::new();
        push_chunked_body(&mut out, &data);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.starts_with("8000\r\n"));
        assert!(text.ends_with("\r\n3\r\naaa\r\n0\r\n\r\n"));
        let mut ieof = BytesMut::new();
        push_last_chunk(&mut ieof, true);
        assert_eq!(&ieof[..], b"0; ieof\r\n\r\n");
    }
}
