//! Message heads (RFC 3507 sections 4.3 and 4.4), parsed from framed
//! lines: the ICAP request line (4.3.2) and status line (4.3.3), header
//! blocks with case-insensitive names and folded continuation lines, ISTag
//! and numeric values, and encapsulated HTTP heads.

use bytes::{Bytes, BytesMut};

use crate::anomaly::AnomalyCode;
use crate::encapsulated::EntityKind;
use crate::event::{Header, Headers, HttpHead};
use crate::framing::Line;
use crate::limits::Limits;
use crate::vocabulary::{Direction, Method};

/// A violation found while parsing a head: code, stream offset, detail.
pub(crate) type Finding = (AnomalyCode, u64, String);

/// Why a first line is not a usable start line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StartLineError {
    /// It does not look like the start of a message at all.
    NotAStartLine,
    /// It starts like one but is malformed.
    Malformed(&'static str),
}

/// The ICAP methods RFC 3507 defines.
const KNOWN_METHODS: [&[u8]; 3] = [b"OPTIONS", b"REQMOD", b"RESPMOD"];

/// The status codes RFC 3507 section 4.3.3 (and the 206 draft) define.
const KNOWN_STATUSES: [u16; 13] = [
    100, 200, 204, 206, 400, 404, 405, 408, 500, 501, 502, 503, 505,
];

/// Whether `line` can start a message when resynchronising: a known method
/// followed by a space (requests) or `ICAP/` (responses).
pub(crate) fn is_plausible_start(direction: Direction, line: &[u8]) -> bool {
    match direction {
        Direction::Request => KNOWN_METHODS
            .iter()
            .any(|m| line.len() > m.len() && line.starts_with(m) && line[m.len()] == b' '),
        Direction::Response => line.starts_with(b"ICAP/"),
    }
}

/// Whether `line` is the start line of an ICAP message in either direction;
/// used to notice a declared entity that never came.
pub(crate) fn looks_like_icap_start(line: &[u8]) -> bool {
    if line.starts_with(b"ICAP/") {
        return true;
    }
    let mut parts = line.split(|&b| b == b' ');
    let (_, _, version) = (parts.next(), parts.next(), parts.next());
    matches!(version, Some(v) if v.starts_with(b"ICAP/")) && parts.next().is_none()
}

/// What answered, when a response-direction line where an ICAP status line
/// was due is the answer of a server of another protocol: an HTTP status
/// line or an SSH greeting wherever a message may start, a text-protocol
/// greeting (`220 ...`, `+OK`) only as the server's first line. Anything
/// else may just be stray bytes between ICAP messages (a lone `0`).
pub(crate) fn foreign_answer(line: &[u8], at_stream_start: bool) -> Option<&'static str> {
    let greeting = line.len() >= 4
        && line[..3].iter().all(u8::is_ascii_digit)
        && matches!(line[3], b' ' | b'-');
    if line.starts_with(b"HTTP/") {
        Some("an HTTP server, not an ICAP service, answered")
    } else if line.starts_with(b"SSH-") {
        Some("an SSH server, not an ICAP service, answered")
    } else if at_stream_start && greeting {
        Some("a text-protocol server (an SMTP or FTP greeting), not an ICAP service, answered")
    } else if at_stream_start && (line.starts_with(b"+OK") || line.starts_with(b"-ERR")) {
        Some("a text-protocol server (POP3 or Redis style), not an ICAP service, answered")
    } else {
        None
    }
}

