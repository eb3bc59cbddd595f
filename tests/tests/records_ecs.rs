//! `--log-schema ecs` on real runs: a proxy run in front of the example
//! sensor writes the native records as a default run does and, beside
//! them, the same records as ECS events; `icaptap analyze` of that run's
//! capture writes byte-for-byte the same native files with and without
//! `--log-schema ecs`; `report` and `bundle` read an ECS run as any other.

mod faults_support;
mod ops_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use icaptap::forward::ForwardConfig;
use icaptap::jobs::proxy::{start, ProxyPlan};
use icaptap::output::ecs::{connection_event, exchange_event, LogSchema};
use icaptap::output::records::{ConnectionRecord, ExchangeRecord};
use icaptap::toolkit::client::IcapMethod;
use ops_support::{request, sensor};
use serde_json::Value;
use sha2::Digest;

/// Requests with different verdicts: options, clean, infected, a policy
/// block, a sensor error and a sensor that closes before answering.
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
        "http://files.example.test/infected/x-infection-found",
    ),
    (
        IcapMethod::Respmod,
        "/av/respmod",
        "http://www.example.test/block/page",
    ),
    (
        IcapMethod::Respmod,
        "/av/respmod",
        "http://www.example.test/error/500",
    ),
    (
        IcapMethod::Respmod,
        "/av/respmod",
        "http://www.example.test/close/file.zip",
    ),
];

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Whether `ts` is RFC 3339 UTC with exactly six fractional digits.
fn six_digits(ts: &str) -> bool {
    let Some((_, fraction)) = ts.rsplit_once('.') else {
        return false;
    };
    fraction.len() == 7
        && fraction.ends_with('Z')
        && fraction[..6].bytes().all(|b| b.is_ascii_digit())
}

