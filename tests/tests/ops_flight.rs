//! The flight recorder under steady traffic: a ring small enough to rotate
//! many times within `--trigger-after`, and an incident whose capture must
//! still be whole: every capture file from the first kept to the last, and
//! packets from `--trigger-before` before the trigger to `--trigger-after`
//! after it with no gap longer than the traffic's own pauses.

mod ops_support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use icaptap::analyze::reader::CaptureFile;
use icaptap::forward::ForwardConfig;
use icaptap::jobs::proxy::{start, ProxyPlan};
use icaptap::ops::flight::FlightOptions;
use icaptap::ops::OpsPlan;
use icaptap::toolkit::client::{send_once, IcapMethod, IcapTarget, RequestSpec};
use ops_support::*;

/// One RESPMOD of a 1 KiB body for `url` through `to`.
async fn respmod(to: std::net::SocketAddr, url: &str) {
    let target = IcapTarget {
        host: to.ip().to_string(),
        port: to.port(),
        service: "/av/respmod".to_string(),
    };
    let spec = RequestSpec {
        method: IcapMethod::Respmod,
        url: url.to_string(),
        allow_204: true,
        ..RequestSpec::respmod(target, Bytes::from(vec![b'x'; 1024]))
    };
    let _ = send_once(&spec, TIMEOUT).await;
}

/// The capture files of `dir`, by name.
fn captures(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("capture-") && name.ends_with(".pcapng")
        })
        .collect();
    files.sort();
    files
}

fn file_number(path: &Path) -> u32 {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    name["capture-".len()..name.len() - ".pcapng".len()]
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_keeps_every_capture_file_of_its_window_while_the_ring_turns() {
    let sensor = sensor().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let before = Duration::from_secs(1);
    let after = Duration::from_secs(4);
    let mut forward = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), sensor.addr());
    forward.drain = Duration::from_secs(2);
    let plan = ProxyPlan {
        ops: OpsPlan {
            // 8 files of 64 KiB: about 3 s of this traffic, so the ring
            // turns over about twice within the window after the trigger.
            ring: Some(512 << 10),
            flight: Some(FlightOptions {
                triggers: ["server-closed-before-response".to_string()].into(),
                before,
                after,
                max_incidents: 1,
            }),
            ..OpsPlan::default()
        },
        ..ProxyPlan::new(forward, out.clone())
    };
    let proxy = start(plan).await.unwrap();
    let listen = proxy.listen;

    // Steady traffic: one small exchange every 20 ms until told to stop.
    let running = Arc::new(AtomicBool::new(true));
    let load = {
        let running = running.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while running.load(Ordering::Relaxed) {
                respmod(listen, &format!("http://www.example.test/clean/{n}.html")).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            n
        })
    };
    // Long enough for the ring to turn over before the trigger too.
    tokio::time::sleep(Duration::from_secs(6)).await;
    respmod(listen, "http://x.test/close/f").await;
    let incident = out
        .join("incidents")
        .join("0001-server-closed-before-response");
    let bundle = out
        .join("incidents")
        .join("0001-server-closed-before-response.tar.gz");
    let deadline = tokio::time::Instant::now() + after + Duration::from_secs(30);
    while !bundle.exists() {
        assert!(tokio::time::Instant::now() < deadline, "no incident bundle");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.store(false, Ordering::Relaxed);
    let exchanges = load.await.unwrap();
    proxy.stop().await.unwrap();
    sensor.shutdown().await;

    let run_files = captures(&out);
    let files = captures(&incident);
    let numbers: Vec<u32> = files.iter().map(|f| file_number(f)).collect();
    let newest = run_files.last().map(|f| file_number(f)).unwrap();
    assert!(
        newest > 2 * 8,
        "the ring must turn over during the window for this test to mean anything: {newest} files for {exchanges} exchanges"
    );
    // Every file from the first kept to the last: no number missing.
    let first = numbers[0];
    assert!(
        first > 1,
        "the ring had not turned before the trigger: {numbers:?}"
    );
    let want: Vec<u32> = (first..first + numbers.len() as u32).collect();
    assert_eq!(numbers, want, "capture files missing from the incident");

    // Packet times: from the window's start to its end, without a gap.
    let trigger: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(incident.join("incident.json")).unwrap())
            .unwrap();
    let at = icaptap::output::parse_rfc3339(trigger["ts"].as_str().unwrap()).unwrap();
    let mut times = Vec::new();
    for f in &files {
        let mut capture = CaptureFile::open(f).unwrap();
        capture
            .for_each_frame(&mut |frame| times.push(frame.at))
            .unwrap();
    }
    times.sort_unstable();
    let (from, to) = (
        at - before.as_micros() as u64,
        at + after.as_micros() as u64,
    );
    assert!(
        times[0] <= from,
        "the capture starts {} ms after the window",
        (times[0] - from) / 1000
    );
    assert!(
        *times.last().unwrap() >= to,
        "the capture ends {} ms before the window's end",
        (to - times.last().unwrap()) / 1000
    );
    eprintln!(
        "{} incident files ({:?}..{:?}) of {newest} written; packets from {} ms before the trigger to {} ms after it",
        files.len(),
        numbers.first(),
        numbers.last(),
        (at - times[0]) / 1000,
        (times.last().unwrap() - at) / 1000
    );
    let widest = times
        .windows(2)
        .filter(|w| w[1] >= from && w[0] <= to)
        .map(|w| (w[1] - w[0], w[0]))
        .max()
        .unwrap();
    assert!(
        widest.0 < 1_000_000,
        "a gap of {} ms in the incident's packets, {} ms after the window's start",
        widest.0 / 1000,
        widest.1.saturating_sub(from) / 1000
    );
}
