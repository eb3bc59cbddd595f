//! Rules of the clock: an exchange stuck while both sides are silent
//! (preview deadlock, 100 Continue not followed, transfer stall), a verdict
//! that does not come within the verdict timeout, and one that comes after.

use std::time::Duration;

use icap_codec::{Exchange, Side};

use crate::observe::finding::{Finding, RuleCode};
use crate::tap::Micros;

/// How far each stream of a connection has come, in bytes, and when the
/// client's last bytes came.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamOffsets {
    /// The client's stream (requests).
    pub request: u64,
    /// The sensor's stream (responses).
    pub response: u64,
    /// When bytes of the client's stream last came.
    pub request_at: Micros,
}

/// Whether `x` was sent and has waited for its response head at least
/// `timeout_us` at `now`. A request whose remainder is still coming after
/// a 100 Continue waits for the client, not for a verdict.
pub fn awaits_verdict(x: &Exchange, now: Micros, timeout_us: u64) -> bool {
    x.response.is_none()
        && x.request.is_some()
        && !(x.continues > 0 && x.request_end.is_none())
        && x.timings
            .request_sent
            .is_some_and(|s| now.saturating_sub(s.at) >= timeout_us)
}

/// The verdict timeout passed without a response head; the exchange is
/// recorded as missing and the connection left alone.
pub fn verdict_timeout(timeout: Duration) -> Finding {
    let waited = timeout.as_secs_f64();
    Finding::rule(
        RuleCode::VerdictTimeout,
        format!("no response head {waited:.1} s after the request was sent"),
    )
}

/// An exchange already recorded by the verdict timeout got its answer
/// after all (a finding of the connection: the exchange's record is out).
pub fn verdict_late(x: &Exchange) -> Option<Finding> {
    let status = x.status()?;
    Some(Finding::rule(
        RuleCode::VerdictLate,
        format!(
            "exchange {} was answered ICAP {status} after the verdict timeout",
            x.seq
        ),
    ))
}

/// Clock rules for an open exchange: returns a finding when `x` is stuck.
/// `idle_us` is how long both directions have been silent.
pub fn stuck(x: &Exchange, idle_us: u64, stall_us: u64, offsets: StreamOffsets) -> Option<Finding> {
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
            .at(offsets.response),
        );
    }
    if x.continues > 0
        && x.request_end.is_none()
        && x.response.is_none()
        && !followed_continue(x, offsets.request_at)
    {
        return Some(continue_not_followed(offsets.request, idle_s));
    }
    if request_mid_body(x) {
        return Some(request_stall(x, offsets.request, idle_s));
    }
    if let Some(resp) = x.response.as_ref().filter(|_| !x.response_ended) {
        let what = format!(
            "ICAP {} response to request {} (body {} bytes in)",
            resp.status, x.seq, x.response_body.bytes
        );
        return Some(stall(Side::Server, offsets.response, idle_s, &what));
    }
    None
}

/// The sensor sent 100 Continue and the client, at byte `offset` of its
/// stream, sent nothing since for `idle_s`.
pub fn continue_not_followed(offset: u64, idle_s: f64) -> Finding {
    Finding::rule(
        RuleCode::ContinueNotFollowed,
        format!("the sensor sent 100 Continue; the client sent nothing since and is idle for {idle_s:.1} s"),
    )
    .at(offset)
}

/// Whether the client sent anything after the sensor's 100 Continue: body
/// bytes past the preview, or any bytes after the 100 came.
pub fn followed_continue(x: &Exchange, request_at: Micros) -> bool {
    let preview = x.preview.unwrap_or_default().sent;
    x.request_body.bytes > preview || x.timings.continue_.is_some_and(|c| request_at > c.at)
}

/// Whether `x`'s request is under way and waits for the client: begun, not
/// ended, and not a preview that waits for the sensor's answer.
pub fn request_mid_body(x: &Exchange) -> bool {
    let preview = x.preview.unwrap_or_default();
    let paused_after_preview = preview.ended && !preview.ieof && x.continues == 0;
    x.request.is_some() && x.request_end.is_none() && !paused_after_preview
}

/// A request that stopped mid-body with the client idle for `idle_s`:
/// which message, at which byte of the client's stream, how far into its
/// body, and whether it came after a 100 Continue.
pub fn request_stall(x: &Exchange, offset: u64, idle_s: f64) -> Finding {
    let method = x.method().map_or("request", |m| m.as_str());
    let body = x.request_body.bytes;
    let after = match x.preview {
        Some(p) if x.continues > 0 => format!(
            ", {} of them after the 100 Continue that followed a {}-byte preview",
            body.saturating_sub(p.sent),
            p.sent
        ),
        _ => String::new(),
    };
    let what = format!("{method} request {} (body {body} bytes in{after})", x.seq);
    stall(Side::Client, offset, idle_s, &what)
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
        format!("{what} stalled at byte {offset} of the {sender}'s stream: the {sender} is idle for {idle_s:.1} s and the other side waits{hint}"),
    )
    .at(offset)
}
