//! Signals that end a run of the real `icaptap proxy` binary. SIGHUP (the
//! SSH session dropped, the terminal gone) ends it as SIGTERM does: stop
//! accepting, drain, write every record and summary.json, close the
//! capture, exit 0, even though nothing can be written to the terminal
//! any more. SIGKILL under load from real c-icap traffic leaves whole JSON
//! Lines (but for a last cut one) and a capture that tshark, or else
//! `icaptap analyze` with a warning, reads; `icaptap report` works on it.

mod faults_support;
mod peers;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use faults_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_the_terminal_gone_still_finishes_the_run() {
    let (_, req, resp) = simple_pairs().remove(6);
    let server = RecordingServer::start(vec![vec![
        Act::ReadTo(req.len()),
        Act::Send(resp.clone()),
        Act::ReadEof,
    ]])
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut child = Command::new(icaptap_binary())
        .args(["proxy", "--listen", "127.0.0.1:0", "--upstream"])
        .arg(server.addr.to_string())
        .arg("--out")
        .arg(&out)
        .env("RUST_LOG", "warn,icaptap=info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let listen: std::net::SocketAddr = loop {
        let line = lines
            .next()
            .expect("icaptap ended before listening")
            .unwrap();
        if let Some(rest) = line.strip_prefix("icaptap: listening on ") {
            break rest.split(',').next().unwrap().parse().unwrap();
        }
    };
    let mut client = RecordingClient::connect(listen).await;
    client.send(&req).await;
    assert_eq!(client.wait_for(resp.len()).await, resp);
    client.shutdown().await;
    client.wait_end().await;
    // The terminal goes away: every later write to it fails (EPIPE).
    drop(lines);
    drop(child.stdout.take());
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "icaptap did not stop on SIGHUP");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "SIGHUP ended icaptap with {status}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    // The fixture is c-icap-client's OPTIONS, then its RESPMOD.
    assert_eq!(summary["exchanges"], 2, "{summary}");
    assert!(summary["ended"].is_string(), "{summary}");
    let exchanges = std::fs::read_to_string(out.join("exchanges.jsonl")).unwrap();
    assert_eq!(exchanges.lines().count(), 2, "{exchanges}");
    let capture = std::fs::read(out.join("capture.pcapng")).unwrap();
    // Whole blocks: a pcapng section header first, and every block's
    // length is repeated at its end.
    assert_eq!(&capture[..4], &[0x0a, 0x0d, 0x0d, 0x0a]);
    let big_endian = capture[8..12] == [0x1a, 0x2b, 0x3c, 0x4d];
    let u32_at = |at: usize| {
        let bytes: [u8; 4] = capture[at..at + 4].try_into().unwrap();
        if big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        }
    };
    let mut at = 0;
    while at < capture.len() {
        assert!(at + 12 <= capture.len(), "a cut block at byte {at}");
        let len = u32_at(at + 4) as usize;
        assert!(
            len >= 12 && at + len <= capture.len(),
            "a cut block at byte {at}"
        );
        assert_eq!(u32_at(at + len - 4) as usize, len, "block at byte {at}");
        at += len;
    }
    assert!(at > 200, "the capture holds no packets: {at} bytes");
    assert!(!out.join(".icaptap-summary-reserve").exists());
    // The report is written at this end too, from the same records.
    let report = std::fs::read_to_string(out.join("report.md")).expect("report.md written");
    assert!(report.starts_with("# icaptap report"), "{report}");
    assert!(out.join("report.html").is_file());
}

/// A RESPMOD to c-icap's echo service with a 256 KiB body.
fn big_respmod(port: u16, n: usize) -> Vec<u8> {
    const BODY: usize = 256 * 1024;
    let req = format!("GET http://origin.example/k-{n} HTTP/1.1\r\nHost: origin.example\r\n\r\n");
    let res = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n");
    let mut m = format!(
        "RESPMOD icap://127.0.0.1:{port}/echo ICAP/1.0\r\nHost: 127.0.0.1:{port}\r\n\
         Encapsulated: req-hdr=0, res-hdr={}, res-body={}\r\n\r\n{req}{res}{BODY:x}\r\n",
        req.len(),
        req.len() + res.len()
    )
    .into_bytes();
    m.extend_from_slice(&vec![b'k'; BODY]);
    m.extend_from_slice(b"\r\n0\r\n\r\n");
    m
}

