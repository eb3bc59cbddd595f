//! Rules of a connection rather than of one exchange's bytes: a sensor
//! that cannot be reached, a sensor address that leads back to icaptap, more connections than it advertised, bytes the
//! live observer missed, a client that waited for the end of the
//! connection, and why a request got no verdict from how the connection
//! ended.

use std::net::SocketAddr;
use std::time::Duration;

use icap_codec::{Correlator, Exchange, Side};

use super::clock::{continue_not_followed, followed_continue, request_mid_body, request_stall};
use crate::observe::config::ObserverMode;
use crate::observe::finding::{Finding, RuleCode};
use crate::observe::rules::clock::StreamOffsets;
use crate::tap::{CloseKind, Micros, TlsFailure, TlsSide};
use icap_codec::event::MessageEnd;

/// The first stream of a connection to end: whose, how and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstClose {
    /// The side whose stream ended.
    pub side: Side,
    /// How it ended.
    pub how: CloseKind,
    /// When.
    pub at: Micros,
}

/// A client idle mid-body this long before the sensor ended the connection
/// had stopped sending (the stall is the client's; the sensor's close is
/// its own timeout); a sensor that fails while the body flows closes
/// within moments of the client's last byte. The stall timeout when it is
/// shorter.
pub const IDLE_BEFORE_CLOSE_US: u64 = 1_000_000;

/// Where the client's stream stood when the connection ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStream {
    /// Bytes the client had sent.
    pub offset: u64,
    /// When its last bytes came.
    pub last_at: Micros,
}

/// The sensor leg could not be opened.
pub fn sensor_unreachable(server: SocketAddr, error: &str) -> Finding {
    Finding::rule(
        RuleCode::SensorUnreachable,
        format!("cannot connect to the sensor {server}: {error}"),
    )
}

/// The sensor leg could not be opened because icaptap itself was out of
/// file descriptors (EMFILE/ENFILE): icaptap's limit, not the sensor's.
pub fn icaptap_fd_limit(error: &str) -> Finding {
    Finding::rule(
        RuleCode::IcaptapFdLimit,
        format!(
            "icaptap ran out of file descriptors and could not open the sensor leg ({error}); \
             the sensor was not asked: raise icaptap's `ulimit -n` or lower --max-connections"
        ),
    )
}

/// The client closed its connection, having sent nothing, before the
/// sensor leg was up: icaptap stopped connecting, and the sensor saw no
/// connection (it would have seen one carrying nothing).
pub fn client_gone_before_connect(error: &str) -> Finding {
    Finding::rule(
        RuleCode::ClientGoneBeforeConnect,
        format!(
            "{error} before the sensor leg was up, having sent nothing; icaptap stopped connecting"
        ),
    )
}

/// The sensor leg led back into icaptap (`error` says how); icaptap closed
/// the connection before forwarding a byte.
pub fn forwarding_loop(error: &str) -> Finding {
    Finding::rule(RuleCode::ForwardingLoop, error.to_owned())
}

/// A TLS leg did not come up (`error` says how); no ICAP was forwarded.
pub fn tls_failed(side: TlsSide, failure: TlsFailure, error: &str) -> Finding {
    let code = match (side, failure) {
        (_, TlsFailure::PlainOnTlsPort) => RuleCode::TlsPlainOnTlsPort,
        (_, TlsFailure::CertificateExpired) => RuleCode::TlsCertificateExpired,
        (_, TlsFailure::CertificateUntrusted) => RuleCode::TlsCertificateUntrusted,
        (_, TlsFailure::CertificateNameMismatch) => RuleCode::TlsCertificateNameMismatch,
        (TlsSide::Client, TlsFailure::Handshake) => RuleCode::TlsClientHandshakeFailed,
        (TlsSide::Sensor, TlsFailure::Handshake) => RuleCode::TlsSensorHandshakeFailed,
    };
    Finding::rule(code, error.to_owned())
}

/// A connection opened to `server` made `open` connections, more than the
/// smallest `Max-Connections` its services advertised (RFC 3507 section
/// 4.10.2).
pub fn max_connections_exceeded(
    server: SocketAddr,
    open: u64,
    max: Option<u64>,
) -> Option<Finding> {
    let max = max?;
    (open > max).then(|| {
        Finding::rule(
            RuleCode::MaxConnectionsExceeded,
            format!("{open} connections open to {server} which advertised Max-Connections: {max}"),
        )
    })
}

/// A hole of `len` bytes at stream offset `at`: in a live run the tap
/// queue dropped them because the observer fell behind (a capture's holes
/// are the capture's). Raised once per connection: `findings` are the
/// connection's so far.
pub fn observer_dropped(
    mode: ObserverMode,
    at: u64,
    len: u64,
    findings: &[Finding],
) -> Option<Finding> {
    if mode != ObserverMode::Live || findings.iter().any(|f| f.is(RuleCode::ObserverDropped)) {
        return None;
    }
    Some(
        Finding::rule(
            RuleCode::ObserverDropped,
            format!("the observer fell behind and missed {len} bytes; forwarding was not affected"),
        )
        .at(at),
    )
}

/// The client ended its stream `how` at `now`, the sensor's stream still
/// open: after a final response that ended at `answered_at` with nothing
/// sent since, a FIN at least `eof_wait` later looks like a client that
/// waited for the end of the connection instead of reading the framing.
pub fn client_waited_for_eof(
    how: CloseKind,
    sensor_open: bool,
    answered_at: Option<Micros>,
    now: Micros,
    eof_wait: Duration,
) -> Option<Finding> {
    if how != CloseKind::Fin || !sensor_open {
        return None;
    }
    let waited = now.saturating_sub(answered_at?);
    (waited >= eof_wait.as_micros() as u64).then(|| {
        Finding::rule(
            RuleCode::ClientWaitedForEof,
            format!(
                "the last response was complete; the client sent nothing and closed {:.1} s later \
                 (an idle keep-alive connection looks the same: check the client's log for a timeout)",
                waited as f64 / 1e6
            ),
        )
    })
}

