//! Stalls and hang-ups told as they happened, against real peers: Squid 5.7
//! following c-icap's 100 Continue and going idle mid-body (c-icap's
//! `virus_scan.StartSendPercentDataAfter 2M` with a download between 64 KiB
//! and 2 MiB), and a client that reads the head of c-icap's virus answer
//! and hangs up. Scripted peers play the same stories fast.
//!
//! Every peer comes from a Debian package `.ci/run` installs; a missing one
//! fails the test, it is never skipped.

mod peers;
mod scripted;

use std::time::Duration;

use icaptap::forward::ForwardConfig;
use icaptap::jobs::proxy::{start, ProxyPlan};
use icaptap::output::records::{ConnectionRecord, ExchangeRecord};
use peers::*;
use scripted::*;

fn codes(x: &ExchangeRecord) -> Vec<&str> {
    x.anomalies.iter().map(|a| a.code.as_str()).collect()
}

/// Squid 5.7 -> icaptap -> c-icap virus_scan with Debian's
/// `StartSendPercentDataAfter 2M` and a 200 KiB download: Squid follows the
/// 100 Continue, sends part of the body and goes idle; c-icap's `Timeout`
/// (lowered to 3 s here) closes the connection.
#[tokio::test]
async fn squid_stalling_after_100_continue_is_a_transfer_stall_of_the_client() {
    require("squid", "squid");
    require("curl", "curl");
    let tmp = tempfile::tempdir().unwrap();
    let clamd = Clamd::start(&tmp.path().join("clamd"));
    let cicap_dir = tmp.path().join("cicap");
    let sensor = cicap_sensor_with(&cicap_dir, &clamd, &[], "Timeout 3\n");
    let out = tmp.path().join("out");
    let mut forward = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), sensor.addr);
    forward.drain = Duration::from_secs(3);
    let mut observer = quick_timers();
    observer.stall_timeout = Duration::from_secs(1);
    observer.verdict_timeout = Duration::from_secs(30);
    let proxy = start(ProxyPlan {
        observer,
        ..ProxyPlan::new(forward, out.clone())
    })
    .await
    .unwrap();
    let body: Vec<u8> = (0..200 * 1024u32).map(|i| b'a' + (i % 23) as u8).collect();
    let origin = Origin::start(vec![("/big.bin".to_string(), body)]);
    let squid = Squid::start_from_async(
        tmp.path().join("squid"),
        SquidIcap {
            icap: proxy.listen,
            reqmod_service: "/echo".to_string(),
            respmod_service: "/virus_scan".to_string(),
            bypass: false,
            preview_size: 1024,
        },
    )
    .await;
    let squid_addr = squid.addr;
    let url = origin.url("/big.bin");
    let got = tokio::task::spawn_blocking(move || curl_via(squid_addr, &url))
        .await
        .unwrap();
    let icap_log = squid.icap_log();
    drop(squid);
    proxy.stop().await.unwrap();
    let exchanges: Vec<ExchangeRecord> = read_jsonl(&out.join("exchanges.jsonl"));
    let connections: Vec<ConnectionRecord> = read_jsonl(&out.join("connections.jsonl"));

    // What the user and Squid got: an error, the RESPMOD failed.
    assert_eq!(got.0, 500, "{}", String::from_utf8_lossy(&got.1));
    let respmods: Vec<&String> = icap_log
        .iter()
        .filter(|l| l.contains(" RESPMOD "))
        .collect();
    assert_eq!(respmods.len(), 1, "{icap_log:#?}");
    assert!(respmods[0].contains("ICAP_ERR_OTHER/000"), "{icap_log:#?}");

    // What icaptap says: the client followed the 100 Continue, stalled
    // mid-body, and c-icap gave up waiting.
    let x: Vec<&ExchangeRecord> = exchanges
        .iter()
        .filter(|x| x.method.as_deref() == Some("RESPMOD"))
        .collect();
    assert_eq!(x.len(), 1, "{exchanges:#?}");
    let x = x[0];
    let conn = connections.iter().find(|c| c.conn == x.conn).unwrap();
    assert_eq!(x.verdict, "missing");
    assert!(x.preview.as_ref().is_some_and(|p| p.continued), "{x:#?}");
    let found = codes(x);
    for wrong in [
        "continue-not-followed",
        "server-closed-before-response",
        "reused-connection-closed",
        "verdict-timeout",
    ] {
        assert!(!found.contains(&wrong), "{wrong}: {:#?}", x.anomalies);
    }
    let stall = x.anomalies.iter().find(|a| a.code == "transfer-stall");
    let stall = stall.unwrap_or_else(|| panic!("{:#?}", x.anomalies));
    assert_eq!(stall.side, "client");
    assert_eq!(stall.offset, Some(conn.bytes_client_to_server), "{conn:#?}");
    let after = x.request_body_bytes - x.preview.as_ref().unwrap().sent;
    assert!(after > 0, "Squid followed the 100 Continue: {x:#?}");
    assert!(
        stall
            .detail
            .contains(&format!("{after} of them after the 100 Continue")),
        "{}",
        stall.detail
    );
    let close = x
        .anomalies
        .iter()
        .find(|a| a.code == "server-closed-stalled-transfer");
    let close = close.unwrap_or_else(|| panic!("{:#?}", x.anomalies));
    assert_eq!(
        (close.side.as_str(), close.severity.as_str()),
        ("server", "info")
    );
    // c-icap's Timeout is 3 s.
    let idle: f64 = close
        .detail
        .split(" s after")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((2.5..5.0).contains(&idle), "{}", close.detail);
    assert!(
        x.anomalies
            .iter()
            .all(|a| a.side != "server" || a.severity == "info"),
        "nothing blames c-icap: {:#?}",
        x.anomalies
    );
    assert_eq!(conn.close.server.as_deref(), Some("fin"), "{conn:#?}");
}