fn icaptap(args: &[&str]) {
    let out = Command::new(faults_support::icaptap_binary())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "icaptap {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ecs_run_writes_native_records_and_their_ecs_events() {
    let sensor = sensor().await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("proxy-run");
    let mut forward = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), sensor.addr());
    forward.drain = Duration::from_secs(2);
    let proxy = start(ProxyPlan {
        log_schema: LogSchema::Ecs,
        ..ProxyPlan::new(forward, out.clone())
    })
    .await
    .unwrap();
    for (method, service, url) in MIX {
        request(proxy.listen, *method, service, url).await;
    }
    let summary = proxy.stop().await.unwrap();
    sensor.shutdown().await;

    // Every time a run writes has six fractional digits.
    let mut times: Vec<String> = [summary.started.clone(), summary.ended.clone()]
        .into_iter()
        .flatten()
        .collect();
    for file in [
        "exchanges.jsonl",
        "connections.jsonl",
        "exchanges.ecs.jsonl",
        "connections.ecs.jsonl",
    ] {
        for r in lines(&out.join(file)) {
            for key in ["ts", "ts_close", "@timestamp"] {
                times.extend(r.get(key).and_then(Value::as_str).map(String::from));
            }
            for key in ["start", "end"] {
                times.extend(
                    r["event"]
                        .get(key)
                        .and_then(Value::as_str)
                        .map(String::from),
                );
            }
        }
    }
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    times.extend(
        ["started", "ended"]
            .iter()
            .filter_map(|k| on_disk[*k].as_str().map(String::from)),
    );
    assert!(times.len() > 4 * MIX.len(), "{times:?}");
    for ts in &times {
        assert!(six_digits(ts), "{ts} has not six fractional digits");
    }

    // The native files are those of any run; the ECS files hold exactly
    // their mapping, record for record, in the same order.
    let native: Vec<ExchangeRecord> = lines(&out.join("exchanges.jsonl"))
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    let ecs = lines(&out.join("exchanges.ecs.jsonl"));
    assert_eq!(native.len(), MIX.len());
    assert_eq!(ecs.len(), native.len());
    for (n, e) in native.iter().zip(&ecs) {
        assert_eq!(&exchange_event(n), e);
        assert_eq!(e["@timestamp"], n.ts);
        assert_eq!(e["icaptap"]["conn"], n.conn);
        let client: std::net::SocketAddr = n.client.parse().unwrap();
        assert_eq!(e["client"]["ip"], client.ip().to_string());
        assert_eq!(e["client"]["port"], client.port());
        let server: std::net::SocketAddr = n.server.parse().unwrap();
        assert_eq!(e["server"]["port"], server.port());
        if let Some(done) = n.timings.response_complete_us {
            assert_eq!(e["event"]["duration"], done * 1000, "{e}");
        }
    }
    let of = |url_part: &str| {
        ecs.iter()
            .find(|e| {
                e["url"]["full"]
                    .as_str()
                    .is_some_and(|u| u.contains(url_part))
            })
            .unwrap_or_else(|| panic!("no event for {url_part}: {ecs:?}"))
    };
    let infected = of("/infected/");
    assert_eq!(infected["event"]["action"], "infected");
    assert_eq!(infected["event"]["category"][1], "malware");
    assert_eq!(infected["threat"]["software"]["name"][0], "Trojan.Test.A");
    assert_eq!(infected["http"]["request"]["method"], "GET");
    assert_eq!(infected["url"]["domain"], "files.example.test");
    let body_sha = icaptap::output::hex(&sha2::Sha256::digest(b"<html>hello</html>"));
    assert_eq!(infected["file"]["hash"]["sha256"], body_sha.as_str());
    assert_eq!(infected["icaptap"]["squid_outcome"], "ICAP_MOD");
    assert_eq!(of("/clean/")["event"]["outcome"], "success");
    assert_eq!(of("/error/500")["event"]["outcome"], "failure");
    assert_eq!(of("/error/500")["icaptap"]["icap_status"], 500);
    assert_eq!(of("/close/")["event"]["action"], "missing");
    assert!(of("/close/")["icaptap"]["squid_outcome"].is_null());

    let connections: Vec<ConnectionRecord> = lines(&out.join("connections.jsonl"))
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    let ecs_connections = lines(&out.join("connections.ecs.jsonl"));
    assert_eq!(ecs_connections.len(), connections.len());
    for (n, e) in connections.iter().zip(&ecs_connections) {
        assert_eq!(&connection_event(n), e);
        assert_eq!(e["event"]["duration"], n.duration_us * 1000);
        assert_eq!(e["client"]["bytes"], n.bytes_client_to_server);
    }

    // Offline: the same capture analysed with and without ECS gives the
    // same native files, byte for byte.
    let capture = out.join("capture.pcapng");
    let plain = tmp.path().join("analyze-plain");
    let with_ecs = tmp.path().join("analyze-ecs");
    let capture_arg = capture.to_str().unwrap();
    icaptap(&[
        "analyze",
        capture_arg,
        "--no-progress",
        "--out",
        plain.to_str().unwrap(),
    ]);
    icaptap(&[
        "analyze",
        capture_arg,
        "--no-progress",
        "--log-schema",
        "ecs",
        "--out",
        with_ecs.to_str().unwrap(),
    ]);
    for file in ["exchanges.jsonl", "connections.jsonl"] {
        let a = std::fs::read(plain.join(file)).unwrap();
        let b = std::fs::read(with_ecs.join(file)).unwrap();
        assert!(!a.is_empty(), "{file} empty");
        assert_eq!(a, b, "{file} differs with --log-schema ecs");
    }
    assert!(!plain.join("exchanges.ecs.jsonl").exists());
    let offline = lines(&with_ecs.join("exchanges.ecs.jsonl"));
    assert_eq!(offline.len(), MIX.len());
    assert!(offline.iter().all(|e| e["icaptap"]["frames"].is_object()));

    // The readers take an ECS run like any other: from its native files.
    let ecs_run = with_ecs.to_str().unwrap();
    icaptap(&["report", ecs_run]);
    assert!(with_ecs.join("report.html").is_file());
    let bundle = tmp.path().join("ecs-run.tar.gz");
    icaptap(&["bundle", ecs_run, "--output", bundle.to_str().unwrap()]);
    assert!(bundle.is_file());
    // `clean` knows the ECS files as the run's own.
    icaptap(&["clean", ecs_run]);
    assert!(!with_ecs.join("exchanges.ecs.jsonl").exists());
}
