//! ICAP over TLS through icaptap, against real peers: Squid 5.7 (Debian's
//! OpenSSL build, squid-openssl) with `icaps://` services, c-icap 0.5.10 with a `TlsPort`,
//! c-icap-client with and without `-tls`. The test makes its own CA and
//! certificates (one valid, one expired) with rcgen.
//!
//! - The chain curl -> Squid (icaps) -> icaptap (TLS both legs, its own
//!   generated certificate on the client leg) -> c-icap (TlsPort): bodies
//!   intact, records equal Squid's icap_log per method, both legs' TLS
//!   facts on the records, the capture decodes in tshark with as many
//!   exchanges as records;
//! - the mixed modes: a TLS client to a plain sensor, a plain client to a
//!   TLS sensor;
//! - `--tls-keylog`: tshark decrypts a tcpdump capture of the encrypted
//!   leg with the key log and finds the ICAP icaptap recorded;
//! - the failures, each with its code: an expired sensor certificate, a
//!   name mismatch, an untrusted one, a plain sensor port, a client that
//!   does not trust icaptap's certificate, plain ICAP sent to the TLS port.

mod peers;
mod record_common;
mod tls_support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use icaptap::forward::tls::TlsArgs;
use icaptap::forward::ForwardConfig;
use icaptap::jobs::proxy::{start, ProxyPlan};
use icaptap::output::records::{ConnectionRecord, ExchangeRecord};
use peers::*;
use tls_support::{cicap_tls, Pki};

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A running icaptap with `tls` flags, recording into `out`.
fn icaptap(
    rt: &tokio::runtime::Runtime,
    upstream: SocketAddr,
    tls: TlsArgs,
    out: &Path,
) -> icaptap::jobs::proxy::RunningProxy {
    let mut forward = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), upstream);
    forward.drain = Duration::from_secs(2);
    forward.tls = tls
        .setup(forward.listen.ip(), &upstream.ip().to_string())
        .unwrap();
    rt.block_on(start(ProxyPlan::new(forward, out.to_path_buf())))
        .unwrap()
}

/// How c-icap-client speaks to icaptap.
#[derive(Clone, Copy, PartialEq)]
enum ClientTls {
    Plain,
    /// TLS, icaptap's generated certificate not checked (it is in no
    /// store c-icap-client reads).
    Unverified,
    /// TLS, the certificate checked against the system store.
    Verified,
}

/// c-icap-client sends an OPTIONS, or a RESPMOD of `file`, to `to`.
fn c_icap_client(to: SocketAddr, tls: ClientTls, file: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new("c-icap-client");
    cmd.args([
        "-i",
        "127.0.0.1",
        "-p",
        &to.port().to_string(),
        "-s",
        "echo",
    ]);
    match tls {
        ClientTls::Plain => {}
        ClientTls::Unverified => {
            cmd.args(["-tls", "-tls-no-verify"]);
        }
        ClientTls::Verified => {
            cmd.arg("-tls");
        }
    }
    if let Some(f) = file {
        cmd.arg("-f").arg(f).arg("-o").arg(f.with_extension("out"));
    }
    cmd.output().expect("c-icap-client (c-icap package)")
}