/// The first bytes of `line` for an anomaly detail: at most 60, control
/// bytes escaped.
pub(crate) fn first_bytes(line: &[u8]) -> String {
    let shown = &line[..line.len().min(60)];
    let text: String = shown.escape_ascii().to_string();
    if line.len() > shown.len() {
        format!("{text}...")
    } else {
        text
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// An ICAP request line: `METHOD SP URI SP VERSION`.
pub(crate) struct RequestLine {
    pub method: Method,
    pub uri: Bytes,
    pub version: Bytes,
}

/// Parses a request line; `NotAStartLine` unless it names a known method or
/// carries an `ICAP/` version.
pub(crate) fn parse_request_line(line: &Bytes) -> Result<RequestLine, StartLineError> {
    let known = is_plausible_start(Direction::Request, line);
    let malformed = |why| {
        if known {
            Err(StartLineError::Malformed(why))
        } else {
            Err(StartLineError::NotAStartLine)
        }
    };
    let Some(sp1) = memchr::memchr(b' ', line) else {
        return malformed("no space after the method");
    };
    let Some(sp2) = memchr::memchr(b' ', &line[sp1 + 1..]).map(|i| sp1 + 1 + i) else {
        return malformed("no space after the URI");
    };
    let (method, uri, version) = (&line[..sp1], &line[sp1 + 1..sp2], &line[sp2 + 1..]);
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return malformed("the method is not a token");
    }
    if !version.starts_with(b"ICAP/") {
        return malformed("the version is not ICAP/x.y");
    }
    if uri.is_empty() || version.contains(&b' ') {
        return malformed("expected METHOD SP URI SP VERSION");
    }
    let method = match method {
        b"OPTIONS" => Method::Options,
        b"REQMOD" => Method::Reqmod,
        b"RESPMOD" => Method::Respmod,
        _ => Method::Other(line.slice(..sp1)),
    };
    Ok(RequestLine {
        method,
        uri: line.slice(sp1 + 1..sp2),
        version: line.slice(sp2 + 1..),
    })
}

/// An ICAP status line: `VERSION SP CODE SP REASON`.
pub(crate) struct StatusLine {
    pub version: Bytes,
    pub status: u16,
    pub reason: Bytes,
}

/// Parses a status line; `NotAStartLine` unless it starts with `ICAP/`.
pub(crate) fn parse_status_line(line: &Bytes) -> Result<StatusLine, StartLineError> {
    if !line.starts_with(b"ICAP/") {
        return Err(StartLineError::NotAStartLine);
    }
    let Some(sp1) = memchr::memchr(b' ', line) else {
        return Err(StartLineError::Malformed("no status code"));
    };
    let rest = &line[sp1 + 1..];
    let code = rest.get(..3).unwrap_or(rest);
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return Err(StartLineError::Malformed(
            "the status code is not three digits",
        ));
    }
    if rest.len() > 3 && rest[3] != b' ' {
        return Err(StartLineError::Malformed(
            "the status code is not three digits",
        ));
    }
    let status = code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    let reason = if rest.len() > 4 {
        line.slice(sp1 + 5..)
    } else {
        Bytes::new()
    };
    Ok(StatusLine {
        version: line.slice(..sp1),
        status,
        reason,
    })
}

/// Whether RFC 3507 defines `status`.
pub(crate) fn is_known_status(status: u16) -> bool {
    KNOWN_STATUSES.contains(&status)
}

/// Headers that must appear at most once in an ICAP head.
const SINGLETONS: [&str; 3] = ["Encapsulated", "ISTag", "Preview"];

fn trim(bytes: &Bytes) -> Bytes {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    bytes.slice(start..end)
}

