//! Well-formed answers of the mock sensor: OPTIONS (RFC 3507 section
//! 4.10.2), `100 Continue` and 204 (section 4.5, 4.6), 200 echo, block and
//! infected pages, and ICAP errors (section 4.3.3).
//!
//! Each function returns the complete bytes of one answer; the connection
//! writes them. Infection headers follow what vendors actually send, so a
//! proxy under test sees the dialects it meets in the field.

use bytes::{BufMut, BytesMut};
use icap_codec::{EntityKind, HttpHead, Method};

use crate::toolkit::scenario::{InfectionStyle, OptionsConfig};
use crate::toolkit::wire::{encapsulated_value, http_head_bytes, push_chunked_body, HeadBuilder};

/// The `Server` header of every answer, so captures show who answered.
pub const SERVER_NAME: &str = "icaptap-sensor";

/// The request being answered, as the sensor received it.
#[derive(Clone, Copy, Debug)]
pub struct Original<'a> {
    /// The ICAP method.
    pub method: &'a Method,
    /// The encapsulated HTTP heads, in order.
    pub heads: &'a [HttpHead],
    /// The whole body (only used when it was kept whole).
    pub body: &'a [u8],
    /// Whether the request carried a body entity (not `null-body`).
    pub has_body: bool,
}

impl Original<'_> {
    fn head(&self, kind: EntityKind) -> Option<&HttpHead> {
        self.heads.iter().find(|h| h.entity == kind)
    }
}

/// How an answer treats the connection afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Keep the connection for the next request.
    KeepAlive,
    /// Say `Connection: close` and close after writing.
    Close,
}

fn icap_head(status: u16, reason: &str, istag: Option<&str>) -> HeadBuilder {
    let mut head = HeadBuilder::new(&format!("ICAP/1.0 {status} {reason}"));
    head.push("Server", SERVER_NAME);
    if let Some(tag) = istag {
        head.push("ISTag", tag);
    }
    head
}

/// The standard reason phrase of an ICAP status.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "ICAP Service Not Found",
        405 => "Method Not Allowed For Service",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        500 => "Server Error",
        501 => "Method Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Overloaded",
        505 => "ICAP Version Not Supported",
        _ => "Unknown",
    }
}

/// The answer to OPTIONS on a service taking `methods`.
pub fn options(opts: &OptionsConfig, methods: &str, istag: &str) -> BytesMut {
    let mut head = icap_head(200, "OK", Some(istag));
    head.push("Methods", methods);
    head.push("Service", &opts.service);
    if let Some(id) = &opts.service_id {
        head.push("Service-ID", id);
    }
    if let Some(n) = opts.max_connections {
        head.push("Max-Connections", n.to_string());
    }
    if let Some(ttl) = opts.options_ttl {
        head.push("Options-TTL", ttl.to_string());
    }
    if !opts.allow.is_empty() {
        let codes: Vec<String> = opts.allow.iter().map(u16::to_string).collect();
        head.push("Allow", codes.join(", "));
    }
    if let Some(n) = opts.preview {
        head.push("Preview", n.to_string());
    }
    for (name, value) in [
        ("Transfer-Preview", &opts.transfer_preview),
        ("Transfer-Ignore", &opts.transfer_ignore),
        ("Transfer-Complete", &opts.transfer_complete),
    ] {
        if let Some(v) = value {
            head.push(name, v);
        }
    }
    if !opts.x_include.is_empty() {
        head.push("X-Include", opts.x_include.join(", "));
    }
    head.push("Encapsulated", "null-body=0");
    head.finish()
}

/// The interim `100 Continue`.
pub fn continue_100() -> BytesMut {
    HeadBuilder::new("ICAP/1.0 100 Continue").finish()
}

/// `204 No Content`; `istag` is `None` only for the missing-ISTag defect.
pub fn no_content(istag: Option<&str>) -> BytesMut {
    let mut head = icap_head(204, "No Content", istag);
    head.push("Encapsulated", "null-body=0");
    head.finish()
}

/// An ICAP error or refusal without a body.
pub fn error(status: u16, reason: Option<&str>, istag: Option<&str>, after: After) -> BytesMut {
    let mut head = icap_head(status, reason.unwrap_or(reason_phrase(status)), istag);
    if after == After::Close {
        head.push("Connection", "close");
    }
    head.push("Encapsulated", "null-body=0");
    head.finish()
}

/// The pieces of a 200 echo: the HTTP heads to send back and the body
/// entity kind, so malformed variants can rework them.
#[derive(Debug)]
pub struct EchoParts {
    /// `(entity, bytes)` of each HTTP head sent back.
    pub heads: Vec<(EntityKind, BytesMut)>,
    /// `req-body`, `res-body` or `null-body`.
    pub body_kind: EntityKind,
}