/// The same story with scripted peers, in a second: the client follows the
/// 100 Continue with part of the remainder and goes idle; the sensor gives
/// up after a while and closes.
#[tokio::test]
async fn a_client_stalling_after_100_continue_then_the_sensor_closing_is_the_clients_stall() {
    let body = vec![b'x'; 4096];
    let request = respmod("/av", "", &body, Some(16));
    let remainder = remainder(&body, 16);
    let half = remainder.len() / 2;
    let server = vec![vec![
        Step::AwaitMessage,
        send("ICAP/1.0 100 Continue\r\n\r\n"),
        Step::Sleep(Duration::from_millis(1500)),
    ]];
    let client = vec![
        Step::Send(request.clone()),
        Step::AwaitContinue,
        Step::Send(remainder[..half].to_vec()),
        Step::AwaitEof,
    ];
    let out = run_case(server, vec![client], quick_timers()).await;
    let x = out.only();
    assert_eq!(x.verdict, "missing");
    let found = codes(x);
    assert!(found.contains(&"transfer-stall"), "{:#?}", x.anomalies);
    assert!(
        found.contains(&"server-closed-stalled-transfer"),
        "{:#?}",
        x.anomalies
    );
    assert!(
        !found.contains(&"continue-not-followed"),
        "{:#?}",
        x.anomalies
    );
    assert!(
        !found.contains(&"server-closed-before-response"),
        "{:#?}",
        x.anomalies
    );
    let stall = x
        .anomalies
        .iter()
        .find(|a| a.code == "transfer-stall")
        .unwrap();
    assert_eq!(stall.offset, Some((request.len() + half) as u64));
}

/// A client that really sends nothing after the 100 Continue is still
/// `continue-not-followed`.
#[tokio::test]
async fn a_client_silent_after_100_continue_is_continue_not_followed() {
    let body = vec![b'x'; 4096];
    let server = vec![vec![
        Step::AwaitMessage,
        send("ICAP/1.0 100 Continue\r\n\r\n"),
        Step::Sleep(Duration::from_millis(1500)),
    ]];
    let client = vec![
        Step::Send(respmod("/av", "", &body, Some(16))),
        Step::AwaitContinue,
        Step::AwaitEof,
    ];
    let out = run_case(server, vec![client], quick_timers()).await;
    let found = codes(out.only());
    assert!(found.contains(&"continue-not-followed"), "{found:?}");
    // The sensor's close answers the client's silence.
    assert!(
        found.contains(&"server-closed-stalled-transfer"),
        "{found:?}"
    );
    assert!(
        !found.contains(&"server-closed-before-response"),
        "{found:?}"
    );
    assert!(!found.contains(&"transfer-stall"), "{found:?}");
}

