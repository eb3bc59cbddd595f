//! The toolkit over ICAP over TLS, with the real binaries and a real peer:
//!
//! - `icaptap client --tls` -> `icaptap proxy --tls --upstream-tls` ->
//!   `icaptap sensor --tls`, each with the certificate the next one
//!   generated and wrote out: verdicts, load mode and the `icaps://` URI
//!   form through both TLS legs, and records that carry both legs' facts;
//! - `icaptap client --tls` against c-icap's `TlsPort` with the test CA
//!   (echo intact, the certificate's subject and issuer printed);
//! - the client's TLS failures (untrusted, name mismatch, expired, a plain
//!   port), each a clear error with its code, the flag to change, and exit
//!   status 2; the same in load mode, counted by code.

mod faults_support;
mod peers;
mod tls_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use faults_support::{icaptap_binary, read_jsonl, ProxyProcess, PATIENCE};
use icaptap::output::records::{ConnectionRecord, ExchangeRecord};
use peers::{require, CIcap};
use tls_support::{cicap_tls, Pki};

/// `icaptap sensor --tls` as a process of its own, killed on drop.
struct SensorProcess {
    child: Child,
    addr: SocketAddr,
    /// What it printed before listening (the TLS line).
    banner: Vec<String>,
}

impl SensorProcess {
    /// Starts it on a free loopback port with `extra` options; waits for
    /// its listening line.
    fn start(extra: &[&str]) -> SensorProcess {
        let mut child = Command::new(icaptap_binary())
            .args(["sensor", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut banner = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("icaptap sensor listening on ") {
                    let _ = tx.send((rest.to_string(), banner.clone()));
                }
                banner.push(line);
            }
        });
        let (rest, banner) = match rx.recv_timeout(PATIENCE) {
            Ok(got) => got,
            Err(_) => {
                let _ = child.kill();
                panic!("icaptap sensor did not start");
            }
        };
        let url = rest.split_whitespace().next().unwrap();
        assert!(url.starts_with("icaps://"), "{rest}");
        let addr = url
            .trim_start_matches("icaps://")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        SensorProcess {
            child,
            addr,
            banner,
        }
    }
}

impl Drop for SensorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `icaptap client ARGS`.
fn client(args: &[&str]) -> Output {
    Command::new(icaptap_binary())
        .arg("client")
        .args(args)
        .output()
        .unwrap()
}