/// What a 200 echo sends back: for REQMOD the request (`req-hdr`), for
/// RESPMOD the response (`res-hdr`), each with its body when there was one.
pub fn echo_parts(original: &Original<'_>) -> EchoParts {
    let (head_kind, body_kind) = match original.method {
        Method::Reqmod => (EntityKind::ReqHdr, EntityKind::ReqBody),
        _ => (EntityKind::ResHdr, EntityKind::ResBody),
    };
    let heads = original
        .head(head_kind)
        .map(|h| vec![(head_kind, http_head_bytes(h))])
        .unwrap_or_default();
    EchoParts {
        heads,
        body_kind: if original.has_body {
            body_kind
        } else {
            EntityKind::NullBody
        },
    }
}

/// Writes a 200 whose encapsulated section is `parts` and `body`.
pub fn two_hundred(
    istag: Option<&str>,
    extra: &[(&str, String)],
    raw_lines: &[String],
    parts: &EchoParts,
    body: &[u8],
) -> BytesMut {
    let heads: Vec<(EntityKind, &[u8])> = parts.heads.iter().map(|(k, b)| (*k, &b[..])).collect();
    let mut head = icap_head(200, "OK", istag);
    for (name, value) in extra {
        head.push(name, value);
    }
    let mut head = raw_lines.iter().fold(head, |h, line| h.raw_line(line));
    head.push("Encapsulated", encapsulated_value(&heads, parts.body_kind));
    let mut out = head.finish();
    for (_, bytes) in &heads {
        out.put_slice(bytes);
    }
    if parts.body_kind != EntityKind::NullBody {
        push_chunked_body(&mut out, body);
    }
    out
}

/// 200 with the encapsulated message unchanged.
pub fn echo(original: &Original<'_>, istag: Option<&str>) -> BytesMut {
    two_hundred(istag, &[], &[], &echo_parts(original), original.body)
}

/// 200 carrying an HTTP block page with status `http_status`; `extra` and
/// `raw_lines` are vendor headers (infection reports).
pub fn block(
    istag: &str,
    http_status: u16,
    page: &str,
    extra: &[(&str, String)],
    raw_lines: &[String],
) -> BytesMut {
    let reason = match http_status {
        403 => "Forbidden",
        451 => "Unavailable For Legal Reasons",
        _ => "Blocked",
    };
    let http = HeadBuilder::new(&format!("HTTP/1.1 {http_status} {reason}"))
        .header("Content-Type", "text/html; charset=utf-8")
        .header("Content-Length", page.len().to_string())
        .header("Cache-Control", "no-store")
        .header("Connection", "close")
        .finish();
    let parts = EchoParts {
        heads: vec![(EntityKind::ResHdr, http)],
        body_kind: EntityKind::ResBody,
    };
    two_hundred(Some(istag), extra, raw_lines, &parts, page.as_bytes())
}

/// The built-in block page.
pub fn block_page(url: Option<&str>, threat: Option<&str>) -> String {
    let url = html_escape(url.unwrap_or("this resource"));
    let why = match threat {
        Some(t) => format!("it contains <b>{}</b>", html_escape(t)),
        None => "the policy forbids it".to_owned(),
    };
    format!(
        "<!doctype html>\n<html><head><title>Access blocked</title></head>\n<body><h1>Access blocked</h1><p>The ICAP service (icaptap mock sensor) blocked {url}: {why}.</p></body></html>\n"
    )
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Vendor infection headers for `threat`: `(fields, folded raw lines)`.
pub fn infection_headers(
    style: InfectionStyle,
    threat: &str,
    url: Option<&str>,
) -> (Vec<(&'static str, String)>, Vec<String>) {
    match style {
        InfectionStyle::XInfectionFound => (
            vec![(
                "X-Infection-Found",
                format!("Type=0; Resolution=2; Threat={threat};"),
            )],
            Vec::new(),
        ),
        InfectionStyle::XVirusId => (vec![("X-Virus-ID", threat.to_owned())], Vec::new()),
        InfectionStyle::XViolationsFound => {
            // c-icap's layout: count, then per violation the file name,
            // the threat, the resolution and the threat type, each on a
            // folded continuation line.
            let file = url
                .and_then(|u| u.rsplit('/').next())
                .filter(|f| !f.is_empty() && !f.contains(char::is_whitespace))
                .unwrap_or("-");
            (
                Vec::new(),
                vec![
                    "X-Violations-Found: 1".to_owned(),
                    format!("\t{file}"),
                    format!("\t{threat}"),
                    "\t2".to_owned(),
                    "\t0".to_owned(),
                ],
            )
        }
        // MetaDefender's layout: the block announced in X-Response-Info
        // with its reason, the threat named in X-Virus-ID (the block alone
        // names no malware: a policy block looks the same).
        InfectionStyle::XResponseInfo => (
            vec![
                ("X-Response-Info", "Blocked".to_owned()),
                ("X-Response-Desc", "Infected".to_owned()),
                ("X-Blocked-Reason", "Infected".to_owned()),
                ("X-Virus-ID", threat.to_owned()),
            ],
            Vec::new(),
        ),
    }
}
