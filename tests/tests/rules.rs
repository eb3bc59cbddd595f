//! One test per anomaly the observer reports about a live connection
//! (the correlator's and the rules' codes), each triggered by a scripted
//! peer misbehaving in exactly that way behind the real in-process proxy.

mod scripted;

use std::time::Duration;

use scripted::*;

const ISTAG: &str = "ISTag: \"sensor-1\"\r\n";

fn no_content() -> Step {
    send(&format!("ICAP/1.0 204 No Content\r\n{ISTAG}\r\n"))
}

fn options_answer(extra: &str) -> Step {
    send(&format!(
        "ICAP/1.0 200 OK\r\nMethods: RESPMOD\r\n{ISTAG}{extra}Encapsulated: null-body=0\r\n\r\n"
    ))
}

fn ms(n: u64) -> Step {
    Step::Sleep(Duration::from_millis(n))
}

fn close() -> Vec<Step> {
    vec![Step::Shutdown, Step::AwaitEof]
}

fn then_close(mut steps: Vec<Step>) -> Vec<Step> {
    steps.extend(close());
    steps
}

#[tokio::test]
async fn continue_after_ieof() {
    let body = b"small";
    let out = run_case(
        vec![vec![
            Step::AwaitMessage,
            send("ICAP/1.0 100 Continue\r\n\r\n"),
            no_content(),
            Step::AwaitEof,
        ]],
        vec![then_close(vec![
            Step::Send(respmod("/av/respmod", "", body, Some(1024))),
            Step::AwaitMessage,
        ])],
        quick_timers(),
    )
    .await;
    assert!(out.has("continue-after-ieof"), "{:?}", out.codes());
    assert_eq!(out.only().verdict, "malformed");
}

#[tokio::test]
async fn continue_without_preview() {
    let out = run_case(
        vec![vec![
            Step::AwaitMessage,
            send("ICAP/1.0 100 Continue\r\n\r\n"),
            no_content(),
            Step::AwaitEof,
        ]],
        vec![then_close(vec![
            Step::Send(respmod("/av/respmod", "Allow: 204\r\n", b"abc", None)),
            Step::AwaitMessage,
        ])],
        quick_timers(),
    )
    .await;
    assert!(out.has("continue-without-preview"), "{:?}", out.codes());
}

#[tokio::test]
async fn status_204_not_allowed() {
    let out = run_case(
        vec![vec![Step::AwaitMessage, no_content(), Step::AwaitEof]],
        vec![then_close(vec![
            Step::Send(respmod("/av/respmod", "", b"abc", None)),
            Step::AwaitMessage,
        ])],
        quick_timers(),
    )
    .await;
    assert!(out.has("status-204-not-allowed"), "{:?}", out.codes());
    assert_eq!(out.only().verdict, "malformed");
}

#[tokio::test]
async fn preview_then_continue_then_verdict_is_clean() {
    let body = vec![b'a'; 3000];
    let out = run_case(
        vec![vec![
            Step::AwaitMessage,
            send("ICAP/1.0 100 Continue\r\n\r\n"),
            Step::AwaitMessage,
            no_content(),
            Step::AwaitEof,
        ]],
        vec![then_close(vec![
            Step::Send(respmod("/av/respmod", "Allow: 204\r\n", &body, Some(1024))),
            Step::AwaitContinue,
            Step::Send(remainder(&body, 1024)),
            Step::AwaitMessage,
        ])],
        quick_timers(),
    )
    .await;
    let x = out.only();
    assert_eq!(x.verdict, "clean", "{:?}", x.anomalies);
    let p = x.preview.as_ref().unwrap();
    assert_eq!(
        (p.size, p.sent, p.ieof, p.continued),
        (1024, 1024, false, true)
    );
    assert_eq!(x.request_body_bytes, 3000);
    assert!(x.timings.continue_us.is_some());
    assert!(x.anomalies.is_empty(), "{:?}", x.anomalies);
}

#[tokio::test]
async fn preview_deadlock() {
    let body = vec![b'a'; 3000];
    let out = run_case(
        vec![vec![Step::AwaitMessage, Step::AwaitEof]],
        vec![vec![
            Step::Send(respmod("/av/respmod", "", &body, Some(1024))),
            ms(1400),
            Step::Shutdown,
            Step::AwaitEof,
        ]],
        quick_timers(),
    )
    .await;
    assert!(out.has("preview-deadlock"), "{:?}", out.codes());
    assert_eq!(out.only().verdict, "missing");
}

