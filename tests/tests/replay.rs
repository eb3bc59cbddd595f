//! `icaptap replay`: a run recorded through the in-process proxy (mock
//! sensor behind it) is replayed against the same scenario (no difference,
//! exit 0) and against a sensor whose scenario decides otherwise (the
//! differences listed, exit 1); the capture file alone gives the same
//! requests and the offline observer's verdicts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use icaptap::forward::ForwardConfig;
use icaptap::jobs::proxy::{start, ProxyPlan};
use icaptap::toolkit::client::{send_once, IcapMethod, IcapTarget, RequestSpec, Verdict};
use icaptap::toolkit::replay::{load, replay};
use icaptap::toolkit::sample::{large_body, Sample};
use icaptap::toolkit::scenario::Scenario;
use icaptap::toolkit::sensor::{Sensor, SensorHandle};

mod faults_support;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/toolkit-scenario.toml");
const TIMEOUT: Duration = Duration::from_secs(5);

async fn sensor(scenario: Scenario) -> SensorHandle {
    Sensor::bind("127.0.0.1:0".parse().unwrap(), scenario)
        .await
        .unwrap()
        .spawn()
}

fn example() -> Scenario {
    Scenario::load(Path::new(EXAMPLE)).unwrap()
}

/// Everything says clean: no EICAR rule, no blocks, no failures.
fn permissive() -> Scenario {
    Scenario::from_toml("eicar_rule = false\n", "test").unwrap()
}

/// The mix recorded: OPTIONS, a clean preview with ieof, EICAR, a 300 KiB
/// download continued after its preview, a REQMOD block, a 503, a close.
fn mix(proxy: SocketAddr) -> Vec<RequestSpec> {
    let target = |service: &str| IcapTarget {
        host: proxy.ip().to_string(),
        port: proxy.port(),
        service: service.to_owned(),
    };
    let respmod = |url: &str, body: Bytes, preview: Option<usize>| RequestSpec {
        url: url.to_owned(),
        preview,
        allow_204: true,
        ..RequestSpec::respmod(target("/av/respmod"), body)
    };
    vec![
        RequestSpec {
            method: IcapMethod::Options,
            body: None,
            ..RequestSpec::respmod(target("/av/respmod"), Bytes::new())
        },
        respmod(
            "http://t.test/clean/page.html",
            Sample::Clean.body(),
            Some(1024),
        ),
        respmod("http://t.test/eicar.com", Sample::Eicar.body(), Some(1024)),
        RequestSpec {
            url: "http://t.test/echo/big.iso".to_owned(),
            preview: Some(1024),
            allow_204: true,
            ..RequestSpec::respmod(target("/echo"), large_body(300 * 1024))
        },
        RequestSpec {
            method: IcapMethod::Reqmod,
            url: "http://t.test/upload/form".to_owned(),
            ..RequestSpec::respmod(target("/av/reqmod"), Bytes::from_static(b"a=1"))
        },
        respmod("http://t.test/error/503", Sample::Clean.body(), None),
        respmod("http://t.test/close/x.zip", Sample::Clean.body(), None),
    ]
}

/// Records the mix through the in-process proxy into `out`.
async fn record(out: &Path) {
    let sensor = sensor(example()).await;
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut forward = ForwardConfig::new(loopback, sensor.addr());
    forward.drain = Duration::from_secs(2);
    let proxy = start(ProxyPlan::new(forward, out.to_path_buf()))
        .await
        .unwrap();
    for spec in mix(proxy.listen) {
        let _ = send_once(&spec, TIMEOUT).await;
    }
    proxy.stop().await.unwrap();
    sensor.shutdown().await;
}

fn recorded_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(record(&out));
    (tmp, out)
}

#[test]
fn replay_of_a_recorded_run_finds_no_difference_with_the_same_sensor() {
    let (_tmp, out) = recorded_dir();
    let connections = load(&out, &[]).unwrap();
    let requests: Vec<_> = connections.iter().flat_map(|c| &c.requests).collect();
    assert_eq!(requests.len(), 7, "{requests:#?}");
    assert!(requests.iter().all(|r| r.recorded.is_some()));
    let big = requests
        .iter()
        .find(|r| r.http_url.as_deref() == Some("http://t.test/echo/big.iso"))
        .unwrap();
    assert!(
        big.rest.is_some(),
        "the remainder after the preview is kept"
    );
    assert!(big.first.len() < 4096, "only the preview goes first");
    let clean = requests
        .iter()
        .find(|r| r.http_url.as_deref() == Some("http://t.test/clean/page.html"))
        .unwrap();
    assert!(clean.ieof && clean.rest.is_none());

    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(async {
        let same = sensor(example()).await;
        let report = replay(&connections, same.addr(), TIMEOUT).await;
        same.shutdown().await;
        report
    });
    assert_eq!(report.rows.len(), 7);
    assert_eq!(report.difference_count(), 0, "{report}");
    let verdicts: Vec<&str> = report
        .rows
        .iter()
        .map(|r| r.replayed.verdict.as_str())
        .collect();
    for want in [
        "options", "clean", "infected", "blocked", "error", "missing",
    ] {
        assert!(verdicts.contains(&want), "{want} not in {verdicts:?}");
    }
    assert!(report.to_string().contains("7 same verdict, 0 different"));
}

