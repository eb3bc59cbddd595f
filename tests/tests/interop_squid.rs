//! Interop with real peers: curl -> Squid (ICAP client, preview and
//! persistent connections on) -> icaptap -> c-icap (echo service). The HTTP
//! bodies arrive intact, every ICAP transaction in Squid's icap_log has one
//! record, and every record carries the keys DESIGN.md requires.

mod peers;

use std::collections::BTreeMap;
use std::time::Duration;

use icaptap::forward::ForwardConfig;
use icaptap::jobs::proxy::{start, ProxyPlan};
use icaptap::observe::ObserverConfig;
use peers::*;

/// Keys every exchange record has (DESIGN.md "Output directory").
const REQUIRED_KEYS: [&str; 14] = [
    "schema",
    "ts",
    "conn",
    "seq",
    "client",
    "server",
    "method",
    "uri",
    "icap_status",
    "verdict",
    "threat",
    "anomalies",
    "latency_us",
    "decode_complete",
];

fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x & 0xff) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn squid_through_icaptap_to_c_icap() {
    assert!(
        have("squid") && have("c-icap") && have("curl"),
        "squid, c-icap and curl are installed by .ci/run"
    );
    let tmp = tempfile::tempdir().unwrap();
    let cicap = CIcap::start(&tmp.path().join("c-icap"), "");

    let out = tmp.path().join("icaptap");
    let mut forward = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), cicap.addr);
    forward.drain = Duration::from_secs(3);
    let proxy = start(ProxyPlan {
        observer: ObserverConfig::default(),
        ..ProxyPlan::new(forward, out.clone())
    })
    .await
    .unwrap();

    let small = b"<html><body>a small page</body></html>".to_vec();
    let big = pseudo_random(1024 * 1024, 7);
    let mut objects = vec![
        ("/small.html".to_string(), small.clone()),
        ("/big.bin".to_string(), big.clone()),
    ];
    for i in 0..20 {
        objects.push((format!("/obj/{i}"), pseudo_random(3000 + i * 500, i as u32)));
    }
    let origin = Origin::start(objects.clone());
    let squid_dir = tmp.path().join("squid");
    let squid = Squid::start_from_async(squid_dir, SquidIcap::echo(proxy.listen)).await;

    let squid_addr = squid.addr;
    let fetched = tokio::task::spawn_blocking({
        let urls: Vec<(String, Vec<u8>)> = objects
            .iter()
            .map(|(p, b)| (origin.url(p), b.clone()))
            .collect();
        move || {
            urls.into_iter()
                .map(|(url, want)| {
                    let (code, body) = curl_via(squid_addr, &url);
                    (url, code, body == want, body.len(), want.len())
                })
                .collect::<Vec<_>>()
        }
    })
    .await
    .unwrap();
    for (url, code, same, got, want) in &fetched {
        assert_eq!(*code, 200, "{url}");
        assert!(
            same,
            "{url}: body changed on the way ({got} bytes, expected {want})"
        );
    }

    // Squid closes its ICAP connections when it stops; then icaptap stops.
    let icap_log = squid.icap_log();
    drop(squid);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let summary = proxy.stop().await.unwrap();

    let lines = std::fs::read_to_string(out.join("exchanges.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for r in &records {
        for key in REQUIRED_KEYS {
            assert!(r.get(key).is_some(), "record lacks `{key}`: {r}");
        }
    }
    let mut ours: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        *ours
            .entry(r["method"].as_str().unwrap_or("-").to_string())
            .or_default() += 1;
    }
    let mut theirs: BTreeMap<String, usize> = BTreeMap::new();
    for line in &icap_log {
        for m in ["REQMOD", "RESPMOD", "OPTIONS"] {
            if line.split_whitespace().any(|w| w == m) {
                *theirs.entry(m.to_string()).or_default() += 1;
            }
        }
    }
    eprintln!(
        "icaptap records by method: {ours:?}; squid icap_log: {theirs:?}; summary verdicts: {:?}",
        summary.by_verdict
    );
    assert_eq!(
        ours.get("REQMOD"),
        theirs.get("REQMOD"),
        "REQMOD count; icap_log:\n{}",
        icap_log.join("\n")
    );
    assert_eq!(
        ours.get("RESPMOD"),
        theirs.get("RESPMOD"),
        "RESPMOD count; icap_log:\n{}",
        icap_log.join("\n")
    );
    assert_eq!(ours.get("REQMOD"), Some(&objects.len()));
    assert!(
        ours.get("OPTIONS").copied().unwrap_or(0) >= 1,
        "Squid probes the service with OPTIONS"
    );
    // The echo service returns every object unchanged: nothing is anything
    // but clean (or options), and nothing is missing.
    for r in &records {
        let v = r["verdict"].as_str().unwrap();
        assert!(v == "clean" || v == "options", "unexpected verdict: {r}");
    }
    let big_record = records
        .iter()
        .find(|r| {
            r["method"] == "RESPMOD"
                && r["http_url"]
                    .as_str()
                    .is_some_and(|u| u.ends_with("/big.bin"))
        })
        .expect("a RESPMOD record for the 1 MiB object");
    // c-icap's echo service answers 204 on the preview: Squid sends only the
    // first 1024 bytes, and the record says so (a 204 is "not modified",
    // not "scanned").
    assert_eq!(
        big_record["icap_status"].as_u64(),
        Some(204),
        "{big_record}"
    );
    assert_eq!(
        big_record["request_body_bytes"].as_u64(),
        Some(1024),
        "{big_record}"
    );
    assert_eq!(
        big_record["preview"]["size"].as_u64(),
        Some(1024),
        "{big_record}"
    );
    assert_eq!(
        big_record["preview"]["ieof"].as_bool(),
        Some(false),
        "{big_record}"
    );
    assert_eq!(
        big_record["preview"]["continued"].as_bool(),
        Some(false),
        "{big_record}"
    );
    let small_record = records
        .iter()
        .find(|r| {
            r["method"] == "RESPMOD"
                && r["http_url"]
                    .as_str()
                    .is_some_and(|u| u.ends_with("/small.html"))
        })
        .expect("a RESPMOD record for the small page");
    assert_eq!(
        small_record["request_body_bytes"].as_u64(),
        Some(small.len() as u64),
        "{small_record}"
    );
    assert_eq!(
        small_record["preview"]["ieof"].as_bool(),
        Some(true),
        "{small_record}"
    );
    assert_eq!(summary.drops.observer_taps, 0);

    // Transaction by transaction, `squid_outcome` and the ICAP status are
    // what Squid logged (`%icap::rm` and `%icap::to/%03icap::Hs` of the
    // icap_squid format), as counts per method.
    let mut ours: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &records {
        let outcome = r["squid_outcome"]
            .as_str()
            .unwrap_or_else(|| panic!("an answered exchange without squid_outcome: {r}"));
        let status = r["icap_status"].as_u64().unwrap();
        let method = r["method"].as_str().unwrap().to_string();
        *ours
            .entry((method, format!("{outcome}/{status:03}")))
            .or_default() += 1;
    }
    let theirs = icap_log_outcomes(&icap_log);
    eprintln!("squid outcomes: ours {ours:?}; icap_log {theirs:?}");
    assert_eq!(
        ours,
        theirs,
        "squid_outcome differs from Squid's icap_log:\n{}",
        icap_log.join("\n")
    );
    assert!(ours.keys().any(|(_, o)| o == "ICAP_ECHO/204"), "{ours:?}");
}

