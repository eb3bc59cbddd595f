//! Verdicts that tell the true story, against real sensors: c-icap's
//! `url_check` and content filter (policy blocks are `blocked`, with the
//! sensor's reason) and `virus_scan` backed by clamd with a signature
//! database the test writes (malware is `infected`, with ClamAV's names;
//! a late detection in a large object says the sensor cut the body),
//! driven by the real `c-icap-client` through icaptap and compared with
//! what the client got and with c-icap's own scan log. A scripted server
//! plays the peers no real one can be made to be: a web server answering
//! ICAP, a sensor cutting a body short, an OPTIONS answer without
//! `Encapsulated`.
//!
//! Every peer comes from a Debian package `.ci/run` installs; a missing
//! one fails the test, it is never skipped.

mod peers;
mod scripted;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use icaptap::forward::ForwardConfig;
use icaptap::jobs::proxy::{start, ProxyPlan};
use icaptap::output::records::{ConnectionRecord, ExchangeRecord};
use peers::*;
use scripted::*;

/// What one run of real clients through icaptap left behind.
struct Run {
    /// Each client's stdout and stderr, in order.
    said: Vec<String>,
    exchanges: Vec<ExchangeRecord>,
    connections: Vec<ConnectionRecord>,
}

impl Run {
    /// The records of the non-OPTIONS exchanges, in order; every OPTIONS
    /// exchange (c-icap-client asks first) must be a plain `options`.
    fn answers(&self) -> Vec<&ExchangeRecord> {
        for x in self
            .exchanges
            .iter()
            .filter(|x| x.method.as_deref() == Some("OPTIONS"))
        {
            assert_eq!(x.verdict, "options", "{x:#?}");
            assert!(x.anomalies.is_empty(), "{:#?}", x.anomalies);
        }
        self.exchanges
            .iter()
            .filter(|x| x.method.as_deref() != Some("OPTIONS"))
            .collect()
    }
}

