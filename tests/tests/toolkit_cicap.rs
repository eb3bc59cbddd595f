//! The toolkit against real c-icap on loopback: `icaptap client` (the
//! library behind it) against c-icap's echo service, and `c-icap-client`
//! against `icaptap sensor`; each pair must agree with the other pair on
//! what was sent and answered (status, ISTag, echoed body).

mod peers;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use icaptap::toolkit::client::{send_once, threat_of, Answer, IcapTarget, RequestSpec};
use icaptap::toolkit::sample::{Sample, EICAR};
use icaptap::toolkit::scenario::Scenario;
use icaptap::toolkit::sensor::{Sensor, SensorHandle, SensorStats};

const TIMEOUT: Duration = Duration::from_secs(10);

/// What `c-icap-client -v` showed: the ICAP status line and headers, and
/// the body it saved with `-o`.
#[derive(Debug)]
struct CIcapClientRun {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    stdout: String,
}

impl CIcapClientRun {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn c_icap_client(
    port: u16,
    service: &str,
    file: &Path,
    out: &Path,
    extra: &[&str],
) -> CIcapClientRun {
    let _ = std::fs::remove_file(out);
    let output = Command::new("c-icap-client")
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-s", service])
        .args([
            "-f",
            file.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-v",
        ])
        .args(extra)
        .output()
        .expect("run c-icap-client");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let mut lines = stdout
        .lines()
        .skip_while(|l| l.trim() != "ICAP HEADERS:")
        .skip(1);
    let status_line = lines
        .next()
        .unwrap_or_else(|| panic!("no ICAP HEADERS in:\n{stdout}"));
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .take_while(|l| l.starts_with('\t') && !l.trim().is_empty())
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    CIcapClientRun {
        status,
        headers,
        body: std::fs::read(out).unwrap_or_default(),
        stdout,
    }
}

/// Runs c-icap-client off the async runtime (it blocks), so an in-process
/// sensor keeps serving; `preview` is `-w N`, none is `-nopreview`.
async fn run_c_icap_client(
    port: u16,
    service: &'static str,
    file: &Path,
    out: &Path,
    preview: Option<usize>,
    extra: &'static [&'static str],
) -> CIcapClientRun {
    let (file, out) = (file.to_owned(), out.to_owned());
    tokio::task::spawn_blocking(move || {
        let preview = preview.map(|n| n.to_string());
        let mut args: Vec<&str> = match &preview {
            Some(n) => vec!["-w", n.as_str()],
            None => vec!["-nopreview"],
        };
        args.extend_from_slice(extra);
        c_icap_client(port, service, &file, &out, &args)
    })
    .await
    .unwrap()
}

fn spec(addr: std::net::SocketAddr, service: &str, body: Bytes) -> RequestSpec {
    let target = IcapTarget::parse(&format!("icap://{addr}{service}")).unwrap();
    RequestSpec::respmod(target, body)
}

fn istag(answer: &Answer) -> Option<&str> {
    answer.head.headers.get_str("ISTag")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icaptap_client_and_c_icap_client_agree_on_c_icap_echo() {
    assert!(
        peers::have("c-icap") && peers::have("c-icap-client"),
        "install c-icap (see .ci/run)"
    );
    let dir = tempfile::tempdir().unwrap();
    let cicap = peers::CIcap::start(&dir.path().join("c-icap"), "");
    let out = dir.path().join("out.bin");

    for (name, body, preview) in [
        ("clean", Sample::Clean.body(), None),
        ("large-with-preview", Sample::Large.body(), Some(1024)),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, &body).unwrap();
        let mut ours = spec(cicap.addr, "/echo", body.clone());
        ours.preview = preview;
        // c-icap-client allows 204 inside a preview even with -no204: ask
        // the same. c-icap's echo then alternates, request by request,
        // between 204 on the preview and 100 Continue + 200 echo, so on a
        // preview either answer is right and each must be consistent.
        ours.allow_204 = preview.is_some();
        let answer = send_once(&ours, TIMEOUT).await.unwrap();
        assert!(answer.complete, "{name}");
        match (preview, answer.head.status) {
            (Some(_), 204) => assert!(answer.interim.is_none(), "{name}: 204 on the preview"),
            (Some(_), 200) => {
                assert_eq!(
                    answer.interim.as_ref().map(|h| h.status),
                    Some(100),
                    "{name}"
                );
                assert!(
                    answer.body == body,
                    "{name}: c-icap echo returned a different body"
                );
            }
            (None, 200) => assert!(
                answer.body == body,
                "{name}: c-icap echo returned a different body"
            ),
            (_, status) => panic!("{name}: c-icap echo answered {status}"),
        }
        let server_anomalies: Vec<_> = answer.anomalies.iter().map(|a| a.code.as_str()).collect();
        assert!(server_anomalies.is_empty(), "{name}: {server_anomalies:?}");

        let port = cicap.addr.port();
        let theirs = run_c_icap_client(port, "echo", &file, &out, preview, &["-no204"]).await;
        if preview.is_some() {
            assert!(
                matches!(theirs.status, 200 | 204),
                "{name}: {}",
                theirs.stdout
            );
        } else {
            assert_eq!(
                theirs.status, answer.head.status,
                "{name}: {}",
                theirs.stdout
            );
        }
        assert_eq!(theirs.header("ISTag"), istag(&answer), "{name}");
        // On a 204 there is no body to save.
        if theirs.status == 200 {
            assert!(
                theirs.body == body,
                "{name}: c-icap-client saved a different body"
            );
        }
    }
}