/// Its stdout and stderr together.
fn said(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn client_tls_through_proxy_tls_to_sensor_tls_with_the_real_binaries() {
    let tmp = tempfile::tempdir().unwrap();
    let sensor_cert = tmp.path().join("sensor-cert.pem");
    let sensor = SensorProcess::start(&["--tls", "--tls-cert-out", path(&sensor_cert)]);
    let banner = sensor.banner.join("\n");
    assert!(banner.contains("SHA-256"), "{banner}");
    assert!(banner.contains(path(&sensor_cert)), "{banner}");
    assert!(
        std::fs::read_to_string(&sensor_cert)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"),
        "the sensor's certificate file"
    );

    let out = tmp.path().join("run");
    let proxy = ProxyProcess::start(
        sensor.addr,
        &out,
        &[
            "--tls",
            "--upstream-tls",
            "--upstream-tls-ca",
            path(&sensor_cert),
        ],
        None,
    );
    let proxy_cert = out.join("icaptap-tls-cert.pem");
    assert!(proxy_cert.exists(), "icaptap proxy wrote no certificate");
    let uri = format!("icap://{}/av/respmod", proxy.listen);
    let ca = path(&proxy_cert);

    // One infected RESPMOD, verified against the proxy's certificate.
    let o = client(&[&uri, "--tls", "--tls-ca", ca, "--sample", "eicar"]);
    let text = said(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(
        text.contains("VERDICT: infected (EICAR-Test-File)"),
        "{text}"
    );
    assert!(text.contains("TLS: TLSv1."), "{text}");
    assert!(text.contains("icaptap (self-signed)"), "{text}");
    assert!(text.contains(", verified"), "{text}");

    // A body larger than the preview: 100 Continue and the rest over TLS.
    let o = client(&[
        &uri,
        "--tls",
        "--tls-ca",
        ca,
        "--sample",
        "large",
        "--preview",
        "1024",
    ]);
    let text = said(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains("VERDICT: clean"), "{text}");

    // Load mode over keep-alive TLS connections.
    let o = client(&[
        &uri,
        "--tls",
        "--tls-ca",
        ca,
        "--allow-204",
        "--count",
        "20",
        "--concurrency",
        "2",
    ]);
    let text = said(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains(" over TLS "), "{text}");
    assert!(text.contains("answered 20 requests"), "{text}");
    assert!(text.contains("errors: none"), "{text}");

    // icaps:// is ICAP over TLS without --tls.
    let icaps = format!("icaps://{}/av/respmod", proxy.listen);
    let o = client(&[&icaps, "--tls-ca", ca, "--method", "options"]);
    let text = said(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains("VERDICT: options"), "{text}");

    let (ok, stderr) = proxy.stop();
    assert!(ok, "{stderr}");
    let exchanges: Vec<ExchangeRecord> = read_jsonl(&out.join("exchanges.jsonl"));
    assert_eq!(exchanges.len(), 1 + 1 + 20 + 1, "{exchanges:#?}");
    let infected = exchanges.iter().filter(|x| x.verdict == "infected").count();
    assert_eq!(infected, 1, "{exchanges:#?}");
    for x in &exchanges {
        let tls = x.tls.as_ref().expect("an exchange over TLS says so");
        let client_leg = tls.client.as_ref().expect("client leg TLS");
        let sensor_leg = tls.sensor.as_ref().expect("sensor leg TLS");
        assert!(client_leg.version.starts_with("TLSv1."), "{client_leg:?}");
        assert!(!client_leg.cipher.is_empty(), "{client_leg:?}");
        assert!(sensor_leg.verified, "{sensor_leg:?}");
        assert!(
            sensor_leg
                .peer_subject
                .as_deref()
                .is_some_and(|s| s.contains("icaptap (self-signed)")),
            "{sensor_leg:?}"
        );
        assert!(x.anomalies.is_empty(), "{:?}", x.anomalies);
    }
    let connections: Vec<ConnectionRecord> = read_jsonl(&out.join("connections.jsonl"));
    for c in &connections {
        assert!(c.anomalies.is_empty(), "conn {}: {:?}", c.conn, c.anomalies);
        assert!(c.tls.is_some(), "conn {} has no TLS facts", c.conn);
    }
}

#[test]
fn client_tls_against_cicap_tls_port_with_the_test_ca() {
    require("c-icap", "c-icap");
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::make(&tmp.path().join("pki"));
    let (_cicap, tls_port) = cicap_tls(&tmp.path().join("c-icap"), &pki.good);
    let file = tmp.path().join("body.bin");
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(&file, &body).unwrap();
    let back = tmp.path().join("back.bin");
    let uri = format!("icap://{tls_port}/echo");
    for name in [None, Some("localhost")] {
        let _ = std::fs::remove_file(&back);
        let mut args = vec![
            uri.as_str(),
            "--tls",
            "--tls-ca",
            path(&pki.ca),
            "--file",
            path(&file),
            // No preview: c-icap's echo may answer 204 inside one.
            "--output",
            path(&back),
        ];
        if let Some(n) = name {
            args.extend(["--tls-name", n]);
        }
        let o = client(&args);
        let text = said(&o);
        assert_eq!(o.status.code(), Some(0), "{name:?}: {text}");
        assert!(text.contains("VERDICT: clean"), "{name:?}: {text}");
        assert!(text.contains("c-icap test sensor good"), "{text}");
        assert!(text.contains("icaptap test CA"), "{text}");
        assert!(text.contains(", verified"), "{text}");
        let got = std::fs::read(&back).unwrap_or_default();
        assert!(
            got == body,
            "{name:?}: the echoed body differs ({} bytes back of {}): {text}",
            got.len(),
            body.len()
        );
    }
    let o = client(&[
        &uri,
        "--tls",
        "--tls-ca",
        path(&pki.ca),
        "--method",
        "options",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", said(&o));
    assert!(said(&o).contains("VERDICT: options"), "{}", said(&o));
}

#[test]
fn client_tls_failures_are_clear_errors_with_their_codes() {
    require("c-icap", "c-icap");
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::make(&tmp.path().join("pki"));
    let (_good, good) = cicap_tls(&tmp.path().join("c-icap-good"), &pki.good);
    let (_expired, expired) = cicap_tls(&tmp.path().join("c-icap-expired"), &pki.expired);
    let plain = CIcap::start(&tmp.path().join("c-icap-plain"), "");
    let ca = path(&pki.ca).to_string();
    let cases: Vec<(&str, SocketAddr, Vec<&str>, &str, &str)> = vec![
        // The system's store does not hold the test CA.
        (
            "untrusted",
            good,
            vec![],
            "tls-certificate-untrusted",
            "give its CA with --tls-ca",
        ),
        (
            "name-mismatch",
            good,
            vec!["--tls-ca", &ca, "--tls-name", "sensor.wrong.example"],
            "tls-certificate-name-mismatch",
            "with --tls-name",
        ),
        (
            "expired",
            expired,
            vec!["--tls-ca", &ca],
            "tls-certificate-expired",
            "has expired",
        ),
        (
            "plain-port",
            plain.addr,
            vec!["--tls-insecure"],
            "tls-sensor-handshake-failed",
            "leave out --tls",
        ),
    ];
    for (name, at, extra, code, advice) in cases {
        let uri = format!("icap://{at}/echo");
        // A plain port may wait for more of what it takes for a request.
        let mut args = vec![
            uri.as_str(),
            "--tls",
            "--method",
            "options",
            "--timeout",
            "3s",
        ];
        args.extend(&extra);
        let o = client(&args);
        let text = said(&o);
        eprintln!("{name}: {text}");
        assert_eq!(o.status.code(), Some(2), "{name}: {text}");
        assert!(
            text.contains(&format!(
                "VERDICT: missing (TLS with the sensor at {at} failed ({code})"
            )),
            "{name}: {text}"
        );
        assert!(text.contains(advice), "{name}: {text}");
        // Load mode counts the failures by the same code.
        args.extend(["--count", "3"]);
        let o = client(&args);
        let text = said(&o);
        assert_eq!(o.status.code(), Some(2), "{name} (load): {text}");
        assert!(
            text.contains(&format!("errors: {code} x3")),
            "{name}: {text}"
        );
    }
    // A TLS option without --tls is refused, naming both.
    let o = client(&[&format!("icap://{}/echo", plain.addr), "--tls-ca", &ca]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        said(&o).contains("--tls-ca is given but --tls is not"),
        "{}",
        said(&o)
    );
    // A sensor with --tls-cert needs --tls-key (clap), and --tls-cert
    // without --tls is refused at start-up.
    let o = Command::new(icaptap_binary())
        .args(["sensor", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&pki.good.0)
        .arg("--tls-key")
        .arg(&pki.good.1)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        said(&o).contains("--tls-cert is given but --tls is not"),
        "{}",
        said(&o)
    );
}