/// Runs `c-icap-client` once per argument list through an icaptap proxy in
/// front of `sensor`, one after the other.
async fn cicap_client_via_icaptap(sensor: SocketAddr, runs: Vec<Vec<String>>) -> Run {
    require("c-icap-client", "c-icap");
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
    let listen = proxy.listen;
    let said = tokio::task::spawn_blocking(move || {
        runs.into_iter()
            .map(|args| {
                let o = Command::new("c-icap-client")
                    .args(["-i", "127.0.0.1", "-p", &listen.port().to_string(), "-v"])
                    .args(&args)
                    .output()
                    .expect("run c-icap-client");
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .collect()
    })
    .await
    .unwrap();
    proxy.stop().await.unwrap();
    Run {
        said,
        exchanges: read_jsonl(&out.join("exchanges.jsonl")),
        connections: read_jsonl(&out.join("connections.jsonl")),
    }
}

/// The codes of `x`'s anomalies on the sensor's side.
fn server_side(x: &ExchangeRecord) -> Vec<&str> {
    x.anomalies
        .iter()
        .filter(|a| a.side == "server")
        .map(|a| a.code.as_str())
        .collect()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The lines of c-icap's scan log, once it has `n` (it writes them after
/// answering).
fn scan_log(dir: &Path, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = std::fs::read_to_string(dir.join("scan.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn url_check_block_is_blocked_with_its_reason_not_infected() {
    let tmp = tempfile::tempdir().unwrap();
    let clamd = Clamd::start(&tmp.path().join("clamd"));
    let sensor = cicap_sensor(&tmp.path().join("cicap"), &clamd, &["blocked.example"]);
    let run = cicap_client_via_icaptap(
        sensor.addr,
        vec![
            args(&["-s", "url_check", "-req", "http://www.blocked.example/x"]),
            args(&["-s", "url_check", "-req", "http://allowed.example/x"]),
        ],
    )
    .await;
    // What the client got: a 403 page with url_check's verdict headers.
    assert!(
        run.said[0].contains("X-Response-Info: BLOCKED"),
        "{}",
        run.said[0]
    );
    assert!(run.said[0].contains("403"), "{}", run.said[0]);
    assert!(run.said[1].contains("204"), "{}", run.said[1]);
    let answers = run.answers();
    assert_eq!(answers.len(), 2, "{:#?}", run.exchanges);
    let (blocked, allowed) = (answers[0], answers[1]);
    assert_eq!(blocked.method.as_deref(), Some("REQMOD"));
    assert_eq!(blocked.verdict, "blocked", "{blocked:#?}");
    assert_eq!(blocked.threat, None, "a URL category is no malware");
    assert_eq!(
        blocked.block_reason.as_deref(),
        Some("URL category denyhosts is BLOCKED")
    );
    assert_eq!(blocked.http_status_returned, Some(403));
    // The sensor's answers are faultless; the client's side may carry
    // identity-header-missing (c-icap-client sends none of the X-Include
    // headers url_check asks for).
    assert!(server_side(blocked).is_empty(), "{:#?}", blocked.anomalies);
    assert_eq!(allowed.verdict, "clean", "{allowed:#?}");
    assert_eq!(allowed.block_reason, None);
    assert!(server_side(allowed).is_empty(), "{:#?}", allowed.anomalies);
    assert!(run.connections.iter().all(|c| c.anomalies.is_empty()));
}

#[tokio::test]
async fn content_filter_block_is_blocked_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let clamd = Clamd::start(&tmp.path().join("clamd"));
    let sensor = cicap_sensor(&tmp.path().join("cicap"), &clamd, &[]);
    let bad = tmp.path().join("bad.txt");
    std::fs::write(&bad, "this page has a FORBIDDEN-WORD inside\n").unwrap();
    let run = cicap_client_via_icaptap(
        sensor.addr,
        vec![args(&[
            "-s",
            "srv_content_filtering",
            "-rhx",
            "Content-Type: text/plain",
            "-f",
            bad.to_str().unwrap(),
            "-resp",
            "http://origin.test/bad.txt",
        ])],
    )
    .await;
    assert!(
        run.said[0].contains("X-Response-Info: block"),
        "{}",
        run.said[0]
    );
    let answers = run.answers();
    assert_eq!(answers.len(), 1, "{:#?}", run.exchanges);
    let x = answers[0];
    assert_eq!(x.verdict, "blocked", "{x:#?}");
    assert_eq!(x.threat, None);
    assert_eq!(x.block_reason.as_deref(), Some("BadWords score=10>5"));
    assert!(x.anomalies.is_empty(), "{:#?}", x.anomalies);
}

#[tokio::test]
async fn virus_scan_with_clamd_is_infected_with_the_signature_names() {
    let tmp = tempfile::tempdir().unwrap();
    let clamd = Clamd::start(&tmp.path().join("clamd"));
    let cicap_dir = tmp.path().join("cicap");
    let sensor = cicap_sensor(&cicap_dir, &clamd, &[]);
    let files = [
        (
            "infected.txt",
            format!("hello {VIRUS_MARKER} world\n").into_bytes(),
        ),
        ("eicar.txt", EICAR.to_vec()),
        ("clean.txt", b"nothing to see here\n".to_vec()),
    ];
    let mut runs = Vec::new();
    for (name, body) in &files {
        let path = tmp.path().join(name);
        std::fs::write(&path, body).unwrap();
        runs.push(args(&[
            "-s",
            "virus_scan",
            "-f",
            path.to_str().unwrap(),
            "-resp",
            &format!("http://origin.test/{name}"),
        ]));
    }
    let run = cicap_client_via_icaptap(sensor.addr, runs).await;
    let answers = run.answers();
    assert_eq!(answers.len(), 3, "{:#?}", run.exchanges);
    let expected = [
        ("infected", Some(VIRUS_MARKER_NAME)),
        ("infected", Some(EICAR_NAME)),
        ("clean", None),
    ];
    for ((x, (verdict, threat)), said) in answers.iter().zip(expected).zip(&run.said) {
        assert_eq!(x.verdict, verdict, "{x:#?}\n{said}");
        assert_eq!(x.threat.as_deref(), threat, "{x:#?}");
        assert_eq!(x.block_reason, None, "virus_scan announces no policy block");
        assert!(x.anomalies.is_empty(), "{:#?}", x.anomalies);
        // What the client got names the same threat.
        if let Some(name) = threat {
            assert!(said.contains(&format!("Threat={name};")), "{said}");
        }
    }
    // c-icap's own log agrees, request by request.
    let log = scan_log(&cicap_dir, 3 + run.exchanges.len() - answers.len());
    let respmods: Vec<&String> = log.iter().filter(|l| l.starts_with("RESPMOD")).collect();
    assert_eq!(respmods.len(), 3, "{log:#?}");
    assert!(
        respmods[0].contains(&format!("virus={VIRUS_MARKER_NAME}")),
        "{log:#?}"
    );
    assert!(
        respmods[1].contains(&format!("virus={EICAR_NAME}")),
        "{log:#?}"
    );
    assert!(
        !respmods[2].contains("virus=") || respmods[2].contains("virus=-"),
        "{log:#?}"
    );
}

#[tokio::test]
async fn options_for_a_service_c_icap_does_not_have_is_error() {
    let tmp = tempfile::tempdir().unwrap();
    let clamd = Clamd::start(&tmp.path().join("clamd"));
    let sensor = cicap_sensor(&tmp.path().join("cicap"), &clamd, &[]);
    let run = cicap_client_via_icaptap(sensor.addr, vec![args(&["-s", "no-such-service"])]).await;
    assert_eq!(run.exchanges.len(), 1, "{:#?}", run.exchanges);
    let x = &run.exchanges[0];
    assert_eq!(x.method.as_deref(), Some("OPTIONS"));
    assert!(matches!(x.icap_status, Some(400..=599)), "{x:#?}");
    assert_eq!(x.verdict, "error", "{x:#?}\n{}", run.said[0]);
    assert_eq!(x.istag, None, "c-icap's 404 carries no ISTag: {x:#?}");
    // The missing ISTag is kept as an anomaly; it does not hide the error.
    assert_eq!(server_side(x), ["istag-missing"], "{:#?}", x.anomalies);
}

#[tokio::test]
async fn a_web_server_answering_icap_is_malformed_and_named() {
    let out = run_case(
        vec![vec![
            Step::AwaitMessage,
            send("HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\n\r\nhello"),
            Step::AwaitEof,
        ]],
        vec![vec![
            Step::Send(options("/av/respmod")),
            Step::Sleep(Duration::from_millis(300)),
            Step::Shutdown,
            Step::AwaitEof,
        ]],
        quick_timers(),
    )
    .await;
    let x = out.only();
    assert_eq!(x.verdict, "malformed", "{x:#?}");
    assert_eq!(x.icap_status, None);
    let codes: Vec<&str> = x.anomalies.iter().map(|a| a.code.as_str()).collect();
    assert_eq!(codes, ["response-not-icap"], "{:#?}", x.anomalies);
    let detail = &x.anomalies[0].detail;
    assert!(
        detail.starts_with("\"HTTP/1.1 200 OK\": an HTTP server, not an ICAP service, answered"),
        "{detail}"
    );
    assert_eq!(x.anomalies[0].side, "server");
    assert!(
        !out.has("server-closed-before-response"),
        "{:?}",
        out.codes()
    );
    assert!(!out.has("stray-bytes"), "{:?}", out.codes());
}

#[tokio::test]
async fn a_body_cut_short_by_the_sensor_says_possible_late_detection() {
    let body = vec![b'a'; 4000];
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // c-icap's SendPercentData: the original head and the first part of
    // the body went out before the scan ended; then a clean last chunk.
    let answer = icap_response(
        "ICAP/1.0 200 OK",
        "ISTag: \"sensor-1\"\r\n",
        Some(&head),
        Some(&body[..200]),
    );
    let out = run_case(
        vec![vec![Step::AwaitMessage, Step::Send(answer), Step::AwaitEof]],
        vec![vec![
            Step::Send(respmod("/av/respmod", "", &body, None)),
            Step::AwaitMessage,
            Step::Shutdown,
            Step::AwaitEof,
        ]],
        quick_timers(),
    )
    .await;
    let x = out.only();
    assert_eq!(x.verdict, "modified", "{x:#?}");
    assert_eq!(x.response_body_bytes, 200);
    let codes: Vec<&str> = x.anomalies.iter().map(|a| a.code.as_str()).collect();
    assert_eq!(codes, ["body-truncated-by-sensor"], "{:#?}", x.anomalies);
    let a = &x.anomalies[0];
    assert!(
        a.detail
            .starts_with("truncated by the sensor: possible late detection"),
        "{}",
        a.detail
    );
    assert!(a.detail.contains("200 of the 4000"), "{}", a.detail);
    assert_eq!(a.severity, "error");
}

#[tokio::test]
async fn options_200_without_encapsulated_is_a_warning_not_malformed() {
    let out = run_case(
        vec![vec![
            Step::AwaitMessage,
            send("ICAP/1.0 200 OK\r\nISTag: \"sensor-1\"\r\nMethods: RESPMOD\r\nPreview: 1024\r\n\r\n"),
            Step::AwaitEof,
        ]],
        vec![vec![
            Step::Send(options("/av/respmod")),
            Step::AwaitMessage,
            Step::Shutdown,
            Step::AwaitEof,
        ]],
        quick_timers(),
    )
    .await;
    let x = out.only();
    assert_eq!(x.verdict, "options", "{x:#?}");
    let found: Vec<(&str, &str)> = x
        .anomalies
        .iter()
        .map(|a| (a.code.as_str(), a.severity.as_str()))
        .collect();
    assert_eq!(found, [("options-encapsulated-missing", "warn")]);
}

#[tokio::test]
async fn virus_scan_late_detection_on_a_large_object_says_truncated_by_the_sensor() {
    let tmp = tempfile::tempdir().unwrap();
    let clamd = Clamd::start(&tmp.path().join("clamd"));
    let cicap_dir = tmp.path().join("cicap");
    let sensor = cicap_sensor(&cicap_dir, &clamd, &[]);
    // Past StartSendPercentDataAfter (2M): c-icap sends the head and 5 %
    // of the body before the scan ends, then finds the marker at the end.
    let mut body = vec![b'x'; 3_000_000];
    body.extend_from_slice(format!("\n{VIRUS_MARKER}\n").as_bytes());
    let path = tmp.path().join("big.txt");
    std::fs::write(&path, &body).unwrap();
    let got = tmp.path().join("got.txt");
    let run = cicap_client_via_icaptap(
        sensor.addr,
        vec![args(&[
            "-s",
            "virus_scan",
            "-f",
            path.to_str().unwrap(),
            "-o",
            got.to_str().unwrap(),
            "-resp",
            "http://origin.test/big.txt",
        ])],
    )
    .await;
    let answers = run.answers();
    assert_eq!(answers.len(), 1, "{:#?}", run.exchanges);
    let x = answers[0];
    // What the client got: the original head, and a part of the body.
    let user_got = std::fs::metadata(&got).unwrap().len();
    assert!(
        user_got < body.len() as u64 / 10,
        "the client got {user_got} bytes"
    );
    assert_eq!(x.response_body_bytes, user_got);
    assert_eq!(x.verdict, "modified", "{x:#?}");
    assert_eq!(x.threat, None, "c-icap could not name it any more");
    assert_eq!(
        server_side(x),
        ["body-truncated-by-sensor"],
        "{:#?}",
        x.anomalies
    );
    let a = &x
        .anomalies
        .iter()
        .find(|a| a.side == "server")
        .unwrap()
        .detail;
    assert!(
        a.starts_with("truncated by the sensor: possible late detection"),
        "{a}"
    );
    // c-icap's own log: it found the marker after the head went out.
    let log = scan_log(&cicap_dir, run.exchanges.len());
    let respmod = log
        .iter()
        .find(|l| l.starts_with("RESPMOD"))
        .expect("a RESPMOD line");
    assert!(
        respmod.contains(&format!(
            "action=partiallyblocked virus={VIRUS_MARKER_NAME}"
        )),
        "{log:#?}"
    );
}

#[tokio::test]
async fn squid_users_get_what_icaptap_says_for_url_blocks_and_viruses() {
    require("squid", "squid");
    require("curl", "curl");
    let tmp = tempfile::tempdir().unwrap();
    let clamd = Clamd::start(&tmp.path().join("clamd"));
    let cicap_dir = tmp.path().join("cicap");
    let sensor = cicap_sensor(&cicap_dir, &clamd, &["blocked.example"]);
    let out = tmp.path().join("out");
    let mut forward = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), sensor.addr);
    forward.drain = Duration::from_secs(3);
    let proxy = start(ProxyPlan::new(forward, out.clone())).await.unwrap();
    let origin = Origin::start(vec![
        (
            "/infected.txt".to_string(),
            format!("hello {VIRUS_MARKER} world\n").into_bytes(),
        ),
        ("/clean.txt".to_string(), b"nothing to see here\n".to_vec()),
    ]);
    let squid = Squid::start_from_async(
        tmp.path().join("squid"),
        SquidIcap {
            icap: proxy.listen,
            reqmod_service: "/url_check".to_string(),
            respmod_service: "/virus_scan".to_string(),
            bypass: false,
            preview_size: 1024,
        },
    )
    .await;
    let urls = [
        "http://www.blocked.example/x".to_string(),
        origin.url("/infected.txt"),
        origin.url("/clean.txt"),
    ];
    let squid_addr = squid.addr;
    let got = tokio::task::spawn_blocking({
        let urls = urls.clone();
        move || {
            urls.iter()
                .map(|u| curl_via(squid_addr, u))
                .collect::<Vec<_>>()
        }
    })
    .await
    .unwrap();
    let icap_log = squid.icap_log();
    drop(squid);
    proxy.stop().await.unwrap();
    let exchanges: Vec<ExchangeRecord> = read_jsonl(&out.join("exchanges.jsonl"));

    // What the users got.
    let page = |i: usize| String::from_utf8_lossy(&got[i].1).to_string();
    assert_eq!(got[0].0, 403, "{}", page(0));
    assert!(page(0).contains("Access denied"), "{}", page(0));
    assert_eq!(got[1].0, 403, "{}", page(1));
    assert!(page(1).contains("VIRUS FOUND"), "{}", page(1));
    assert_eq!(
        (got[2].0, got[2].1.as_slice()),
        (200, &b"nothing to see here\n"[..])
    );

    // What icaptap says, exchange by exchange.
    let of = |method: &str, url: &str| -> Vec<&ExchangeRecord> {
        exchanges
            .iter()
            .filter(|x| x.method.as_deref() == Some(method) && x.http_url.as_deref() == Some(url))
            .collect()
    };
    let blocked = of("REQMOD", &urls[0]);
    assert_eq!(blocked.len(), 1, "{exchanges:#?}");
    assert_eq!(blocked[0].verdict, "blocked");
    assert_eq!(blocked[0].threat, None);
    assert_eq!(
        blocked[0].block_reason.as_deref(),
        Some("URL category denyhosts is BLOCKED")
    );
    assert!(
        of("RESPMOD", &urls[0]).is_empty(),
        "a blocked URL is never fetched"
    );
    for (url, verdict, threat) in [
        (&urls[1], "infected", Some(VIRUS_MARKER_NAME)),
        (&urls[2], "clean", None),
    ] {
        let req = of("REQMOD", url);
        assert_eq!(req.len(), 1, "{url}: {exchanges:#?}");
        assert_eq!(req[0].verdict, "clean", "{url}: url_check let it through");
        let resp = of("RESPMOD", url);
        assert_eq!(resp.len(), 1, "{url}: {exchanges:#?}");
        assert_eq!(resp[0].verdict, verdict, "{url}: {:#?}", resp[0]);
        assert_eq!(resp[0].threat.as_deref(), threat, "{url}");
    }
    for x in &exchanges {
        assert!(server_side(x).is_empty(), "{x:#?}");
    }
    // Squid's icap_log has every one of these transactions, and so does
    // c-icap's scan log.
    for (method, n) in [("REQMOD", 3), ("RESPMOD", 2)] {
        let squid_saw = icap_log
            .iter()
            .filter(|l| l.split_whitespace().any(|w| w == method))
            .count();
        let icaptap_saw = exchanges
            .iter()
            .filter(|x| x.method.as_deref() == Some(method))
            .count();
        assert_eq!((squid_saw, icaptap_saw), (n, n), "{method}: {icap_log:#?}");
    }
    let scan = scan_log(&cicap_dir, exchanges.len());
    assert!(
        scan.iter()
            .any(|l| l.starts_with("RESPMOD 200") && l.contains(VIRUS_MARKER_NAME)),
        "{scan:#?}"
    );
}
