//! `icaptap export` on a real run: a real `icaptap proxy` process with a
//! rotated capture (`--rotate-size 1M`) in front of the toolkit sensor,
//! driven by `icaptap client` (single requests and a keep-alive load, so
//! one connection carries several exchanges). A filtered export must hold
//! exactly the frames and packet comments of the selected connections'
//! two legs as tshark counts them in the original files, both interfaces,
//! and exactly the matching exchange records; `report --filter` and
//! `analyze --filter` limit what they show to the same selection. A ring
//! (`--keep`) exports what its remaining files hold and names the rest.

mod faults_support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use faults_support::{icaptap_binary, ProxyProcess};
use icaptap::output::records::{ConnectionRecord, ExchangeRecord};
use icaptap::toolkit::scenario::Scenario;
use icaptap::toolkit::{Sensor, SensorHandle};

async fn sensor() -> SensorHandle {
    let text = include_str!("../../docs/toolkit-scenario.toml");
    let scenario = Scenario::from_toml(text, "docs/toolkit-scenario.toml").unwrap();
    Sensor::bind("127.0.0.1:0".parse().unwrap(), scenario)
        .await
        .unwrap()
        .spawn()
}

/// `icaptap proxy` recording into `out` with 1 MiB capture files (and
/// `extra` options); returns once it listens.
fn proxy(sensor: SocketAddr, out: &Path, extra: &[&str]) -> ProxyProcess {
    let mut args = vec!["--rotate-size", "1M"];
    args.extend_from_slice(extra);
    ProxyProcess::start(sensor, out, &args, None)
}

