//! Records that stay true where icaptap is pushed hardest, against real
//! c-icap on loopback: a client that pipelines far more requests than the
//! observer follows (`--max-pipeline`), and a summary that says whether its
//! evidence is whole. Each REQMOD asks for a different URL and c-icap's
//! echo service sends the request back, so an answer paired with the wrong
//! request would show as `modified`.

mod peers;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use icaptap::forward::ForwardConfig;
use icaptap::jobs::proxy::{start, ProxyPlan};
use icaptap::observe::ObserverConfig;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn reqmod(port: u16, n: usize) -> Vec<u8> {
    let http =
        format!("GET http://origin.example/file-{n} HTTP/1.1\r\nHost: origin.example\r\n\r\n");
    format!(
        "REQMOD icap://127.0.0.1:{port}/echo ICAP/1.0\r\nHost: 127.0.0.1:{port}\r\n\
         Encapsulated: req-hdr=0, null-body={}\r\n\r\n{http}",
        http.len()
    )
    .into_bytes()
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// ICAP status lines in `bytes` (`ICAP/1.0 ` and a digit: c-icap's echoed
/// heads carry `Via: ICAP/1.0 ...` too).
fn status_lines(bytes: &[u8]) -> usize {
    bytes
        .windows(10)
        .filter(|w| w.starts_with(b"ICAP/1.0 ") && w[9].is_ascii_digit())
        .count()
}

/// Reads until the peer has sent `answers` ICAP status lines and then gone
/// quiet, or ten seconds pass.
async fn read_answers(stream: &mut TcpStream, answers: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) if status_lines(&got) >= answers => break,
            Err(_) => {}
        }
    }
    got
}

/// c-icap (echo service) in a temporary directory, and forwarding to it
/// from a free loopback port.
fn cicap_and_forwarding() -> (tempfile::TempDir, peers::CIcap, ForwardConfig) {
    if !peers::have("c-icap") {
        panic!("c-icap is not installed: run .ci/run, which installs it");
    }
    let tmp = tempfile::tempdir().unwrap();
    let cicap = peers::CIcap::start(&tmp.path().join("c-icap"), "");
    let mut forward = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), cicap.addr);
    forward.drain = Duration::from_secs(3);
    (tmp, cicap, forward)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_deeper_than_followed_keeps_every_pair_true() {
    let (tmp, cicap, forward) = cicap_and_forwarding();
    let out = tmp.path().join("run");
    let limit = 8;
    let proxy = start(ProxyPlan {
        observer: ObserverConfig {
            max_pipeline: limit,
            ..ObserverConfig::default()
        },
        ..ProxyPlan::new(forward, out.clone())
    })
    .await
    .unwrap();

    // Sixty requests in one write: the observer sees far more than
    // `limit` waiting before the first answer.
    let total = 60;
    let port = cicap.addr.port();
    let requests: Vec<u8> = (0..total).flat_map(|n| reqmod(port, n)).collect();
    let mut client = TcpStream::connect(proxy.listen).await.unwrap();
    client.write_all(&requests).await.unwrap();
    let answers = read_answers(&mut client, total).await;
    let answered = status_lines(&answers);
    assert_eq!(answered, total, "c-icap answered every pipelined request");
    drop(client);
    let summary = proxy.stop().await.unwrap();

    let records = read_jsonl(&out.join("exchanges.jsonl"));
    assert_eq!(
        records.len(),
        total,
        "one record per request, none invented"
    );
    let mut by_verdict: BTreeMap<String, usize> = BTreeMap::new();
    for (n, r) in records.iter().enumerate() {
        let verdict = r["verdict"].as_str().unwrap().to_string();
        *by_verdict.entry(verdict.clone()).or_default() += 1;
        assert_eq!(r["seq"], n as u64, "{r}");
        assert_eq!(
            r["http_url"],
            format!("http://origin.example/file-{n}"),
            "records in request order: {r}"
        );
        let codes: Vec<&str> = r["anomalies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["code"].as_str().unwrap())
            .collect();
        if codes.contains(&"pipeline-too-deep") {
            assert_eq!(verdict, "unobserved", "{r}");
            assert_eq!(r["decode_complete"], false, "{r}");
            assert!(r["threat"].is_null(), "{r}");
        } else {
            // Followed to the end: its own answer, c-icap's echo.
            assert_eq!(verdict, "clean", "{r}");
            assert_eq!(r["decode_complete"], true, "{r}");
            assert!(codes.is_empty(), "{r}");
        }
    }
    let given_up = by_verdict.get("unobserved").copied().unwrap_or(0);
    assert!(
        given_up > 0 && given_up < total,
        "the pipeline outgrew the limit and later pairs were followed: {by_verdict:?}"
    );
    assert_eq!(summary.exchanges, total as u64);
    // The summary says the evidence is not whole, and why.
    let evidence = summary.evidence.expect("the summary judges its evidence");
    assert!(!evidence.complete);
    assert!(
        evidence.gaps.iter().any(|g| g.contains("unobserved")),
        "{evidence:?}"
    );
    // What the forwarding path counted matches what the records hold.
    let forwarded = summary
        .forwarded
        .expect("a live run counts what it forwarded");
    assert_eq!(forwarded.bytes_client_to_sensor, requests.len() as u64);
    assert_eq!(
        forwarded.bytes_client_to_sensor,
        summary.bytes_client_to_server
    );
    assert_eq!(forwarded.bytes_sensor_to_client, answers.len() as u64);
    assert_eq!(
        forwarded.bytes_sensor_to_client,
        summary.bytes_server_to_client
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_saw_everything_says_its_evidence_is_complete() {
    let (tmp, cicap, forward) = cicap_and_forwarding();
    let out = tmp.path().join("run");
    let proxy = start(ProxyPlan::new(forward, out.clone())).await.unwrap();
    let port = cicap.addr.port();
    let mut client = TcpStream::connect(proxy.listen).await.unwrap();
    for n in 0..3 {
        client.write_all(&reqmod(port, n)).await.unwrap();
        let answer = read_answers(&mut client, 1).await;
        assert!(answer.starts_with(b"ICAP/1.0 "), "{answer:?}");
    }
    drop(client);
    let summary = proxy.stop().await.unwrap();
    assert_eq!(
        summary.by_verdict.get("clean"),
        Some(&3),
        "{:?}",
        summary.by_verdict
    );
    let evidence = summary.evidence.expect("the summary judges its evidence");
    assert!(evidence.complete, "{evidence:?}");
    assert!(evidence.gaps.is_empty());
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(written["evidence"]["complete"], true);
    assert_eq!(
        written["forwarded"]["bytes_client_to_sensor"],
        written["bytes_client_to_server"]
    );
}
