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
