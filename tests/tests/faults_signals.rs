//! Signals that end a run of the real `icaptap proxy` binary. SIGHUP (the
//! SSH session dropped, the terminal gone) ends it as SIGTERM does: stop
//! accepting, drain, write every record and summary.json, close the
//! capture, exit 0, even though nothing can be written to the terminal
//! any more.

mod faults_support;

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
