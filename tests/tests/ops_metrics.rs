//! The operations side of `icaptap proxy` on loopback: the metrics endpoint
//! scraped during a run and parsed strictly as Prometheus text (and checked
//! against the run's own records), /healthz and /status, the stop
//! conditions, several listeners, and the flight recorder's incidents.

mod ops_support;

use std::collections::BTreeMap;
use std::time::Duration;

use icaptap::forward::ForwardConfig;
use icaptap::jobs::proxy::{start, ProxyPlan};
use icaptap::ops::flight::FlightOptions;
use icaptap::ops::stop::StopConditions;
use icaptap::ops::OpsPlan;
use icaptap::toolkit::client::IcapMethod;
use ops_support::*;

fn plan(sensor: std::net::SocketAddr, out: std::path::PathBuf, ops: OpsPlan) -> ProxyPlan {
    let mut forward = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), sensor);
    forward.drain = Duration::from_secs(2);
    ProxyPlan {
        ops,
        ..ProxyPlan::new(forward, out)
    }
}

/// What the example scenario answers: clean, blocked, an overloaded sensor,
/// one closing before its verdict, a malformed reply, and OPTIONS.
const MIX: &[(IcapMethod, &str, &str)] = &[
    (IcapMethod::Options, "/av/respmod", ""),
    (
        IcapMethod::Respmod,
        "/av/respmod",
        "http://www.example.test/clean/a.html",
    ),
    (
        IcapMethod::Respmod,
        "/av/respmod",
        "http://www.example.test/clean/b.html",
    ),
    (
        IcapMethod::Reqmod,
        "/av/reqmod",
        "http://upload.example.test/upload/form",
    ),
    (
        IcapMethod::Respmod,
        "/av/respmod",
        "http://www.example.test/error/503",
    ),
    (
        IcapMethod::Respmod,
        "/av/respmod",
        "http://www.example.test/close/file.zip",
    ),
    (
        IcapMethod::Respmod,
        "/av/respmod",
        "http://www.example.test/malformed/bad-encapsulated-offsets",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_during_a_run_and_agree_with_the_records() {
    let sensor = sensor().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let ops = OpsPlan {
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        ..OpsPlan::default()
    };
    let proxy = start(plan(sensor.addr(), out.clone(), ops)).await.unwrap();
    let metrics = proxy.metrics.unwrap();
    assert!(metrics.ip().is_loopback());

    let (status, body) = http_get(metrics, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _) = http_get(metrics, "/nothing-here");
    assert_eq!(status, 404);

    for (method, service, url) in MIX {
        request(proxy.listen, *method, service, url).await;
    }
    // The observer runs behind forwarding: wait until it has finished every
    // exchange and connection, as a scraper would see the figures settle.
    let mut last = String::new();
    eventually("the metrics to count every exchange and connection", || {
        let (status, body) = http_get(metrics, "/metrics");
        assert_eq!(status, 200);
        let e = parse_prometheus(&body).unwrap_or_else(|err| panic!("{err}\n{body}"));
        last = body;
        e.sum("icaptap_exchanges_total", &[]) == MIX.len() as f64
            && e.sum("icaptap_connections_closed_total", &[])
                == e.sum("icaptap_connections_total", &[])
            && e.sum("icaptap_connections_open", &[]) == 0.0
    })
    .await;
    let scraped = parse_prometheus(&last).unwrap();
    check_icaptap_naming(&scraped).unwrap_or_else(|err| panic!("{err}\n{last}"));
    for family in [
        "icaptap_exchanges_total",
        "icaptap_anomalies_total",
        "icaptap_exchange_latency_seconds",
        "icaptap_forwarded_bytes_total",
        "icaptap_connections_open",
        "icaptap_observer_dropped_taps_total",
        "icaptap_recorder_dropped_taps_total",
    ] {
        assert!(
            scraped.types.contains_key(family),
            "{family} missing:\n{last}"
        );
    }

    let (status, body) = http_get(metrics, "/status");
    assert_eq!(status, 200);
    let status_json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status_json["stopping"], false);
    let problems = status_json["recent_problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["http_url"]
            .as_str()
            .is_some_and(|u| u.contains("/close/"))),
        "{body}"
    );

    let summary = proxy.stop().await.unwrap();
    sensor.shutdown().await;

    // Every figure agrees with the records the same run wrote.
    let exchanges = jsonl(&out.join("exchanges.jsonl"));
    assert_eq!(exchanges.len(), MIX.len());
    let mut by_method_verdict: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut by_code: BTreeMap<String, f64> = BTreeMap::new();
    let mut latencies: BTreeMap<(String, String), f64> = BTreeMap::new();
    for x in &exchanges {
        let method = x["method"].as_str().unwrap_or("-").to_string();
        *by_method_verdict
            .entry((method.clone(), x["verdict"].as_str().unwrap().to_string()))
            .or_default() += 1.0;
        for a in x["anomalies"].as_array().unwrap() {
            *by_code
                .entry(a["code"].as_str().unwrap().to_string())
                .or_default() += 1.0;
        }
        if x["latency_us"].is_u64() {
            let service = x["service"].as_str().unwrap_or("-").to_string();
            *latencies.entry((method, service)).or_default() += 1.0;
        }
    }
    let connections = jsonl(&out.join("connections.jsonl"));
    let (mut up, mut down) = (0.0, 0.0);
    for c in &connections {
        up += c["bytes_client_to_server"].as_u64().unwrap() as f64;
        down += c["bytes_server_to_client"].as_u64().unwrap() as f64;
        for a in c["anomalies"].as_array().unwrap() {
            *by_code
                .entry(a["code"].as_str().unwrap().to_string())
                .or_default() += 1.0;
        }
    }
    for ((method, verdict), n) in &by_method_verdict {
        let got = scraped.sum(
            "icaptap_exchanges_total",
            &[("method", method), ("verdict", verdict)],
        );
        assert_eq!(got, *n, "{method} {verdict}\n{last}");
    }
    assert!(
        by_code.contains_key("server-closed-before-response"),
        "{by_code:?}"
    );
    for (code, n) in &by_code {
        assert_eq!(
            scraped.sum("icaptap_anomalies_total", &[("code", code)]),
            *n,
            "{code}"
        );
    }
    assert_eq!(
        scraped.sum("icaptap_anomalies_total", &[]),
        by_code.values().sum::<f64>()
    );
    for ((method, service), n) in &latencies {
        let count = scraped.sum(
            "icaptap_exchange_latency_seconds_count",
            &[("method", method), ("service", service)],
        );
        assert_eq!(count, *n, "{method} {service}");
    }
    assert!(up > 0.0 && down > 0.0);
    assert_eq!(
        scraped.sum(
            "icaptap_forwarded_bytes_total",
            &[("direction", "client_to_sensor")]
        ),
        up
    );
    assert_eq!(
        scraped.sum(
            "icaptap_forwarded_bytes_total",
            &[("direction", "sensor_to_client")]
        ),
        down
    );
    assert_eq!(summary.exchanges, MIX.len() as u64);
    // The endpoint goes away with the run.
    assert!(std::net::TcpStream::connect(metrics).is_err());
}

