//! Output faults with the real `icaptap` binary: the disk holding the
//! output directory fills up (a tiny tmpfs mounted by the test, which needs
//! root as the CI and development machines have), and the output directory
//! is removed during the run. Forwarding must not notice; what could not be
//! written is counted; the files left are valid; stderr says clearly what
//! happened. With real c-icap echo traffic: a disk the capture would fill
//! keeps every record (the capture stops first, and says so), a removed
//! output directory is recreated and the run still ends with its totals.

mod faults_support;
mod peers;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use faults_support::*;

/// Connections and exchanges per connection of the traffic in each case.
const CONNECTIONS: usize = 8;
const ROUNDS: usize = 25;

/// Runs keep-alive traffic through `listen` and checks every byte both
/// ways; returns the client addresses.
async fn traffic(
    listen: SocketAddr,
    server: &RecordingServer,
    first_leg: usize,
) -> Vec<SocketAddr> {
    let (_, req, resp) = simple_pairs().remove(6);
    let mut locals = Vec::new();
    for c in 0..CONNECTIONS {
        let mut client = RecordingClient::connect(listen).await;
        for n in 1..=ROUNDS {
            client.send(&req).await;
            assert_eq!(client.wait_for(resp.len() * n).await, resp.repeat(n));
        }
        client.shutdown().await;
        let (how, _) = client.wait_end().await;
        assert_eq!(how, "eof");
        assert_eq!(
            server.ended_leg(first_leg + c).await.received,
            req.repeat(ROUNDS)
        );
        locals.push(client.local);
    }
    locals
}

fn answering_server_script() -> Vec<Act> {
    let (_, req, resp) = simple_pairs().remove(6);
    let mut script = Vec::new();
    for n in 1..=ROUNDS {
        script.push(Act::ReadTo(req.len() * n));
        script.push(Act::Send(resp.clone()));
    }
    script.push(Act::ReadEof);
    script
}

/// Every line of a JSON Lines file is a whole JSON object.
fn assert_jsonl_valid(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for (i, line) in text.lines().enumerate() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "{}: line {} is not JSON: {line:?}",
            path.display(),
            i + 1
        );
    }
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends mid-line",
        path.display()
    );
}