/// Parses the header lines of an ICAP head (the start line excluded):
/// folded lines are joined to the previous value with one space, invalid
/// lines and duplicated singletons are reported, and at most
/// `limits.max_headers` fields are kept.
pub(crate) fn parse_header_lines(
    lines: &[Line],
    limits: &Limits,
    findings: &mut Vec<Finding>,
) -> Headers {
    let mut headers: Vec<Header> = Vec::with_capacity(lines.len());
    let mut count_reported = false;
    for line in lines {
        let bytes = &line.bytes;
        if matches!(bytes.first(), Some(b' ' | b'\t')) {
            match headers.last_mut() {
                Some(last) => {
                    let cont = trim(bytes);
                    let mut joined = BytesMut::with_capacity(last.value.len() + 1 + cont.len());
                    joined.extend_from_slice(&last.value);
                    joined.extend_from_slice(b" ");
                    joined.extend_from_slice(&cont);
                    last.value = joined.freeze();
                }
                None => findings.push((
                    AnomalyCode::HeaderLineInvalid,
                    line.start,
                    "a continuation line before any header field".into(),
                )),
            }
            continue;
        }
        let colon = memchr::memchr(b':', bytes);
        let name_ok = colon.is_some_and(|c| c > 0 && bytes[..c].iter().all(|&b| is_tchar(b)));
        let Some(colon) = colon.filter(|_| name_ok) else {
            findings.push((
                AnomalyCode::HeaderLineInvalid,
                line.start,
                format!(
                    "header line without a valid `name:`: {:?}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(64)])
                ),
            ));
            continue;
        };
        if headers.len() >= limits.max_headers {
            if !count_reported {
                count_reported = true;
                findings.push((
                    AnomalyCode::LimitExceeded,
                    line.start,
                    format!(
                        "more than {} header fields; the rest are ignored",
                        limits.max_headers
                    ),
                ));
            }
            continue;
        }
        // RFC 9110 section 5.5: a field value holds no control character
        // but HTAB. Trimming would hide one at either end (a CR turned
        // into a form feed), so it is reported before.
        if let Some(&ctl) = bytes[colon + 1..]
            .iter()
            .find(|&&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            findings.push((
                AnomalyCode::HeaderLineInvalid,
                line.start,
                format!(
                    "control character 0x{ctl:02x} in the value of `{}`",
                    String::from_utf8_lossy(&bytes[..colon])
                ),
            ));
        }
        headers.push(Header {
            name: bytes.slice(..colon),
            value: trim(&bytes.slice(colon + 1..)),
        });
    }
    for name in SINGLETONS {
        let count = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name.as_bytes()))
            .count();
        if count > 1 {
            let offset = lines
                .iter()
                .filter(|l| {
                    l.bytes.len() > name.len()
                        && l.bytes[..name.len()].eq_ignore_ascii_case(name.as_bytes())
                        && l.bytes[name.len()] == b':'
                })
                .nth(1)
                .map_or(0, |l| l.start);
            findings.push((
                AnomalyCode::HeaderDuplicate,
                offset,
                format!("`{name}` appears more than once; the first is used"),
            ));
        }
    }
    Headers(headers)
}

/// Checks an `ISTag` value: a quoted string of at most 32 bytes
/// (RFC 3507 section 4.7).
pub(crate) fn istag_problem(value: &[u8]) -> Option<String> {
    if value.len() < 2 || value[0] != b'"' || value[value.len() - 1] != b'"' {
        return Some(format!(
            "ISTag {:?} is not a quoted string",
            String::from_utf8_lossy(value)
        ));
    }
    if value.len() - 2 > 32 {
        return Some(format!(
            "ISTag is {} bytes long; at most 32 are allowed",
            value.len() - 2
        ));
    }
    None
}

/// Parses a non-negative decimal number (Preview, Max-Connections...).
pub(crate) fn parse_decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The most header fields httparse is given room for in one HTTP head.
const HTTP_HEADER_SLOTS: usize = 128;