/// Counts of (method, `OUTCOME/STATUS`) in Squid's icap_log lines
/// (`%icap::rm` and `%icap::to/%03icap::Hs` of the icap_squid format).
fn icap_log_outcomes(icap_log: &[String]) -> BTreeMap<(String, String), usize> {
    let mut counts = BTreeMap::new();
    for line in icap_log {
        let words: Vec<&str> = line.split_whitespace().collect();
        let outcome = words.iter().find(|w| w.starts_with("ICAP_"));
        let method = words
            .iter()
            .find(|w| ["REQMOD", "RESPMOD", "OPTIONS"].contains(w));
        let (Some(outcome), Some(method)) = (outcome, method) else {
            panic!("an icap_log line without outcome or method: {line}");
        };
        *counts
            .entry((method.to_string(), outcome.to_string()))
            .or_default() += 1;
    }
    counts
}

/// Squid -> icaptap -> the example sensor, which blocks REQMODs with a
/// page (request satisfaction), answers ICAP 500 and names malware:
/// `squid_outcome` is what Squid logs for each, `ICAP_SAT` and
/// `ICAP_ERR_OTHER` included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn squid_outcome_agrees_with_squid_on_blocks_and_errors() {
    assert!(
        have("squid") && have("curl"),
        "squid and curl are installed by .ci/run"
    );
    let scenario = icaptap::toolkit::scenario::Scenario::from_toml(
        include_str!("../../docs/toolkit-scenario.toml"),
        "docs/toolkit-scenario.toml",
    )
    .unwrap();
    let sensor = icaptap::toolkit::Sensor::bind("127.0.0.1:0".parse().unwrap(), scenario)
        .await
        .unwrap()
        .spawn();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("icaptap");
    let mut forward = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), sensor.addr());
    forward.drain = Duration::from_secs(3);
    let proxy = start(ProxyPlan::new(forward, out.clone())).await.unwrap();

    let paths = [
        "/clean/a.html",
        "/block/page.html",
        "/error/500",
        "/infected/x-virus-id",
        "/policy/page.html",
    ];
    let objects: Vec<(String, Vec<u8>)> = paths
        .iter()
        .map(|p| (p.to_string(), pseudo_random(2000, p.len() as u32)))
        .collect();
    let origin = Origin::start(objects.clone());
    let icap = SquidIcap {
        reqmod_service: "/av/reqmod".to_string(),
        respmod_service: "/av/respmod".to_string(),
        ..SquidIcap::echo(proxy.listen)
    };
    let squid = Squid::start_from_async(tmp.path().join("squid"), icap).await;
    let squid_addr = squid.addr;
    let urls: Vec<String> = paths.iter().map(|p| origin.url(p)).collect();
    tokio::task::spawn_blocking(move || {
        for url in urls {
            // Blocks and errors are what this test is about: any status.
            curl_via(squid_addr, &url);
        }
    })
    .await
    .unwrap();
    let icap_log = squid.icap_log();
    drop(squid);
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.stop().await.unwrap();
    sensor.shutdown().await;

    let records: Vec<serde_json::Value> = std::fs::read_to_string(out.join("exchanges.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut ours: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &records {
        let outcome = r["squid_outcome"]
            .as_str()
            .unwrap_or_else(|| panic!("an answered exchange without squid_outcome: {r}"));
        let status = r["icap_status"].as_u64().unwrap();
        *ours
            .entry((
                r["method"].as_str().unwrap().to_string(),
                format!("{outcome}/{status:03}"),
            ))
            .or_default() += 1;
    }
    let theirs = icap_log_outcomes(&icap_log);
    eprintln!("squid outcomes: ours {ours:?}; icap_log {theirs:?}");
    assert_eq!(
        ours,
        theirs,
        "squid_outcome differs from Squid's icap_log:\n{}",
        icap_log.join("\n")
    );
    for must in ["ICAP_SAT/200", "ICAP_ERR_OTHER/500", "ICAP_ECHO/204"] {
        assert!(ours.keys().any(|(_, o)| o == must), "no {must} in {ours:?}");
    }
}
