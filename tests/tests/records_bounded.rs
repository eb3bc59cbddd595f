//! The record logs of a real run rotate and stay within their bound: the
//! real `icaptap` binary between a real c-icap (echo service) and a client
//! that opens hundreds of keep-alive connections, with `--log-ring` (files
//! turn over dozens of times and the oldest are deleted) and with
//! `--log-rotate-size` alone (nothing is deleted, the capture in its own
//! `--ring`). Whatever is deleted is
//! counted in summary.json and named as an evidence gap; the report, the
//! bundle and `clean` see every record and file that is kept, in order.

mod faults_support;
mod peers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use faults_support::*;
use icaptap::evidence::bundle::{bundle, BundleArgs};
use icaptap::evidence::facts::Facts;
use icaptap::output::logset::{list, Log};
use icaptap::toolkit::client::{build_request, IcapConnection, IcapTarget, RequestSpec};

/// Connections, and exchanges on each: about 3 MB of exchange records and
/// 200 KB of connection records.
const CONNECTIONS: usize = 300;
const PER_CONNECTION: usize = 12;
const TOTAL: usize = CONNECTIONS * PER_CONNECTION;

const TIMEOUT: Duration = Duration::from_secs(10);

fn cicap(tmp: &Path) -> peers::CIcap {
    assert!(
        peers::have("c-icap"),
        "c-icap is not installed: run .ci/run, which installs it"
    );
    peers::CIcap::start(&tmp.join("c-icap"), "")
}

/// RESPMODs to c-icap's echo service through `listen`, one connection
/// after another, each answered before the next is sent.
async fn traffic(listen: SocketAddr) {
    traffic_on(listen, CONNECTIONS).await;
}

/// [`traffic`] on `connections` connections.
async fn traffic_on(listen: SocketAddr, connections: usize) {
    let target = IcapTarget::parse(&format!("icap://{listen}/echo")).unwrap();
    for c in 0..connections {
        let mut conn = IcapConnection::connect(listen, TIMEOUT).await.unwrap();
        for n in 0..PER_CONNECTION {
            let mut spec = RequestSpec::respmod(target.clone(), Bytes::from_static(b"clean body"));
            spec.url = format!("http://origin.test/{c}/{n}");
            let answer = conn.send(&build_request(&spec), TIMEOUT).await.unwrap();
            assert_eq!(answer.head.status, 200, "c-icap's echo answers 200");
        }
    }
}

fn size(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum()
}

fn names(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}

/// Every file of a set ends with a whole line and every line is a record.
fn assert_whole_lines(files: &[PathBuf]) {
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.ends_with('\n'), "{} ends mid-line", f.display());
        for line in text.lines() {
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_ok(),
                "{}: {line:?} is not a record",
                f.display()
            );
        }
    }
}

/// The exchanges, read in set order, are the run's last ones in the order
/// they were sent: (conn, seq) goes up by one seq on a connection, or on
/// to the first seq of the next connection, and ends at the last exchange.
fn assert_newest_in_order(records: &Records) {
    let pairs: Vec<(u64, u64)> = records.exchanges.iter().map(|x| (x.conn, x.seq)).collect();
    let first_seq = records.exchanges.iter().map(|x| x.seq).min().unwrap();
    for w in pairs.windows(2) {
        let ((c0, s0), (c1, s1)) = (w[0], w[1]);
        assert!(
            (c1 == c0 && s1 == s0 + 1)
                || (c1 > c0 && s1 == first_seq && s0 == first_seq + PER_CONNECTION as u64 - 1),
            "records out of order or missing between {:?} and {:?}",
            w[0],
            w[1]
        );
    }
    let last = *pairs.last().unwrap();
    assert_eq!(last.1, first_seq + PER_CONNECTION as u64 - 1);
    assert_eq!(
        last.0,
        records.exchanges.iter().map(|x| x.conn).max().unwrap()
    );
}

/// What the bundle of `out` holds of its logs: name and size of each.
fn bundled_logs(out: &Path, tmp: &Path) -> Vec<(String, u64)> {
    let outcome = bundle(&BundleArgs {
        dir: out.to_path_buf(),
        output: Some(tmp.join("bundle.tar.gz")),
        redact: false,
        pseudonymise_ips: false,
        max_size: None,
    })
    .unwrap();
    outcome
        .manifest
        .files
        .iter()
        .filter(|f| Log::of_name(&f.name).is_some())
        .map(|f| (f.name.clone(), f.bytes))
        .collect()
}

