//! Security defaults: everything a run writes is private (directories
//! 0700, files 0600, whatever the umask), the report and the bundle too;
//! the metrics endpoint listens on loopback unless told otherwise.

mod faults_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use clap::Parser;
use faults_support::*;

/// Every path under `dir` (itself included) with its mode bits.
fn modes(dir: &Path) -> Vec<(String, bool, u32)> {
    let mut out = Vec::new();
    let meta = std::fs::metadata(dir).unwrap();
    out.push((
        dir.display().to_string(),
        meta.is_dir(),
        meta.permissions().mode() & 0o7777,
    ));
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir).unwrap() {
            out.extend(modes(&entry.unwrap().path()));
        }
    }
    out
}

fn assert_private(dir: &Path) {
    let all = modes(dir);
    assert!(all.len() > 3, "{all:?}");
    for (path, is_dir, mode) in all {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{path} is {mode:o}, not {want:o}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_a_run_writes_is_private_whatever_the_umask() {
    let (_, req, resp) = simple_pairs().remove(6);
    let mut script = Vec::new();
    for n in 1..=20 {
        script.push(Act::ReadTo(req.len() * n));
        script.push(Act::Send(resp.clone()));
    }
    script.push(Act::ReadEof);
    let server = RecordingServer::start(vec![script]).await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nested/out");
    // A permissive umask: the modes must not depend on it.
    let bin = icaptap_binary();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000; exec {} proxy --listen 127.0.0.1:0 --upstream {} --out {} --rotate-time 1s",
            bin.display(),
            server.addr,
            out.display()
        ))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let listen = {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines.next().unwrap().unwrap();
            if let Some(rest) = line.strip_prefix("icaptap: listening on ") {
                break rest.split(',').next().unwrap().parse().unwrap();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        addr
    };
    let mut client = RecordingClient::connect(listen).await;
    // 20 exchanges over 2 s of traffic: the capture rotates each second.
    for n in 1..=20 {
        client.send(&req).await;
        assert_eq!(client.wait_for(resp.len() * n).await, resp.repeat(n));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    client.shutdown().await;
    client.wait_end().await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        files.iter().filter(|f| f.starts_with("capture")).count() > 1,
        "no rotation happened: {files:?}"
    );
    assert!(files.contains(&"summary.json".to_string()), "{files:?}");
    assert_private(&out);
    assert_eq!(
        std::fs::metadata(tmp.path().join("nested"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700,
        "a parent icaptap created is not private"
    );

    // The report and the bundle, made afterwards with the same umask.
    for args in [
        vec!["report".to_string(), out.display().to_string()],
        vec!["bundle".to_string(), out.display().to_string()],
        vec![
            "bundle".to_string(),
            "--redact".to_string(),
            out.display().to_string(),
        ],
    ] {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask 000; exec {} {}",
                bin.display(),
                args.join(" ")
            ))
            .status()
            .unwrap();
        assert!(status.success(), "icaptap {args:?} failed");
    }
    assert_private(&out);
    let bundles: Vec<_> = std::fs::read_dir(tmp.path().join("nested"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    assert_eq!(bundles.len(), 2, "{bundles:?}");
    for b in bundles {
        let mode = std::fs::metadata(&b).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", b.display());
    }
}

#[derive(Debug, Parser)]
struct ProxyOnly {
    #[command(flatten)]
    proxy: icaptap::jobs::proxy::ProxyArgs,
}

#[test]
fn metrics_endpoint_is_off_by_default_and_loopback_when_asked() {
    let base = ["icaptap", "--upstream", "127.0.0.1:1344"];
    let none = ProxyOnly::try_parse_from(base).unwrap();
    assert_eq!(none.proxy.ops.metrics, None, "no endpoint unless asked for");
    let asked = ProxyOnly::try_parse_from([&base[..], &["--metrics"]].concat()).unwrap();
    let addr = asked.proxy.ops.metrics.unwrap();
    assert!(addr.ip().is_loopback(), "--metrics alone listens on {addr}");
    assert_eq!(addr.to_string(), icaptap::ops::DEFAULT_METRICS_ADDR);
}
