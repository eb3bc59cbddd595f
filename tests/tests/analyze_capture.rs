//! Offline analysis of captures tcpdump made of real c-icap traffic on
//! loopback: `-i lo` (Ethernet frames) and `-i any` (Linux cooked v2), on a
//! non-default port given with `--port`. The reassembled streams must hold
//! every request and response c-icap-client and c-icap exchanged, with no
//! gaps.

mod peers;

use std::path::{Path, PathBuf};
use std::process::Command;

use icaptap::analyze::{read_captures, AnalyzeOptions, CaptureStats};
use icaptap::tap::{Direction, Tap, TapEvent};
use peers::{have, CIcap, Tcpdump};

fn need(tool: &str) {
    assert!(
        have(tool),
        "{tool} is not installed: run .ci/run (it installs c-icap and tcpdump)"
    );
}

/// One c-icap-client run; it refuses to overwrite its output file, so each
/// run writes its own.
fn c_icap_client(port: u16, file: &Path, reqmod: bool, run: usize) {
    let mut cmd = Command::new("c-icap-client");
    cmd.args([
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-s",
        "echo",
        "-f",
    ])
    .arg(file)
    .arg("-o")
    .arg(file.with_extension(format!("out{run}")));
    if reqmod {
        cmd.args(["-req", "http://origin.example/upload"]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "c-icap-client failed: {out:?}");
}

/// Every direction's stream of every connection, rebuilt; the number of
/// gaps (offset jumps) over all of them.
fn streams(taps: &[Tap]) -> (Vec<u8>, Vec<u8>, usize) {
    let mut req = Vec::new();
    let mut resp = Vec::new();
    let mut next: std::collections::HashMap<(u64, Direction), u64> = Default::default();
    let mut gaps = 0;
    for t in taps {
        if let TapEvent::Data { dir, offset, bytes } = &t.event {
            let n = next.entry((t.conn.id, *dir)).or_insert(0);
            if *offset != *n {
                gaps += 1;
            }
            *n = offset + bytes.len() as u64;
            match dir {
                Direction::Request => req.extend_from_slice(bytes),
                Direction::Response => resp.extend_from_slice(bytes),
            }
        }
    }
    (req, resp, gaps)
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    memchr::memmem::find_iter(hay, needle).count()
}

fn analyze(path: PathBuf, port: u16) -> (Vec<Tap>, CaptureStats) {
    let mut taps = Vec::new();
    let stats = read_captures(&[path], &AnalyzeOptions::with_ports(&[port]), &mut |t| {
        taps.push(t)
    })
    .unwrap();
    (taps, stats)
}

#[test]
fn real_c_icap_traffic_captured_on_lo_and_any_reassembles_without_gaps() {
    need("c-icap");
    need("c-icap-client");
    need("tcpdump");
    let dir = tempfile::tempdir().unwrap();
    let server = CIcap::start(&dir.path().join("c-icap"), "");
    let port = server.addr.port();
    let filter = format!("tcp port {port}");
    let dump_lo = Tcpdump::start("lo", &filter, &dir.path().join("lo.pcap"));
    let dump_any = Tcpdump::start("any", &filter, &dir.path().join("any.pcap"));

    // Bodies large enough to span many segments and several windows.
    let mut body = Vec::with_capacity(1_500_000);
    let mut x: u32 = 12345;
    while body.len() < 1_500_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        body.push(b'a' + (x >> 16) as u8 % 26);
    }
    let file = dir.path().join("body.txt");
    std::fs::write(&file, &body).unwrap();
    let respmods = 3;
    let reqmods = 2;
    for run in 0..respmods + reqmods {
        c_icap_client(port, &file, run >= respmods, run);
    }
    let lo = dump_lo.stop();
    let any = dump_any.stop();

    for (name, path) in [("lo", lo), ("any", any)] {
        let (taps, stats) = analyze(path, port);
        let (req, resp, gaps) = streams(&taps);
        let runs = respmods + reqmods;
        assert_eq!(
            stats.flows.flows, runs as u64,
            "{name}: one connection per client run"
        );
        assert_eq!(gaps, 0, "{name}: {:?}", stats.flows.reassembly);
        assert_eq!(stats.flows.reassembly.gaps, 0, "{name}");
        assert_eq!(count(&req, b"OPTIONS icap://"), runs, "{name}");
        assert_eq!(count(&req, b"RESPMOD icap://"), respmods, "{name}");
        assert_eq!(count(&req, b"REQMOD icap://"), reqmods, "{name}");
        // One final response per request: 200 to each OPTIONS, and 200 or
        // 204 (echo answers 204 when nothing changed and Allow: 204 was
        // sent) to each RESPMOD and REQMOD; 100 Continue comes in between
        // when the server wants more than the preview.
        assert_eq!(
            count(&resp, b"ICAP/1.0 200 ") + count(&resp, b"ICAP/1.0 204 "),
            2 * runs,
            "{name}"
        );
        assert!(
            count(&resp, b"ICAP/1.0 200 ") >= runs,
            "{name}: OPTIONS answers"
        );
        // Bodies went out: at least the previews of every request, and
        // the whole body for each request the server did not cut short.
        assert!(req.len() > body.len(), "{name}: {} bytes", req.len());
        eprintln!("{name}: {:?}", stats.flows);
        for t in &taps {
            if !matches!(t.event, TapEvent::Data { .. }) {
                eprintln!(
                    "{name} conn {} frame {:?} {:?}",
                    t.conn.id, t.frame, t.event
                );
            }
        }
        // Every connection closed orderly in both directions.
        let fins = taps
            .iter()
            .filter(|t| matches!(t.event, TapEvent::Closed { .. }))
            .count();
        assert_eq!(fins, 2 * runs, "{name}");
        let finished = taps
            .iter()
            .filter(|t| t.event == TapEvent::Finished)
            .count();
        assert_eq!(finished, runs, "{name}");
        // Frame numbers are those of the capture: each direction's bytes come
        // from later and later frames, except where the capture itself holds
        // a segment out of order (tcpdump on lo with two CPUs does record
        // that now and then): bytes that waited behind it carry its earlier
        // frame, and the reassembler counts each such segment. (Timestamps
        // are not checked for order: the kernel stamps packets on different
        // CPUs, and captures do go back by a microsecond now and then.)
        let mut last_frame: std::collections::HashMap<(u64, Direction), u64> = Default::default();
        let mut backwards = 0;
        for t in &taps {
            if let TapEvent::Data { dir, .. } = t.event {
                let frame = t.frame.unwrap();
                assert!(
                    frame >= 1 && frame <= stats.frames(),
                    "{name}: frame {frame}"
                );
                let prev = last_frame.insert((t.conn.id, dir), frame).unwrap_or(0);
                if frame <= prev {
                    backwards += 1;
                }
            }
        }
        assert!(
            backwards <= stats.flows.reassembly.out_of_order_segments,
            "{name}: {backwards} steps back in frame order but only {} segments out of order",
            stats.flows.reassembly.out_of_order_segments
        );
        let span =
            taps.iter().map(|t| t.at).max().unwrap() - taps.iter().map(|t| t.at).min().unwrap();
        assert!(
            span < 60_000_000,
            "{name}: packet times, not wall-clock ones"
        );
    }
}