/// Sends big RESPMODs on one connection until it fails (icaptap killed);
/// returns how many were answered whole.
async fn load(listen: std::net::SocketAddr, port: u16, first: usize) -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(listen).await else {
        return 0;
    };
    let mut buf = vec![0u8; 256 * 1024];
    for n in first.. {
        if s.write_all(&big_respmod(port, n)).await.is_err() {
            return n - first;
        }
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                Ok(Ok(k)) if k > 0 => got.extend_from_slice(&buf[..k]),
                _ => return n - first,
            }
            if got.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
        }
        assert!(
            got.starts_with(b"ICAP/1.0 200"),
            "c-icap echoes: {:?}",
            &got[..got.len().min(200)]
        );
        // Steady load the observer keeps up with in a debug build: this
        // case is about the kill, not overload.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    unreachable!()
}

/// Every line of a JSON Lines file parses, but possibly a last one cut
/// without its newline; returns the whole lines.
fn whole_lines(path: &std::path::Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let cut_last = i + 1 == lines.len() && !text.ends_with('\n');
        if serde_json::from_str::<serde_json::Value>(line).is_err() {
            assert!(
                cut_last,
                "{}: line {} is not JSON: {line:?}",
                path.display(),
                i + 1
            );
            return i;
        }
    }
    lines.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_leaves_whole_records_and_a_readable_capture() {
    assert!(
        peers::have("c-icap"),
        "c-icap is not installed: run .ci/run"
    );
    let tmp = tempfile::tempdir().unwrap();
    let cicap = peers::CIcap::start(&tmp.path().join("c-icap"), "");
    let out = tmp.path().join("run");
    let proxy = ProxyProcess::start(cicap.addr, &out, &[], None);
    let port = cicap.addr.port();
    let clients: Vec<_> = (0..3)
        .map(|c| tokio::spawn(load(proxy.listen, port, c * 1_000_000)))
        .collect();
    // Let the load run until records are being written, then kill.
    let deadline = Instant::now() + PATIENCE;
    while std::fs::metadata(out.join("exchanges.jsonl")).map_or(0, |m| m.len()) == 0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    Command::new("kill")
        .args(["-KILL", &proxy.pid().to_string()])
        .status()
        .unwrap();
    let mut answered = 0;
    for c in clients {
        answered += c.await.unwrap();
    }
    assert!(answered > 0, "no exchange got through before the kill");
    let stderr = proxy.stderr();
    drop(proxy);

    let exchanges = whole_lines(&out.join("exchanges.jsonl"));
    whole_lines(&out.join("connections.jsonl"));
    assert!(
        exchanges > 0,
        "no record written under load ({answered} exchanges answered): {stderr}"
    );

    let capture = out.join("capture.pcapng");
    let captured = std::fs::metadata(&capture).map_or(0, |m| m.len());
    assert!(
        captured > 1 << 20,
        "the capture holds only {captured} bytes"
    );
    let tshark = Command::new("tshark")
        .arg("-r")
        .arg(&capture)
        .arg("-q")
        .output()
        .unwrap();
    eprintln!(
        "killed after {answered} answers: {exchanges} whole exchange records, \
         {captured} capture bytes; tshark exit {:?}",
        tshark.status.code()
    );
    if !tshark.status.success() {
        // Cut in its last block: icaptap reads up to it and says so.
        let again = tmp.path().join("again");
        let analyzed = Command::new(icaptap_binary())
            .arg("analyze")
            .arg(&capture)
            .arg("--out")
            .arg(&again)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&analyzed.stderr);
        assert!(
            analyzed.status.success(),
            "analyze fails on the killed capture: {said}"
        );
        assert!(
            said.contains("was cut at byte"),
            "no warning about the cut block: {said}"
        );
    }
    let report = Command::new(icaptap_binary())
        .arg("report")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "report fails on the killed run: {}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(out.join("report.html").is_file() || out.join("report.md").is_file());
}

