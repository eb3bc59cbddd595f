//! `icaptap analyze` end to end: the offline job on tcpdump captures of real
//! Squid -> icaptap -> c-icap traffic agrees with what the live proxy
//! recorded for the same run, and `--peer` matches a client-side capture
//! with a sensor-side one, pointing at the exchange lost in between.

mod peers;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use icaptap::analyze::peer::correlate;
use icaptap::analyze::synthetic::{Conversation, SyntheticFormat, SyntheticLink, SyntheticWriter};
use icaptap::analyze::AnalyzeOptions;
use icaptap::forward::ForwardConfig;
use icaptap::jobs::analyze::analyze_into;
use icaptap::jobs::proxy::{start, ProxyPlan};
use icaptap::observe::ObserverConfig;
use icaptap::output::records::ExchangeRecord;
use icaptap::tap::Direction;
use peers::*;

fn records(dir: &Path) -> Vec<ExchangeRecord> {
    std::fs::read_to_string(dir.join("exchanges.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (method, encapsulated URL, verdict) of every exchange, counted.
fn verdicts(records: &[ExchangeRecord]) -> BTreeMap<(String, String, String), usize> {
    let mut out = BTreeMap::new();
    for r in records {
        let key = (
            r.method.clone().unwrap_or_default(),
            r.http_url.clone().unwrap_or_default(),
            r.verdict.clone(),
        );
        *out.entry(key).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offline_analysis_agrees_with_the_live_proxy() {
    assert!(
        have("squid") && have("c-icap") && have("tcpdump"),
        "installed by .ci/run"
    );
    let tmp = tempfile::tempdir().unwrap();
    let cicap = CIcap::start(&tmp.path().join("c-icap"), "");
    let live = tmp.path().join("live");
    let mut forward = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), cicap.addr);
    forward.drain = Duration::from_secs(3);
    let proxy = start(ProxyPlan::new(forward, live.clone())).await.unwrap();
    let icaptap_port = proxy.listen.port();
    let sensor_port = cicap.addr.port();
    let dump = Tcpdump::start(
        "lo",
        &format!("tcp port {icaptap_port} or tcp port {sensor_port}"),
        &tmp.path().join("both-legs.pcap"),
    );

    let mut objects = vec![("/page.html".to_string(), b"<html>hello</html>".to_vec())];
    for i in 0..6 {
        objects.push((
            format!("/file/{i}.bin"),
            vec![b'a' + i as u8; 2000 + 3000 * i],
        ));
    }
    let origin = Origin::start(objects.clone());
    let squid_dir = tmp.path().join("squid");
    let squid = Squid::start_from_async(squid_dir, SquidIcap::echo(proxy.listen)).await;
    let squid_addr = squid.addr;
    let urls: Vec<String> = objects.iter().map(|(p, _)| origin.url(p)).collect();
    tokio::task::spawn_blocking(move || {
        for url in urls {
            assert_eq!(curl_via(squid_addr, &url).0, 200, "{url}");
        }
    })
    .await
    .unwrap();
    drop(squid);
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.stop().await.unwrap();
    let capture = tokio::task::spawn_blocking(move || dump.stop())
        .await
        .unwrap();

    // The client leg (Squid <-> icaptap) analysed offline.
    let offline = tmp.path().join("offline");
    let client_side = analyze_into(
        std::slice::from_ref(&capture),
        &AnalyzeOptions::with_ports(&[icaptap_port]).discover(false),
        ObserverConfig::default(),
        &offline,
    )
    .unwrap();
    // Without --only-given-ports the sensor leg is found by its first
    // bytes too: a tcpdump of both legs holds both conversations.
    let both = analyze_into(
        std::slice::from_ref(&capture),
        &AnalyzeOptions::with_ports(&[icaptap_port]),
        ObserverConfig::default(),
        &tmp.path().join("both"),
    )
    .unwrap();
    assert_eq!(both.capture.found_ports, vec![sensor_port]);
    assert_eq!(both.summary.exchanges, 2 * client_side.summary.exchanges);
    let live_records = records(&live);
    let offline_records = records(&offline);
    // Only the client leg was selected: 1344 is always watched but unused.
    assert!(offline_records
        .iter()
        .all(|r| r.server.ends_with(&format!(":{icaptap_port}"))));
    assert_eq!(
        verdicts(&offline_records),
        verdicts(&live_records),
        "offline vs live"
    );
    assert!(
        live_records.len() >= 2 * objects.len(),
        "REQMOD and RESPMOD per object"
    );
    // Offline records carry capture frame numbers.
    assert!(offline_records
        .iter()
        .all(|r| r.frames.as_ref().is_some_and(|f| f.request.is_some())));

    // Both legs against each other: nothing lost between icaptap and c-icap.
    let sensor_side = analyze_into(
        std::slice::from_ref(&capture),
        &AnalyzeOptions::with_ports(&[sensor_port]).discover(false),
        ObserverConfig::default(),
        &tmp.path().join("sensor-side"),
    )
    .unwrap();
    let report = correlate(&client_side.fingerprints, &sensor_side.fingerprints);
    assert_eq!(report.matched.len(), live_records.len(), "{report:?}");
    assert!(
        report.client_only.is_empty() && report.sensor_only.is_empty(),
        "{report:?}"
    );
    assert!(report.verdict_differences.is_empty(), "{report:?}");
}

/// One RESPMOD exchange (request and answer) per object, each on its own
/// connection, as a capture taken at one point of the path.
fn write_side(path: &Path, client: SocketAddr, server: SocketAddr, urls: &[&str], clock_us: u64) {
    let file = std::fs::File::create(path).unwrap();
    let link = SyntheticLink::Ethernet;
    let mut w = SyntheticWriter::new(file, SyntheticFormat::Pcap, link.linktype()).unwrap();
    let mut at = clock_us;
    for (i, url) in urls.iter().enumerate() {
        let client = SocketAddr::new(client.ip(), client.port() + i as u16);
        let mut c = Conversation::new(client, server, 1000 * (i as u32 + 1), 9000 * (i as u32 + 1));
        let req_hdr = format!("GET {url} HTTP/1.1\r\nHost: origin.example\r\n\r\n");
        let res_hdr = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        let request = format!(
            "RESPMOD icap://sensor.example:1344/av/respmod ICAP/1.0\r\nHost: sensor.example\r\nAllow: 204\r\nEncapsulated: req-hdr=0, res-hdr={}, res-body={}\r\n\r\n{req_hdr}{res_hdr}5\r\nhello\r\n0\r\n\r\n",
            req_hdr.len(),
            req_hdr.len() + res_hdr.len()
        );
        let answer = "ICAP/1.0 204 No Content\r\nISTag: \"t1\"\r\n\r\n";
        let mut segments = c.handshake();
        segments.extend(c.data(Direction::Request, request.as_bytes(), 1460));
        segments.extend(c.data(Direction::Response, answer.as_bytes(), 1460));
        segments.push(c.fin(Direction::Request));
        segments.push(c.fin(Direction::Response));
        segments.push(c.ack(Direction::Request));
        for seg in segments {
            at += 100;
            w.frame(at, &link.frame(&c.ip_packet(&seg))).unwrap();
        }
        at += 10_000;
    }
    w.into_inner();
}

#[test]
fn peer_captures_show_the_exchange_lost_in_between() {
    let tmp = tempfile::tempdir().unwrap();
    let client_cap = tmp.path().join("client-side.pcap");
    let sensor_cap = tmp.path().join("sensor-side.pcap");
    let server: SocketAddr = "127.0.0.1:1344".parse().unwrap();
    let urls = [
        "http://a.example/1",
        "http://a.example/2",
        "http://a.example/3",
        "http://a.example/4",
    ];
    write_side(
        &client_cap,
        "127.0.0.1:40000".parse().unwrap(),
        server,
        &urls,
        1_700_000_000_000_000,
    );
    // The sensor never saw /3, and its capture's clock runs 2.5 s ahead.
    let seen = [
        "http://a.example/1",
        "http://a.example/2",
        "http://a.example/4",
    ];
    write_side(
        &sensor_cap,
        "127.0.0.2:50000".parse().unwrap(),
        server,
        &seen,
        1_700_000_002_500_000,
    );
    let client = analyze_into(
        &[client_cap],
        &AnalyzeOptions::default(),
        ObserverConfig::default(),
        &tmp.path().join("c"),
    )
    .unwrap();
    let sensor = analyze_into(
        &[sensor_cap],
        &AnalyzeOptions::default(),
        ObserverConfig::default(),
        &tmp.path().join("s"),
    )
    .unwrap();
    assert_eq!(client.fingerprints.len(), 4);
    assert_eq!(sensor.fingerprints.len(), 3);
    // A capture of 2023-11-14T22:13:20Z ends then, not when it is analysed.
    let ended = client.summary.ended.as_deref().unwrap_or("none");
    assert!(ended.starts_with("2023-11-14T22:13:20."), "ended {ended}");
    let report = correlate(&client.fingerprints, &sensor.fingerprints);
    assert_eq!(report.matched.len(), 3);
    assert_eq!(report.client_only.len(), 1);
    let lost = &client.fingerprints[report.client_only[0]];
    assert_eq!(lost.http_url.as_deref(), Some("http://a.example/3"));
    assert!(report.sensor_only.is_empty());
    let offset = report.request_offset_us.unwrap();
    assert!((2_400_000..2_600_000).contains(&offset), "offset {offset}");
}
