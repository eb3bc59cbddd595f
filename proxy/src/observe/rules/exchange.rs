//! Rules of one exchange against its service and its verdict: what the
//! service advertised in OPTIONS (Methods, X-Include), ISTag changes,
//! status codes that name a fault, identity headers, EICAR passed as
//! clean, a CONNECT answered with a page.

use base64::Engine;
use icap_codec::{EntityKind, Exchange, Method};

use crate::observe::finding::{Finding, RuleCode};
use crate::observe::services::{ServiceBook, ServiceKey};
use crate::observe::verdict::Verdict;

/// The marker inside the EICAR anti-malware test file.
pub const EICAR_MARKER: &[u8] = b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE";

/// X-Include headers every ICAP client can send: the address of the user
/// it serves. The others are sent only "if available" (X-Server-IP is
/// unknown before the client connects to the origin, X-Authenticated-User
/// and -Groups and X-Client-Username when no user logged in), so their
/// absence is legal.
const ALWAYS_KNOWN: [&str; 1] = ["X-Client-IP"];

/// Identity headers whose values are base64 (RFC 3507 practice, e.g.
/// `WinNT://DOMAIN/user`).
const BASE64_IDENTITY: [&str; 2] = ["X-Authenticated-User", "X-Authenticated-Groups"];

/// Findings that compare one exchange with its service and its verdict.
/// Also updates the service book (OPTIONS answers, ISTag).
pub fn exchange_rules(
    x: &Exchange,
    verdict: Verdict,
    key: &ServiceKey,
    services: &mut ServiceBook,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(req) = x.request.as_ref() {
        advertised(x, &req.method, key, services, &mut out);
        identity(x, &mut out);
    }
    if let Some(resp) = x.response.as_ref() {
        let rule = match resp.status {
            404 => Some((
                RuleCode::ServiceNotFound,
                "the sensor has no such service (404)",
            )),
            405 => Some((
                RuleCode::MethodNotAllowed,
                "the service does not allow this method (405)",
            )),
            503 => Some((RuleCode::ServerOverloaded, "the sensor is overloaded (503)")),
            _ => None,
        };
        if let Some((code, detail)) = rule {
            out.push(Finding::rule(code, detail).at(resp.offset));
        }
        if let Some(istag) = resp.istag.as_ref() {
            let istag = String::from_utf8_lossy(istag);
            if let Some(previous) = services.observe_istag(key.clone(), &istag) {
                out.push(
                    Finding::rule(
                        RuleCode::IstagChanged,
                        format!("ISTag changed from {previous} to {istag}"),
                    )
                    .at(resp.offset),
                );
            }
        }
        if let Some(options) = x.options.as_ref() {
            services.set_options(key.clone(), options.clone());
        }
    }
    if verdict == Verdict::Clean
        && memchr::memmem::find(&x.request_body.sample, EICAR_MARKER).is_some()
    {
        out.push(Finding::rule(
            RuleCode::EicarNotDetected,
            format!(
                "the EICAR test file came back clean (ICAP {})",
                x.status().map_or("-".to_string(), |s| s.to_string())
            ),
        ));
    }
    let connect = x
        .request_http(EntityKind::ReqHdr)
        .and_then(|h| h.method.as_ref())
        .is_some_and(|m| m.eq_ignore_ascii_case(b"CONNECT"));
    if connect
        && x.method() == Some(&Method::Reqmod)
        && x.response_http(EntityKind::ResHdr).is_some()
    {
        out.push(Finding::rule(
            RuleCode::ConnectAnsweredWithPage,
            "REQMOD of an HTTP CONNECT answered with an HTTP page; clients cannot show it inside a tunnel",
        ));
    }
    out
}

/// A method the service's OPTIONS answer did not list.
fn advertised(
    x: &Exchange,
    method: &Method,
    key: &ServiceKey,
    services: &mut ServiceBook,
    out: &mut Vec<Finding>,
) {
    if *method == Method::Options {
        return;
    }
    let Some(options) = services.get(key).and_then(|s| s.options.as_ref()) else {
        return;
    };
    if !options.methods.is_empty()
        && !options
            .methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method.as_str()))
    {
        let offset = x.request.as_ref().map_or(0, |r| r.offset);
        out.push(
            Finding::rule(
                RuleCode::MethodNotAdvertised,
                format!(
                    "{} on {} which advertised Methods: {}",
                    method.as_str(),
                    key.1,
                    options.methods.join(", ")
                ),
            )
            .at(offset),
        );
    }
    let Some(req) = x.request.as_ref() else {
        return;
    };
    // X-Include asks the client to send these headers when it has them
    // (RFC 3507 section 4.10.2): only one it always has is missing when
    // absent; say it once for the service, it is one client setting.
    let missing: Vec<&str> = options
        .x_include
        .iter()
        .map(String::as_str)
        .filter(|h| ALWAYS_KNOWN.iter().any(|k| k.eq_ignore_ascii_case(h)))
        .filter(|h| !req.headers.contains(h))
        .collect();
    if missing.is_empty() {
        return;
    }
    let detail = format!(
        "the service asked for {} in X-Include; the client always knows {} but did not send it \
         (said once for this service)",
        options.x_include.join(", "),
        missing.join(", ")
    );
    if services.first_identity_missing(key) {
        out.push(Finding::rule(RuleCode::IdentityHeaderMissing, detail).at(req.offset));
    }
}

/// Identity headers that must be base64 and are not.
fn identity(x: &Exchange, out: &mut Vec<Finding>) {
    let Some(req) = x.request.as_ref() else {
        return;
    };
    for name in BASE64_IDENTITY {
        if let Some(value) = req.headers.get(name) {
            if decode_identity(value).is_none() {
                out.push(
                    Finding::rule(
                        RuleCode::IdentityHeaderInvalid,
                        format!(
                            "{name} is not valid base64: {}",
                            String::from_utf8_lossy(value)
                        ),
                    )
                    .at(req.offset),
                );
            }
        }
    }
}

/// Decodes a base64 identity header into text.
pub fn decode_identity(value: &[u8]) -> Option<String> {
    let engine = base64::engine::general_purpose::STANDARD;
    let trimmed = value.trim_ascii();
    let bytes = engine.decode(trimmed).ok()?;
    String::from_utf8(bytes).ok()
}
