//! Building ICAP requests (RFC 3507 sections 4.3.2, 4.4, 4.5, 4.8, 4.9):
//! the ICAP head with correct `Encapsulated` offsets, the encapsulated HTTP
//! heads, and the body chunked and split into the part sent with the head
//! (whole body, or the preview with its zero chunk) and the remainder sent
//! after `100 Continue`.

use base64::Engine;
use bytes::{Bytes, BytesMut};
use icap_codec::EntityKind;

use crate::toolkit::wire::{
    encapsulated_value, push_chunked_body, push_chunks, push_last_chunk, HeadBuilder,
};

/// The default ICAP port.
pub const ICAP_PORT: u16 = 1344;

/// The ICAP method to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IcapMethod {
    /// OPTIONS: ask the service for its capabilities.
    Options,
    /// REQMOD: an HTTP request (POST with the body, or GET without one).
    Reqmod,
    /// RESPMOD: an HTTP response carrying the body.
    Respmod,
}

impl IcapMethod {
    /// The method token.
    pub fn as_str(self) -> &'static str {
        match self {
            IcapMethod::Options => "OPTIONS",
            IcapMethod::Reqmod => "REQMOD",
            IcapMethod::Respmod => "RESPMOD",
        }
    }
}

/// Where to send: the parts of `icap://HOST[:PORT]/SERVICE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcapTarget {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Service path with its leading `/` (and query, if any).
    pub service: String,
}

impl IcapTarget {
    /// Parses `icap://HOST[:PORT]/SERVICE`.
    pub fn parse(uri: &str) -> Option<IcapTarget> {
        let rest = uri.strip_prefix("icap://")?;
        let (authority, service) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if after.is_empty() => ICAP_PORT,
                None => return None,
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().ok()?),
                None => (authority, ICAP_PORT),
            }
        };
        if host.is_empty() {
            return None;
        }
        Some(IcapTarget {
            host: host.to_owned(),
            port,
            service: service.to_owned(),
        })
    }

    /// `host:port` as a `Host` header and a connect address take it.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The request URI.
    pub fn uri(&self) -> String {
        format!("icap://{}{}", self.authority(), self.service)
    }
}

/// Everything that goes into one request.
#[derive(Clone, Debug)]
pub struct RequestSpec {
    /// Method.
    pub method: IcapMethod,
    /// Where to.
    pub target: IcapTarget,
    /// The HTTP body to have scanned; `None` sends `null-body`.
    pub body: Option<Bytes>,
    /// `Content-Type` of the encapsulated HTTP message.
    pub content_type: String,
    /// The encapsulated HTTP URL.
    pub url: String,
    /// `Preview: n`: send the first n body bytes, then wait.
    pub preview: Option<usize>,
    /// Send `Allow: 204`.
    pub allow_204: bool,
    /// `X-Client-IP`.
    pub client_ip: Option<String>,
    /// `X-Authenticated-User` (sent base64-encoded, as Squid does).
    pub user: Option<String>,
}

impl RequestSpec {
    /// A RESPMOD of `body` to `target` with no preview and no extras.
    pub fn respmod(target: IcapTarget, body: Bytes) -> RequestSpec {
        RequestSpec {
            method: IcapMethod::Respmod,
            target,
            body: Some(body),
            content_type: "application/octet-stream".to_owned(),
            url: "http://origin.test/file.bin".to_owned(),
            preview: None,
            allow_204: false,
            client_ip: None,
            user: None,
        }
    }
}

/// A request ready to send: `first` (the head and the body or preview)
/// goes at once; `rest` only after `100 Continue`.
#[derive(Clone, Debug)]
pub struct BuiltRequest {
    /// ICAP head, HTTP heads, and the whole chunked body or the preview.
    pub first: Bytes,
    /// Length of the ICAP head plus HTTP heads at the start of `first`.
    pub head_len: usize,
    /// The chunked remainder after a preview without `ieof`.
    pub rest: Option<Bytes>,
    /// Body bytes in the request (before chunking).
    pub body_len: usize,
    /// Whether a preview was sent with `ieof` (the whole body fitted).
    pub ieof: bool,
}