#[test]
fn squid_icaps_through_icaptap_to_cicap_tls_port() {
    require("squid", "squid");
    require("c-icap", "c-icap");
    require("tshark", "tshark");
    let tmp = tempfile::tempdir().unwrap();

    let pki = Pki::make(&tmp.path().join("pki"));
    let (_cicap, sensor) = cicap_tls(&tmp.path().join("c-icap"), &pki.good);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let out = tmp.path().join("run");
    let proxy = icaptap(
        &rt,
        sensor,
        TlsArgs {
            tls: true,
            upstream_tls: true,
            upstream_tls_ca: Some(pki.ca.clone()),
            ..TlsArgs::default()
        },
        &out,
    );
    // Squid trusts icaptap's generated certificate, from the run directory.
    let squid_dir = tmp.path().join("squid");
    std::fs::create_dir_all(&squid_dir).unwrap();
    let cafile = squid_dir.join("icaptap-ca.pem");
    std::fs::copy(out.join("icaptap-tls-cert.pem"), &cafile).unwrap();
    let squid = Squid::start_icaps(&squid_dir, &SquidIcap::echo(proxy.listen), &cafile);
    let mut objects = vec![("/page.html".to_string(), b"<html>over TLS</html>".to_vec())];
    objects.push((
        "/big.bin".to_string(),
        (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect(),
    ));
    objects.push(("/small.txt".to_string(), b"a small file\n".repeat(40)));
    let origin = Origin::start(objects.clone());
    for (path, want) in &objects {
        let (status, body) = curl_via(squid.addr, &origin.url(path));
        assert_eq!(status, 200, "{path}");
        assert!(body == *want, "{path} came back changed over TLS");
    }
    std::thread::sleep(Duration::from_millis(300));
    let icap_log = squid.icap_log();
    drop(squid);
    let summary = rt.block_on(proxy.stop()).unwrap();
    let exchanges: Vec<ExchangeRecord> = read_jsonl(&out.join("exchanges.jsonl"));
    let connections: Vec<ConnectionRecord> = read_jsonl(&out.join("connections.jsonl"));
    for l in &icap_log {
        eprintln!("squid: {l}");
    }
    for x in &exchanges {
        eprintln!(
            "icaptap: {:?} {:?} {} {:?}",
            x.method, x.http_url, x.verdict, x.anomalies
        );
    }
    // Per method, as many records as Squid's icap_log lines, all answered.
    for method in ["OPTIONS", "REQMOD", "RESPMOD"] {
        let logged = icap_log
            .iter()
            .filter(|l| l.contains(&format!(" {method} ")))
            .count();
        let recorded = exchanges
            .iter()
            .filter(|x| x.method.as_deref() == Some(method))
            .count();
        assert_eq!(
            recorded, logged,
            "{method}: icaptap {recorded}, Squid {logged}"
        );
        assert!(logged > 0, "{method}: none");
    }
    assert!(
        exchanges
            .iter()
            .all(|x| matches!(x.verdict.as_str(), "clean" | "options")),
        "{exchanges:#?}"
    );
    // Both legs' TLS on every record.
    for x in &exchanges {
        let tls = x.tls.as_ref().expect("an exchange over TLS says so");
        let client = tls.client.as_ref().expect("client leg TLS");
        let sensor = tls.sensor.as_ref().expect("sensor leg TLS");
        assert!(client.version.starts_with("TLSv1."), "{client:?}");
        assert!(!client.cipher.is_empty(), "{client:?}");
        assert!(sensor.verified, "{sensor:?}");
        assert!(
            sensor
                .peer_subject
                .as_deref()
                .is_some_and(|s| s.contains("c-icap test sensor good")),
            "{sensor:?}"
        );
        assert!(
            sensor
                .peer_issuer
                .as_deref()
                .is_some_and(|s| s.contains("icaptap test CA")),
            "{sensor:?}"
        );
        assert!(sensor.peer_not_after.is_some(), "{sensor:?}");
    }
    for c in &connections {
        assert!(c.anomalies.is_empty(), "conn {}: {:?}", c.conn, c.anomalies);
        assert!(c.tls.is_some(), "conn {} has no TLS facts", c.conn);
    }
    let tls = summary.tls.expect("summary.tls");
    assert!(tls.client_leg && tls.sensor_leg && tls.sensor_certificate_verified);
    assert!(tls.generated_certificate_sha256.is_some());
    // The capture holds the decrypted ICAP of both legs: tshark decodes as
    // many requests on each leg as there are records, and says TLS was
    // terminated in its comment.
    let capture = out.join("capture.pcapng");
    let decode = [
        proxy_port_decode(&out),
        format!("tcp.port=={},icap", sensor.port()),
    ];
    for leg in ["client-leg", "sensor-leg"] {
        let filter = format!(
            "(icap.options || icap.reqmod || icap.respmod) && frame.interface_name == \"{leg}\""
        );
        let mut args = vec!["-r".to_string(), capture.display().to_string()];
        for d in &decode {
            args.extend(["-d".to_string(), d.clone()]);
        }
        args.extend([
            "-Y".to_string(),
            filter,
            "-T".into(),
            "fields".into(),
            "-e".into(),
            "frame.number".into(),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let requests = record_common::tshark(&refs).lines().count();
        assert_eq!(
            requests,
            exchanges.len(),
            "{leg}: tshark decoded {requests} requests"
        );
    }
    let info = Command::new("capinfos").arg(&capture).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("TLS terminated by icaptap"), "{info}");
}

/// The `-d` option for icaptap's listening port, read off the run's
/// connection records.
fn proxy_port_decode(out: &Path) -> String {
    let connections: Vec<ConnectionRecord> = read_jsonl(&out.join("connections.jsonl"));
    let listen: SocketAddr = connections[0].listen.parse().unwrap();
    format!("tcp.port=={},icap", listen.port())
}

#[test]
fn mixed_modes_tls_client_to_plain_sensor_and_plain_client_to_tls_sensor() {
    require("c-icap", "c-icap");
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::make(&tmp.path().join("pki"));
    let (cicap, sensor_tls) = cicap_tls(&tmp.path().join("c-icap"), &pki.good);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let file = tmp.path().join("body.txt");
    std::fs::write(&file, b"a body over mixed legs\n".repeat(100)).unwrap();

    // A TLS client, icaptap terminating, a plain sensor.
    let out = tmp.path().join("tls-to-plain");
    let proxy = icaptap(
        &rt,
        cicap.addr,
        TlsArgs {
            tls: true,
            ..TlsArgs::default()
        },
        &out,
    );
    let got = c_icap_client(proxy.listen, ClientTls::Unverified, Some(&file));
    assert!(got.status.success(), "{got:?}");
    rt.block_on(proxy.stop()).unwrap();
    let exchanges: Vec<ExchangeRecord> = read_jsonl(&out.join("exchanges.jsonl"));
    let respmod: Vec<&ExchangeRecord> = exchanges
        .iter()
        .filter(|x| x.method.as_deref() == Some("RESPMOD"))
        .collect();
    assert_eq!(respmod.len(), 1, "{exchanges:#?}");
    let tls = respmod[0].tls.as_ref().unwrap();
    assert!(tls.client.is_some() && tls.sensor.is_none(), "{tls:?}");
    assert!(
        std::fs::read(file.with_extension("out")).unwrap() == std::fs::read(&file).unwrap(),
        "the echoed body differs"
    );

    // A plain client, icaptap originating TLS to the sensor.
    let out = tmp.path().join("plain-to-tls");
    let proxy = icaptap(
        &rt,
        sensor_tls,
        TlsArgs {
            upstream_tls: true,
            upstream_tls_ca: Some(pki.ca.clone()),
            upstream_tls_name: Some("localhost".into()),
            ..TlsArgs::default()
        },
        &out,
    );
    let _ = std::fs::remove_file(file.with_extension("out"));
    let got = c_icap_client(proxy.listen, ClientTls::Plain, Some(&file));
    assert!(got.status.success(), "{got:?}");
    rt.block_on(proxy.stop()).unwrap();
    let exchanges: Vec<ExchangeRecord> = read_jsonl(&out.join("exchanges.jsonl"));
    let x = exchanges
        .iter()
        .find(|x| x.method.as_deref() == Some("RESPMOD"))
        .expect("a RESPMOD record");
    let tls = x.tls.as_ref().unwrap();
    let sensor = tls.sensor.as_ref().unwrap();
    assert!(tls.client.is_none(), "{tls:?}");
    assert_eq!(sensor.sni.as_deref(), Some("localhost"));
    assert!(sensor.verified);
}

/// A connection's anomaly codes.
fn connection_codes(out: &Path) -> Vec<String> {
    read_jsonl::<ConnectionRecord>(&out.join("connections.jsonl"))
        .iter()
        .flat_map(|c| c.anomalies.iter().map(|a| a.code.clone()))
        .collect()
}

#[test]
fn tls_failures_are_recorded_with_their_codes() {
    require("c-icap", "c-icap");
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::make(&tmp.path().join("pki"));
    let (_good, good_tls) = cicap_tls(&tmp.path().join("c-icap-good"), &pki.good);
    let plain = CIcap::start(&tmp.path().join("c-icap-plain"), "");
    let (_expired, expired_tls) = cicap_tls(&tmp.path().join("c-icap-expired"), &pki.expired);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cases: Vec<(&str, SocketAddr, TlsArgs, ClientTls, &str)> = vec![
        (
            "expired",
            expired_tls,
            TlsArgs {
                upstream_tls: true,
                upstream_tls_ca: Some(pki.ca.clone()),
                ..TlsArgs::default()
            },
            ClientTls::Plain,
            "tls-certificate-expired",
        ),
        (
            "name-mismatch",
            good_tls,
            TlsArgs {
                upstream_tls: true,
                upstream_tls_ca: Some(pki.ca.clone()),
                upstream_tls_name: Some("sensor.wrong.example".into()),
                ..TlsArgs::default()
            },
            ClientTls::Plain,
            "tls-certificate-name-mismatch",
        ),
        (
            "untrusted",
            good_tls,
            // The system's store: the test CA is not in it.
            TlsArgs {
                upstream_tls: true,
                ..TlsArgs::default()
            },
            ClientTls::Plain,
            "tls-certificate-untrusted",
        ),
        (
            // c-icap-client checks the certificate against the system
            // store, which does not hold icaptap's generated one.
            "client-rejects-certificate",
            plain.addr,
            TlsArgs {
                tls: true,
                ..TlsArgs::default()
            },
            ClientTls::Verified,
            "tls-client-handshake-failed",
        ),
        (
            "plain-to-tls-port",
            plain.addr,
            TlsArgs {
                tls: true,
                ..TlsArgs::default()
            },
            ClientTls::Plain,
            "tls-plain-on-tls-port",
        ),
        (
            "plain-sensor-port",
            plain.addr,
            TlsArgs {
                upstream_tls: true,
                upstream_tls_insecure: true,
                ..TlsArgs::default()
            },
            ClientTls::Plain,
            "tls-sensor-handshake-failed",
        ),
    ];
    for (name, sensor, tls, client_tls, code) in cases {
        let out = tmp.path().join(name);
        let proxy = icaptap(&rt, sensor, tls, &out);
        // An OPTIONS from c-icap-client: it gets no answer, the
        // connection is closed.
        let _ = c_icap_client(proxy.listen, client_tls, None);
        rt.block_on(proxy.stop()).unwrap();
        let codes = connection_codes(&out);
        eprintln!("{name}: {codes:?}");
        assert!(
            codes.iter().any(|c| c == code),
            "{name}: {codes:?}, expected {code}"
        );
        let connections: Vec<ConnectionRecord> = read_jsonl(&out.join("connections.jsonl"));
        let failed = connections
            .iter()
            .find(|c| c.anomalies.iter().any(|a| a.code == code))
            .unwrap();
        assert!(failed.connect_error.is_some(), "{name}: {failed:?}");
        assert_eq!(
            failed.bytes_client_to_server, 0,
            "{name}: nothing forwarded"
        );
    }
}

/// `--tls-keylog`: a tcpdump capture of the real, encrypted client leg is
/// decrypted by tshark with the key log icaptap wrote, and shows the same
/// ICAP requests icaptap recorded.
#[test]
fn the_key_log_decrypts_a_tcpdump_capture_of_the_encrypted_leg() {
    require("c-icap", "c-icap");
    require("tcpdump", "tcpdump");
    require("tshark", "tshark");
    let tmp = tempfile::tempdir().unwrap();
    let cicap = CIcap::start(&tmp.path().join("c-icap"), "");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys = tmp.path().join("keys.log");
    let out = tmp.path().join("run");
    let proxy = icaptap(
        &rt,
        cicap.addr,
        TlsArgs {
            tls: true,
            tls_keylog: Some(keys.clone()),
            ..TlsArgs::default()
        },
        &out,
    );
    let port = proxy.listen.port();
    let dump = Tcpdump::start(
        "lo",
        &format!("tcp port {port}"),
        &tmp.path().join("lo.pcap"),
    );
    for i in 0..2 {
        // c-icap-client writes the answer beside its input, never over a file.
        let file = tmp.path().join(format!("body{i}.txt"));
        std::fs::write(&file, b"encrypted on the wire\n".repeat(50)).unwrap();
        let got = c_icap_client(proxy.listen, ClientTls::Unverified, Some(&file));
        assert!(got.status.success(), "{got:?}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let pcap = dump.stop();
    rt.block_on(proxy.stop()).unwrap();
    let recorded = read_jsonl::<ExchangeRecord>(&out.join("exchanges.jsonl"))
        .iter()
        .filter(|x| x.method.as_deref() == Some("RESPMOD"))
        .count();
    assert_eq!(recorded, 2);
    let key_log = std::fs::read_to_string(&keys).unwrap();
    assert!(
        key_log.contains("CLIENT_TRAFFIC_SECRET_0") || key_log.contains("CLIENT_RANDOM"),
        "{key_log}"
    );
    let requests = |with_keys: bool| {
        let mut args = vec![
            "-r".to_string(),
            pcap.display().to_string(),
            "-d".into(),
            format!("tcp.port=={port},tls"),
            "-d".into(),
            format!("tls.port=={port},icap"),
        ];
        if with_keys {
            args.extend(["-o".into(), format!("tls.keylog_file:{}", keys.display())]);
        }
        args.extend([
            "-Y".into(),
            "icap.respmod".into(),
            "-T".into(),
            "fields".into(),
            "-e".into(),
            "frame.number".into(),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        record_common::tshark(&refs).lines().count()
    };
    // Without the keys the wire shows no ICAP; with them, every request.
    assert_eq!(requests(false), 0);
    assert_eq!(requests(true), recorded);
}