#[test]
fn the_metrics_parser_refuses_what_prometheus_refuses() {
    let good = "# HELP icaptap_x_total x\n# TYPE icaptap_x_total counter\nicaptap_x_total{a=\"1\\\"\"} 3\n";
    parse_prometheus(good).unwrap();
    for bad in [
        "icaptap_x_total 1\n",                                      // no TYPE
        "# TYPE icaptap_x_total counter\nicaptap_x_total{a=1} 1\n", // unquoted
        "# TYPE icaptap_x_total counter\nicaptap_x_total 1",        // no newline
        "# TYPE icaptap_x_total counter\nicaptap_x_total 1\nicaptap_x_total 2\n", // duplicate
        "# TYPE icaptap_x_total counter\n# TYPE icaptap_x_total counter\n", // TYPE twice
        "# TYPE icaptap_x_total counter\nicaptap_x_total one\n",    // value
    ] {
        assert!(parse_prometheus(bad).is_err(), "{bad:?}");
    }
    let unnamed = parse_prometheus("# TYPE x_total counter\nx_total 1\n").unwrap();
    assert!(check_icaptap_naming(&unnamed).is_err());
    let counter = parse_prometheus("# TYPE icaptap_x counter\nicaptap_x 1\n").unwrap();
    assert!(check_icaptap_naming(&counter).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_on_an_anomaly_code_ends_the_run_by_itself() {
    let sensor = sensor().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let ops = OpsPlan {
        stop: StopConditions {
            max_exchanges: None,
            codes: ["server-closed-before-response".to_string()].into(),
        },
        ..OpsPlan::default()
    };
    let proxy = start(plan(sensor.addr(), out.clone(), ops)).await.unwrap();
    let token = proxy.shutdown_token();
    for (method, service, url) in &MIX[..4] {
        request(proxy.listen, *method, service, url).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!token.is_cancelled(), "stopped without the anomaly");
    request(
        proxy.listen,
        IcapMethod::Respmod,
        "/av/respmod",
        "http://x.test/close/f",
    )
    .await;
    tokio::time::timeout(TIMEOUT, token.cancelled())
        .await
        .unwrap();
    let reason = proxy.stop_reason().unwrap();
    assert!(reason.contains("server-closed-before-response"), "{reason}");
    let summary = proxy.stop().await.unwrap();
    assert_eq!(summary.exchanges, 5);
    sensor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_exchanges_ends_the_run_by_itself() {
    let sensor = sensor().await;
    let dir = tempfile::tempdir().unwrap();
    let ops = OpsPlan {
        stop: StopConditions {
            max_exchanges: Some(3),
            codes: Default::default(),
        },
        ..OpsPlan::default()
    };
    let proxy = start(plan(sensor.addr(), dir.path().join("run"), ops))
        .await
        .unwrap();
    let token = proxy.shutdown_token();
    for _ in 0..2 {
        request(proxy.listen, IcapMethod::Options, "/av/respmod", "").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!token.is_cancelled());
    request(proxy.listen, IcapMethod::Options, "/av/respmod", "").await;
    tokio::time::timeout(TIMEOUT, token.cancelled())
        .await
        .unwrap();
    assert!(proxy.stop_reason().unwrap().contains("--max-exchanges 3"));
    // No new connections once stopping.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let listen = proxy.listen;
    proxy.stop().await.unwrap();
    assert!(tokio::net::TcpStream::connect(listen).await.is_err());
    sensor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_listen_separately_and_share_one_run() {
    let sensor_a = sensor().await;
    let sensor_b = sensor().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut p = plan(sensor_a.addr(), out.clone(), OpsPlan::default());
    p.routes = vec![ForwardConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        sensor_b.addr(),
    )];
    let proxy = start(p).await.unwrap();
    assert_eq!(proxy.listens.len(), 2);
    for listen in proxy.listens.clone() {
        for _ in 0..2 {
            request(listen, IcapMethod::Options, "/av/respmod", "").await;
        }
    }
    proxy.stop().await.unwrap();
    let connections = jsonl(&out.join("connections.jsonl"));
    assert_eq!(connections.len(), 4);
    let mut ids: Vec<u64> = connections
        .iter()
        .map(|c| c["conn"].as_u64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![1, 2, 3, 4],
        "connection ids are unique across listeners"
    );
    for sensor in [&sensor_a, &sensor_b] {
        let to_it = connections
            .iter()
            .filter(|c| c["server"] == sensor.addr().to_string())
            .count();
        assert_eq!(to_it, 2, "{connections:?}");
    }
    sensor_a.shutdown().await;
    sensor_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_writes_an_incident_with_capture_records_report_and_bundle() {
    let sensor = sensor().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let ops = OpsPlan {
        ring: Some(1 << 20),
        flight: Some(FlightOptions {
            triggers: ["server-closed-before-response".to_string()].into(),
            before: Duration::from_secs(60),
            after: Duration::from_millis(500),
            max_incidents: 1,
        }),
        ..OpsPlan::default()
    };
    let proxy = start(plan(sensor.addr(), out.clone(), ops)).await.unwrap();
    for (method, service, url) in &MIX[..3] {
        request(proxy.listen, *method, service, url).await;
    }
    request(
        proxy.listen,
        IcapMethod::Respmod,
        "/av/respmod",
        "http://x.test/close/f",
    )
    .await;
    // After the trigger, inside the window.
    request(proxy.listen, IcapMethod::Options, "/av/respmod", "").await;
    let incident = out
        .join("incidents")
        .join("0001-server-closed-before-response");
    let bundle = out
        .join("incidents")
        .join("0001-server-closed-before-response.tar.gz");
    eventually("the incident's bundle", || bundle.exists()).await;
    // A second trigger beyond --max-incidents is counted, not written.
    request(
        proxy.listen,
        IcapMethod::Respmod,
        "/av/respmod",
        "http://x.test/close/g",
    )
    .await;
    proxy.stop().await.unwrap();
    sensor.shutdown().await;

    // The ring rotated: capture-NNNN files, at most 8.
    let ring: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("capture-"))
        .collect();
    assert!((1..=8).contains(&ring.len()), "{ring:?}");

    let exchanges = jsonl(&incident.join("exchanges.jsonl"));
    let urls: Vec<&str> = exchanges
        .iter()
        .filter_map(|x| x["http_url"].as_str())
        .collect();
    assert!(urls.iter().any(|u| u.contains("/close/f")), "{urls:?}");
    assert!(
        urls.iter().any(|u| u.contains("/clean/a.html")),
        "the window reaches back: {urls:?}"
    );
    assert!(
        !urls.iter().any(|u| u.contains("/close/g")),
        "after the window: {urls:?}"
    );
    let trigger: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(incident.join("incident.json")).unwrap())
            .unwrap();
    assert_eq!(trigger["code"], "server-closed-before-response");
    assert!(incident.join("report.html").exists());
    assert!(incident.join("summary.json").exists());
    let captures: Vec<_> = std::fs::read_dir(&incident)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("capture-"))
        .collect();
    assert!(!captures.is_empty());
    // The capture holds the triggering request's bytes.
    let mut seen = false;
    for c in &captures {
        let bytes = std::fs::read(c.path()).unwrap();
        seen |= bytes
            .windows(16)
            .any(|w| w == b"x.test/close/f\r\n" || w.starts_with(b"/close/f"));
    }
    assert!(seen, "the incident's capture lacks the triggering request");
    let listed = std::process::Command::new("tar")
        .arg("tzf")
        .arg(&bundle)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listing.contains("exchanges.jsonl") && listing.contains("capture-"),
        "{listing}"
    );
}
