//! A real run's `/metrics` as Prometheus itself judges it: two listeners
//! (the main one and a `--route`, each to its own sensor) scraped after
//! traffic, the scrape checked by `promtool check metrics` (Debian package
//! `prometheus`, installed by .ci/run), the per-listener series and the
//! `process_*` figures checked for sane values, and every metric and label
//! the sample Grafana dashboard (deploy/grafana-icaptap.json) queries found
//! in that scrape.

mod ops_support;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use icaptap::forward::ForwardConfig;
use icaptap::jobs::proxy::{start, ProxyPlan};
use icaptap::ops::OpsPlan;
use icaptap::toolkit::client::IcapMethod;
use ops_support::*;

/// Runs `promtool check metrics` on `body`; its exit status and output.
fn promtool(body: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus, installed by .ci/run)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Metric names a PromQL expression reads (those of icaptap and the
/// standard process families; functions and keywords have other names).
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            if word.starts_with("icaptap_") || word.starts_with("process_") {
                names.insert(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    names
}

/// Label names a PromQL expression uses: in `by (...)` groupings and in
/// `{name="..."}` matchers.
fn labels_in(expr: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    for part in expr.split("by (").skip(1) {
        let list = part.split(')').next().unwrap_or_default();
        labels.extend(list.split(',').map(|l| l.trim().to_string()));
    }
    for part in expr.split('{').skip(1) {
        let list = part.split('}').next().unwrap_or_default();
        for matcher in list.split(',') {
            let name: String = matcher
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && !name.starts_with("__") {
                labels.insert(name);
            }
        }
    }
    labels.retain(|l| !l.is_empty());
    labels
}

/// Every PromQL expression of the dashboard: panel targets and variable
/// queries.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str() {
            queries.push(q.to_string());
        }
    }
    queries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_scrape_passes_promtool_and_feeds_the_dashboard() {
    let sensor_a = sensor().await;
    let sensor_b = sensor().await;
    let dir = tempfile::tempdir().unwrap();
    let mut forward = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), sensor_a.addr());
    forward.drain = Duration::from_secs(2);
    let mut route = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), sensor_b.addr());
    route.drain = Duration::from_secs(2);
    let plan = ProxyPlan {
        ops: OpsPlan {
            metrics: Some("127.0.0.1:0".parse().unwrap()),
            ..OpsPlan::default()
        },
        routes: vec![route],
        ..ProxyPlan::new(forward, dir.path().join("run"))
    };
    let proxy = start(plan).await.unwrap();
    let metrics = proxy.metrics.unwrap();
    let (main, second) = (proxy.listens[0], proxy.listens[1]);
    let url = "http://www.example.test/clean/a.html";
    for _ in 0..3 {
        request(main, IcapMethod::Respmod, "/av/respmod", url).await;
    }
    for _ in 0..2 {
        request(second, IcapMethod::Respmod, "/av/respmod", url).await;
    }
    // One answer with anomalies, so the anomaly series exist too.
    let malformed = "http://www.example.test/malformed/bad-encapsulated-offsets";
    request(second, IcapMethod::Respmod, "/av/respmod", malformed).await;
    let mut body = String::new();
    eventually("the metrics to count every exchange and connection", || {
        body = http_get(metrics, "/metrics").1;
        let e = parse_prometheus(&body).unwrap_or_else(|err| panic!("{err}\n{body}"));
        e.sum("icaptap_exchanges_total", &[]) == 6.0
            && e.sum("icaptap_connections_closed_total", &[]) == 6.0
    })
    .await;

    let (ok, said) = promtool(&body);
    assert!(ok, "promtool check metrics: {said}\n{body}");
    // promtool refuses what it should, so its verdict above means something.
    let (ok, _) = promtool("# TYPE icaptap_x counter\nicaptap_x 1\n");
    assert!(!ok, "promtool accepted a counter without _total");

    let e = parse_prometheus(&body).unwrap();
    check_icaptap_naming(&e).unwrap_or_else(|err| panic!("{err}\n{body}"));
    // Each listener is its own series, labelled with its sensor.
    for (listen, sensor, n) in [(main, &sensor_a, 3.0), (second, &sensor_b, 3.0)] {
        let labels = [
            ("listener", listen.to_string()),
            ("upstream", sensor.addr().to_string()),
        ];
        let with: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(e.sum("icaptap_connections_total", &with), n, "{body}");
        assert_eq!(e.sum("icaptap_connections_open", &with), 0.0, "{body}");
        assert!(
            e.sum("icaptap_forwarded_bytes_total", &with) > 0.0,
            "{body}"
        );
        for counter in ["icaptap_fd_limit_hits_total", "icaptap_accept_errors_total"] {
            let series = e
                .samples
                .iter()
                .filter(|s| s.name == counter)
                .filter(|s| {
                    with.iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
                })
                .count();
            assert_eq!(series, 1, "{counter} of {listen}:\n{body}");
            assert_eq!(e.sum(counter, &with), 0.0, "{body}");
        }
    }
    assert_eq!(e.sum("icaptap_connections_total", &[]), 6.0);
    // /status names each listener and its sensor the same way.
    let status: serde_json::Value = serde_json::from_str(&http_get(metrics, "/status").1).unwrap();
    let listeners = status["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 2, "{status}");
    for (l, (listen, sensor)) in listeners
        .iter()
        .zip([(main, &sensor_a), (second, &sensor_b)])
    {
        assert_eq!(l["listener"], listen.to_string(), "{l}");
        assert_eq!(l["upstream"], sensor.addr().to_string(), "{l}");
        assert_eq!(l["connections_total"], 3, "{l}");
    }

    // The process figures are this process's (the proxy runs in the test).
    let value = |name: &str| {
        let s: Vec<_> = e.samples.iter().filter(|s| s.name == name).collect();
        assert_eq!(s.len(), 1, "{name}:\n{body}");
        s[0].value
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 3600.0,
        "started {started}, now {now}"
    );
    assert!(value("process_cpu_seconds_total") > 0.0);
    let rss = value("process_resident_memory_bytes");
    assert!(rss > 1024.0 * 1024.0, "rss {rss}");
    assert!(value("process_virtual_memory_bytes") >= rss);
    let open = value("process_open_fds");
    assert!(
        open >= 5.0,
        "open fds {open}: at least the listeners and the endpoint"
    );
    assert!(value("process_max_fds") >= open);

    // The dashboard queries only what a scrape has.
    let text = include_str!("../../deploy/grafana-icaptap.json");
    let dashboard: serde_json::Value = serde_json::from_str(text).unwrap();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 10, "{queries:?}");
    let scraped: BTreeSet<&str> = e.samples.iter().map(|s| s.name.as_str()).collect();
    let mut labels: BTreeSet<&str> = ["job", "instance"].into();
    labels.extend(
        e.samples
            .iter()
            .flat_map(|s| s.labels.keys().map(String::as_str)),
    );
    let mut queried = BTreeSet::new();
    for q in &queries {
        let names = metrics_in(q);
        assert!(!names.is_empty(), "a query of no icaptap metric: {q}");
        for name in names {
            assert!(
                scraped.contains(name.as_str()),
                "the dashboard queries {name}, which /metrics lacks: {q}"
            );
            queried.insert(name);
        }
        for label in labels_in(q) {
            assert!(
                labels.contains(label.as_str()),
                "the dashboard uses label {label}, which /metrics lacks: {q}"
            );
        }
    }
    for must in [
        "icaptap_exchanges_total",
        "icaptap_fd_limit_hits_total",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(queried.contains(must), "the dashboard does not show {must}");
    }

    proxy.stop().await.unwrap();
    sensor_a.shutdown().await;
    sensor_b.shutdown().await;
}

#[test]
fn queries_are_read_for_metrics_and_labels() {
    let q = r#"sum by (le, service) (rate(icaptap_exchange_latency_seconds_bucket{job=~"$job",listener!="x"}[5m])) / process_max_fds"#;
    assert_eq!(
        metrics_in(q),
        ["icaptap_exchange_latency_seconds_bucket", "process_max_fds"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        labels_in(q),
        ["job", "le", "listener", "service"]
            .map(String::from)
            .into()
    );
}
