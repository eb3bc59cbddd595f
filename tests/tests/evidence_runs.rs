//! A real `icaptap proxy` process on distinct loopback addresses (sensor
//! 127.0.0.7, icaptap 127.0.0.8, client 127.0.0.9) and what is done with
//! its run afterwards: a `bundle --redact --pseudonymise-ips` whose every
//! byte (every file of the unpacked archive) is free of the real addresses,
//! as text in each form icaptap writes and as raw IPv4 in the capture; and
//! `clean` on a run that was killed (no summary.json).

mod faults_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use faults_support::icaptap_binary;
use icaptap::toolkit::scenario::Scenario;
use icaptap::toolkit::{Sensor, SensorHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SENSOR_IP: [u8; 4] = [127, 0, 0, 7];
const LISTEN_IP: [u8; 4] = [127, 0, 0, 8];
const CLIENT_IP: [u8; 4] = [127, 0, 0, 9];

fn ip_text(ip: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(ip).to_string()
}

/// A free port on `ip`.
fn free_port(ip: [u8; 4]) -> u16 {
    std::net::TcpListener::bind(SocketAddr::from((ip, 0)))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn sensor() -> SensorHandle {
    let text = include_str!("../../docs/toolkit-scenario.toml");
    let scenario = Scenario::from_toml(text, "docs/toolkit-scenario.toml").unwrap();
    Sensor::bind(SocketAddr::from((SENSOR_IP, 0)), scenario)
        .await
        .unwrap()
        .spawn()
}

/// `icaptap proxy` on 127.0.0.8 in front of `sensor`, recording into
/// `out`; returns once it listens.
fn proxy(sensor: SocketAddr, out: &Path, extra: &[&str]) -> (Child, SocketAddr) {
    let listen = SocketAddr::from((LISTEN_IP, free_port(LISTEN_IP)));
    let mut child = Command::new(icaptap_binary())
        .args(["proxy", "--listen", &listen.to_string()])
        .args(["--upstream", &sensor.to_string()])
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if line.starts_with("icaptap: listening on") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("icaptap did not start listening");
    (child, listen)
}

/// A RESPMOD from 127.0.0.9 through `listen` naming the sensor in `Host`
/// and the client in `X-Client-IP`, as a web proxy sends them; waits for
/// the answer's head.
async fn exchange(listen: SocketAddr, sensor: SocketAddr, path: &str) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((CLIENT_IP, 0))).unwrap();
    let mut c = socket.connect(listen).await.unwrap();
    let req_hdr =
        format!("GET http://www.example.test{path} HTTP/1.1\r\nHost: www.example.test\r\n\r\n");
    let res_hdr = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n";
    let body = "<html>hello</html>";
    let icap = format!(
        "RESPMOD icap://{sensor}/av/respmod ICAP/1.0\r\nHost: {sensor}\r\nAllow: 204\r\n\
         X-Client-IP: {}\r\nEncapsulated: req-hdr=0, res-hdr={}, res-body={}\r\n\r\n\
         {req_hdr}{res_hdr}{:x}\r\n{body}\r\n0\r\n\r\n",
        ip_text(CLIENT_IP),
        req_hdr.len(),
        req_hdr.len() + res_hdr.len(),
        body.len()
    );
    c.write_all(icap.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !got.windows(4).any(|w| w == b"\r\n\r\n") && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
}

fn stop(mut child: Child, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "icaptap did not stop on {signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every file below `dir`.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Where `needle` occurs in the files below `dir`: (file, offset).
fn occurrences(dir: &Path, needle: &[u8]) -> Vec<(PathBuf, usize)> {
    let mut found = Vec::new();
    for f in all_files(dir) {
        let bytes = std::fs::read(&f).unwrap();
        for at in memchr::memmem::find_iter(&bytes, needle) {
            found.push((f.clone(), at));
        }
    }
    found
}

/// Every `IP:PORT` text of `ip` in the files below `dir`.
fn with_ports(dir: &Path, ip: [u8; 4]) -> Vec<Vec<u8>> {
    let mut prefix = ip_text(ip).into_bytes();
    prefix.push(b':');
    let mut found = std::collections::BTreeSet::new();
    for f in all_files(dir) {
        let bytes = std::fs::read(&f).unwrap();
        for at in memchr::memmem::find_iter(&bytes, &prefix) {
            let digits = bytes[at + prefix.len()..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits > 0 {
                found.insert(bytes[at..at + prefix.len() + digits].to_vec());
            }
        }
    }
    found.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pseudonymised_bundle_holds_no_real_address_in_any_byte() {
    let sensor = sensor().await;
    let sensor_addr = sensor.addr();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let (child, listen) = proxy(sensor_addr, &out, &[]);
    for path in ["/clean/a.html", "/close/file.zip", "/error/503"] {
        exchange(listen, sensor_addr, path).await;
    }
    stop(child, "-TERM");
    sensor.shutdown().await;

    let archive = tmp.path().join("bundle.tar.gz");
    let o = Command::new(icaptap_binary())
        .args(["bundle", "--redact", "--pseudonymise-ips"])
        .arg(&out)
        .arg("-o")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let unpacked = tmp.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success());
    let names: Vec<String> = all_files(&unpacked)
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "manifest.json",
        "summary.json",
        "exchanges.jsonl",
        "report.html",
        "ticket.md",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    assert!(names.iter().any(|n| n.ends_with(".pcapng")), "{names:?}");

    for ip in [SENSOR_IP, LISTEN_IP, CLIENT_IP] {
        let text = ip_text(ip);
        let ported = with_ports(&out, ip);
        // The check can fail: the run itself has the address as text, as
        // IP:PORT, and as raw bytes in its capture.
        assert!(!ported.is_empty(), "the run never writes {text}:PORT");
        let mut forms = vec![text.clone().into_bytes(), ip.to_vec()];
        forms.extend(ported);
        for form in forms {
            assert!(
                !occurrences(&out, &form).is_empty(),
                "the run lacks {form:?}: the test proves nothing"
            );
            let left = occurrences(&unpacked, &form);
            assert!(
                left.is_empty(),
                "{} ({form:?}) left in the bundle at {left:?}",
                String::from_utf8_lossy(&form)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_removes_a_killed_run_with_its_incidents() {
    let sensor = sensor().await;
    let sensor_addr = sensor.addr();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let extra = [
        "--ring",
        "8M",
        "--trigger",
        "server-closed-before-response",
        "--trigger-after",
        "1s",
    ];
    let (child, listen) = proxy(sensor_addr, &out, &extra);
    exchange(listen, sensor_addr, "/clean/a.html").await;
    exchange(listen, sensor_addr, "/close/file.zip").await;
    let bundle = out
        .join("incidents")
        .join("0001-server-closed-before-response.tar.gz");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !bundle.exists() {
        assert!(Instant::now() < deadline, "no incident was written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Killed: no summary.json, the reserved space still there.
    stop(child, "-KILL");
    sensor.shutdown().await;
    assert!(!out.join("summary.json").exists());
    assert!(out.join(".icaptap-summary-reserve").exists());
    assert!(out.join("capture-0001.pcapng").exists());

    let clean = |args: &[&str], dir: &Path| {
        let o = Command::new(icaptap_binary())
            .arg("clean")
            .args(args)
            .arg(dir)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.code(), said)
    };
    let (code, said) = clean(&["--dry-run"], &out);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("did not finish"), "{said}");
    assert!(!said.contains("kept"), "{said}");
    assert!(out.join(".icaptap-summary-reserve").exists());
    let (code, said) = clean(&[], &out);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("did not finish (killed or crashed)"),
        "{said}"
    );
    assert!(
        said.contains("the directory was empty and is removed too"),
        "{said}"
    );
    assert!(!out.exists(), "left behind: {:?}", all_files(&out));

    // A directory icaptap did not make is refused, saying what it holds.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let (code, said) = clean(&[], &other);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("it holds notes.txt"), "{said}");
    assert!(other.join("notes.txt").exists());
}