/// A TCP conversation that is not ICAP on a port of its own: a web-like
/// request, then an answer whose second segment begins like an ICAP
/// status line (a file about ICAP being downloaded), which must not make
/// the flow ICAP, on the port `listener` listens on.
fn not_icap_conversation(listener: std::net::TcpListener) {
    use std::io::{Read, Write};
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf).unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n")
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        s.write_all(b"ICAP/1.0 200 OK\r\nISTag: \"x\"\r\n\r\n12345678")
            .unwrap();
    });
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"GET /icap-notes.txt HTTP/1.1\r\nHost: files\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    server.join().unwrap();
}

/// The packets of `all` that `filter` selects, written to `to` by tcpdump.
fn filter_capture(all: &Path, to: &Path, filter: &str) -> PathBuf {
    let out = Command::new("tcpdump")
        .arg("-r")
        .arg(all)
        .arg("-w")
        .arg(to)
        .arg(filter)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    to.to_path_buf()
}

fn analyze_dir(path: &Path, out: &Path) -> icaptap::jobs::analyze::SideResult {
    icaptap::jobs::analyze::analyze_into(
        &[path.to_path_buf()],
        &AnalyzeOptions::with_ports(&[]),
        icaptap::observe::ObserverConfig::default(),
        out,
    )
    .unwrap()
}

