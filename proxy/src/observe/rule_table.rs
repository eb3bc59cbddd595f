//! The observer's rules as a table: each row is a tap script fed straight
//! to an [`Observer`] (no sockets, no threads, the clock is the script's)
//! and the anomaly code it must raise, on an exchange or on the
//! connection, with the verdict of that exchange. Every [`RuleCode`] has a
//! row; the integration tests cover the same rules over real sockets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::rules::EICAR_MARKER;
use super::{Observer, ObserverConfig, ObserverMode, RuleCode};
use crate::output::records::ExchangeRecord;
use crate::output::writer::{MemorySink, SharedMemorySink};
use crate::tap::{
    CloseKind, ConnMeta, ConnectFailure, Direction, Micros, Tap, TapEvent, TlsFailure, TlsSide,
};

/// Records, shared between the observer's sink and the test.
type Shared = SharedMemorySink;

/// What one step of a script does.
#[derive(Clone, Debug)]
enum Act {
    /// Bytes of one direction, at the next offset.
    Data(Direction, Vec<u8>),
    /// Bytes of one direction the observer never gets.
    Hole(Direction, u64),
    /// Bytes of one direction the observer's queue drops, said at once
    /// (a `Lost` tap), as the live proxy does.
    Lost(Direction, u64),
    /// One direction ends.
    Close(Direction, CloseKind),
    /// The sensor cannot be reached.
    ConnectFailed(&'static str, ConnectFailure),
    /// Time passes.
    Wait(Duration),
    /// The clock rules run.
    Tick,
}

/// One step, on connection `conn`.
#[derive(Clone, Debug)]
pub(super) struct Step {
    conn: u64,
    act: Act,
}

impl Step {
    /// The same step on connection `conn`.
    pub(super) fn on(self, conn: u64) -> Step {
        Step { conn, ..self }
    }
}

fn step(act: Act) -> Step {
    Step { conn: 1, act }
}

/// The client sends `bytes`.
pub(super) fn req(bytes: impl AsRef<[u8]>) -> Step {
    step(Act::Data(Direction::Request, bytes.as_ref().to_vec()))
}

/// The sensor sends `bytes`.
pub(super) fn resp(bytes: impl AsRef<[u8]>) -> Step {
    step(Act::Data(Direction::Response, bytes.as_ref().to_vec()))
}

/// `len` bytes of the client's stream are missed.
fn req_hole(len: u64) -> Step {
    step(Act::Hole(Direction::Request, len))
}

/// The client ends its stream `how`.
/// `len` bytes of `dir` are dropped by the observer's queue, and said so.
pub(super) fn lost(dir: Direction, len: usize) -> Step {
    step(Act::Lost(dir, len as u64))
}

pub(super) fn client_ends(how: CloseKind) -> Step {
    step(Act::Close(Direction::Request, how))
}

/// The sensor ends its stream `how`.
pub(super) fn sensor_ends(how: CloseKind) -> Step {
    step(Act::Close(Direction::Response, how))
}

fn connect_failed(error: &'static str) -> Step {
    step(Act::ConnectFailed(error, ConnectFailure::Sensor))
}

/// Connecting to the sensor failed on icaptap's own open-file limit.
fn connect_failed_fd_limit() -> Step {
    step(Act::ConnectFailed(
        "Too many open files (os error 24)",
        ConnectFailure::LocalLimit,
    ))
}

/// The client left, having sent nothing, before the sensor leg was up.
fn client_left_first() -> Step {
    step(Act::ConnectFailed(
        "the client closed the connection",
        ConnectFailure::ClientGone,
    ))
}

/// The sensor leg led back into icaptap.
fn looped(error: &'static str) -> Step {
    step(Act::ConnectFailed(error, ConnectFailure::Loop))
}

/// A TLS leg did not come up.
fn tls_failed(side: TlsSide, failure: TlsFailure) -> Step {
    step(Act::ConnectFailed(
        "TLS handshake failed",
        ConnectFailure::Tls(side, failure),
    ))
}

pub(super) fn wait_ms(ms: u64) -> Step {
    step(Act::Wait(Duration::from_millis(ms)))
}

pub(super) fn tick() -> Step {
    step(Act::Tick)
}

/// Short timers, so that a script's waits stay small.
const TIMERS: ObserverConfig = ObserverConfig {
    verdict_timeout: Duration::from_millis(600),
    stall_timeout: Duration::from_millis(400),
    eof_wait: Duration::from_millis(300),
    max_pipeline: icap_codec::MAX_OPEN_EXCHANGES,
};

/// Each data, close or connect step takes this long.
const STEP_US: Micros = 1_000;

/// Plays `script` to an observer in `mode`; every connection is finished
/// after the last step, then the observer.
pub(super) fn play(mode: ObserverMode, script: Vec<Step>) -> MemorySink {
    let sink = Shared::default();
    let mut observer = Observer::new(mode, TIMERS, Box::new(sink.clone()));
    let mut at: Micros = 1_700_000_000_000_000;
    let mut conns: BTreeMap<u64, Arc<ConnMeta>> = BTreeMap::new();
    // Next offset per connection and direction (true: the request).
    let mut offsets: BTreeMap<(u64, bool), u64> = BTreeMap::new();
    let mut frames = 0u64;
    for Step { conn, act } in script {
        let meta = conns
            .entry(conn)
            .or_insert_with(|| {
                let meta = Arc::new(ConnMeta {
                    id: conn,
                    client: format!("192.0.2.1:{}", 40000 + conn).parse().unwrap(),
                    listen: "192.0.2.2:1344".parse().unwrap(),
                    upstream_local: None,
                    server: "192.0.2.3:1344".parse().unwrap(),
                    opened: at,
                });
                observer.handle(tap(&meta, at, None, TapEvent::Open));
                meta
            })
            .clone();
        // Frame numbers only in a capture, as the offline reader gives them.
        let frame = (mode == ObserverMode::Capture).then(|| {
            frames += 1;
            frames
        });
        let event = match act {
            Act::Wait(d) => {
                at += d.as_micros() as u64;
                continue;
            }
            Act::Tick => {
                observer.tick(at);
                continue;
            }
            Act::Data(dir, bytes) => {
                let offset = offsets
                    .entry((conn, dir == Direction::Request))
                    .or_default();
                let event = TapEvent::Data {
                    dir,
                    offset: *offset,
                    bytes: Bytes::from(bytes),
                };
                if let TapEvent::Data { bytes, .. } = &event {
                    *offset += bytes.len() as u64;
                }
                event
            }
            Act::Hole(dir, len) => {
                *offsets
                    .entry((conn, dir == Direction::Request))
                    .or_default() += len;
                continue;
            }
            Act::Lost(dir, len) => {
                let offset = offsets
                    .entry((conn, dir == Direction::Request))
                    .or_default();
                let event = TapEvent::Lost {
                    dir,
                    offset: *offset,
                };
                *offset += len;
                event
            }
            Act::Close(dir, how) => TapEvent::Closed { dir, how },
            Act::ConnectFailed(error, cause) => TapEvent::ConnectFailed {
                error: error.to_string(),
                cause,
            },
        };
        at += STEP_US;
        observer.handle(tap(&meta, at, frame, event));
    }
    for meta in conns.values() {
        at += STEP_US;
        observer.handle(tap(meta, at, None, TapEvent::Finished));
    }
    observer.finish(at);
    let records = sink.lock();
    MemorySink {
        exchanges: records.exchanges.clone(),
        connections: records.connections.clone(),
    }
}

fn tap(meta: &Arc<ConnMeta>, at: Micros, frame: Option<u64>, event: TapEvent) -> Tap {
    Tap {
        conn: meta.clone(),
        at,
        frame,
        event,
    }
}

/// Where a row's code must be.
#[derive(Clone, Copy, Debug)]
enum Place {
    /// On an exchange record; the verdict is that exchange's.
    Exchange,
    /// On a connection record; the verdict is that connection's last
    /// exchange's, or `none` when it had none.
    Connection,
}

/// Plays a row and checks that `code` is where it must be with `verdict`.
fn check(mode: ObserverMode, script: Vec<Step>, place: Place, code: &str, verdict: &str) {
    let out = play(mode, script);
    let found = match place {
        Place::Exchange => out
            .exchanges
            .iter()
            .find(|x| x.anomalies.iter().any(|a| a.code == code))
            .map(|x| x.verdict.clone()),
        Place::Connection => out
            .connections
            .iter()
            .find(|c| c.anomalies.iter().any(|a| a.code == code))
            .map(|c| {
                out.exchanges
                    .iter()
                    .rfind(|x| x.conn == c.conn)
                    .map_or("none".to_string(), |x| x.verdict.clone())
            }),
    };
    let Some(found) = found else {
        panic!(
            "no {place:?} record carries {code}:\nexchanges: {:#?}\nconnections: {:#?}",
            out.exchanges, out.connections
        );
    };
    assert_eq!(found, verdict, "verdict with {code}");
}

macro_rules! rule_table {
    ($(
        $(#[$doc:meta])*
        $name:ident: $mode:ident [$($step:expr),* $(,)?] => $place:ident $code:literal, $verdict:literal;
    )*) => {
        $(
            $(#[$doc])*
            #[test]
            fn $name() {
                check(ObserverMode::$mode, vec![$($step),*], Place::$place, $code, $verdict);
            }
        )*

        /// Every code the table has a row for.
        const TABLE_CODES: &[&str] = &[$($code),*];
    };
}

pub(super) const SERVICE: &str = "icap://192.0.2.3:1344/av";

/// An OPTIONS request for the service.
pub(super) fn options_request() -> String {
    format!("OPTIONS {SERVICE} ICAP/1.0\r\nHost: 192.0.2.3\r\nEncapsulated: null-body=0\r\n\r\n")
}

/// An OPTIONS answer with `extra` header lines.
pub(super) fn options_answer(extra: &str) -> String {
    format!(
        "ICAP/1.0 200 OK\r\nMethods: RESPMOD\r\nISTag: \"t1\"\r\n{extra}Encapsulated: null-body=0\r\n\r\n"
    )
}

/// A REQMOD of `http_method` `target` with `extra` ICAP header lines.
pub(super) fn reqmod(extra: &str, http_method: &str, target: &str) -> String {
    let http = format!("{http_method} {target} HTTP/1.1\r\nHost: origin.example\r\n\r\n");
    format!(
        "REQMOD {SERVICE} ICAP/1.0\r\nHost: 192.0.2.3\r\nAllow: 204\r\n{extra}Encapsulated: req-hdr=0, null-body={}\r\n\r\n{http}",
        http.len()
    )
}

/// A plain REQMOD.
pub(super) fn get() -> String {
    reqmod("", "GET", "http://origin.example/")
}

/// The head of a RESPMOD with a body, `extra` ICAP header lines included;
/// the body's chunks follow separately.
fn respmod_head(extra: &str) -> String {
    let req_hdr = "GET http://origin.example/file HTTP/1.1\r\nHost: origin.example\r\n\r\n";
    let res_hdr = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n";
    format!(
        "RESPMOD {SERVICE} ICAP/1.0\r\nHost: 192.0.2.3\r\nAllow: 204\r\n{extra}Encapsulated: req-hdr=0, res-hdr={}, res-body={}\r\n\r\n{req_hdr}{res_hdr}",
        req_hdr.len(),
        req_hdr.len() + res_hdr.len()
    )
}

/// `body` as one chunk and the last chunk (with `ext` on it, e.g. `ieof`).
fn chunked(body: &[u8], ext: &str) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(format!("\r\n0{ext}\r\n\r\n").as_bytes());
    out
}

/// A RESPMOD of the EICAR test file, whole.
fn eicar_respmod() -> Vec<u8> {
    let mut body = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$".to_vec();
    body.extend_from_slice(EICAR_MARKER);
    body.extend_from_slice(b"!$H+H*");
    let mut out = respmod_head("").into_bytes();
    out.extend_from_slice(&chunked(&body, ""));
    out
}

/// A RESPMOD with a 4-byte preview of a longer body, without `ieof`.
fn preview_respmod() -> Vec<u8> {
    let mut out = respmod_head("Preview: 4\r\n").into_bytes();
    out.extend_from_slice(&chunked(b"abcd", ""));
    out
}

/// An answer with `status` and no body.
pub(super) fn status(line: &str, istag: &str) -> String {
    format!("ICAP/1.0 {line}\r\nISTag: \"{istag}\"\r\nEncapsulated: null-body=0\r\n\r\n")
}

pub(super) fn no_content(istag: &str) -> String {
    format!("ICAP/1.0 204 No Content\r\nISTag: \"{istag}\"\r\n\r\n")
}

/// A REQMOD answered with an HTTP 403 page.
fn page() -> String {
    let http = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
    format!(
        "ICAP/1.0 200 OK\r\nISTag: \"t1\"\r\nEncapsulated: res-hdr=0, null-body={}\r\n\r\n{http}",
        http.len()
    )
}

/// The head of an infected answer (a block page) and the first bytes of its
/// chunked body.
fn infected_head() -> String {
    let http = "HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\n\r\n";
    format!(
        "ICAP/1.0 200 OK\r\nISTag: \"t1\"\r\nX-Virus-ID: Test.Virus\r\nEncapsulated: res-hdr=0, res-body={}\r\n\r\n{http}100\r\n<html>",
        http.len()
    )
}

use CloseKind::{Fin, IcaptapReset, Reset};

rule_table! {
    sensor_unreachable: Live [connect_failed("connection refused")]
        => Connection "sensor-unreachable", "none";
    /// EMFILE on the sensor leg is icaptap's limit, never the sensor's.
    icaptap_fd_limit: Live [connect_failed_fd_limit()]
        => Connection "icaptap-fd-limit", "none";
    client_gone_before_connect: Live [client_left_first()]
        => Connection "client-gone-before-connect", "none";
    forwarding_loop: Live [looped("forwarding loop: came back to icaptap")]
        => Connection "forwarding-loop", "none";
    tls_client_handshake_failed: Live [tls_failed(TlsSide::Client, TlsFailure::Handshake)]
        => Connection "tls-client-handshake-failed", "none";
    tls_plain_on_tls_port: Live [tls_failed(TlsSide::Client, TlsFailure::PlainOnTlsPort)]
        => Connection "tls-plain-on-tls-port", "none";
    tls_sensor_handshake_failed: Live [tls_failed(TlsSide::Sensor, TlsFailure::Handshake)]
        => Connection "tls-sensor-handshake-failed", "none";
    tls_certificate_expired: Live [tls_failed(TlsSide::Sensor, TlsFailure::CertificateExpired)]
        => Connection "tls-certificate-expired", "none";
    tls_certificate_untrusted: Live [tls_failed(TlsSide::Sensor, TlsFailure::CertificateUntrusted)]
        => Connection "tls-certificate-untrusted", "none";
    tls_certificate_name_mismatch: Live [
        tls_failed(TlsSide::Sensor, TlsFailure::CertificateNameMismatch),
    ] => Connection "tls-certificate-name-mismatch", "none";
    server_closed_before_response: Live [req(get()), sensor_ends(Fin)]
        => Exchange "server-closed-before-response", "missing";
    server_reset_before_response: Live [req(get()), sensor_ends(Reset)]
        => Exchange "server-reset-before-response", "missing";
    client_closed_before_response: Live [req(get()), client_ends(Reset)]
        => Exchange "client-closed-before-response", "missing";
    /// The client hangs up on the head of an infected answer: it stays
    /// infected, cut by the client.
    client_closed_during_response: Live [
        req(eicar_respmod()), resp(infected_head()), client_ends(Reset), sensor_ends(IcaptapReset),
    ] => Exchange "client-closed-during-response", "infected";
    verdict_timeout: Live [req(get()), wait_ms(700), tick()]
        => Exchange "verdict-timeout", "missing";
    /// The late answer goes on the connection: the exchange's record is
    /// already out, as missing.
    verdict_late: Live [req(get()), wait_ms(700), tick(), resp(no_content("t1"))]
        => Connection "verdict-late", "missing";
    reused_connection_closed: Live [
        req(options_request()), resp(options_answer("")), req(get()), sensor_ends(Fin),
    ] => Exchange "reused-connection-closed", "missing";
    preview_deadlock: Live [req(preview_respmod()), wait_ms(500), tick()]
        => Exchange "preview-deadlock", "missing";
    continue_not_followed: Live [
        req(preview_respmod()), resp("ICAP/1.0 100 Continue\r\n\r\n"), wait_ms(500), tick(),
    ] => Exchange "continue-not-followed", "missing";
    transfer_stall: Live [req(respmod_head("")), req("10\r\nabcd"), wait_ms(500), tick()]
        => Exchange "transfer-stall", "missing";
    /// The client follows the 100 Continue, stops mid-body, and the sensor
    /// gives up waiting: the close is the sensor's answer to the stall.
    server_closed_stalled_transfer: Capture [
        req(preview_respmod()), resp("ICAP/1.0 100 Continue\r\n\r\n"), req("10\r\nabcd"),
        wait_ms(500), sensor_ends(Fin),
    ] => Exchange "server-closed-stalled-transfer", "missing";
    /// The client leaves its answered connection idle, opens another for
    /// its next request, and closes the first one later.
    client_waited_for_eof: Live [
        req(get()), resp(no_content("t1")), req(get()).on(2), resp(no_content("t1")).on(2),
        wait_ms(400), client_ends(Fin),
    ] => Connection "client-waited-for-eof", "clean";
    /// The second connection to a sensor that allows one.
    max_connections_exceeded: Live [
        req(options_request()), resp(options_answer("Max-Connections: 1\r\n")),
        req(get()).on(2),
    ] => Connection "max-connections-exceeded", "missing";
    server_overloaded: Live [req(get()), resp(status("503 Service Overloaded", "t1"))]
        => Exchange "server-overloaded", "error";
    service_not_found: Live [req(get()), resp(status("404 ICAP Service Not Found", "t1"))]
        => Exchange "service-not-found", "error";
    method_not_allowed: Live [req(get()), resp(status("405 Method Not Allowed", "t1"))]
        => Exchange "method-not-allowed", "error";
    method_not_advertised: Live [
        req(options_request()), resp(options_answer("")), req(get()), resp(no_content("t1")),
    ] => Exchange "method-not-advertised", "clean";
    istag_changed: Live [req(get()), resp(no_content("t1")), req(get()), resp(no_content("t2"))]
        => Exchange "istag-changed", "clean";
    identity_header_missing: Live [
        req(options_request()), resp(options_answer("X-Include: X-Client-IP\r\n")),
        req(get()), resp(no_content("t1")),
    ] => Exchange "identity-header-missing", "clean";
    identity_header_invalid: Live [
        req(reqmod("X-Authenticated-User: not*base64\r\n", "GET", "http://origin.example/")),
        resp(no_content("t1")),
    ] => Exchange "identity-header-invalid", "clean";
    connect_answered_with_page: Live [req(reqmod("", "CONNECT", "origin.example:443")), resp(page())]
        => Exchange "connect-answered-with-page", "blocked";
    eicar_not_detected: Live [req(eicar_respmod()), resp(no_content("t1"))]
        => Exchange "eicar-not-detected", "clean";
    /// The capture stops after the request: neither side closed.
    capture_ended: Capture [req(get())] => Exchange "capture-ended", "unobserved";
    /// Eight bytes of the request body never reached the observer.
    observer_dropped: Live [
        req(respmod_head("")), req("10\r\nabcd"), req_hole(8), req("efgh\r\n0\r\n\r\n"),
    ] => Connection "observer-dropped", "unobserved";
}

/// Records of `script` played live, one exchange.
fn only_exchange(mode: ObserverMode, script: Vec<Step>) -> ExchangeRecord {
    let out = play(mode, script);
    assert_eq!(out.exchanges.len(), 1, "{:#?}", out.exchanges);
    out.exchanges[0].clone()
}

fn codes(x: &ExchangeRecord) -> Vec<&str> {
    x.anomalies.iter().map(|a| a.code.as_str()).collect()
}

/// A client that follows the 100 Continue and then stalls mid-body did not
/// ignore the 100: it stalled, at the byte where it stopped.
#[test]
fn a_client_that_followed_100_continue_and_stalls_is_a_transfer_stall() {
    let continued = || resp("ICAP/1.0 100 Continue\r\n\r\n");
    let x = only_exchange(
        ObserverMode::Live,
        vec![
            req(preview_respmod()),
            continued(),
            req("10\r\nabcd"),
            wait_ms(500),
            tick(),
        ],
    );
    assert_eq!(codes(&x), ["transfer-stall"], "{:#?}", x.anomalies);
    let stall = &x.anomalies[0];
    let stalled_at = preview_respmod().len() as u64 + 8;
    assert_eq!(
        (stall.side.as_str(), stall.offset),
        ("client", Some(stalled_at))
    );
    assert!(
        stall.detail.contains("RESPMOD request 0")
            && stall.detail.contains("4 of them after the 100 Continue"),
        "{}",
        stall.detail
    );
}

/// A sensor that ends the connection after the client stalled is not
/// blamed for a missing verdict, whether the clock saw the stall first
/// (live) or only the close tells it (a capture, no tick in between).
#[test]
fn a_sensor_closing_after_a_client_stall_is_not_server_closed_before_response() {
    for (mode, tick_first) in [(ObserverMode::Live, true), (ObserverMode::Capture, false)] {
        let mut script = vec![
            req(options_request()),
            resp(options_answer("")),
            req(preview_respmod()),
            resp("ICAP/1.0 100 Continue\r\n\r\n"),
            req("10\r\nabcd"),
            wait_ms(450),
        ];
        if tick_first {
            script.push(tick());
        }
        // Past the verdict timeout: the sensor waits for the body, not the
        // client for a verdict.
        script.extend([wait_ms(500), sensor_ends(Fin), client_ends(Reset)]);
        let out = play(mode, script);
        let x = out
            .exchanges
            .iter()
            .find(|x| x.verdict == "missing")
            .unwrap();
        let found = codes(x);
        assert!(
            found.contains(&"transfer-stall") && found.contains(&"server-closed-stalled-transfer"),
            "{mode:?}: {:#?}",
            x.anomalies
        );
        for wrong in [
            "continue-not-followed",
            "server-closed-before-response",
            "reused-connection-closed",
        ] {
            assert!(
                !found.contains(&wrong),
                "{mode:?} {wrong}: {:#?}",
                x.anomalies
            );
        }
        let close = x
            .anomalies
            .iter()
            .find(|a| a.code == "server-closed-stalled-transfer")
            .unwrap();
        assert!(
            close.detail.contains("1.0 s after the client's last byte"),
            "{}",
            close.detail
        );
        assert_eq!(close.severity, "info");
    }
}

/// The sensor leg reset by icaptap after the client hung up is no fault
/// of the sensor: no server-side anomaly, the record is incomplete, and the
/// connection record says who did what.
#[test]
fn a_reset_icaptap_sent_is_not_the_sensors() {
    let out = play(
        ObserverMode::Live,
        vec![
            req(eicar_respmod()),
            resp(infected_head()),
            client_ends(Reset),
            sensor_ends(IcaptapReset),
        ],
    );
    let x = &out.exchanges[0];
    assert_eq!(x.verdict, "infected", "{x:#?}");
    assert_eq!(x.threat.as_deref(), Some("Test.Virus"));
    assert!(!x.decode_complete);
    assert!(
        x.anomalies.iter().all(|a| a.side == "client"),
        "{:#?}",
        x.anomalies
    );
    let close = &out.connections[0].close;
    assert_eq!(
        (close.client.as_deref(), close.server.as_deref()),
        (Some("reset"), Some("icaptap-reset"))
    );
}

/// The keep-alive race names the true time from the request to the close.
#[test]
fn reused_connection_closed_says_how_long_after_the_request() {
    let out = play(
        ObserverMode::Live,
        vec![
            req(options_request()),
            resp(options_answer("")),
            req(get()),
            wait_ms(500),
            sensor_ends(Fin),
        ],
    );
    let x = out
        .exchanges
        .iter()
        .find(|x| x.verdict == "missing")
        .unwrap();
    let reused = x
        .anomalies
        .iter()
        .find(|a| a.code == "reused-connection-closed")
        .unwrap();
    assert!(
        reused.detail.contains("0.501 s after request 1 began"),
        "{}",
        reused.detail
    );
}

#[test]
fn every_rule_code_has_a_row() {
    for code in RuleCode::ALL {
        assert!(
            TABLE_CODES.contains(&code.as_str()),
            "no row for {}",
            code.as_str()
        );
    }
}

/// The same hole in a capture is the capture's: counted, not blamed on the
/// observer.
#[test]
fn a_hole_in_a_capture_is_not_observer_dropped() {
    let out = play(
        ObserverMode::Capture,
        vec![
            req(respmod_head("")),
            req("10\r\nabcd"),
            req_hole(8),
            req("efgh\r\n0\r\n\r\n"),
        ],
    );
    assert_eq!(out.connections.len(), 1);
    assert_eq!(out.connections[0].unobserved_bytes, 8);
    assert!(
        !out.connections[0]
            .anomalies
            .iter()
            .any(|a| a.code == "observer-dropped"),
        "{:?}",
        out.connections[0].anomalies
    );
}