/// c-icap's virus_scan with a virus page of about 16 MiB (its templates
/// copied and padded), so that the answer is still on its way when a client
/// that read its head hangs up.
fn cicap_with_big_virus_page(dir: &std::path::Path, clamd: &Clamd) -> CIcap {
    std::fs::create_dir_all(dir).unwrap();
    let templates = dir.join("templates");
    let copied = std::process::Command::new("cp")
        .args(["-r", "/usr/share/c_icap/templates"])
        .arg(&templates)
        .status()
        .unwrap();
    assert!(copied.success());
    let page = templates.join("virus_scan/en/VIRUS_FOUND");
    let mut text = std::fs::read_to_string(&page).unwrap();
    text.push_str(&format!("<!-- {} -->\n", "padding ".repeat(2048 * 1024)));
    std::fs::write(&page, text).unwrap();
    let more = format!(
        "TemplateDir {}/\nTemplateMemBufSize 33554432\n",
        templates.display()
    );
    cicap_sensor_with(dir, clamd, &[], &more)
}

/// What a client that hung up left behind: records and the capture.
struct Hangup {
    exchanges: Vec<ExchangeRecord>,
    connections: Vec<ConnectionRecord>,
    capture: std::path::PathBuf,
    /// Bytes of the answer the client read before it closed.
    read: usize,
    _tmp: tempfile::TempDir,
}

/// Sends `request` to `sensor` through icaptap, reads the answer up to the
/// end of its ICAP head, reads no more and closes (with the rest unread: a
/// reset).
async fn read_head_and_hang_up(sensor: std::net::SocketAddr, request: Vec<u8>) -> Hangup {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut forward = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), sensor);
    forward.drain = Duration::from_secs(2);
    let proxy = start(ProxyPlan {
        observer: quick_timers(),
        ..ProxyPlan::new(forward, out.clone())
    })
    .await
    .unwrap();
    let mut s = tokio::net::TcpStream::connect(proxy.listen).await.unwrap();
    s.write_all(&request).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1];
    // One byte at a time: nothing past the head is read.
    while !got.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "the sensor closed before its head: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    // Long enough for the answer to fill the client's receive buffer and
    // icaptap's send buffer: icaptap is then in the middle of a write to
    // the client when the client hangs up, as a client that stops reading
    // and later closes finds it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.stop().await.unwrap();
    Hangup {
        exchanges: read_jsonl(&out.join("exchanges.jsonl")),
        connections: read_jsonl(&out.join("connections.jsonl")),
        capture: out.join("capture.pcapng"),
        read: got.len(),
        _tmp: tmp,
    }
}