#[test]
fn icap_on_a_port_nobody_named_is_found_by_its_first_bytes_from_its_handshake_on() {
    need("c-icap");
    need("c-icap-client");
    need("tcpdump");
    let dir = tempfile::tempdir().unwrap();
    let server = CIcap::start(&dir.path().join("c-icap"), "");
    let port = server.addr.port();
    assert_ne!(port, 1344);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let noise = listener.local_addr().unwrap().port();
    let all = Tcpdump::start(
        "lo",
        &format!("tcp port {port} or tcp port {noise}"),
        &dir.path().join("all.pcap"),
    );
    not_icap_conversation(listener);
    let file = dir.path().join("body.txt");
    std::fs::write(&file, vec![b'x'; 100_000]).unwrap();
    let runs = 3;
    for run in 0..runs {
        c_icap_client(port, &file, run == 0, run);
    }
    let all = all.stop();
    let mine = filter_capture(
        &all,
        &dir.path().join("mine.pcap"),
        &format!("tcp port {port} or tcp port {noise}"),
    );

    // No --port: 1344 is the only port given.
    let side = analyze_dir(&mine, &dir.path().join("run"));
    assert_eq!(side.capture.found_ports, vec![port]);
    assert_eq!(side.summary.connections, runs as u64, "{:?}", side.capture);
    assert_eq!(
        side.summary.exchanges,
        2 * runs as u64,
        "an OPTIONS and a RESPMOD/REQMOD per run"
    );
    assert_eq!(side.summary.by_verdict.get("options"), Some(&(runs as u64)));
    assert_eq!(
        side.summary.by_anomaly.get("stream-gap"),
        None,
        "{:?}",
        side.summary.by_anomaly
    );
    // Decoded from the handshake on: every connection seen from its start
    // to both FINs, no byte of it unobserved.
    let connections: Vec<serde_json::Value> =
        std::fs::read_to_string(dir.path().join("run/connections.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    for c in &connections {
        assert_eq!(c["close"]["client"], "fin", "{c}");
        assert_eq!(c["close"]["server"], "fin", "{c}");
        assert_eq!(c["unobserved_bytes"], 0, "{c}");
    }
    let lines = icaptap::jobs::analyze::capture_notes(&side, &AnalyzeOptions::with_ports(&[]));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(&format!("TCP port {port}"))
            && lines[0].contains(&format!("-d tcp.port=={port},icap")),
        "{lines:?}"
    );

    // The noise alone: nothing is ICAP, and the console names the port
    // that was there instead.
    let noise_only = filter_capture(
        &all,
        &dir.path().join("noise.pcap"),
        &format!("tcp port {noise}"),
    );
    let side = analyze_dir(&noise_only, &dir.path().join("noise-run"));
    assert_eq!(side.summary.connections, 0);
    assert!(side.capture.found_ports.is_empty());
    assert_eq!(side.capture.other_ports, vec![(noise, 1)]);
    let lines = icaptap::jobs::analyze::capture_notes(&side, &AnalyzeOptions::with_ports(&[]));
    assert!(
        lines.iter().any(|l| l.starts_with("no ICAP found")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("TCP ports seen: {noise} (1 flows)"))),
        "{lines:?}"
    );
}

/// Keeps the first `packets` packets of `full` (editcap), as if tcpdump had
/// been stopped there.
fn cut_capture(full: &Path, packets: u64) -> PathBuf {
    let cut = full.with_extension(format!("cut{packets}.pcap"));
    let out = Command::new("editcap")
        .arg("-r")
        .arg(full)
        .arg(&cut)
        .arg(format!("1-{packets}"))
        .output()
        .expect("run editcap (tshark's package, installed by .ci/run)");
    assert!(out.status.success(), "editcap: {out:?}");
    cut
}

/// A capture that simply ends (tcpdump stopped mid-exchange) is not the
/// sensor's fault: the exchange it cut is `unobserved`, `decode_complete`
/// false, with an anomaly that says the capture ended there; never
/// `malformed` or a `missing` blamed on a peer.
#[test]
fn an_exchange_cut_by_the_end_of_the_capture_is_unobserved_not_malformed() {
    need("c-icap");
    need("c-icap-client");
    need("tcpdump");
    need("editcap");
    let dir = tempfile::tempdir().unwrap();
    let server = CIcap::start(&dir.path().join("c-icap"), "");
    let port = server.addr.port();
    let dump = Tcpdump::start(
        "lo",
        &format!("tcp port {port}"),
        &dir.path().join("full.pcap"),
    );
    let body: Vec<u8> = (0..1_500_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let file = dir.path().join("body.txt");
    std::fs::write(&file, &body).unwrap();
    c_icap_client(port, &file, false, 0);
    let full = dump.stop();
    let total = {
        let (_, stats) = analyze(full.clone(), port);
        stats.frames()
    };
    assert!(total > 40, "{total} packets");
    // Cut inside the RESPMOD: half of the packets.
    let cut = cut_capture(&full, total / 2);
    let out = dir.path().join("run");
    icaptap::jobs::analyze::analyze_into(
        &[cut],
        &icaptap::analyze::AnalyzeOptions::with_ports(&[port]),
        icaptap::observe::ObserverConfig::default(),
        &out,
    )
    .unwrap();
    let records: Vec<icaptap::output::records::ExchangeRecord> =
        std::fs::read_to_string(out.join("exchanges.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    for r in &records {
        eprintln!(
            "{:?} {} complete={} {:?}",
            r.method,
            r.verdict,
            r.decode_complete,
            r.anomalies
                .iter()
                .map(|a| format!("{} {}: {}", a.code, a.side, a.detail))
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(records.len(), 2, "OPTIONS and the cut RESPMOD");
    assert_eq!(records[0].verdict, "options");
    let cut = &records[1];
    assert_eq!(cut.method.as_deref(), Some("RESPMOD"));
    assert_eq!(cut.verdict, "unobserved", "{cut:#?}");
    assert!(!cut.decode_complete, "{cut:#?}");
    assert!(
        cut.anomalies.iter().any(|a| a.code == "capture-ended"),
        "{cut:#?}"
    );
    for a in &cut.anomalies {
        assert!(
            !matches!(
                a.code.as_str(),
                "message-truncated"
                    | "server-closed-before-response"
                    | "client-closed-before-response"
            ),
            "the end of the capture blamed on a peer: {a:?}"
        );
    }
}