#[tokio::test]
async fn continue_not_followed() {
    let body = vec![b'a'; 3000];
    let out = run_case(
        vec![vec![
            Step::AwaitMessage,
            send("ICAP/1.0 100 Continue\r\n\r\n"),
            Step::AwaitEof,
        ]],
        vec![vec![
            Step::Send(respmod("/av/respmod", "", &body, Some(1024))),
            Step::AwaitContinue,
            ms(1400),
            Step::Shutdown,
            Step::AwaitEof,
        ]],
        quick_timers(),
    )
    .await;
    assert!(out.has("continue-not-followed"), "{:?}", out.codes());
}

#[tokio::test]
async fn continue_ignored() {
    let body = vec![b'a'; 3000];
    let out = run_case(
        vec![vec![
            Step::AwaitMessage,
            send("ICAP/1.0 100 Continue\r\n\r\n"),
            Step::AwaitMessage,
            no_content(),
            Step::AwaitEof,
        ]],
        vec![vec![
            Step::Send(respmod("/av/respmod", "", &body, Some(1024))),
            Step::AwaitContinue,
            Step::Send(respmod("/av/respmod", "Allow: 204\r\n", b"next", None)),
            Step::AwaitMessage,
            Step::Shutdown,
            Step::AwaitEof,
        ]],
        quick_timers(),
    )
    .await;
    assert!(out.has("continue-ignored"), "{:?}", out.codes());
    assert_eq!(out.exchanges.len(), 2);
}

#[tokio::test]
async fn transfer_stall_reports_the_offset() {
    let mut partial = respmod("/av/respmod", "", &vec![b'z'; 5000], None);
    partial.truncate(partial.len() - 3000);
    let out = run_case(
        vec![vec![Step::AwaitEof]],
        vec![vec![
            Step::Send(partial.clone()),
            ms(1400),
            Step::Shutdown,
            Step::AwaitEof,
        ]],
        quick_timers(),
    )
    .await;
    assert!(out.has("transfer-stall"), "{:?}", out.codes());
    let stall = out.exchanges[0]
        .anomalies
        .iter()
        .find(|a| a.code == "transfer-stall")
        .unwrap();
    assert_eq!(stall.offset, Some(partial.len() as u64));
    assert_eq!(stall.side, "client");
}

/// A client that leaves its answered keep-alive connection idle and closes
/// it later, with nothing outstanding and no other connection opened, is a
/// normal idle close, not `client-waited-for-eof` (observe/rule_table.rs
/// has the row for a client that opened another connection meanwhile).
#[tokio::test]
async fn an_idle_keep_alive_close_is_not_client_waited_for_eof() {
    let out = run_case(
        vec![vec![Step::AwaitMessage, no_content(), Step::AwaitEof]],
        vec![vec![
            Step::Send(respmod("/av/respmod", "Allow: 204\r\n", b"abc", None)),
            Step::AwaitMessage,
            ms(700),
            Step::Shutdown,
            Step::AwaitEof,
        ]],
        quick_timers(),
    )
    .await;
    assert!(!out.has("client-waited-for-eof"), "{:?}", out.codes());
    assert_eq!(out.only().verdict, "clean");
}

#[tokio::test]
async fn reused_connection_closed() {
    let out = run_case(
        vec![vec![
            Step::AwaitMessage,
            no_content(),
            Step::AwaitMessage,
            Step::Shutdown,
            Step::AwaitEof,
        ]],
        vec![vec![
            Step::Send(respmod("/av/respmod", "Allow: 204\r\n", b"one", None)),
            Step::AwaitMessage,
            Step::Send(respmod("/av/respmod", "Allow: 204\r\n", b"two", None)),
            Step::AwaitEof,
        ]],
        quick_timers(),
    )
    .await;
    assert_eq!(out.exchanges.len(), 2);
    assert_eq!(out.exchanges[1].verdict, "missing");
    assert!(out.has("reused-connection-closed"), "{:?}", out.codes());
    assert!(
        out.has("server-closed-before-response"),
        "{:?}",
        out.codes()
    );
}

#[tokio::test]
async fn client_closed_before_response() {
    let out = run_case(
        vec![vec![Step::AwaitMessage, ms(500), Step::AwaitEof]],
        vec![vec![
            Step::Send(respmod("/av/respmod", "", b"abc", None)),
            ms(200),
            Step::Reset,
        ]],
        quick_timers(),
    )
    .await;
    assert!(
        out.has("client-closed-before-response"),
        "{:?}",
        out.codes()
    );
}