/// Runs `icaptap proxy` in front of `upstream` with `extra`, lets `act`
/// do its part once it listens (given the listen address), sends `signal`
/// when given, and returns its exit status and stderr.
async fn run_until_it_ends<F, Fut>(
    upstream: std::net::SocketAddr,
    extra: &[&str],
    act: F,
    signal: Option<&str>,
) -> (std::process::ExitStatus, String)
where
    F: FnOnce(std::net::SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(icaptap_binary())
        .args(["proxy", "--listen", "127.0.0.1:0", "--upstream"])
        .arg(upstream.to_string())
        .arg("--out")
        .arg(tmp.path().join("run"))
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let pipe = child.stderr.take().unwrap();
    let reader = {
        let text = text.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("icaptap: listening on ") {
                    let _ = tx.send(rest.split(',').next().unwrap().to_string());
                }
                let mut t = text.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
            }
        })
    };
    let listen: std::net::SocketAddr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("icaptap did not start")
        .parse()
        .unwrap();
    act(listen).await;
    if let Some(signal) = signal {
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "icaptap did not stop: {}",
            text.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    reader.join().unwrap();
    let said = text.lock().unwrap().clone();
    (status, said)
}

/// Asserts the run said why it stopped, before the drain and at its end.
fn says_why(status: std::process::ExitStatus, said: &str, why: &str) {
    assert!(status.success(), "{status}: {said}");
    assert!(
        said.contains(&format!("icaptap: stopping ({why}")),
        "no `stopping ({why}`: {said}"
    );
    let last = said.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("icaptap: stopped ({why}")),
        "the last line is not why the run stopped ({why}): {said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_end_of_a_run_says_why_it_stopped() {
    use icaptap::toolkit::client::{send_once, IcapTarget, RequestSpec};
    let text = include_str!("../../docs/toolkit-scenario.toml");
    let scenario = icaptap::toolkit::scenario::Scenario::from_toml(text, "scenario").unwrap();
    let sensor = icaptap::toolkit::Sensor::bind("127.0.0.1:0".parse().unwrap(), scenario)
        .await
        .unwrap()
        .spawn();
    let sensor_addr = sensor.addr();
    let nothing = |_| async {};

    let (status, said) = run_until_it_ends(sensor_addr, &["--duration", "1s"], nothing, None).await;
    says_why(status, &said, "--duration 1s reached");

    let one_exchange = |listen: std::net::SocketAddr| async move {
        let target = IcapTarget {
            host: listen.ip().to_string(),
            port: listen.port(),
            service: "/av/respmod".to_string(),
        };
        let spec = RequestSpec {
            url: "http://www.example.test/clean/a.html".to_string(),
            allow_204: true,
            ..RequestSpec::respmod(target, bytes::Bytes::from_static(b"hello"))
        };
        send_once(&spec, Duration::from_secs(10)).await.unwrap();
    };
    let (status, said) =
        run_until_it_ends(sensor_addr, &["--max-exchanges", "1"], one_exchange, None).await;
    says_why(status, &said, "--max-exchanges 1 reached");

    // A sensor address nobody listens on: the first connection fires it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // The client stays until icaptap closes it: one that left at once
    // would be `client-gone-before-connect`, the sensor never tried.
    let connect = |listen: std::net::SocketAddr| async move {
        if let Ok(mut s) = tokio::net::TcpStream::connect(listen).await {
            use tokio::io::AsyncReadExt;
            let mut byte = [0u8; 1];
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte)).await;
        }
    };
    let (status, said) =
        run_until_it_ends(closed, &["--stop-on", "sensor-unreachable"], connect, None).await;
    says_why(
        status,
        &said,
        "--stop-on sensor-unreachable fired on connection 1",
    );

    for (signal, why) in [
        ("-INT", "SIGINT received"),
        ("-TERM", "SIGTERM received"),
        ("-HUP", "SIGHUP received"),
    ] {
        let (status, said) = run_until_it_ends(sensor_addr, &[], nothing, Some(signal)).await;
        says_why(status, &said, why);
    }
    sensor.shutdown().await;
}