#[test]
fn replay_against_another_scenario_lists_the_differences_and_exits_1() {
    let (_tmp, out) = recorded_dir();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let other = rt.block_on(sensor(permissive()));
    let connections = load(&out, &[]).unwrap();
    let report = rt.block_on(replay(&connections, other.addr(), TIMEOUT));
    let differing: Vec<(String, String, &str)> = report
        .differences()
        .map(|r| {
            (
                r.http_url.clone().unwrap_or_default(),
                r.recorded.as_ref().unwrap().verdict.clone(),
                r.replayed.verdict.as_str(),
            )
        })
        .collect();
    let want = [
        ("http://t.test/eicar.com", "infected", "clean"),
        ("http://t.test/upload/form", "blocked", "clean"),
        ("http://t.test/error/503", "error", "clean"),
        ("http://t.test/close/x.zip", "missing", "clean"),
    ];
    assert_eq!(
        differing
            .iter()
            .map(|(u, a, b)| (u.as_str(), a.as_str(), *b))
            .collect::<Vec<_>>(),
        want,
        "{report}"
    );
    let table = report.to_string();
    assert!(table.contains("3 same verdict, 4 different"), "{table}");
    assert!(table.contains("infected (EICAR-Test-File)"), "{table}");

    // The command line: the same table, exit status 1; and 0 against a
    // sensor playing the recorded scenario.
    let bin = faults_support::icaptap_binary();
    let run = |target: SocketAddr| {
        Command::new(&bin)
            .args(["replay", out.to_str().unwrap(), "--target"])
            .arg(target.to_string())
            .output()
            .unwrap()
    };
    let o = run(other.addr());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("http://t.test/eicar.com"), "{stdout}");
    let same = rt.block_on(sensor(example()));
    let o = run(same.addr());
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    rt.block_on(async {
        other.shutdown().await;
        same.shutdown().await;
    });
}

#[test]
fn a_capture_file_alone_is_replayed_with_the_offline_observers_verdicts() {
    let (_tmp, out) = recorded_dir();
    // The proxy's capture holds both legs; read as any tcpdump file with
    // only icaptap's listening port as an ICAP port, it yields the client
    // legs, with the verdicts the offline observer derives.
    let capture = out.join("capture.pcapng");
    let from_dir = load(&out, &[]).unwrap();
    let listen_port: u16 = {
        let text = std::fs::read_to_string(out.join("connections.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        first["listen"]
            .as_str()
            .unwrap()
            .parse::<SocketAddr>()
            .unwrap()
            .port()
    };
    let from_file = load(&capture, &[listen_port]).unwrap();
    let dir_requests: usize = from_dir.iter().map(|c| c.requests.len()).sum();
    let file_requests: usize = from_file.iter().map(|c| c.requests.len()).sum();
    assert_eq!(
        dir_requests, file_requests,
        "client legs only on port {listen_port}"
    );
    // No port given: ICAP is found by its first bytes, and the sensor leg
    // of icaptap's own capture is known for the client leg's bytes again.
    let found = load(&capture, &[]).unwrap();
    assert_eq!(
        found.iter().map(|c| c.requests.len()).sum::<usize>(),
        dir_requests
    );
    let analysed = tempfile::tempdir().unwrap();
    let side = icaptap::jobs::analyze::analyze_into(
        std::slice::from_ref(&capture),
        &icaptap::analyze::AnalyzeOptions::with_ports(&[]),
        icaptap::observe::ObserverConfig::default(),
        &analysed.path().join("run"),
    )
    .unwrap();
    let live = std::fs::read_to_string(out.join("exchanges.jsonl"))
        .unwrap()
        .lines()
        .count() as u64;
    assert_eq!(
        side.summary.exchanges, live,
        "each exchange once, not once per leg"
    );
    assert!(side.capture.flows.icaptap_sensor_leg_packets > 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(async {
        let same = sensor(example()).await;
        let report = replay(&from_file, same.addr(), TIMEOUT).await;
        same.shutdown().await;
        report
    });
    assert_eq!(report.difference_count(), 0, "{report}");
    assert!(report
        .rows
        .iter()
        .any(|r| r.replayed.verdict == Verdict::Infected));
}

#[test]
fn a_capture_without_icap_fails_analyze_and_replay_instead_of_passing_with_nothing_tested() {
    use icaptap::analyze::synthetic::{
        Conversation, SyntheticFormat, SyntheticLink, SyntheticWriter,
    };
    use icaptap::tap::Direction;
    // A web conversation on 8080 and nothing else.
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("web.pcap");
    let link = SyntheticLink::Ethernet;
    let mut w = SyntheticWriter::new(
        std::fs::File::create(&capture).unwrap(),
        SyntheticFormat::Pcap,
        link.linktype(),
    )
    .unwrap();
    let mut c = Conversation::new(
        "127.0.0.1:40000".parse().unwrap(),
        "127.0.0.1:8080".parse().unwrap(),
        1000,
        9000,
    );
    let mut segments = c.handshake();
    segments.extend(c.data(
        Direction::Request,
        b"GET / HTTP/1.1\r\nHost: w\r\n\r\n",
        1460,
    ));
    segments.extend(c.data(
        Direction::Response,
        b"HTTP/1.1 204 No Content\r\n\r\n",
        1460,
    ));
    segments.push(c.fin(Direction::Request));
    segments.push(c.fin(Direction::Response));
    for (i, seg) in segments.iter().enumerate() {
        w.frame(
            1_796_000_000_000_000 + i as u64 * 100,
            &link.frame(&c.ip_packet(seg)),
        )
        .unwrap();
    }
    w.into_inner();

    let bin = faults_support::icaptap_binary();
    let analyze = Command::new(&bin)
        .arg("analyze")
        .arg(&capture)
        .arg("--out")
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&analyze.stderr);
    assert_eq!(analyze.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no ICAP found"), "{stderr}");
    assert!(
        stderr.contains("TCP ports seen: 8080 (1 flows)"),
        "{stderr}"
    );

    let replay = Command::new(&bin)
        .args(["replay", "--target", "127.0.0.1:1"])
        .arg(&capture)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&replay.stderr);
    assert_eq!(replay.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("holds no ICAP request"), "{stderr}");
}