#[tokio::test]
async fn method_not_advertised_and_identity_headers() {
    let out = run_case(
        vec![vec![
            Step::AwaitMessage,
            options_answer("X-Include: X-Client-IP, X-Authenticated-User\r\n"),
            Step::AwaitMessage,
            no_content(),
            Step::AwaitEof,
        ]],
        vec![vec![
            Step::Send(options("/av")),
            Step::AwaitMessage,
            Step::Send(reqmod(
                "/av",
                "Allow: 204\r\nX-Authenticated-User: not*base64!\r\n",
                "GET",
                "http://x.example/",
            )),
            Step::AwaitMessage,
            Step::Shutdown,
            Step::AwaitEof,
        ]],
        quick_timers(),
    )
    .await;
    assert!(out.has("method-not-advertised"), "{:?}", out.codes());
    assert!(out.has("identity-header-missing"), "{:?}", out.codes());
    assert!(out.has("identity-header-invalid"), "{:?}", out.codes());
    let missing = out.exchanges[1]
        .anomalies
        .iter()
        .find(|a| a.code == "identity-header-missing")
        .unwrap();
    assert!(missing.detail.contains("X-Client-IP"), "{}", missing.detail);
}

#[tokio::test]
async fn identity_headers_are_decoded() {
    let out = run_case(
        vec![vec![Step::AwaitMessage, no_content(), Step::AwaitEof]],
        vec![then_close(vec![
            // base64("WinNT://EXAMPLE/alice")
            Step::Send(reqmod(
                "/av/reqmod",
                "Allow: 204\r\nX-Client-IP: 192.0.2.7\r\nX-Authenticated-User: V2luTlQ6Ly9FWEFNUExFL2FsaWNl\r\n",
                "GET",
                "http://x.example/",
            )),
            Step::AwaitMessage,
        ])],
        quick_timers(),
    )
    .await;
    let x = out.only();
    assert_eq!(x.identity.client_ip.as_deref(), Some("192.0.2.7"));
    assert_eq!(
        x.identity.authenticated_user.as_deref(),
        Some("WinNT://EXAMPLE/alice")
    );
    assert!(x.anomalies.is_empty(), "{:?}", x.anomalies);
}

#[tokio::test]
async fn istag_changed() {
    let out = run_case(
        vec![vec![
            Step::AwaitMessage,
            send("ICAP/1.0 204 No Content\r\nISTag: \"sig-1\"\r\n\r\n"),
            Step::AwaitMessage,
            send("ICAP/1.0 204 No Content\r\nISTag: \"sig-2\"\r\n\r\n"),
            Step::AwaitEof,
        ]],
        vec![then_close(vec![
            Step::Send(respmod("/av/respmod", "Allow: 204\r\n", b"a", None)),
            Step::AwaitMessage,
            Step::Send(respmod("/av/respmod", "Allow: 204\r\n", b"b", None)),
            Step::AwaitMessage,
        ])],
        quick_timers(),
    )
    .await;
    assert!(
        out.exchanges[1]
            .anomalies
            .iter()
            .any(|a| a.code == "istag-changed"),
        "{:?}",
        out.codes()
    );
}

#[tokio::test]
async fn connect_answered_with_page() {
    let head = "HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\n";
    let answer = icap_response("ICAP/1.0 200 OK", ISTAG, Some(head), Some(b"deny"));
    let out = run_case(
        vec![vec![Step::AwaitMessage, Step::Send(answer), Step::AwaitEof]],
        vec![then_close(vec![
            Step::Send(reqmod("/av/reqmod", "", "CONNECT", "bank.example:443")),
            Step::AwaitMessage,
        ])],
        quick_timers(),
    )
    .await;
    assert!(out.has("connect-answered-with-page"), "{:?}", out.codes());
    assert_eq!(out.only().verdict, "blocked");
}

#[tokio::test]
async fn eicar_not_detected() {
    let out = run_case(
        vec![vec![Step::AwaitMessage, no_content(), Step::AwaitEof]],
        vec![then_close(vec![
            Step::Send(respmod("/av/respmod", "Allow: 204\r\n", EICAR, None)),
            Step::AwaitMessage,
        ])],
        quick_timers(),
    )
    .await;
    assert!(out.has("eicar-not-detected"), "{:?}", out.codes());
}

#[tokio::test]
async fn service_not_found_and_method_not_allowed() {
    let out = run_case(
        vec![vec![
            Step::AwaitMessage,
            send(&format!(
                "ICAP/1.0 404 ICAP Service not found\r\n{ISTAG}\r\n"
            )),
            Step::AwaitMessage,
            send(&format!(
                "ICAP/1.0 405 Method not allowed for service\r\n{ISTAG}\r\n"
            )),
            Step::AwaitEof,
        ]],
        vec![then_close(vec![
            Step::Send(respmod("/wrong", "", b"a", None)),
            Step::AwaitMessage,
            Step::Send(reqmod("/av/respmod", "", "GET", "http://x.example/")),
            Step::AwaitMessage,
        ])],
        quick_timers(),
    )
    .await;
    assert!(out.has("service-not-found"), "{:?}", out.codes());
    assert!(out.has("method-not-allowed"), "{:?}", out.codes());
    assert!(out.exchanges.iter().all(|x| x.verdict == "error"));
}

