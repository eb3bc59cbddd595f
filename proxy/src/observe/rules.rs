//! Rules that need more than the bytes of one exchange: what the service
//! advertised in OPTIONS, the verdict, how the connection ended, and the
//! clock (FIELD-GUIDE.md "Failure modes"). Each adds [`Finding`]s with a
//! [`RuleCode`]; docs/anomalies.md says what each means and what to do.

use base64::Engine;
use icap_codec::{EntityKind, Exchange, Method, Side};

use super::finding::{Finding, RuleCode};
use super::services::{ServiceBook, ServiceKey};
use super::verdict::Verdict;
use crate::tap::CloseKind;

/// The marker inside the EICAR anti-malware test file.
pub const EICAR_MARKER: &[u8] = b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE";

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
    services: &ServiceBook,
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
    let missing: Vec<&str> = options
        .x_include
        .iter()
        .map(String::as_str)
        .filter(|h| !req.headers.contains(h))
        .collect();
    if !missing.is_empty() {
        out.push(
            Finding::rule(
                RuleCode::IdentityHeaderMissing,
                format!(
                    "the service asked for {} in X-Include; the request lacks {}",
                    options.x_include.join(", "),
                    missing.join(", ")
                ),
            )
            .at(req.offset),
        );
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

/// Why a request got no verdict, from how the connection ended: whichever
/// side ended its stream first is the one that gave up.
pub fn missing_cause(x: &Exchange, first: Option<(Side, CloseKind)>) -> Vec<Finding> {
    let mut out = Vec::new();
    match first {
        Some((Side::Server, how @ (CloseKind::Fin | CloseKind::Reset))) => {
            out.push(if how == CloseKind::Reset {
                Finding::rule(
                    RuleCode::ServerResetBeforeResponse,
                    "the sensor reset the connection before answering",
                )
            } else {
                Finding::rule(
                    RuleCode::ServerClosedBeforeResponse,
                    "the sensor closed the connection before answering",
                )
            });
            if x.seq > 0 {
                out.push(Finding::rule(
                    RuleCode::ReusedConnectionClosed,
                    format!(
                        "the sensor ended a reused connection right after request {} was sent; \
                         a client that retries on a fresh connection hides this",
                        x.seq
                    ),
                ));
            }
        }
        Some((Side::Client, how @ (CloseKind::Fin | CloseKind::Reset))) => out.push(Finding::rule(
            RuleCode::ClientClosedBeforeResponse,
            format!(
                "the client ended the connection ({}) before the verdict",
                how.as_str()
            ),
        )),
        _ => {}
    }
    out
}

/// Clock rules for an open exchange: returns a finding when `x` is stuck.
/// `idle_us` is how long both directions have been silent.
pub fn stuck(x: &Exchange, idle_us: u64, stall_us: u64, offsets: [u64; 2]) -> Option<Finding> {
    if idle_us < stall_us {
        return None;
    }
    let idle_s = idle_us as f64 / 1e6;
    let preview = x.preview.unwrap_or_default();
    if x.response.is_none()
        && x.preview.is_some()
        && preview.ended
        && !preview.ieof
        && x.continues == 0
    {
        return Some(
            Finding::rule(
                RuleCode::PreviewDeadlock,
                format!(
                    "preview of {} bytes sent without ieof; the sensor is idle (no 100 Continue, no verdict) for {idle_s:.1} s",
                    preview.sent
                ),
            )
            .at(offsets[1]),
        );
    }
    if x.continues > 0 && x.request_end.is_none() && x.response.is_none() {
        return Some(
            Finding::rule(
                RuleCode::ContinueNotFollowed,
                format!("the sensor sent 100 Continue; the client is idle for {idle_s:.1} s"),
            )
            .at(offsets[0]),
        );
    }
    // A request paused after its preview waits for the sensor; that is the
    // deadlock case above, not a stall of the client.
    let paused_after_preview = preview.ended && !preview.ieof;
    if x.request.is_some() && x.request_end.is_none() && !paused_after_preview {
        return Some(stall(Side::Client, offsets[0], idle_s, "request"));
    }
    if x.response.is_some() && !x.response_ended {
        return Some(stall(Side::Server, offsets[1], idle_s, "response"));
    }
    None
}

fn stall(side: Side, offset: u64, idle_s: f64, what: &str) -> Finding {
    let near_64k = offset >= 4096 && offset % 65536 < 4096 || offset % 65536 > 61440;
    let hint = if near_64k {
        " (near a multiple of 65,536 bytes: a classic buffer deadlock)"
    } else {
        ""
    };
    let sender = match side {
        Side::Client => "client",
        Side::Server => "sensor",
    };
    Finding::rule_on(
        RuleCode::TransferStall,
        side,
        format!("{what} stalled at byte {offset}: the {sender} is idle for {idle_s:.1} s and the other side waits{hint}"),
    )
    .at(offset)
}
