//! Forwarding loops: an icaptap whose sensor address leads back to icaptap.
//! At start-up the plain cases are refused (`--upstream` the listening
//! address itself or its port on a wildcard listener, a `--route` to
//! another listener). At run time, a loop through listeners of one process
//! (one pointed at itself, or two forwarding to each other) is closed at
//! its first round as `forwarding-loop`, instead of opening connections
//! until the open-file limit.

mod faults_support;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use faults_support::{icaptap_binary, read_jsonl};
use icaptap::forward::{ForwardConfig, ForwardError};
use icaptap::jobs::proxy::{start, ProxyError, ProxyPlan, RunningProxy};
use icaptap::output::records::ConnectionRecord;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const OPTIONS: &[u8] =
    b"OPTIONS icap://127.0.0.1/av ICAP/1.0\r\nHost: 127.0.0.1\r\nEncapsulated: null-body=0\r\n\r\n";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Runs `icaptap proxy ARGS --out OUT`: must exit 2 before listening,
/// saying `said`, and leave no output directory.
fn refused(args: &[&str], said: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = Command::new(icaptap_binary())
        .arg("proxy")
        .args(args)
        .arg("--out")
        .arg(&out)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
    for s in said {
        assert!(stderr.contains(s), "{args:?} does not say {s:?}: {stderr}");
    }
    assert!(!out.exists(), "{args:?} left {}", out.display());
}

#[test]
fn an_upstream_that_is_icaptap_itself_is_refused_at_start_up() {
    let p = free_port();
    let same = loopback(p).to_string();
    refused(
        &["--listen", &same, "--upstream", &same],
        &["--upstream", "own --listen address", "forwarding loop"],
    );
    // A wildcard listener is reached through loopback too.
    let any = format!("0.0.0.0:{p}");
    refused(
        &["--listen", &any, "--upstream", &same],
        &["forwarding loop", "point it at the sensor"],
    );
    // A route to the main listener, and the main sensor being a route.
    let q = free_port();
    let route = format!("{}={same}", loopback(q));
    refused(
        &[
            "--listen",
            &same,
            "--upstream",
            "127.0.0.1:1344",
            "--route",
            &route,
        ],
        &["forwarding loop", "--route"],
    );
    let route = format!("{}=127.0.0.1:1344", loopback(q));
    refused(
        &[
            "--listen",
            &same,
            "--upstream",
            &loopback(q).to_string(),
            "--route",
            &route,
        ],
        &["forwarding loop"],
    );
}

/// icaptap on `listen` forwarding to `upstream`, recording into `out`,
/// without the start-up check (as a configuration that reaches icaptap
/// only at run time, e.g. through a name or a redirect). `None` when the
/// port was taken meanwhile (another test's connection may be given it as
/// its ephemeral port): the caller picks other ports.
async fn icaptap(listen: SocketAddr, upstream: SocketAddr, out: &Path) -> Option<RunningProxy> {
    let mut forward = ForwardConfig::new(listen, upstream);
    forward.drain = Duration::from_secs(1);
    match start(ProxyPlan::new(forward, out.to_path_buf())).await {
        Ok(proxy) => Some(proxy),
        Err(ProxyError::Bind(ForwardError::AddrInUse { .. })) => {
            let _ = std::fs::remove_dir_all(out);
            None
        }
        Err(e) => panic!("starting icaptap on {listen}: {e}"),
    }
}

/// Sends an OPTIONS to `to` and reads until the connection ends; returns
/// what came back and how long it took.
async fn client(to: SocketAddr) -> (Vec<u8>, Duration) {
    let t0 = std::time::Instant::now();
    let mut c = match TcpStream::connect(to).await {
        Ok(c) => c,
        // Reset before the connect was even looked at: closed as fast as
        // it gets.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            return (Vec::new(), t0.elapsed())
        }
        Err(e) => panic!("connecting to {to}: {e}"),
    };
    let _ = c.write_all(OPTIONS).await;
    let mut got = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await;
    match ended {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Err(_) => panic!("the looping connection was never closed"),
    }
    (got, t0.elapsed())
}

fn loop_records(dirs: &[&Path]) -> (usize, Vec<ConnectionRecord>) {
    let mut total = 0;
    let mut looped = Vec::new();
    for dir in dirs {
        let records: Vec<ConnectionRecord> = read_jsonl(&dir.join("connections.jsonl"));
        total += records.len();
        looped.extend(
            records
                .into_iter()
                .filter(|c| c.anomalies.iter().any(|a| a.code == "forwarding-loop")),
        );
    }
    (total, looped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_icaptap_pointed_at_itself_closes_the_loop_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let (addr, proxy) = loop {
        let addr = loopback(free_port());
        if let Some(proxy) = icaptap(addr, addr, &out).await {
            break (addr, proxy);
        }
    };
    let (got, took) = client(addr).await;
    assert!(got.is_empty(), "{got:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    proxy.stop().await.unwrap();
    let (total, looped) = loop_records(&[&out]);
    eprintln!(
        "self loop: {total} connection records, {} forwarding-loop, closed in {took:?}",
        looped.len()
    );
    // The client's connection and at most a couple of rounds, not thousands.
    assert!(total <= 5, "{total} connections for one client connection");
    assert!(!looped.is_empty(), "no forwarding-loop record");
    let a = &looped[0].anomalies[0];
    assert_eq!(a.code, "forwarding-loop");
    assert_eq!(a.severity, "error");
    assert!(a.detail.contains("came back to icaptap at"), "{}", a.detail);
    assert!(a.detail.contains(&addr.to_string()), "{}", a.detail);
    assert!(
        looped[0]
            .connect_error
            .as_deref()
            .is_some_and(|e| e.starts_with("forwarding loop")),
        "{:?}",
        looped[0].connect_error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_icaptaps_of_one_process_forwarding_to_each_other_close_the_loop() {
    let tmp = tempfile::tempdir().unwrap();
    let (out_a, out_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let (a, proxy_a, proxy_b) = loop {
        let (a, b) = (loopback(free_port()), loopback(free_port()));
        let Some(proxy_a) = icaptap(a, b, &out_a).await else {
            continue;
        };
        match icaptap(b, a, &out_b).await {
            Some(proxy_b) => break (a, proxy_a, proxy_b),
            None => {
                proxy_a.stop().await.unwrap();
                let _ = std::fs::remove_dir_all(&out_a);
            }
        }
    };
    let (got, took) = client(a).await;
    assert!(got.is_empty(), "{got:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    proxy_a.stop().await.unwrap();
    proxy_b.stop().await.unwrap();
    let (total, looped) = loop_records(&[&out_a, &out_b]);
    eprintln!(
        "two icaptaps: {total} connection records, {} forwarding-loop, closed in {took:?}",
        looped.len()
    );
    assert!(total <= 6, "{total} connections for one client connection");
    assert!(!looped.is_empty(), "no forwarding-loop record");
}