#[tokio::test]
async fn content_lost() {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n";
    let answer = icap_response("ICAP/1.0 200 OK", ISTAG, Some(head), None);
    let out = run_case(
        vec![vec![Step::AwaitMessage, Step::Send(answer), Step::AwaitEof]],
        vec![then_close(vec![
            Step::Send(respmod("/av/respmod", "", b"the whole file", None)),
            Step::AwaitMessage,
        ])],
        quick_timers(),
    )
    .await;
    assert!(out.has("content-lost"), "{:?}", out.codes());
}

#[tokio::test]
async fn response_unsolicited() {
    let out = run_case(
        vec![vec![no_content(), Step::AwaitEof]],
        vec![vec![ms(300), Step::Shutdown, Step::AwaitEof]],
        quick_timers(),
    )
    .await;
    assert!(out.has("response-unsolicited"), "{:?}", out.codes());
    assert_eq!(out.only().verdict, "malformed");
}

#[tokio::test]
async fn stray_bytes_between_requests() {
    let mut bytes = respmod("/av/respmod", "Allow: 204\r\n", b"a", None);
    bytes.extend_from_slice(b"0\r\n\r\n");
    let out = run_case(
        vec![vec![
            Step::AwaitMessage,
            no_content(),
            Step::AwaitMessage,
            no_content(),
            Step::AwaitEof,
        ]],
        vec![then_close(vec![
            Step::Send(bytes),
            Step::AwaitMessage,
            Step::Send(respmod("/av/respmod", "Allow: 204\r\n", b"b", None)),
            Step::AwaitMessage,
        ])],
        quick_timers(),
    )
    .await;
    assert!(out.has("stray-bytes"), "{:?}", out.codes());
    assert_eq!(out.exchanges.len(), 2);
}

#[tokio::test]
async fn tls_on_plain_port() {
    // The start of a TLS 1.2 ClientHello record.
    let hello = [
        0x16, 0x03, 0x01, 0x00, 0x2e, 0x01, 0x00, 0x00, 0x2a, 0x03, 0x03, 0xaa, 0xbb,
    ];
    let out = run_case(
        vec![vec![Step::AwaitEof]],
        vec![vec![
            send_bytes(&hello),
            ms(200),
            Step::Shutdown,
            Step::AwaitEof,
        ]],
        quick_timers(),
    )
    .await;
    assert!(out.has("tls-on-plain-port"), "{:?}", out.codes());
}

#[tokio::test]
async fn max_connections_exceeded() {
    let upstream = scripted_server(vec![
        vec![
            Step::AwaitMessage,
            options_answer("Max-Connections: 1\r\n"),
            Step::AwaitEof,
        ],
        vec![Step::AwaitEof],
    ])
    .await;
    // Two clients at once: the first keeps its connection open while the
    // second connects.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let mut forward =
        icaptap::forward::ForwardConfig::new("127.0.0.1:0".parse().unwrap(), upstream);
    forward.drain = Duration::from_secs(2);
    let proxy = icaptap::jobs::proxy::start(icaptap::jobs::proxy::ProxyPlan {
        observer: quick_timers(),
        ..icaptap::jobs::proxy::ProxyPlan::new(forward, dir.clone())
    })
    .await
    .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut first = tokio::net::TcpStream::connect(proxy.listen).await.unwrap();
    first.write_all(&options("/av")).await.unwrap();
    let mut buf = [0u8; 4096];
    let _ = first.read(&mut buf).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = tokio::net::TcpStream::connect(proxy.listen).await.unwrap();
    second.write_all(b"").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(second);
    drop(first);
    proxy.stop().await.unwrap();
    let conns: Vec<icaptap::output::records::ConnectionRecord> =
        read_jsonl(&dir.join("connections.jsonl"));
    assert!(
        conns.iter().any(|c| c
            .anomalies
            .iter()
            .any(|a| a.code == "max-connections-exceeded")),
        "{conns:#?}"
    );
}

