//! Every verdict class, produced by a scripted ICAP server behind the real
//! in-process proxy, as read back from exchanges.jsonl and connections.jsonl.

mod scripted;

use std::time::Duration;

use scripted::*;

const ISTAG: &str = "ISTag: \"sensor-1\"\r\n";

fn client(request: Vec<u8>) -> Vec<Step> {
    vec![
        Step::Send(request),
        Step::AwaitMessage,
        Step::Shutdown,
        Step::AwaitEof,
    ]
}

#[tokio::test]
async fn clean_204() {
    let body = b"hello world";
    let out = run_case(
        vec![vec![
            Step::AwaitMessage,
            send(&format!("ICAP/1.0 204 No Content\r\n{ISTAG}\r\n")),
            Step::AwaitEof,
        ]],
        vec![client(respmod("/av/respmod", "Allow: 204\r\n", body, None))],
        quick_timers(),
    )
    .await;
    let x = out.only();
    assert_eq!(x.verdict, "clean");
    assert_eq!(x.icap_status, Some(204));
    assert_eq!(x.method.as_deref(), Some("RESPMOD"));
    assert_eq!(x.service.as_deref(), Some("/av/respmod"));
    assert_eq!(x.request_body_bytes, body.len() as u64);
    assert_eq!(x.istag.as_deref(), Some("\"sensor-1\""));
    assert_eq!(
        x.http_url.as_deref(),
        Some("http://origin.example/file.bin")
    );
    assert_eq!(x.http_status, Some(200));
    assert!(x.latency_us.is_some());
    assert!(x.anomalies.is_empty(), "{:?}", x.anomalies);
    let c = &out.connections[0];
    assert_eq!(c.exchanges, 1);
    assert_eq!(c.close.client.as_deref(), Some("fin"));
}

#[tokio::test]
async fn clean_200_echo_and_sha256() {
    let body = b"the original object";
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let answer = icap_response("ICAP/1.0 200 OK", ISTAG, Some(&head), Some(body));
    let out = run_case(
        vec![vec![Step::AwaitMessage, Step::Send(answer), Step::AwaitEof]],
        vec![client(respmod("/av/respmod", "", body, None))],
        quick_timers(),
    )
    .await;
    let x = out.only();
    assert_eq!(x.verdict, "clean");
    // SHA-256 of the body, computed independently.
    let expected = {
        use sha2::{Digest, Sha256};
        let d: [u8; 32] = Sha256::digest(body).into();
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert_eq!(x.request_body_sha256.as_deref(), Some(expected.as_str()));
    assert_eq!(x.response_body_bytes, body.len() as u64);
}

#[tokio::test]
async fn modified_200() {
    let head = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n";
    let answer = icap_response("ICAP/1.0 200 OK", ISTAG, Some(head), Some(b"changed"));
    let out = run_case(
        vec![vec![Step::AwaitMessage, Step::Send(answer), Step::AwaitEof]],
        vec![client(respmod("/av/respmod", "", b"original", None))],
        quick_timers(),
    )
    .await;
    assert_eq!(out.only().verdict, "modified");
}

#[tokio::test]
async fn blocked_403_page() {
    let page = b"<html>blocked by policy</html>";
    let head = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n",
        page.len()
    );
    let answer = icap_response("ICAP/1.0 200 OK", ISTAG, Some(&head), Some(page));
    let out = run_case(
        vec![vec![Step::AwaitMessage, Step::Send(answer), Step::AwaitEof]],
        vec![client(respmod("/av/respmod", "", b"some download", None))],
        quick_timers(),
    )
    .await;
    let x = out.only();
    assert_eq!(x.verdict, "blocked");
    assert_eq!(x.http_status_returned, Some(403));
}

#[tokio::test]
async fn reqmod_answered_with_a_response_is_blocked() {
    let page = b"denied";
    let head = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\n\r\n",
        page.len()
    );
    let answer = icap_response("ICAP/1.0 200 OK", ISTAG, Some(&head), Some(page));
    let out = run_case(
        vec![vec![Step::AwaitMessage, Step::Send(answer), Step::AwaitEof]],
        vec![client(reqmod(
            "/av/reqmod",
            "",
            "GET",
            "http://bad.example/",
        ))],
        quick_timers(),
    )
    .await;
    let x = out.only();
    assert_eq!(x.verdict, "blocked");
    assert_eq!(x.method.as_deref(), Some("REQMOD"));
    assert_eq!(x.http_method.as_deref(), Some("GET"));
}

#[tokio::test]
async fn infected_with_threat_name() {
    let page = b"virus found";
    let head = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\n\r\n",
        page.len()
    );
    let headers =
        format!("{ISTAG}X-Infection-Found: Type=0; Resolution=2; Threat=EICAR-Test-File;\r\n");
    let answer = icap_response("ICAP/1.0 200 OK", &headers, Some(&head), Some(page));
    let out = run_case(
        vec![vec![Step::AwaitMessage, Step::Send(answer), Step::AwaitEof]],
        vec![client(respmod("/av/respmod", "", EICAR, None))],
        quick_timers(),
    )
    .await;
    let x = out.only();
    assert_eq!(x.verdict, "infected");
    assert_eq!(x.threat.as_deref(), Some("EICAR-Test-File"));
}

