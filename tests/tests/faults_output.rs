//! Output faults with the real `icaptap` binary: the disk holding the
//! output directory fills up (a tiny tmpfs mounted by the test, which needs
//! root as the CI and development machines have), and the output directory
//! is removed during the run. Forwarding must not notice; what could not be
//! written is counted; the files left are valid; stderr says clearly what
//! happened.

mod faults_support;

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
    assert!(
        stderr.contains("No space left on device"),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_directory_removed_during_the_run_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = RecordingServer::start(vec![answering_server_script()]).await;
    let proxy = ProxyProcess::start(server.addr, &out, &[], None);
    traffic(proxy.listen, &server, 0).await;
    std::fs::remove_dir_all(&out).unwrap();
    traffic(proxy.listen, &server, CONNECTIONS).await;
    // The warning must come during the run, not only at the end.
    let deadline = std::time::Instant::now() + PATIENCE;
    while !proxy.stderr().contains("removed") && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let during = proxy.stderr();
    let (_ok, stderr) = proxy.stop();
    eprintln!("{stderr}");
    assert!(
        during.contains(&out.display().to_string()) && during.contains("removed"),
        "no clear warning that the output directory was removed: {during}"
    );
}