/// tshark reads every packet of a capture without complaint.
fn assert_capture_valid(path: &Path) {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(path)
        .arg("-q")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tshark rejects {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_leaves_forwarding_alone_counts_drops_and_valid_files() {
    assert!(
        is_root(),
        "mounting a tmpfs needs root (the CI and dev machines run as root)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("tiny");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=768k,mode=0700", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(mounted.success());
    let _mount = Mount(mnt.clone());
    let out = mnt.join("out");
    let server = RecordingServer::start(vec![answering_server_script()]).await;
    let proxy = ProxyProcess::start(server.addr, &out, &[], None);
    traffic(proxy.listen, &server, 0).await;
    let (ok, stderr) = proxy.stop();
    eprintln!("{stderr}");
    // The capture stops at the space kept for records, or at ENOSPC.
    assert!(
        stderr.contains("the capture stopped"),
        "no clear warning about the full disk: {stderr}"
    );
    assert_capture_valid(&out.join("capture.pcapng"));
    assert_jsonl_valid(&out.join("exchanges.jsonl"));
    assert_jsonl_valid(&out.join("connections.jsonl"));
    assert!(ok, "icaptap failed at the end: {stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let drops = &summary["drops"];
    let lost = drops["recorder_bytes"].as_u64().unwrap_or(0)
        + drops["record_write_errors"].as_u64().unwrap_or(0);
    assert!(lost > 0, "nothing counted as lost: {summary:#}");
    assert_eq!(
        summary["exchanges"].as_u64(),
        Some((CONNECTIONS * ROUNDS * request_methods(&simple_pairs()[6].1).len()) as u64),
        "the summary counts every exchange even when records were lost"
    );
}

/// Mounts a tmpfs of `size` at a new directory under `tmp`.
fn tiny_disk(tmp: &Path, size: &str) -> Mount {
    assert!(
        is_root(),
        "mounting a tmpfs needs root (the CI and dev machines run as root)"
    );
    let mnt = tmp.join("tiny");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(mounted.success());
    Mount(mnt)
}

/// Records alone (no capture) on a disk that fills: the JSON Lines files
/// end at a whole record, the lost ones are counted, the summary is written
/// (its space was set aside at start-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_cuts_records_at_a_whole_line_and_counts_them() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = tiny_disk(tmp.path(), "160k");
    let out = mount.0.join("out");
    let server = RecordingServer::start(vec![answering_server_script()]).await;
    let proxy = ProxyProcess::start(server.addr, &out, &["--no-pcap"], None);
    traffic(proxy.listen, &server, 0).await;
    let (ok, stderr) = proxy.stop();
    assert!(ok, "icaptap failed at the end: {stderr}");
    assert!(
        stderr.contains("records: writing") && stderr.contains("No space left on device"),
        "no clear warning about lost records: {stderr}"
    );
    assert_jsonl_valid(&out.join("exchanges.jsonl"));
    assert_jsonl_valid(&out.join("connections.jsonl"));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let lost = summary["drops"]["record_write_errors"]
        .as_u64()
        .unwrap_or(0);
    let kept = Records::read(&out).exchanges.len() as u64;
    let all = summary["exchanges"].as_u64().unwrap_or(0);
    assert!(lost > 0, "{summary:#}");
    assert_eq!(
        all,
        (CONNECTIONS * ROUNDS * request_methods(&simple_pairs()[6].1).len()) as u64
    );
    assert!(
        kept + lost >= all,
        "{kept} kept + {lost} lost < {all} exchanges"
    );
}

/// Waits until icaptap's stderr holds `what`.
async fn wait_stderr(proxy: &ProxyProcess, what: &str) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !proxy.stderr().contains(what) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    proxy.stderr()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_directory_removed_during_the_run_is_recreated_and_keeps_totals() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = RecordingServer::start(vec![answering_server_script()]).await;
    let proxy = ProxyProcess::start(server.addr, &out, &[], None);
    traffic(proxy.listen, &server, 0).await;
    std::fs::remove_dir_all(&out).unwrap();
    // The warning comes during the run, not only at the end.
    let during = wait_stderr(&proxy, "created it again").await;
    assert!(
        during.contains(&out.display().to_string()) && during.contains("removed"),
        "no clear warning that the output directory was removed: {during}"
    );
    traffic(proxy.listen, &server, CONNECTIONS).await;
    let (ok, stderr) = proxy.stop();
    eprintln!("{stderr}");
    assert!(ok, "icaptap failed at the end: {stderr}");
    let per_batch = (CONNECTIONS * ROUNDS * request_methods(&simple_pairs()[6].1).len()) as u64;
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["exchanges"].as_u64(),
        Some(2 * per_batch),
        "{summary:#}"
    );
    assert_eq!(summary["output_dir_recreated"], 1, "{summary:#}");
    assert_eq!(summary["evidence"]["complete"], false, "{summary:#}");
    assert!(
        summary["evidence"]["gaps"]
            .to_string()
            .contains("recreated"),
        "{summary:#}"
    );
    // Every record written after the directory came back is there.
    assert_jsonl_valid(&out.join("exchanges.jsonl"));
    let kept = Records::read(&out).exchanges.len() as u64;
    assert!(
        kept >= per_batch && kept <= 2 * per_batch,
        "{kept} records in the recreated directory, {per_batch} written after it came back"
    );
    assert_capture_valid(&out.join("capture.pcapng"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_directory_that_cannot_come_back_leaves_the_totals_on_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("parent");
    let out = parent.join("out");
    let server = RecordingServer::start(vec![answering_server_script()]).await;
    let proxy = ProxyProcess::start(server.addr, &out, &[], None);
    traffic(proxy.listen, &server, 0).await;
    // The directory and its parent go; a file takes the parent's name, so
    // neither can be created again.
    std::fs::remove_dir_all(&parent).unwrap();
    std::fs::write(&parent, b"not a directory").unwrap();
    let during = wait_stderr(&proxy, "could not be created").await;
    assert!(during.contains("could not be created again"), "{during}");
    let (ok, stderr) = proxy.stop();
    assert!(
        !ok,
        "a run whose summary.json could not be written must not exit 0: {stderr}"
    );
    assert!(
        stderr.contains("printed to stderr"),
        "the console does not say where the totals went: {stderr}"
    );
    let at = stderr
        .find("icaptap: summary.json of")
        .expect("the summary on stderr");
    let json_start = at + stderr[at..].find('{').unwrap();
    let summary: serde_json::Value = serde_json::Deserializer::from_str(&stderr[json_start..])
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(
        summary["exchanges"].as_u64(),
        Some((CONNECTIONS * ROUNDS * request_methods(&simple_pairs()[6].1).len()) as u64),
        "{summary:#}"
    );
}

/// Bytes of each RESPMOD body in the c-icap cases: large, so the capture
/// (both legs, both directions) grows ~1 MiB per exchange.
const BIG_BODY: usize = 256 * 1024;

/// One RESPMOD to c-icap's echo service with a `BIG_BODY` body.
fn big_respmod(port: u16, n: usize) -> Vec<u8> {
    let req = format!("GET http://origin.example/big-{n} HTTP/1.1\r\nHost: origin.example\r\n\r\n");
    let res = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {BIG_BODY}\r\n\r\n"
    );
    let mut m = format!(
        "RESPMOD icap://127.0.0.1:{port}/echo ICAP/1.0\r\nHost: 127.0.0.1:{port}\r\n\
         Encapsulated: req-hdr=0, res-hdr={}, res-body={}\r\n\r\n{req}{res}",
        req.len(),
        req.len() + res.len()
    )
    .into_bytes();
    m.extend_from_slice(format!("{BIG_BODY:x}\r\n").as_bytes());
    m.extend_from_slice(&vec![b'a'; BIG_BODY]);
    m.extend_from_slice(b"\r\n0\r\n\r\n");
    m
}

/// Sends `count` big RESPMODs one after another on one connection through
/// `listen`; returns how many were answered whole, stopping early when
/// `stop` is set (or the connection fails).
async fn big_exchanges(
    listen: SocketAddr,
    port: u16,
    first: usize,
    count: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(listen).await else {
        return 0;
    };
    let mut answered = 0;
    let mut buf = vec![0u8; 256 * 1024];
    for n in first..first + count {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        if s.write_all(&big_respmod(port, n)).await.is_err() {
            break;
        }
        let mut got: Vec<u8> = Vec::new();
        let whole = loop {
            match tokio::time::timeout(PATIENCE, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break false,
                Ok(Ok(k)) => got.extend_from_slice(&buf[..k]),
            }
            if got.starts_with(b"ICAP/1.0 200") && got.ends_with(b"\r\n0\r\n\r\n") {
                break true;
            }
        };
        if !whole {
            break;
        }
        answered += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    answered
}

fn cicap(tmp: &Path) -> peers::CIcap {
    assert!(
        peers::have("c-icap"),
        "c-icap is not installed: run .ci/run, which installs it"
    );
    peers::CIcap::start(&tmp.join("c-icap"), "")
}

/// A 20 MiB tmpfs that the capture alone would fill many times over: the
/// capture stops at the space kept for records, says so, and every
/// exchange c-icap answered has its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_the_capture_would_fill_keeps_every_record() {
    let tmp = tempfile::tempdir().unwrap();
    let cicap = cicap(tmp.path());
    let mount = tiny_disk(tmp.path(), "20m");
    let out = mount.0.join("out");
    let proxy = ProxyProcess::start(cicap.addr, &out, &[], None);
    let port = cicap.addr.port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Paced so the observer keeps up in a debug build: this case is about the
    // disk, not overload.
    let (conns, per_conn) = (2, 30);
    let tasks: Vec<_> = (0..conns)
        .map(|c| {
            tokio::spawn(big_exchanges(
                proxy.listen,
                port,
                c * per_conn,
                per_conn,
                stop.clone(),
            ))
        })
        .collect();
    let mut answered = 0;
    for t in tasks {
        answered += t.await.unwrap();
    }
    assert_eq!(
        answered,
        conns * per_conn,
        "c-icap answered every RESPMOD through icaptap"
    );
    let (ok, stderr) = proxy.stop();
    eprintln!("{stderr}");
    assert!(ok, "icaptap failed at the end: {stderr}");
    assert!(
        stderr.contains("the capture stopped"),
        "no warning that the capture stopped: {stderr}"
    );
    assert_jsonl_valid(&out.join("exchanges.jsonl"));
    assert_jsonl_valid(&out.join("connections.jsonl"));
    assert_capture_valid(&out.join("capture.pcapng"));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let records = Records::read(&out);
    let respmods = records
        .exchanges
        .iter()
        .filter(|x| x.method.as_deref() == Some("RESPMOD"))
        .count();
    assert_eq!(
        respmods, answered,
        "every answered exchange has a record: {:#}",
        summary["evidence"]
    );
    assert_eq!(records.connections.len(), conns);
    let stopped = &summary["capture_stopped"];
    assert!(
        ["disk-reserve", "disk-full"].contains(&stopped["reason"].as_str().unwrap_or("")),
        "{summary:#}"
    );
    assert_eq!(summary["drops"]["record_write_errors"], 0, "{summary:#}");
    assert_eq!(summary["evidence"]["complete"], false, "{summary:#}");
    assert!(
        summary["evidence"]["gaps"]
            .to_string()
            .contains("the capture stopped"),
        "{summary:#}"
    );
    let capture_len = std::fs::metadata(out.join("capture.pcapng")).unwrap().len();
    assert!(
        capture_len > 8 << 20 && capture_len < 16 << 20,
        "the capture took {capture_len} bytes of 20 MiB"
    );
}