fn on_disk(files: &[PathBuf]) -> Vec<(String, u64)> {
    names(files)
        .into_iter()
        .zip(files.iter().map(|f| std::fs::metadata(f).unwrap().len()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_ring_keeps_the_newest_records_within_its_bound_and_counts_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let cicap = cicap(tmp.path());
    let out = tmp.path().join("out");
    const RING: u64 = 512 * 1024;
    let proxy = ProxyProcess::start(cicap.addr, &out, &["--no-pcap", "--log-ring", "512K"], None);
    traffic(proxy.listen).await;
    let (ok, stderr) = proxy.stop();
    assert!(ok, "icaptap failed: {stderr}");
    assert!(
        stderr.contains("--log-ring"),
        "the start says the records are bounded: {stderr}"
    );

    let exchanges = list(&out, Log::Exchanges);
    let connections = list(&out, Log::Connections);
    assert_whole_lines(&exchanges);
    assert_whole_lines(&connections);
    // 64 KiB files (an eighth of the ring): the exchanges log turned over
    // dozens of times, the connections log a few times.
    let s = summary(&out);
    let pruned = &s["records_pruned"];
    let pruned_x = pruned["exchanges"]["files"].as_u64().unwrap();
    let pruned_c = pruned["connections"]["files"].as_u64().unwrap();
    eprintln!(
        "records_pruned {pruned}; on disk {:?} {:?}",
        names(&exchanges),
        names(&connections)
    );
    assert!(pruned_x >= 20, "{pruned:#}");
    assert!(pruned_c >= 1, "{pruned:#}");
    let last_x = Log::Exchanges
        .position_of(&names(&exchanges).pop().unwrap())
        .unwrap();
    assert!(last_x >= 30, "the exchanges log reached file {last_x}");
    // Both logs together within the bound and one file.
    let total = size(&exchanges) + size(&connections);
    assert!(
        total <= RING + RING / 8,
        "{total} bytes of records on disk, bound {RING}: {:?} {:?}",
        on_disk(&exchanges),
        on_disk(&connections)
    );
    // The oldest file kept is the one the summary names, and nothing
    // between it and the newest is missing.
    for (log, files, p) in [
        (Log::Exchanges, &exchanges, &pruned["exchanges"]),
        (Log::Connections, &connections, &pruned["connections"]),
    ] {
        assert_eq!(
            p["first_kept"].as_str(),
            names(files).first().map(String::as_str),
            "{log:?}"
        );
        let numbers: Vec<u32> = names(files)
            .iter()
            .map(|n| log.position_of(n).unwrap())
            .collect();
        let first = numbers[0];
        assert_eq!(
            numbers,
            (first..first + files.len() as u32).collect::<Vec<_>>(),
            "{log:?}"
        );
        assert_eq!(
            u64::from(first) - 1,
            p["files"].as_u64().unwrap(),
            "{log:?}"
        );
    }

    // Every record is either kept or counted as deleted.
    let records = Records::read(&out);
    assert_eq!(s["exchanges"].as_u64(), Some(TOTAL as u64), "{s:#}");
    assert_eq!(
        records.exchanges.len() as u64 + pruned["exchanges"]["records"].as_u64().unwrap(),
        TOTAL as u64
    );
    assert_eq!(
        records.connections.len() as u64 + pruned["connections"]["records"].as_u64().unwrap(),
        CONNECTIONS as u64
    );
    assert_newest_in_order(&records);
    assert_eq!(s["evidence"]["complete"], false, "{s:#}");
    let gaps = s["evidence"]["gaps"].to_string();
    assert!(
        gaps.contains("--log-ring") && gaps.contains("deleted the oldest records"),
        "{gaps}"
    );

    // The report reads every record kept and says what was deleted.
    let facts = Facts::gather(&out).unwrap();
    assert_eq!(
        facts.verdicts.values().sum::<u64>(),
        records.exchanges.len() as u64
    );
    assert_eq!(facts.unreadable_lines, 0);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("deleted the oldest records"),
        "the report names the gap"
    );

    // The bundle holds every file kept, whole.
    let mut want = on_disk(&exchanges);
    want.extend(on_disk(&connections));
    assert_eq!(bundled_logs(&out, tmp.path()), want);

    // clean takes the rotated files as icaptap's and leaves nothing.
    let cleaned = icaptap::evidence::clean::clean(&out, false).unwrap();
    assert!(cleaned.kept.is_empty(), "{:?}", cleaned.kept);
    assert!(cleaned.dir_removed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_without_a_bound_keeps_every_record_in_numbered_files() {
    let tmp = tempfile::tempdir().unwrap();
    let cicap = cicap(tmp.path());
    let out = tmp.path().join("out");
    // The capture in a ring: the records are not bounded by it, and the
    // start says so.
    let proxy = ProxyProcess::start(
        cicap.addr,
        &out,
        &["--ring", "1M", "--log-rotate-size", "64K"],
        None,
    );
    traffic(proxy.listen).await;
    let (ok, stderr) = proxy.stop();
    assert!(ok, "icaptap failed: {stderr}");
    assert!(
        stderr.contains("--ring bounds the capture only"),
        "no word that the records are unbounded: {stderr}"
    );

    let exchanges = list(&out, Log::Exchanges);
    let connections = list(&out, Log::Connections);
    assert!(exchanges.len() >= 30, "{:?}", names(&exchanges));
    assert!(connections.len() >= 2, "{:?}", names(&connections));
    assert_eq!(names(&exchanges)[0], "exchanges-0001.jsonl");
    assert!(!out.join("exchanges.jsonl").exists());
    assert_whole_lines(&exchanges);
    for f in exchanges.iter().chain(&connections) {
        assert!(
            std::fs::metadata(f).unwrap().len() <= 64 * 1024,
            "{}",
            f.display()
        );
    }
    let s = summary(&out);
    assert!(s.get("records_pruned").is_none(), "{s:#}");
    assert_eq!(s["evidence"]["complete"], true, "{s:#}");
    let records = Records::read(&out);
    assert_eq!(records.exchanges.len(), TOTAL);
    assert_eq!(records.connections.len(), CONNECTIONS);
    assert_newest_in_order(&records);
    let facts = Facts::gather(&out).unwrap();
    assert_eq!(facts.verdicts.values().sum::<u64>(), TOTAL as u64);
    let mut want = on_disk(&exchanges);
    want.extend(on_disk(&connections));
    assert_eq!(bundled_logs(&out, tmp.path()), want);
}

/// The output directory removed mid-run: the logs go on in the recreated
/// directory, numbered on from where they were, the ring goes on bounding
/// them there, and the files lost with the old directory are not counted
/// as deleted by the ring (summary.json says the directory was removed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_goes_on_in_a_recreated_directory_and_counts_only_what_it_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let cicap = cicap(tmp.path());
    let out = tmp.path().join("out");
    const RING: u64 = 512 * 1024;
    let proxy = ProxyProcess::start(cicap.addr, &out, &["--no-pcap", "--log-ring", "512K"], None);
    // About 300 KB of records: some files closed, none deleted yet.
    let before = 25;
    traffic_on(proxy.listen, before).await;
    std::thread::sleep(Duration::from_millis(500));
    let closed_before = list(&out, Log::Exchanges).len();
    assert!(
        closed_before >= 3,
        "{:?}",
        names(&list(&out, Log::Exchanges))
    );
    std::fs::remove_dir_all(&out).unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while !proxy.stderr().contains("created it again") {
        assert!(std::time::Instant::now() < deadline, "{}", proxy.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    traffic(proxy.listen).await;
    let (ok, stderr) = proxy.stop();
    assert!(ok, "icaptap failed: {stderr}");

    let s = summary(&out);
    assert_eq!(s["output_dir_recreated"], 1, "{s:#}");
    assert_eq!(
        s["exchanges"].as_u64(),
        Some((before * PER_CONNECTION + TOTAL) as u64)
    );
    let exchanges = list(&out, Log::Exchanges);
    let connections = list(&out, Log::Connections);
    assert_whole_lines(&exchanges);
    let numbers: Vec<u32> = names(&exchanges)
        .iter()
        .map(|n| Log::Exchanges.position_of(n).unwrap())
        .collect();
    assert!(
        numbers[0] > closed_before as u32,
        "the numbers go on past the files of the removed directory: {numbers:?}"
    );
    assert!(size(&exchanges) + size(&connections) <= RING + RING / 8);
    let pruned = &s["records_pruned"]["exchanges"];
    assert_eq!(
        pruned["first_kept"].as_str(),
        names(&exchanges).first().map(String::as_str)
    );
    // Written into the recreated directory: every exchange sent after it
    // came back, and a few staged at the removal. The ring counts those it
    // deleted there, not the files that went with the old directory.
    let kept = Records::read(&out).exchanges.len() as u64;
    let counted = kept + pruned["records"].as_u64().unwrap();
    assert!(
        counted >= TOTAL as u64 && counted <= (TOTAL + PER_CONNECTION * 5) as u64,
        "{kept} kept + {pruned} deleted, {TOTAL} sent after the directory came back"
    );
}
