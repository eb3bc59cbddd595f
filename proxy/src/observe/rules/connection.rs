//! Rules of a connection rather than of one exchange's bytes: a sensor
//! that cannot be reached, a sensor address that leads back to icaptap, more connections than it advertised, bytes the
//! live observer missed, a client that waited for the end of the
//! connection, and why a request got no verdict from how the connection
//! ended.

use std::net::SocketAddr;
use std::time::Duration;

use icap_codec::{Exchange, Side};

use crate::observe::config::ObserverMode;
use crate::observe::finding::{Finding, RuleCode};
use crate::tap::{CloseKind, Micros};

/// The sensor leg could not be opened.
pub fn sensor_unreachable(server: SocketAddr, error: &str) -> Finding {
    Finding::rule(
        RuleCode::SensorUnreachable,
        format!("cannot connect to the sensor {server}: {error}"),
    )
}

/// The sensor leg led back into icaptap (`error` says how); icaptap closed
/// the connection before forwarding a byte.
pub fn forwarding_loop(error: &str) -> Finding {
    Finding::rule(RuleCode::ForwardingLoop, error.to_owned())
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