/// Parses an encapsulated HTTP head (`block`: its lines, each ended by
/// CRLF, then a final CRLF) with httparse. `start` and `len` are its stream
/// offset and wire length.
pub(crate) fn parse_http_head(
    entity: EntityKind,
    block: &Bytes,
    start: u64,
    len: u64,
    limits: &Limits,
) -> Result<HttpHead, (AnomalyCode, String)> {
    let mut slots = [httparse::EMPTY_HEADER; HTTP_HEADER_SLOTS];
    let room = limits.max_headers.clamp(1, HTTP_HEADER_SLOTS);
    let slots = &mut slots[..room];
    let invalid = |e: httparse::Error| match e {
        httparse::Error::TooManyHeaders => (
            AnomalyCode::LimitExceeded,
            format!("{} has more than {room} header fields", entity.as_str()),
        ),
        e => (
            AnomalyCode::HttpHeadInvalid,
            format!("{} is not a valid HTTP head: {e}", entity.as_str()),
        ),
    };
    let partial = || {
        (
            AnomalyCode::HttpHeadInvalid,
            format!("{} is not a complete HTTP head", entity.as_str()),
        )
    };
    let mut head = HttpHead {
        entity,
        offset: start,
        len,
        method: None,
        target: None,
        status: None,
        reason: None,
        headers: Headers::default(),
        content_length: None,
        chunked: false,
    };
    let fields: Vec<Header> = if entity == EntityKind::ResHdr {
        let mut res = httparse::Response::new(slots);
        let mut config = httparse::ParserConfig::default();
        config.allow_obsolete_multiline_headers_in_responses(true);
        match config.parse_response(&mut res, block) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(partial()),
            Err(e) => return Err(invalid(e)),
        }
        head.status = res.code;
        head.reason = res.reason.map(|r| block.slice_ref(r.as_bytes()));
        to_headers(block, res.headers)
    } else {
        let mut req = httparse::Request::new(slots);
        match req.parse(block) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(partial()),
            Err(e) => return Err(invalid(e)),
        }
        head.method = req.method.map(|m| block.slice_ref(m.as_bytes()));
        head.target = req.path.map(|p| block.slice_ref(p.as_bytes()));
        to_headers(block, req.headers)
    };
    head.headers = Headers(fields);
    head.content_length = head
        .headers
        .get("Content-Length")
        .and_then(|v| parse_decimal(v));
    head.chunked = head.headers.get_all("Transfer-Encoding").any(|v| {
        v.split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
    });
    Ok(head)
}

fn to_headers(block: &Bytes, fields: &[httparse::Header<'_>]) -> Vec<Header> {
    fields
        .iter()
        .filter(|h| !h.name.is_empty())
        .map(|h| Header {
            name: block.slice_ref(h.name.as_bytes()),
            value: trim(&block.slice_ref(h.value)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let ok = parse_request_line(&Bytes::from_static(b"REQMOD icap://h/s ICAP/1.0"));
        assert!(matches!(
            ok,
            Ok(RequestLine {
                method: Method::Reqmod,
                ..
            })
        ));
        let other = parse_request_line(&Bytes::from_static(b"FOO icap://h/s ICAP/1.0"));
        assert!(matches!(
            other,
            Ok(RequestLine {
                method: Method::Other(_),
                ..
            })
        ));
        assert_eq!(
            parse_request_line(&Bytes::from_static(b"0")).err(),
            Some(StartLineError::NotAStartLine)
        );
        assert!(matches!(
            parse_request_line(&Bytes::from_static(b"REQMOD icap://h/s")),
            Err(StartLineError::Malformed(_))
        ));
    }

    #[test]
    fn status_lines() {
        let s = parse_status_line(&Bytes::from_static(b"ICAP/1.0 204 No Content")).unwrap();
        assert_eq!((s.status, &s.reason[..]), (204, &b"No Content"[..]));
        let s = parse_status_line(&Bytes::from_static(b"ICAP/1.0 100")).unwrap();
        assert_eq!(s.status, 100);
        assert!(parse_status_line(&Bytes::from_static(b"ICAP/1.0 20x OK")).is_err());
        assert!(parse_status_line(&Bytes::from_static(b"ICAP/1.0 2000 OK")).is_err());
    }

    #[test]
    fn istag_rules() {
        assert!(istag_problem(b"\"abc\"").is_none());
        assert!(istag_problem(b"abc").is_some());
        assert!(istag_problem(&[b'"'; 40]).is_some());
    }

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal(b"1024"), Some(1024));
        assert_eq!(parse_decimal(b"-1"), None);
        assert_eq!(parse_decimal(b"99999999999999999999"), None);
    }
}