#[tokio::test]
async fn options_reply_invalid() {
    let out = run_case(
        vec![vec![Step::AwaitMessage, no_content(), Step::AwaitEof]],
        vec![then_close(vec![
            Step::Send(options("/av/respmod")),
            Step::AwaitMessage,
        ])],
        quick_timers(),
    )
    .await;
    assert!(out.has("options-reply-invalid"), "{:?}", out.codes());
}

#[tokio::test]
async fn continue_unrequested() {
    let body = vec![b'q'; 2000];
    let out = run_case(
        vec![vec![
            Step::AwaitMessage,
            ms(300),
            Step::AwaitMessage,
            no_content(),
            Step::AwaitEof,
        ]],
        vec![then_close(vec![
            Step::Send(respmod("/av/respmod", "Allow: 204\r\n", &body, Some(512))),
            ms(100),
            Step::Send(remainder(&body, 512)),
            Step::AwaitMessage,
        ])],
        quick_timers(),
    )
    .await;
    assert!(out.has("continue-unrequested"), "{:?}", out.codes());
}

#[tokio::test]
async fn status_206_not_allowed() {
    let answer = format!("ICAP/1.0 206 Partial Content\r\n{ISTAG}Encapsulated: res-hdr=0, res-body=19\r\n\r\nHTTP/1.1 200 OK\r\n\r\n0; use-original-body=0\r\n\r\n");
    let out = run_case(
        vec![vec![Step::AwaitMessage, send(&answer), Step::AwaitEof]],
        vec![then_close(vec![
            Step::Send(respmod("/av/respmod", "Allow: 204\r\n", b"abc", None)),
            Step::AwaitMessage,
        ])],
        quick_timers(),
    )
    .await;
    assert!(out.has("status-206-not-allowed"), "{:?}", out.codes());
}

/// The observer itself, fed taps with a hole in the offsets as when its
/// queue overflowed: the exchange is marked incomplete and the connection
/// carries `observer-dropped`.
#[test]
fn observer_dropped() {
    use std::sync::{Arc, Mutex};

    use icaptap::observe::{Observer, ObserverConfig, ObserverMode};
    use icaptap::output::records::{ConnectionRecord, ExchangeRecord};
    use icaptap::output::writer::RecordSink;
    use icaptap::tap::{ConnMeta, Direction, Tap, TapEvent};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<(Vec<ExchangeRecord>, Vec<ConnectionRecord>)>>);
    impl RecordSink for Shared {
        fn exchange(&mut self, r: &ExchangeRecord) {
            self.0.lock().unwrap().0.push(r.clone());
        }
        fn connection(&mut self, r: &ConnectionRecord) {
            self.0.lock().unwrap().1.push(r.clone());
        }
    }

    let sink = Shared::default();
    let mut observer = Observer::new(
        ObserverMode::Live,
        ObserverConfig::default(),
        Box::new(sink.clone()),
    );
    let conn = Arc::new(ConnMeta {
        id: 1,
        client: "127.0.0.1:40000".parse().unwrap(),
        listen: "127.0.0.1:1344".parse().unwrap(),
        upstream_local: Some("127.0.0.1:40001".parse().unwrap()),
        server: "127.0.0.1:11344".parse().unwrap(),
        opened: 1_000_000,
    });
    let request = respmod("/av/respmod", "Allow: 204\r\n", &[b'x'; 4000], None);
    let tap = |at: u64, event: TapEvent| Tap {
        conn: conn.clone(),
        at,
        frame: None,
        event,
    };
    observer.handle(tap(1_000_000, TapEvent::Open));
    observer.handle(tap(
        1_000_100,
        TapEvent::Data {
            dir: Direction::Request,
            offset: 0,
            bytes: bytes::Bytes::copy_from_slice(&request[..300]),
        },
    ));
    // Bytes 300..1000 were dropped by the queue.
    observer.handle(tap(
        1_000_200,
        TapEvent::Data {
            dir: Direction::Request,
            offset: 1000,
            bytes: bytes::Bytes::copy_from_slice(&request[1000..]),
        },
    ));
    observer.handle(tap(
        1_000_300,
        TapEvent::Closed {
            dir: Direction::Request,
            how: icaptap::tap::CloseKind::Fin,
        },
    ));
    observer.handle(tap(1_000_400, TapEvent::Finished));
    let (exchanges, connections) = sink.0.lock().unwrap().clone();
    assert_eq!(connections.len(), 1);
    assert_eq!(connections[0].unobserved_bytes, 700);
    assert!(
        connections[0]
            .anomalies
            .iter()
            .any(|a| a.code == "observer-dropped"),
        "{connections:?}"
    );
    assert!(!exchanges.is_empty());
    assert!(!exchanges[0].decode_complete, "{exchanges:?}");
}