#[tokio::test]
async fn a_client_hanging_up_on_an_infected_answer_keeps_it_infected() {
    let tmp = tempfile::tempdir().unwrap();
    let clamd = Clamd::start(&tmp.path().join("clamd"));
    let sensor = cicap_with_big_virus_page(&tmp.path().join("cicap"), &clamd);
    let body = format!("hello {VIRUS_MARKER} world\n").into_bytes();
    let run = read_head_and_hang_up(
        sensor.addr,
        respmod("/virus_scan", "Allow: 204\r\n", &body, None),
    )
    .await;
    assert_eq!(run.exchanges.len(), 1, "{:#?}", run.exchanges);
    let x = &run.exchanges[0];
    // What the sensor said, as far as it was seen: infected.
    assert_eq!(x.verdict, "infected", "{x:#?}");
    assert_eq!(x.threat.as_deref(), Some(VIRUS_MARKER_NAME));
    assert!(!x.decode_complete, "the answer's end was never seen");
    assert!(
        x.anomalies.iter().all(|a| a.side != "server"),
        "no server-side error for icaptap's own reset: {:#?}",
        x.anomalies
    );
    let hangup = x
        .anomalies
        .iter()
        .find(|a| a.code == "client-closed-during-response");
    let hangup = hangup.unwrap_or_else(|| panic!("{:#?}", x.anomalies));
    assert_eq!(hangup.side, "client");
    assert!(
        hangup.detail.contains("icaptap reset the sensor leg"),
        "{}",
        hangup.detail
    );
    // Who closed: the client reset, icaptap reset the sensor leg.
    let conn = &run.connections[0];
    // The client's close is a FIN when nothing was waiting unread at that
    // moment, a reset otherwise; either way more data met its reset.
    assert!(
        matches!(conn.close.client.as_deref(), Some("fin" | "reset")),
        "{conn:#?}"
    );
    assert_eq!(
        conn.close.server.as_deref(),
        Some("icaptap-reset"),
        "{conn:#?}"
    );
    assert!(conn.bytes_server_to_client > run.read as u64, "{conn:#?}");

    // The capture: one RST per leg, the client's on the client leg and
    // icaptap's on the sensor leg; none from the sensor.
    let upstream_local = conn.upstream_local.clone().unwrap();
    let icaptap_port: u16 = upstream_local.rsplit(':').next().unwrap().parse().unwrap();
    let client_port: u16 = conn.client.rsplit(':').next().unwrap().parse().unwrap();
    let o = std::process::Command::new("tshark")
        .args([
            "-r",
            run.capture.to_str().unwrap(),
            "-Y",
            "tcp.flags.reset==1",
        ])
        .args(["-T", "fields", "-e", "tcp.srcport", "-e", "tcp.dstport"])
        .output()
        .expect("tshark runs (Debian package tshark)");
    let rsts: Vec<(u16, u16)> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let mut f = l.split('\t').map(|p| p.parse::<u16>().unwrap());
            (f.next().unwrap(), f.next().unwrap())
        })
        .collect();
    let sensor_port = sensor.addr.port();
    assert_eq!(rsts.len(), 2, "{rsts:?}");
    assert!(
        rsts.iter().any(|r| r.0 == client_port),
        "the client's RST: {rsts:?}"
    );
    assert!(
        rsts.contains(&(icaptap_port, sensor_port)),
        "icaptap's RST to the sensor: {rsts:?}"
    );
    assert!(
        !rsts.iter().any(|r| r.0 == sensor_port),
        "no RST from the sensor: {rsts:?}"
    );

    // What crossed each leg. icaptap read the whole of what the sensor
    // sent before its reset, but wrote to the client only what the client's
    // kernel took before the client's reset came back; the rest never
    // crossed the client leg and the capture does not draw it there.
    let undelivered = conn.undelivered_server_to_client;
    assert!(undelivered > 0, "{conn:#?}");
    assert_eq!(conn.undelivered_client_to_server, 0, "{conn:#?}");
    let delivered = conn.bytes_server_to_client - undelivered;
    assert!(delivered >= run.read as u64, "{conn:#?}");
    let listen_port: u16 = conn.listen.rsplit(':').next().unwrap().parse().unwrap();
    let payload = payload_by_flow(&run.capture);
    let on = |from: u16, to: u16| payload.get(&(from, to)).copied().unwrap_or(0);
    let client_leg = on(listen_port, client_port);
    assert!(client_leg <= delivered, "{payload:?} {conn:#?}");
    assert_eq!(client_leg, delivered, "{payload:?} {conn:#?}");
    assert_eq!(
        on(sensor_port, icaptap_port),
        conn.bytes_server_to_client,
        "the sensor leg shows every byte the sensor sent: {payload:?}"
    );
    assert!(
        hangup.detail.contains(&format!(
            "{undelivered} bytes icaptap had read from the sensor never reached the client"
        )),
        "{}",
        hangup.detail
    );
    // Every acknowledgement and reset on the client leg is for bytes drawn
    // on it: Wireshark sees no lost segment and nothing acknowledged unseen.
    let o = std::process::Command::new("tshark")
        .args(["-r", run.capture.to_str().unwrap()])
        .args([
            "-Y",
            "tcp.analysis.lost_segment || tcp.analysis.ack_lost_segment",
        ])
        .output()
        .expect("tshark runs");
    let flagged = String::from_utf8_lossy(&o.stdout);
    assert!(flagged.trim().is_empty(), "{flagged}");
}

/// TCP payload bytes per `(source port, destination port)` in `capture`,
/// as tshark reads them.
fn payload_by_flow(capture: &std::path::Path) -> std::collections::HashMap<(u16, u16), u64> {
    let o = std::process::Command::new("tshark")
        .args(["-r", capture.to_str().unwrap(), "-Y", "tcp.len > 0"])
        .args([
            "-T",
            "fields",
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.dstport",
            "-e",
            "tcp.len",
        ])
        .output()
        .expect("tshark runs (Debian package tshark)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut by = std::collections::HashMap::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let f: Vec<u64> = line.split('\t').map(|p| p.parse().unwrap()).collect();
        *by.entry((f[0] as u16, f[1] as u16)).or_insert(0) += f[2];
    }
    by
}