fn icaptap(args: &[&str]) -> Output {
    Command::new(icaptap_binary())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// `icaptap client` against `service` with `extra` options.
fn client(service: &str, extra: &[&str]) {
    let mut args = vec!["client", service, "--allow-204", "--timeout", "20s"];
    args.extend_from_slice(extra);
    let o = icaptap(&args);
    // The client's exit status speaks of the verdict; the sensor's answer
    // is what the records must show, checked below.
    assert!(
        o.status.code().is_some(),
        "icaptap client died: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn tshark(args: &[&str]) -> String {
    let o = Command::new("tshark")
        .args(args)
        .output()
        .expect("tshark is installed by .ci/run");
    assert!(
        o.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// (frames, packet comments) of `file` that `display_filter` selects.
fn frames_and_comments(file: &Path, display_filter: &str) -> (usize, usize) {
    let file = file.to_str().unwrap();
    let frames = tshark(&[
        "-r",
        file,
        "-Y",
        display_filter,
        "-T",
        "fields",
        "-e",
        "frame.number",
    ])
    .lines()
    .filter(|l| !l.trim().is_empty())
    .count();
    let with_comments = format!("({display_filter}) && frame.comment");
    let comments = tshark(&[
        "-r",
        file,
        "-Y",
        &with_comments,
        "-T",
        "fields",
        "-e",
        "frame.comment",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=\u{1}",
    ])
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(|l| l.split('\u{1}').count())
    .sum();
    (frames, comments)
}

/// A tshark display filter for the two legs of `connections` (every
/// address on loopback is 127.0.0.1: the ports tell the legs apart).
fn legs_filter(connections: &[&ConnectionRecord]) -> String {
    let port = |a: &str| a.parse::<SocketAddr>().unwrap().port();
    let mut terms = Vec::new();
    for c in connections {
        let local = c.upstream_local.as_deref().expect("the sensor leg opened");
        for (a, b) in [(&c.client, &c.listen), (&local.to_string(), &c.server)] {
            terms.push(format!(
                "(tcp.port == {} && tcp.port == {})",
                port(a),
                port(b)
            ));
        }
    }
    terms.join(" || ")
}

fn captures(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("capture")
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_holds_exactly_the_selected_exchanges_packets_and_records() {
    assert!(have_tshark(), "tshark is installed by .ci/run");
    let sensor = sensor().await;
    let sensor_addr = sensor.addr();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let running = proxy(sensor_addr, &run, &[]);
    let service = format!("icap://{}/av/respmod", running.listen);
    let traffic = tokio::task::spawn_blocking(move || {
        for (url, sample) in [
            ("http://t.test/clean/big-1.bin", "large"),
            ("http://t.test/block/a.html", "clean"),
            ("http://t.test/clean/big-2.bin", "large"),
            ("http://t.test/dl/eicar.com", "eicar"),
            ("http://t.test/block/b.html", "clean"),
            ("http://t.test/clean/big-3.bin", "large"),
        ] {
            client(&service, &["--url", url, "--sample", sample]);
        }
        // Several exchanges on one keep-alive connection.
        client(
            &service,
            &[
                "--url",
                "http://t.test/clean/keep.html",
                "--count",
                "4",
                "--concurrency",
                "1",
            ],
        );
    });
    traffic.await.unwrap();
    running.stop();
    sensor.shutdown().await;

    let originals = captures(&run);
    assert!(
        originals.len() >= 2,
        "the run must rotate its capture for this test: {originals:?}"
    );
    let all: Vec<ExchangeRecord> = read_jsonl(&run.join("exchanges.jsonl"));
    let conns: Vec<ConnectionRecord> = read_jsonl(&run.join("connections.jsonl"));
    let verdicts: BTreeSet<&str> = all.iter().map(|x| x.verdict.as_str()).collect();
    assert!(
        verdicts.contains("blocked") && verdicts.contains("infected") && verdicts.contains("clean"),
        "{verdicts:?}"
    );
    let keep_alive = all
        .iter()
        .find(|x| x.seq == 1)
        .expect("the load sent two exchanges on one connection")
        .conn;

    // Blocked and infected exchanges, and the second exchange of the
    // keep-alive connection (its whole connection travels in the capture).
    let expr = format!("verdict=blocked or verdict=infected or exchange={keep_alive}/1");
    let small = tmp.path().join("out").join("small.pcapng");
    std::fs::create_dir(small.parent().unwrap()).unwrap();
    let o = icaptap(&[
        "export",
        run.to_str().unwrap(),
        "--filter",
        &expr,
        "-w",
        small.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    // The records: exactly the matching ones, in the run's order.
    let want: Vec<&ExchangeRecord> = all
        .iter()
        .filter(|x| {
            x.verdict == "blocked"
                || x.verdict == "infected"
                || (x.conn == keep_alive && x.seq == 1)
        })
        .collect();
    assert_eq!(want.len(), 4, "2 blocked, 1 infected, 1 of the load");
    let got: Vec<ExchangeRecord> = read_jsonl(&small.with_file_name("small.exchanges.jsonl"));
    assert_eq!(got.iter().collect::<Vec<_>>(), want);
    let selected: BTreeSet<u64> = want.iter().map(|x| x.conn).collect();
    let got_conns: Vec<ConnectionRecord> =
        read_jsonl(&small.with_file_name("small.connections.jsonl"));
    let got_ids: BTreeSet<u64> = got_conns.iter().map(|c| c.conn).collect();
    assert_eq!(got_ids, selected);
    assert_eq!(got_conns.len(), selected.len());

    // The packets: what tshark finds of those connections' two legs in
    // the original files, frame for frame and comment for comment.
    let chosen: Vec<&ConnectionRecord> = conns
        .iter()
        .filter(|c| selected.contains(&c.conn))
        .collect();
    let filter = legs_filter(&chosen);
    let (mut frames, mut comments) = (0, 0);
    for file in &originals {
        let (f, c) = frames_and_comments(file, &filter);
        frames += f;
        comments += c;
    }
    let (all_frames, _) = frames_and_comments(&originals[0], "frame");
    assert!(frames > 0 && comments > 0, "the check must be able to fail");
    assert!(
        frames < all_frames * originals.len(),
        "a subset, not everything"
    );
    assert_eq!(
        frames_and_comments(&small, "frame"),
        (frames, comments),
        "frames and packet comments of the export"
    );
    assert_eq!(
        frames_and_comments(&small, &filter),
        (frames, comments),
        "nothing of other connections"
    );
    for leg in ["client-leg", "sensor-leg"] {
        let (f, _) = frames_and_comments(&small, &format!("frame.interface_name == \"{leg}\""));
        assert!(f > 0, "no frame on {leg}");
    }
    let comments_text = tshark(&[
        "-r",
        small.to_str().unwrap(),
        "-Y",
        "frame.comment",
        "-T",
        "fields",
        "-e",
        "frame.comment",
    ]);
    assert!(
        comments_text.contains("verdict infected"),
        "{comments_text}"
    );
    assert!(comments_text.contains("verdict blocked"), "{comments_text}");

    // Never over an earlier export; nothing matching writes nothing and
    // exits 1; a run without a capture is refused (exit 2).
    let again = icaptap(&[
        "export",
        run.to_str().unwrap(),
        "--filter",
        &expr,
        "-w",
        small.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let none = tmp.path().join("out").join("none.pcapng");
    let o = icaptap(&[
        "export",
        run.to_str().unwrap(),
        "--filter",
        "client=10.0.0.0/8",
        "-w",
        none.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("matches"));
    assert!(!none.exists() && !none.with_file_name("none.exchanges.jsonl").exists());
    let bare = tmp.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    for f in ["exchanges.jsonl", "connections.jsonl", "summary.json"] {
        std::fs::copy(run.join(f), bare.join(f)).unwrap();
    }
    let o = icaptap(&[
        "export",
        bare.to_str().unwrap(),
        "--filter",
        &expr,
        "-w",
        none.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no capture"));

    // A bad expression: where it is wrong and what to write.
    let o = icaptap(&[
        "export",
        run.to_str().unwrap(),
        "--filter",
        "verdict=blokced",
        "-w",
        none.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("        ^^^^^^^") && err.contains("verdict=blocked"),
        "{err}"
    );

    // report --filter shows only those exchanges and says so.
    let o = icaptap(&[
        "report",
        bare.to_str().unwrap(),
        "--filter",
        "verdict=infected",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(bare.join("report.md")).unwrap();
    assert!(md.contains("Filtered: only the exchanges matching"), "{md}");
    assert!(md.contains("verdict=infected"), "{md}");
    assert!(
        !md.contains("big-1.bin"),
        "a clean exchange in a filtered report"
    );

    // analyze --filter over the export writes only what matches.
    let analyzed = tmp.path().join("analyzed");
    let o = icaptap(&[
        "analyze",
        small.to_str().unwrap(),
        "--no-progress",
        "--filter",
        "verdict=blocked",
        "--out",
        analyzed.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let xs: Vec<ExchangeRecord> = read_jsonl(&analyzed.join("exchanges.jsonl"));
    assert_eq!(xs.len(), 2, "{xs:?}");
    assert!(xs.iter().all(|x| x.verdict == "blocked"));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(analyzed.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["filter"], "verdict=blocked");
    assert_eq!(summary["exchanges"], 2);
    let cs: Vec<ConnectionRecord> = read_jsonl(&analyzed.join("connections.jsonl"));
    assert_eq!(cs.len(), 2);
}

/// A ring (`--keep 2`) deletes the oldest files: the export holds what
/// the remaining files have of the selection and names the connection
/// whose packets are gone, whose record is exported all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_export_keeps_what_is_left_and_names_what_is_gone() {
    assert!(have_tshark(), "tshark is installed by .ci/run");
    let sensor = sensor().await;
    let sensor_addr = sensor.addr();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let running = proxy(sensor_addr, &run, &["--keep", "2"]);
    let service = format!("icap://{}/av/respmod", running.listen);
    tokio::task::spawn_blocking(move || {
        client(
            &service,
            &[
                "--url",
                "http://t.test/block/early.html",
                "--sample",
                "clean",
            ],
        );
        for i in 0..4 {
            let url = format!("http://t.test/clean/big-{i}.bin");
            client(&service, &["--url", &url, "--sample", "large"]);
        }
        client(
            &service,
            &[
                "--url",
                "http://t.test/block/late.html",
                "--sample",
                "clean",
            ],
        );
    })
    .await
    .unwrap();
    running.stop();
    sensor.shutdown().await;

    let originals = captures(&run);
    assert_eq!(originals.len(), 2, "the ring keeps 2 files: {originals:?}");
    let all: Vec<ExchangeRecord> = read_jsonl(&run.join("exchanges.jsonl"));
    let conns: Vec<ConnectionRecord> = read_jsonl(&run.join("connections.jsonl"));
    let blocked: Vec<&ExchangeRecord> = all.iter().filter(|x| x.verdict == "blocked").collect();
    assert_eq!(blocked.len(), 2);
    let conn_of = |part: &str| {
        blocked
            .iter()
            .find(|x| x.http_url.as_deref().is_some_and(|u| u.contains(part)))
            .unwrap()
            .conn
    };
    let (early, late) = (conn_of("early"), conn_of("late"));
    let record_of = |id: u64| conns.iter().find(|c| c.conn == id).unwrap();
    let gone = legs_filter(&[record_of(early)]);
    let left = legs_filter(&[record_of(late)]);
    let count = |filter: &str| {
        originals
            .iter()
            .map(|f| frames_and_comments(f, filter))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    assert_eq!(count(&gone).0, 0, "the ring turned past the early exchange");
    let want = count(&left);
    assert!(want.0 > 0 && want.1 > 0);

    let small = tmp.path().join("ring.pcapng");
    let o = icaptap(&[
        "export",
        run.to_str().unwrap(),
        "--filter",
        "verdict=blocked",
        "-w",
        small.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "connection(s) {early} have no packet in the capture"
        )),
        "{err}"
    );
    assert_eq!(frames_and_comments(&small, "frame"), want);
    let got: Vec<ExchangeRecord> = read_jsonl(&tmp.path().join("ring.exchanges.jsonl"));
    assert_eq!(got.iter().collect::<Vec<_>>(), blocked);
}

fn have_tshark() -> bool {
    Command::new("tshark")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
