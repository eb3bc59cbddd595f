//! `icaptap analyze --peer` on real tcpdump captures of one loopback run:
//! a client -> icaptap -> c-icap path, captured on the client leg from the
//! start and on the sensor leg by a tcpdump started later. Only the time
//! both captures cover is compared: the exchanges before the sensor-side
//! capture began are "outside the compared time", not "lost on the way",
//! and the late start is a warning. A sensor-side file cut short (bytes
//! removed from its end) is named truncated. The result is in peer.json,
//! report.html, report.md and the bundle's ticket.md.

mod peers;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use icaptap::analyze::peer_file::PeerFile;
use icaptap::analyze::AnalyzeArgs;
use icaptap::evidence::{self, BundleArgs};
use icaptap::forward::ForwardConfig;
use icaptap::jobs::proxy::{start, ProxyPlan};
use peers::*;

/// One REQMOD to c-icap's echo service through `addr`, on its own
/// connection, read until the answer is complete.
fn reqmod(addr: SocketAddr, sensor: SocketAddr, url: &str) {
    let http = format!("GET {url} HTTP/1.1\r\nHost: origin.example\r\n\r\n");
    let request = format!(
        "REQMOD icap://{sensor}/echo ICAP/1.0\r\nHost: {sensor}\r\nAllow: 204\r\nEncapsulated: req-hdr=0, null-body={}\r\n\r\n{http}",
        http.len()
    );
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let heads = got.windows(4).filter(|w| w == b"\r\n\r\n").count();
        if (got.starts_with(b"ICAP/1.0 204") && heads >= 1) || heads >= 2 {
            break;
        }
        let n = s.read(&mut buf).expect("c-icap answers");
        assert!(n > 0, "c-icap closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"ICAP/1.0 2"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

fn analyze(client: &Path, peer: &Path, ports: Vec<u16>, out: &Path) -> PeerFile {
    icaptap::jobs::analyze::run(AnalyzeArgs {
        files: vec![client.to_path_buf()],
        ports,
        only_given_ports: false,
        out: Some(out.to_path_buf()),
        peer: Some(peer.to_path_buf()),
        no_progress: true,
        log_schema: Default::default(),
        filter: None,
        live: icaptap::live::LiveArgs {
            quiet: true,
            ..Default::default()
        },
    })
    .unwrap();
    serde_json::from_slice(&std::fs::read(out.join("peer.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_and_a_truncated_peer_capture_are_compared_over_their_time_only() {
    require("tcpdump", "tcpdump");
    require("c-icap", "c-icap");
    let tmp = tempfile::tempdir().unwrap();
    let cicap = CIcap::start(&tmp.path().join("c-icap"), "");
    let forward = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), cicap.addr);
    let proxy = start(ProxyPlan::new(forward, tmp.path().join("live")))
        .await
        .unwrap();
    let (listen, sensor) = (proxy.listen, cicap.addr);
    let client_cap = tmp.path().join("client-side.pcap");
    let sensor_cap = tmp.path().join("sensor-side.pcap");
    let (client_dump, sensor_dump) = {
        let (client_cap, sensor_cap) = (client_cap.clone(), sensor_cap.clone());
        tokio::task::spawn_blocking(move || {
            let client_dump =
                Tcpdump::start("lo", &format!("tcp port {}", listen.port()), &client_cap);
            for i in 0..5 {
                reqmod(listen, sensor, &format!("http://origin.example/early/{i}"));
            }
            // The sensor-side capture starts well after the first one.
            std::thread::sleep(Duration::from_millis(1_500));
            let sensor_dump =
                Tcpdump::start("lo", &format!("tcp port {}", sensor.port()), &sensor_cap);
            for i in 0..4 {
                reqmod(listen, sensor, &format!("http://origin.example/late/{i}"));
            }
            (client_dump, sensor_dump)
        })
        .await
        .unwrap()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.stop().await.unwrap();
    tokio::task::spawn_blocking(move || {
        client_dump.stop();
        sensor_dump.stop();
    })
    .await
    .unwrap();
    let ports = vec![listen.port(), sensor.port()];

    let out = tmp.path().join("out");
    let (c, s, o, p) = (
        client_cap.clone(),
        sensor_cap.clone(),
        out.clone(),
        ports.clone(),
    );
    let peer = tokio::task::spawn_blocking(move || analyze(&c, &s, p, &o))
        .await
        .unwrap();
    assert_eq!(peer.first_capture.exchanges, 9, "{peer:?}");
    assert_eq!(peer.peer_capture.exchanges, 4, "{peer:?}");
    assert_eq!(peer.matched, 4, "{peer:?}");
    assert!(
        peer.client_side_only.is_empty(),
        "nothing was lost on the way: {peer:?}"
    );
    assert!(peer.sensor_side_only.is_empty(), "{peer:?}");
    let outside: Vec<&str> = peer
        .outside_window
        .client_side
        .iter()
        .map(|x| x.http_url.as_deref().unwrap())
        .collect();
    assert_eq!(outside.len(), 5, "{outside:?}");
    assert!(outside.iter().all(|u| u.contains("/early/")), "{outside:?}");
    assert!(
        peer.warnings.iter().any(|w| w
            .starts_with("the peer capture started after the first capture by 1.")
            && w.contains("5 exchanges of the first capture")),
        "{:?}",
        peer.warnings
    );
    assert!(
        !peer.warnings.iter().any(|w| w.contains("truncated")),
        "{:?}",
        peer.warnings
    );
    let window = peer.window.as_ref().unwrap();
    assert!(window.from.as_str() > peer.first_capture.first_packet.as_deref().unwrap());
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for page in [&html, &md] {
        assert!(page.contains("Both sides compared (--peer)"));
        assert!(page.contains(
            "4 exchanges matched, 0 of the first capture never reached the peer capture"
        ));
        assert!(page.contains("the peer capture started after the first capture by"));
        assert!(page.contains("/early/0"));
    }
    let archive = tmp.path().join("bundle.tar.gz");
    evidence::bundle::bundle(&BundleArgs {
        dir: out.clone(),
        output: Some(archive.clone()),
        redact: false,
        pseudonymise_ips: false,
        max_size: None,
    })
    .unwrap();
    let listing = std::process::Command::new("tar")
        .arg("-xzOf")
        .arg(&archive)
        .arg("--wildcards")
        .arg("*/ticket.md")
        .output()
        .unwrap();
    let ticket = String::from_utf8_lossy(&listing.stdout);
    assert!(
        ticket.contains("Captures of both sides compared"),
        "{ticket}"
    );
    assert!(
        ticket.contains("the peer capture started after the first capture by"),
        "{ticket}"
    );
    let names = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&names.stdout).contains("/peer.json"));

    // The sensor-side file cut in its last packet.
    let cut = tmp.path().join("sensor-side-cut.pcap");
    let bytes = std::fs::read(&sensor_cap).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();
    let out2 = tmp.path().join("out-cut");
    let o = out2.clone();
    let peer = tokio::task::spawn_blocking(move || analyze(&client_cap, &cut, ports, &o))
        .await
        .unwrap();
    let truncated: Vec<&String> = peer
        .warnings
        .iter()
        .filter(|w| w.starts_with("peer capture: ") && w.contains("is truncated at byte"))
        .collect();
    assert_eq!(truncated.len(), 1, "{:?}", peer.warnings);
    assert_eq!(peer.peer_capture.warnings.len(), 1);
    let html = std::fs::read_to_string(out2.join("report.html")).unwrap();
    assert!(
        html.contains("is truncated at byte"),
        "the report warns of the cut file"
    );
    assert!(peer.client_side_only.is_empty(), "{peer:?}");
}
