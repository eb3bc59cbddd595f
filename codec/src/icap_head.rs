//! Interpreting a complete ICAP head (RFC 3507 sections 4.3 to 4.5, 4.7,
//! 4.8): the request or status line, `Encapsulated`, `Preview`, `Allow` and
//! `ISTag`, into a [`RequestHead`] or [`ResponseHead`] event and the
//! anomalies the head carries. The decoder collects the lines; this module
//! says what they mean.

use crate::anomaly::AnomalyCode;
use crate::encapsulated::{Encapsulated, FormContext};
use crate::event::{Event, Headers, RequestHead, ResponseHead};
use crate::framing::Line;
use crate::head::{
    is_known_status, istag_problem, parse_decimal, parse_header_lines, parse_request_line,
    parse_status_line, Finding,
};
use crate::limits::Limits;
use crate::vocabulary::{Direction, Method};

/// What a complete ICAP head says.
pub(crate) struct InterpretedHead {
    /// The head event to hand out.
    pub event: Event,
    /// `Encapsulated` as parsed (also when it had a syntax error: its
    /// well-formed entries still frame the message).
    pub encapsulated: Option<Encapsulated>,
    /// `Preview: n`, when valid.
    pub preview: Option<u64>,
    /// Whether this is a 1xx response (no body follows).
    pub is_interim: bool,
    /// The head's anomalies, in stream order.
    pub findings: Vec<Finding>,
}

/// Interprets the head whose first line is `start`, followed by
/// `header_lines`, that began at stream offset `head_start`. `deferred`
/// holds anomalies found while the head arrived. `None` when the start
/// line cannot be parsed (the decoder has already reported it).
pub(crate) fn interpret(
    direction: Direction,
    start: &Line,
    header_lines: &[Line],
    head_start: u64,
    head_len: u64,
    limits: &Limits,
    deferred: Vec<Finding>,
) -> Option<InterpretedHead> {
    let mut findings = deferred;
    let headers = parse_header_lines(header_lines, limits, &mut findings);
    let header_at = |name: &str| {
        header_lines
            .iter()
            .find(|l| {
                l.bytes.len() > name.len()
                    && l.bytes[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            })
            .map_or(head_start, |l| l.start)
    };
    let (encapsulated, parsed_entities) = match headers.get("Encapsulated") {
        Some(value) => {
            let (enc, error) = Encapsulated::parse(value);
            let at = header_at("Encapsulated");
            if let Some(error) = error {
                findings.push((AnomalyCode::EncapsulatedSyntax, at, error));
            }
            (Some(enc), at)
        }
        None => (None, head_start),
    };
    let event;
    let version_ok;
    let mut preview = None;
    let is_interim;
    let needs_encapsulated;
    let context_method;
    match direction {
        Direction::Request => {
            let Ok(rl) = parse_request_line(&start.bytes) else {
                return None;
            };
            if let Method::Other(m) = &rl.method {
                findings.push((
                    AnomalyCode::MethodUnknown,
                    head_start,
                    format!(
                        "method `{}` is not OPTIONS, REQMOD or RESPMOD",
                        String::from_utf8_lossy(m)
                    ),
                ));
            }
            version_ok = &rl.version[..] == b"ICAP/1.0";
            let uri = &rl.uri[..];
            let scheme_ok = [&b"icap://"[..], b"icaps://"]
                .iter()
                .any(|s| uri.len() >= s.len() && uri[..s.len()].eq_ignore_ascii_case(s));
            if !scheme_ok {
                findings.push((
                    AnomalyCode::UriInvalid,
                    head_start,
                    format!(
                        "request URI {:?} is not icap:// or icaps://",
                        String::from_utf8_lossy(&uri[..uri.len().min(80)])
                    ),
                ));
            }
            if let Some(value) = headers.get("Preview") {
                preview = parse_decimal(value);
                if preview.is_none() {
                    findings.push((
                        AnomalyCode::PreviewInvalid,
                        header_at("Preview"),
                        format!(
                            "Preview {:?} is not a non-negative integer",
                            String::from_utf8_lossy(value)
                        ),
                    ));
                }
            }
            is_interim = false;
            needs_encapsulated = rl.method != Method::Options;
            let (allow_204, allow_206) = allows(&headers);
            let head = RequestHead {
                offset: head_start,
                method: rl.method.clone(),
                uri: rl.uri,
                version: rl.version,
                headers,
                encapsulated: encapsulated.clone().filter(|_| {
                    !findings
                        .iter()
                        .any(|f| f.0 == AnomalyCode::EncapsulatedSyntax)
                }),
                preview,
                allow_204,
                allow_206,
                head_len,
            };
            event = Event::RequestHead(Box::new(head));
            context_method = Some(rl.method);
        }
        Direction::Response => {
            let Ok(sl) = parse_status_line(&start.bytes) else {
                return None;
            };
            version_ok = &sl.version[..] == b"ICAP/1.0";
            if !is_known_status(sl.status) {
                findings.push((
                    AnomalyCode::StatusUnknown,
                    head_start,
                    format!("status {} is not an ICAP status code", sl.status),
                ));
            }
            is_interim = (100..200).contains(&sl.status);
            needs_encapsulated = matches!(sl.status, 200 | 206);
            let istag = headers.get("ISTag").cloned();
            match &istag {
                None if !is_interim => findings.push((
                    AnomalyCode::IstagMissing,
                    head_start,
                    format!("a {} response without ISTag", sl.status),
                )),
                Some(tag) => {
                    if let Some(problem) = istag_problem(tag) {
                        findings.push((AnomalyCode::IstagInvalid, header_at("ISTag"), problem));
                    }
                }
                None => {}
            }
            let head = ResponseHead {
                offset: head_start,
                status: sl.status,
                reason: sl.reason,
                version: sl.version,
                headers,
                encapsulated: encapsulated.clone().filter(|_| {
                    !findings
                        .iter()
                        .any(|f| f.0 == AnomalyCode::EncapsulatedSyntax)
                }),
                istag,
                head_len,
            };
            event = Event::ResponseHead(Box::new(head));
            context_method = None;
        }
    }
    if !version_ok {
        findings.push((
            AnomalyCode::VersionUnsupported,
            head_start,
            "the protocol version is not ICAP/1.0".to_string(),
        ));
    }
    match &encapsulated {
        Some(enc) => {
            let context = match &context_method {
                Some(m) => FormContext::Request(m),
                None => FormContext::Response,
            };
            if !is_interim {
                for (code, detail) in enc.check(context) {
                    findings.push((code, parsed_entities, detail));
                }
            }
        }
        None if needs_encapsulated => findings.push((
            AnomalyCode::EncapsulatedMissing,
            head_start,
            "no Encapsulated header; the message is taken to have no body".to_string(),
        )),
        None => {}
    }
    findings.sort_by_key(|f| f.1);
    Some(InterpretedHead {
        event,
        encapsulated,
        preview,
        is_interim,
        findings,
    })
}

/// Whether `Allow:` lists 204 and 206.
fn allows(headers: &Headers) -> (bool, bool) {
    let mut found = (false, false);
    for value in headers.get_all("Allow") {
        for item in value.split(|&b| b == b',') {
            match item.trim_ascii() {
                b"204" => found.0 = true,
                b"206" => found.1 = true,
                _ => {}
            }
        }
    }
    found
}