/// A capture that holds no more of a connection although the sensor's
/// stream was not seen to end (`answers_ended` false), so answers could
/// still have come: every exchange still open in `correlator` was cut by
/// the end of the capture, not by a peer. Marks them incomplete and gives
/// each its finding, blamed on no peer (the side named is whose message
/// was cut, at its stream's end in `ends`). Once the sensor closed or
/// reset, no answer was coming: that close is the story, not the capture.
pub fn capture_ended(
    answers_ended: bool,
    correlator: &mut Correlator,
    ends: StreamOffsets,
) -> Vec<(u64, Finding)> {
    if answers_ended {
        return Vec::new();
    }
    let answering: Vec<u64> = correlator
        .open()
        .filter(|x| x.response.is_some())
        .map(|x| x.seq)
        .collect();
    let (req_at, resp_at) = (ends.request, ends.response);
    correlator
        .end_unseen()
        .into_iter()
        .map(|seq| {
            let (side, offset, what) = if answering.contains(&seq) {
                (Side::Server, resp_at, "in the middle of the answer")
            } else {
                (Side::Client, req_at, "before the answer")
            };
            let finding = Finding::rule_on(
                RuleCode::CaptureEnded,
                side,
                format!(
                    "the capture holds no more of this connection, {what}: icaptap did not see \
                     the end of this exchange (the capture stopped; no peer closed the connection)"
                ),
            )
            .at(offset);
            (seq, finding)
        })
        .collect()
}

/// Why a request got no verdict, from how the connection ended: whichever
/// side ended its stream first is the one that gave up. A sensor that ends
/// the connection after the client went idle mid-body is not the cause:
/// the client's stall is (`transfer-stall`, added here when the clock did
/// not raise it yet: `so_far` are the exchange's findings), and the close
/// is told as the sensor's answer to it. `stall_us` is the stall timeout.
pub fn missing_cause(
    x: &Exchange,
    first: Option<FirstClose>,
    client: ClientStream,
    stall_us: u64,
    so_far: &[Finding],
) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(FirstClose { side, how, at }) = first else {
        return out;
    };
    if !matches!(how, CloseKind::Fin | CloseKind::Reset) {
        return out;
    }
    if side == Side::Client {
        out.push(Finding::rule(
            RuleCode::ClientClosedBeforeResponse,
            format!(
                "the client ended the connection ({}) before the verdict",
                how.as_str()
            ),
        ));
        return out;
    }
    let idle_us = at.saturating_sub(client.last_at);
    let idle_s = idle_us as f64 / 1e6;
    let ended = if how == CloseKind::Reset {
        "reset"
    } else {
        "closed"
    };
    // The sensor asked for the remainder and the client's stream ended
    // without it only after the sensor's close: it was the client's turn.
    let continue_unanswered = x.continues > 0 && x.request_end == Some(MessageEnd::PreviewOnly);
    let clients_turn = request_mid_body(x) || continue_unanswered;
    if clients_turn && idle_us >= IDLE_BEFORE_CLOSE_US.min(stall_us) {
        let told = |code| so_far.iter().any(|f| f.is(code));
        if !told(RuleCode::TransferStall) && !told(RuleCode::ContinueNotFollowed) {
            out.push(
                if x.continues > 0 && !followed_continue(x, client.last_at) {
                    continue_not_followed(client.offset, idle_s)
                } else {
                    request_stall(x, client.offset, idle_s)
                },
            );
        }
        out.push(
            Finding::rule(
                RuleCode::ServerClosedStalledTransfer,
                format!(
                    "the sensor {ended} the connection {idle_s:.1} s after the client's last byte, \
                     with request {} incomplete at byte {} of the client's stream: it gave up \
                     waiting (its own timeout); the stall is the client's",
                    x.seq, client.offset
                ),
            )
            .at(client.offset),
        );
        return out;
    }
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
        let after = x
            .timings
            .request_head
            .map_or(0, |s| at.saturating_sub(s.at)) as f64
            / 1e6;
        out.push(Finding::rule(
            RuleCode::ReusedConnectionClosed,
            format!(
                "the sensor ended a reused connection {after:.3} s after request {} began; \
                 a client that retries on a fresh connection hides this",
                x.seq
            ),
        ));
    }
    out
}

/// The client ended its stream `client` (or its leg broke) while `x`'s
/// answer was coming, and icaptap reset the sensor leg on its behalf: the
/// answer is as far as it was seen, cut by the client's hang-up, not by the
/// sensor.
/// `undelivered`: bytes of the sensor's stream icaptap read but could not
/// write to the client, which was gone.
pub fn client_closed_during_response(
    x: &Exchange,
    client: Option<CloseKind>,
    undelivered: u64,
) -> Option<Finding> {
    let resp = x.response.as_ref().filter(|_| !x.response_ended)?;
    let how = client.map_or("its leg broke", |c| match c {
        CloseKind::Fin => "closed (FIN) and then refused more data",
        _ => "reset",
    });
    let lost = if undelivered > 0 {
        format!(
            "; {undelivered} bytes icaptap had read from the sensor never reached the client \
             (the capture's client leg does not show them)"
        )
    } else {
        String::new()
    };
    Some(Finding::rule(
        RuleCode::ClientClosedDuringResponse,
        format!(
            "the client hung up ({how}) after the head of the ICAP {} answer and {} bytes of its body; \
             icaptap reset the sensor leg on its behalf, so the rest of the answer was not seen{lost}",
            resp.status, x.response_body.bytes
        ),
    ))
}