impl BuiltRequest {
    /// The pieces in wire order: head, body part sent with it, remainder.
    pub fn parts(&self) -> Vec<Bytes> {
        let mut parts = vec![
            self.first.slice(..self.head_len),
            self.first.slice(self.head_len..),
        ];
        if let Some(rest) = &self.rest {
            parts.push(rest.clone());
        }
        parts
    }

    /// Total bytes on the wire when the remainder is sent.
    pub fn wire_len(&self) -> usize {
        self.first.len() + self.rest.as_ref().map_or(0, Bytes::len)
    }
}

fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// Builds the bytes of one request.
pub fn build_request(spec: &RequestSpec) -> BuiltRequest {
    let host = url_host(&spec.url);
    let body = spec.body.as_ref();
    let http_heads: Vec<(EntityKind, BytesMut)> = match spec.method {
        IcapMethod::Options => Vec::new(),
        IcapMethod::Reqmod => {
            let head = match body {
                Some(b) => HeadBuilder::new(&format!("POST {} HTTP/1.1", spec.url))
                    .header("Host", host)
                    .header("Content-Type", &spec.content_type)
                    .header("Content-Length", b.len().to_string()),
                None => {
                    HeadBuilder::new(&format!("GET {} HTTP/1.1", spec.url)).header("Host", host)
                }
            };
            vec![(EntityKind::ReqHdr, head.finish())]
        }
        IcapMethod::Respmod => {
            let req = HeadBuilder::new(&format!("GET {} HTTP/1.1", spec.url))
                .header("Host", host)
                .finish();
            let mut res =
                HeadBuilder::new("HTTP/1.1 200 OK").header("Content-Type", &spec.content_type);
            if let Some(b) = body {
                res.push("Content-Length", b.len().to_string());
            }
            vec![
                (EntityKind::ReqHdr, req),
                (EntityKind::ResHdr, res.finish()),
            ]
        }
    };
    let body_kind = match (spec.method, body) {
        (IcapMethod::Options, _) => None,
        (_, None) => Some(EntityKind::NullBody),
        (IcapMethod::Reqmod, Some(_)) => Some(EntityKind::ReqBody),
        (IcapMethod::Respmod, Some(_)) => Some(EntityKind::ResBody),
    };

    let mut head = HeadBuilder::new(&format!(
        "{} {} ICAP/1.0",
        spec.method.as_str(),
        spec.target.uri()
    ))
    .header("Host", spec.target.authority())
    .header(
        "User-Agent",
        concat!("icaptap-client/", env!("CARGO_PKG_VERSION")),
    );
    if spec.allow_204 {
        head.push("Allow", "204");
    }
    let preview = spec
        .preview
        .filter(|_| body_kind.is_some_and(|k| k != EntityKind::NullBody));
    if let Some(n) = preview {
        head.push("Preview", n.to_string());
    }
    if let Some(ip) = &spec.client_ip {
        head.push("X-Client-IP", ip);
    }
    if let Some(user) = &spec.user {
        head.push(
            "X-Authenticated-User",
            base64::engine::general_purpose::STANDARD.encode(user.as_bytes()),
        );
    }
    if let Some(kind) = body_kind {
        let heads: Vec<(EntityKind, &[u8])> =
            http_heads.iter().map(|(k, b)| (*k, &b[..])).collect();
        head.push("Encapsulated", encapsulated_value(&heads, kind));
    }
    let mut first = head.finish();
    for (_, bytes) in &http_heads {
        first.extend_from_slice(bytes);
    }
    let head_len = first.len();

    let mut rest = None;
    let mut ieof = false;
    if let (Some(b), Some(kind)) = (body, body_kind) {
        if kind != EntityKind::NullBody {
            match preview {
                None => push_chunked_body(&mut first, b),
                Some(n) if b.len() <= n => {
                    push_chunks(&mut first, b);
                    push_last_chunk(&mut first, true);
                    ieof = true;
                }
                Some(n) => {
                    push_chunks(&mut first, &b[..n]);
                    push_last_chunk(&mut first, false);
                    let mut remainder = BytesMut::with_capacity(b.len() - n + 64);
                    push_chunked_body(&mut remainder, &b[n..]);
                    rest = Some(remainder.freeze());
                }
            }
        }
    }
    BuiltRequest {
        first: first.freeze(),
        head_len,
        rest,
        body_len: body.map_or(0, Bytes::len),
        ieof,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> IcapTarget {
        IcapTarget::parse("icap://127.0.0.1:1344/av/respmod").unwrap()
    }

    #[test]
    fn parses_icap_uris() {
        assert_eq!(target().port, 1344);
        assert_eq!(
            IcapTarget::parse("icap://[::1]:11344/echo")
                .unwrap()
                .authority(),
            "[::1]:11344"
        );
        assert_eq!(IcapTarget::parse("icap://sensor").unwrap().service, "/");
        assert!(IcapTarget::parse("http://x/").is_none());
        assert!(IcapTarget::parse("icap://h:notaport/x").is_none());
    }

    #[test]
    fn respmod_offsets_point_at_each_head() {
        let mut spec = RequestSpec::respmod(target(), Bytes::from_static(b"hello"));
        spec.allow_204 = true;
        let req = build_request(&spec);
        let text = String::from_utf8(req.first.to_vec()).unwrap();
        let icap_end = text.find("\r\n\r\n").unwrap() + 4;
        let enc = text
            .lines()
            .find(|l| l.starts_with("Encapsulated:"))
            .unwrap();
        let offsets: Vec<usize> = enc
            .split(['=', ','])
            .filter_map(|p| p.trim().parse().ok())
            .collect();
        assert_eq!(offsets[0], 0);
        let section = &text[icap_end..];
        assert!(section[offsets[1]..].starts_with("HTTP/1.1 200 OK"));
        assert!(section[offsets[2]..].starts_with("5\r\nhello\r\n0\r\n\r\n"));
        assert!(text.contains("Allow: 204\r\n"));
        assert!(req.rest.is_none());
    }

    #[test]
    fn preview_splits_body_and_marks_ieof() {
        let mut spec = RequestSpec::respmod(target(), Bytes::from_static(b"0123456789"));
        spec.preview = Some(4);
        let req = build_request(&spec);
        assert!(req.first.ends_with(b"4\r\n0123\r\n0\r\n\r\n"));
        assert_eq!(&req.rest.clone().unwrap()[..], b"6\r\n456789\r\n0\r\n\r\n");
        assert_eq!(req.parts().len(), 3);
        spec.preview = Some(10);
        let req = build_request(&spec);
        assert!(req.first.ends_with(b"a\r\n0123456789\r\n0; ieof\r\n\r\n"));
        assert!(req.ieof && req.rest.is_none());
    }

    #[test]
    fn reqmod_without_body_is_null_body_and_options_has_no_encapsulated() {
        let mut spec = RequestSpec::respmod(target(), Bytes::new());
        spec.method = IcapMethod::Reqmod;
        spec.body = None;
        spec.user = Some("WinNT://LAB/alice".to_owned());
        let text = String::from_utf8(build_request(&spec).first.to_vec()).unwrap();
        assert!(text.contains("Encapsulated: req-hdr=0, null-body="));
        assert!(text.contains("X-Authenticated-User: V2luTlQ6Ly9MQUIvYWxpY2U=\r\n"));
        spec.method = IcapMethod::Options;
        let text = String::from_utf8(build_request(&spec).first.to_vec()).unwrap();
        assert!(!text.contains("Encapsulated"));
        assert!(text.starts_with("OPTIONS icap://127.0.0.1:1344/av/respmod ICAP/1.0\r\n"));
    }
}
