//! The RFC 3507 rules that need only the two messages of one exchange:
//! `100 Continue` only after a preview (4.5), the final statuses a request
//! allowed (4.6, and 206), OPTIONS answers, RESPMOD content lost to a
//! `null-body` answer, and a body the sensor cut short.

use super::exchange::Exchange;
use crate::anomaly::{Anomaly, AnomalyCode, Side};
use crate::encapsulated::EntityKind;
use crate::event::ResponseHead;
use crate::options::OptionsInfo;
use crate::vocabulary::Method;

/// RFC 3507 4.5: 100 Continue only answers a preview that did not end the body.
pub(super) fn check_continue(x: &mut Exchange, head: &ResponseHead) {
    let code = match x.preview {
        None => Some((
            AnomalyCode::ContinueWithoutPreview,
            "100 Continue to a request that sent no preview",
        )),
        Some(p) if p.ieof => Some((
            AnomalyCode::ContinueAfterIeof,
            "100 Continue after the client said the preview held the whole body (ieof)",
        )),
        Some(_) => None,
    };
    if let Some((code, detail)) = code {
        x.anomalies
            .push(Anomaly::new(code, Side::Server, head.offset, detail));
    }
}

/// RFC 3507 4.6 and the 206 draft: which final statuses the request allowed.
pub(super) fn check_final(x: &mut Exchange, head: &ResponseHead) {
    let Some(req) = x.request.as_ref() else {
        return;
    };
    let in_preview = x.preview.is_some() && x.continues == 0;
    let mut found = Vec::new();
    if head.status == 204 && !req.allow_204 && !in_preview {
        found.push((
            AnomalyCode::Status204NotAllowed,
            "204 outside a preview to a request without Allow: 204".to_string(),
        ));
    }
    if head.status == 206 && !req.allow_206 {
        found.push((
            AnomalyCode::Status206NotAllowed,
            "206 to a request without Allow: 206".to_string(),
        ));
    }
    if req.method == Method::Options {
        let body = head.encapsulated.as_ref().and_then(|e| e.body());
        let bad_body =
            matches!(body, Some(k) if k != EntityKind::OptBody && k != EntityKind::NullBody);
        if (200..300).contains(&head.status) && (head.status != 200 || bad_body) {
            found.push((
                AnomalyCode::OptionsReplyInvalid,
                format!(
                    "OPTIONS answered {} with {}",
                    head.status,
                    body.map_or("no body", |k| k.as_str())
                ),
            ));
        }
        if head.status == 200 {
            let (info, anomalies) = OptionsInfo::from_headers(&head.headers, head.offset);
            x.anomalies.extend(anomalies);
            x.options = Some(info);
        }
    }
    for (code, detail) in found {
        x.anomalies
            .push(Anomaly::new(code, Side::Server, head.offset, detail));
    }
}

/// A RESPMOD whose original response had a body, answered 200 with a
/// response form and `null-body`: the user gets an empty object.
pub(super) fn check_content_lost(x: &mut Exchange) {
    let Some(req) = x.request.as_ref() else {
        return;
    };
    let Some(resp) = x.response.as_ref() else {
        return;
    };
    let original_had_body = req.method == Method::Respmod
        && req
            .encapsulated
            .as_ref()
            .is_some_and(|e| e.body() == Some(EntityKind::ResBody))
        && x.request_body.bytes > 0;
    let answered_empty = resp.status == 200
        && resp
            .encapsulated
            .as_ref()
            .is_some_and(|e| e.has(EntityKind::ResHdr) && e.body() == Some(EntityKind::NullBody));
    let declared_empty = x
        .response_http(EntityKind::ResHdr)
        .is_some_and(|h| h.content_length == Some(0));
    if original_had_body && answered_empty && !declared_empty {
        let offset = resp.offset;
        x.anomalies.push(Anomaly::new(
            AnomalyCode::ContentLost,
            Side::Server,
            offset,
            format!(
                "RESPMOD 200 with null-body although the original response carried {} body bytes",
                x.request_body.bytes
            ),
        ));
    }
}

/// A 200 whose body ended cleanly (its zero chunk came) short of the
/// Content-Length of the HTTP head it returned, and short of what the
/// client sent: the sensor cut it. A sensor that streams part of a body
/// before its scan ends (c-icap's `SendPercentData`) does this when it finds
/// a threat too late to say so in the head. The decoder's
/// `body-length-mismatch` is replaced by what it means here.
pub(super) fn check_cut_short(x: &mut Exchange) {
    if x.incomplete || x.status() != Some(200) {
        return;
    }
    let Some(declared) = x.response_http.last().and_then(|h| h.content_length) else {
        return;
    };
    let (returned, sent) = (x.response_body.bytes, x.request_body.bytes);
    if returned >= declared || returned >= sent {
        return;
    }
    let mismatch = x
        .anomalies
        .iter_mut()
        .find(|a| a.code == AnomalyCode::BodyLengthMismatch && a.side == Side::Server);
    if let Some(a) = mismatch {
        *a = Anomaly::new(
            AnomalyCode::BodyTruncatedBySensor,
            Side::Server,
            a.offset,
            format!(
                "truncated by the sensor: possible late detection: the answer ended cleanly after \
                 {returned} of the {declared} body bytes its Content-Length declares ({sent} were \
                 sent); a sensor that sends part of a body before its scan ends cuts the rest \
                 when it finds a threat, and the user gets a truncated object"
            ),
        );
    }
}

/// An OPTIONS 200 without `Encapsulated`: a warning, not a broken answer
/// (clients accept it). `a` is an anomaly of `x`'s final response.
pub(super) fn options_leniency(x: &Exchange, a: Anomaly) -> Anomaly {
    let options_200 = x.method() == Some(&Method::Options) && x.status() == Some(200);
    if a.code == AnomalyCode::EncapsulatedMissing && options_200 {
        return Anomaly::new(
            AnomalyCode::OptionsEncapsulatedMissing,
            a.side,
            a.offset,
            "an OPTIONS 200 without Encapsulated (RFC 3507 asks for `Encapsulated: null-body=0` \
             or `opt-body=0`); ICAP clients accept it",
        );
    }
    a
}