#[tokio::test]
async fn error_503_is_error_and_overloaded() {
    let out = run_case(
        vec![vec![
            Step::AwaitMessage,
            send(&format!("ICAP/1.0 503 Service Unavailable\r\n{ISTAG}\r\n")),
            Step::AwaitEof,
        ]],
        vec![client(respmod("/av/respmod", "", b"x", None))],
        quick_timers(),
    )
    .await;
    let x = out.only();
    assert_eq!(x.verdict, "error");
    assert_eq!(x.icap_status, Some(503));
    assert!(out.has("server-overloaded"), "{:?}", out.codes());
}

#[tokio::test]
async fn missing_when_the_sensor_closes() {
    let out = run_case(
        vec![vec![Step::AwaitMessage, Step::Shutdown, Step::AwaitEof]],
        vec![client(respmod("/av/respmod", "", b"x", None))],
        quick_timers(),
    )
    .await;
    let x = out.only();
    assert_eq!(x.verdict, "missing");
    assert_eq!(x.icap_status, None);
    assert!(
        out.has("server-closed-before-response"),
        "{:?}",
        out.codes()
    );
}

#[tokio::test]
async fn missing_when_the_sensor_resets() {
    let out = run_case(
        vec![vec![Step::AwaitMessage, Step::Reset]],
        vec![client(respmod("/av/respmod", "", b"x", None))],
        quick_timers(),
    )
    .await;
    assert_eq!(out.only().verdict, "missing");
    assert!(out.has("server-reset-before-response"), "{:?}", out.codes());
    assert_eq!(out.connections[0].close.server.as_deref(), Some("reset"));
}

#[tokio::test]
async fn missing_after_the_verdict_timeout_then_late() {
    let out = run_case(
        vec![vec![
            Step::AwaitMessage,
            Step::Sleep(Duration::from_millis(1500)),
            send(&format!("ICAP/1.0 204 No Content\r\n{ISTAG}\r\n")),
            Step::AwaitEof,
        ]],
        vec![client(respmod("/av/respmod", "Allow: 204\r\n", b"x", None))],
        quick_timers(),
    )
    .await;
    let x = out.only();
    assert_eq!(x.verdict, "missing");
    assert!(out.has("verdict-timeout"), "{:?}", out.codes());
    assert!(out.has("verdict-late"), "{:?}", out.codes());
}

#[tokio::test]
async fn malformed_encapsulated_offsets() {
    // res-body declared at 10 although the HTTP head is longer.
    let head = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
    let mut answer =
        format!("ICAP/1.0 200 OK\r\n{ISTAG}Encapsulated: res-hdr=0, res-body=10\r\n\r\n{head}")
            .into_bytes();
    answer.extend_from_slice(&chunked(b"ok", None));
    let out = run_case(
        vec![vec![Step::AwaitMessage, Step::Send(answer), Step::AwaitEof]],
        vec![vec![
            Step::Send(respmod("/av/respmod", "", b"ok", None)),
            Step::Sleep(Duration::from_millis(300)),
            Step::Shutdown,
            Step::AwaitEof,
        ]],
        quick_timers(),
    )
    .await;
    let x = out.only();
    assert_eq!(x.verdict, "malformed");
    assert!(out.has("encapsulated-offset-mismatch"), "{:?}", out.codes());
}

#[tokio::test]
async fn options_answer() {
    let answer = format!(
        "ICAP/1.0 200 OK\r\nMethods: RESPMOD\r\nService: test sensor\r\n{ISTAG}Max-Connections: 100\r\nOptions-TTL: 3600\r\nAllow: 204\r\nPreview: 1024\r\nTransfer-Preview: *\r\nEncapsulated: null-body=0\r\n\r\n"
    );
    let out = run_case(
        vec![vec![Step::AwaitMessage, send(&answer), Step::AwaitEof]],
        vec![client(options("/av/respmod"))],
        quick_timers(),
    )
    .await;
    let x = out.only();
    assert_eq!(x.verdict, "options");
    assert_eq!(x.method.as_deref(), Some("OPTIONS"));
    assert!(x.anomalies.is_empty(), "{:?}", x.anomalies);
}

#[tokio::test]
async fn sensor_unreachable_is_logged() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = run_case_to(
        port,
        vec![vec![Step::Send(options("/x")), Step::AwaitEof]],
        quick_timers(),
    )
    .await;
    assert_eq!(out.connections.len(), 1);
    assert!(out.connections[0].connect_error.is_some());
    assert!(out.has("sensor-unreachable"), "{:?}", out.codes());
}