async fn default_sensor() -> SensorHandle {
    Sensor::bind(
        "127.0.0.1:0".parse().unwrap(),
        Scenario::default_scenario().unwrap(),
    )
    .await
    .unwrap()
    .spawn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_icap_client_and_icaptap_client_agree_on_icaptap_sensor() {
    assert!(peers::have("c-icap-client"), "install c-icap (see .ci/run)");
    let sensor = default_sensor().await;
    let port = sensor.addr().port();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");

    // Echo, whole and with a preview that needs 100 Continue.
    for (name, body, preview) in [
        ("clean", Sample::Clean.body(), None),
        ("large-with-preview", Sample::Large.body(), Some(1024)),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, &body).unwrap();
        let continues_before = SensorStats::get(&sensor.stats().continues);
        let theirs = run_c_icap_client(port, "echo", &file, &out, preview, &[]).await;
        assert_eq!(theirs.status, 200, "{name}: {}", theirs.stdout);
        assert_eq!(theirs.header("ISTag"), Some("\"ICAPTAP-1\""), "{name}");
        assert!(
            theirs.body == body,
            "{name}: the sensor's echo as saved by c-icap-client differs"
        );
        if preview.is_some() {
            assert_eq!(
                SensorStats::get(&sensor.stats().continues),
                continues_before + 1
            );
        }

        let mut ours = spec(sensor.addr(), "/echo", body.clone());
        ours.preview = preview;
        let answer = send_once(&ours, TIMEOUT).await.unwrap();
        assert_eq!(answer.head.status, theirs.status, "{name}");
        assert_eq!(istag(&answer), theirs.header("ISTag"), "{name}");
        assert!(answer.body == body, "{name}");
    }

    // A clean file on the AV service: c-icap-client allows 204.
    let file = dir.path().join("clean.html");
    std::fs::write(&file, Sample::Clean.body()).unwrap();
    let theirs = run_c_icap_client(port, "av/respmod", &file, &out, Some(1024), &[]).await;
    assert_eq!(theirs.status, 204, "{}", theirs.stdout);
    let mut ours = spec(sensor.addr(), "/av/respmod", Sample::Clean.body());
    ours.allow_204 = true;
    ours.preview = Some(1024);
    let answer = send_once(&ours, TIMEOUT).await.unwrap();
    assert_eq!(answer.head.status, 204);

    // EICAR: both see the same infection header.
    let file = dir.path().join("eicar.com");
    std::fs::write(&file, EICAR).unwrap();
    let theirs = run_c_icap_client(port, "av/respmod", &file, &out, Some(1024), &[]).await;
    assert_eq!(theirs.status, 200, "{}", theirs.stdout);
    let found = theirs.header("X-Infection-Found").map(str::to_owned);
    assert_eq!(
        found.as_deref(),
        Some("Type=0; Resolution=2; Threat=EICAR-Test-File;")
    );
    assert!(String::from_utf8_lossy(&theirs.body).contains("EICAR-Test-File"));
    let answer = send_once(
        &spec(sensor.addr(), "/av/respmod", Bytes::from_static(EICAR)),
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(
        answer.head.headers.get_str("X-Infection-Found"),
        found.as_deref()
    );
    assert_eq!(threat_of(&answer).as_deref(), Some("EICAR-Test-File"));
    sensor.shutdown().await;
}
