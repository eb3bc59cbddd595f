//! e2guardian 5.3 as a second vendor, through icaptap, exchange by
//! exchange against what the user got and the peers' own logs:
//! - as an ICAP client: its `icapscan` content scanner sends every
//!   download to c-icap's `virus_scan` (clamd, private signatures);
//! - as an ICAP server: Squid sends REQMOD and RESPMOD to e2guardian's
//!   ICAP mode, whose ISTag in REQMOD answers is unquoted; a banned
//!   download gets e2guardian's block page.
//!
//! e2guardian binds its ICAP port on every address: each test runs in a
//! network namespace of its own. Every peer comes from a Debian package
//! `.ci/run` installs; a missing one fails the test.

mod peers;

use std::path::Path;
use std::time::{Duration, Instant};

use icaptap::forward::ForwardConfig;
use icaptap::jobs::proxy::{start, ProxyPlan};
use icaptap::observe::ObserverConfig;
use icaptap::output::records::{ConnectionRecord, ExchangeRecord};
use peers::e2guardian::{private_network, E2gSetup, E2guardian};
use peers::*;

/// The 68-byte EICAR test file.
const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Lines of `file` once it has `n` (peers write their logs after
/// answering), or what it has after a few seconds.
fn lines_when(file: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let lines: Vec<String> = std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Anomalies of `x` that are warnings or errors, as `code: detail`.
fn alarms(x: &ExchangeRecord) -> Vec<String> {
    x.anomalies
        .iter()
        .filter(|a| a.severity != "info")
        .map(|a| format!("{}: {}", a.code, a.detail))
        .collect()
}

/// One download through e2guardian: what the user got.
struct Fetch {
    path: &'static str,
    status: u16,
    body: String,
}

#[test]
fn e2guardian_icap_client_via_icaptap_to_clamav() {
    private_network();
    let tmp = tempfile::tempdir().unwrap();
    let clamd = Clamd::start(&tmp.path().join("clamd"));
    let sensor = cicap_sensor(&tmp.path().join("cicap"), &clamd, &[]);
    let mut marked = b"a text file that carries ".to_vec();
    marked.extend_from_slice(VIRUS_MARKER.as_bytes());
    marked.extend_from_slice(b" in its middle\n");
    let objects: Vec<(&'static str, Vec<u8>, Option<&str>)> = vec![
        ("/clean.txt", b"nothing to see here\n".repeat(50), None),
        ("/eicar.txt", EICAR.to_vec(), Some(EICAR_NAME)),
        ("/marked.txt", marked, Some(VIRUS_MARKER_NAME)),
        ("/large.txt", b"z".repeat(200_000), None),
    ];
    let origin = Origin::start(
        objects
            .iter()
            .map(|(p, b, _)| (p.to_string(), b.clone()))
            .collect(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let out = tmp.path().join("run");
    let mut forward = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), sensor.addr);
    forward.drain = Duration::from_secs(2);
    let proxy = rt
        .block_on(start(ProxyPlan {
            observer: ObserverConfig::default(),
            ..ProxyPlan::new(forward, out.clone())
        }))
        .unwrap();
    let e2g = E2guardian::start(
        &tmp.path().join("e2g"),
        &E2gSetup {
            scanner_url: Some(format!(
                "icap://127.0.0.1:{}/virus_scan",
                proxy.listen.port()
            )),
            ..E2gSetup::default()
        },
    );
    let fetched: Vec<Fetch> = objects
        .iter()
        .map(|(path, _, _)| {
            let (status, body) = curl_via(e2g.proxy, &origin.url(path));
            Fetch {
                path,
                status,
                body: String::from_utf8_lossy(&body).to_string(),
            }
        })
        .collect();
    let access = lines_when(&e2g.dir().join("access.log"), objects.len());
    let scans = lines_when(&sensor.daemon.dir.join("scan.log"), objects.len());
    drop(e2g);
    rt.block_on(proxy.stop()).unwrap();
    let exchanges: Vec<ExchangeRecord> = read_jsonl(&out.join("exchanges.jsonl"));
    let connections: Vec<ConnectionRecord> = read_jsonl(&out.join("connections.jsonl"));
    print_run(&fetched, &access, &scans, &exchanges, &connections);
    // Only the OPTIONS probe and one RESPMOD per download went through
    // icaptap (e2guardian asks OPTIONS at start and scans every download).
    let respmods: Vec<&ExchangeRecord> = exchanges
        .iter()
        .filter(|x| x.method.as_deref() == Some("RESPMOD"))
        .collect();
    assert_eq!(respmods.len(), objects.len(), "one RESPMOD per download");
    let mut disagreements = Vec::new();
    for ((path, body, threat), fetch) in objects.iter().zip(&fetched) {
        let Some(x) = respmods
            .iter()
            .find(|x| x.http_url.as_deref().is_some_and(|u| u.ends_with(path)))
        else {
            panic!("no RESPMOD record for {path}");
        };
        let logged = access
            .iter()
            .find(|l| l.contains(&format!("{path}\t")))
            .unwrap_or_else(|| panic!("e2guardian logged nothing for {path}"));
        let scanned = scans
            .iter()
            .find(|l| l.contains(&format!("{path} ")))
            .unwrap_or_else(|| panic!("c-icap logged nothing for {path}"));
        let user_got_it = fetch.status == 200 && fetch.body.as_bytes() == &body[..];
        let (want_verdict, e2g_says, cicap_says) = match threat {
            None => ("clean", "*SCANNED*", "action=passed virus=-".to_string()),
            Some(name) => ("infected", "*INFECTED*", format!("virus={name}")),
        };
        if x.verdict != want_verdict || x.threat.as_deref() != *threat {
            disagreements.push(format!("{path}: icaptap {} {:?}", x.verdict, x.threat));
        }
        if user_got_it != threat.is_none() {
            disagreements.push(format!(
                "{path}: the user got {} {:.80}",
                fetch.status, fetch.body
            ));
        }
        if !logged.contains(e2g_says) {
            disagreements.push(format!("{path}: e2guardian logged {logged}"));
        }
        if !scanned.contains(&cicap_says) {
            disagreements.push(format!("{path}: c-icap logged {scanned}"));
        }
        if !alarms(x).is_empty() {
            disagreements.push(format!(
                "{path}: anomalies on legal traffic {:?}",
                alarms(x)
            ));
        }
    }
    for x in exchanges
        .iter()
        .filter(|x| x.method.as_deref() == Some("OPTIONS"))
    {
        assert_eq!(x.verdict, "options", "{x:#?}");
        assert!(alarms(x).is_empty(), "{:?}", alarms(x));
    }
    for c in &connections {
        assert!(c.anomalies.is_empty(), "conn {}: {:?}", c.conn, c.anomalies);
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

fn print_run(
    fetched: &[Fetch],
    access: &[String],
    scans: &[String],
    exchanges: &[ExchangeRecord],
    connections: &[ConnectionRecord],
) {
    for f in fetched {
        eprintln!("user: {} {} {:.100}", f.path, f.status, f.body);
    }
    for l in access {
        eprintln!("e2guardian: {l}");
    }
    for l in scans {
        eprintln!("sensor: {l}");
    }
    for x in exchanges {
        eprintln!(
            "icaptap: {:?} {:?} {} {:?} istag={:?} {:?}",
            x.method, x.http_url, x.verdict, x.threat, x.istag, x.anomalies
        );
    }
    for c in connections {
        eprintln!("conn {}: {:?} {:?}", c.conn, c.close, c.anomalies);
    }
}

/// A run of Squid -> icaptap -> e2guardian's ICAP server, fetching
/// `urls` from an origin serving `pages`.
struct ServerRun {
    fetched: Vec<(u16, String)>,
    access: Vec<String>,
    icap_log: Vec<String>,
    exchanges: Vec<ExchangeRecord>,
    connections: Vec<ConnectionRecord>,
}

/// Runs e2guardian as the ICAP server behind Squid through icaptap,
/// fetches each of `paths` (`host/path` with the origin's port put in)
/// and returns what everyone saw.
fn e2guardian_server_run(
    tmp: &Path,
    pages: Vec<(String, Vec<u8>)>,
    paths: &[(&str, &str)],
) -> (Vec<String>, ServerRun) {
    let e2g = E2guardian::start(
        &tmp.join("e2g"),
        &E2gSetup {
            icap_server: true,
            ..E2gSetup::default()
        },
    );
    let icap = e2g.icap.unwrap();
    let origin = Origin::start(pages);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let out = tmp.join("run");
    let mut forward = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), icap);
    forward.drain = Duration::from_secs(2);
    let proxy = rt
        .block_on(start(ProxyPlan {
            observer: ObserverConfig::default(),
            ..ProxyPlan::new(forward, out.clone())
        }))
        .unwrap();
    // What e2guardian's ICAP notes ask of Squid: the REQMOD answer's
    // X-ICAP-E2G (user, filter group, classification) goes with the
    // RESPMOD of the same transaction.
    let squid = Squid::start_with(
        &tmp.join("squid"),
        &SquidIcap {
            icap: proxy.listen,
            reqmod_service: "/request".to_string(),
            respmod_service: "/response".to_string(),
            bypass: false,
            preview_size: 1024,
        },
        "icap_send_client_username on\nadaptation_masterx_shared_names X-ICAP-E2G\n",
    );
    let port = origin.addr.port();
    let urls: Vec<String> = paths
        .iter()
        .map(|(host, path)| format!("http://{host}:{port}{path}"))
        .collect();
    let fetched: Vec<(u16, String)> = urls
        .iter()
        .map(|u| {
            let (status, body) = curl_via(squid.addr, u);
            (status, String::from_utf8_lossy(&body).to_string())
        })
        .collect();
    let access = lines_when(&e2g.dir().join("access.log"), urls.len());
    std::thread::sleep(Duration::from_millis(500));
    let icap_log = squid.icap_log();
    drop(squid);
    drop(e2g);
    rt.block_on(proxy.stop()).unwrap();
    let run = ServerRun {
        fetched,
        access,
        icap_log,
        exchanges: read_jsonl(&out.join("exchanges.jsonl")),
        connections: read_jsonl(&out.join("connections.jsonl")),
    };
    for (u, (s, b)) in urls.iter().zip(&run.fetched) {
        eprintln!("user: {u} {s} {:.100}", b);
    }
    for l in &run.icap_log {
        eprintln!("squid: {l}");
    }
    print_run(&[], &run.access, &[], &run.exchanges, &run.connections);
    (urls, run)
}

/// Warnings and errors on `x` other than e2guardian's unquoted ISTag
/// (said on its own: `istag-invalid`), or an `istag-changed` for it.
fn unexpected_alarms(x: &ExchangeRecord) -> Option<String> {
    let unexpected: Vec<String> = alarms(x)
        .into_iter()
        .filter(|a| !a.starts_with("istag-invalid:"))
        .collect();
    (!unexpected.is_empty() || x.anomalies.iter().any(|a| a.code == "istag-changed"))
        .then(|| format!("{:?} {:?}: {:?}", x.method, x.http_url, x.anomalies))
}

/// e2guardian as the ICAP server behind Squid: every REQMOD and RESPMOD
/// of allowed pages is `clean`, as the user and Squid's icap_log saw it.
/// e2guardian quotes its ISTag only in the first OPTIONS answer: each
/// unquoted one is `istag-invalid`, never an `istag-changed`, and nothing
/// else is raised.
#[test]
fn e2guardian_icap_server_behind_squid_via_icaptap() {
    private_network();
    let tmp = tempfile::tempdir().unwrap();
    let (urls, run) = e2guardian_server_run(
        tmp.path(),
        vec![
            ("/page.txt".to_string(), b"an allowed page\n".to_vec()),
            (
                "/other.txt".to_string(),
                b"another allowed page\n".repeat(100),
            ),
            ("/third.txt".to_string(), b"a third page\n".to_vec()),
        ],
        &[
            ("127.0.0.1", "/page.txt"),
            ("localhost", "/third.txt"),
            ("127.0.0.1", "/other.txt"),
        ],
    );
    let exchanges = &run.exchanges;
    let bodies: [&[u8]; 3] = [
        b"an allowed page\n",
        b"a third page\n",
        &b"another allowed page\n".repeat(100),
    ];
    let mut disagreements = Vec::new();
    for ((url, (status, body)), want) in urls.iter().zip(&run.fetched).zip(bodies) {
        if *status != 200 || body.as_bytes() != want {
            disagreements.push(format!("{url}: the user got {status}"));
        }
        for method in ["REQMOD", "RESPMOD"] {
            let records: Vec<&ExchangeRecord> = exchanges
                .iter()
                .filter(|x| x.method.as_deref() == Some(method) && x.http_url.as_ref() == Some(url))
                .collect();
            match records[..] {
                [x] if x.verdict == "clean" && x.threat.is_none() => {}
                _ => disagreements.push(format!("{url} {method}: icaptap {records:?}")),
            }
        }
    }
    // Squid logged every adaptation as done by the service (ICAP_MOD/200),
    // as many as icaptap recorded.
    let adapted = |method: &str| {
        run.icap_log
            .iter()
            .filter(|l| l.contains(&format!(" {method} ")) && l.contains("ICAP_MOD/200"))
            .count()
    };
    for method in ["REQMOD", "RESPMOD"] {
        let recorded = exchanges
            .iter()
            .filter(|x| x.method.as_deref() == Some(method))
            .count();
        if adapted(method) != urls.len() || recorded != urls.len() {
            disagreements.push(format!(
                "{method}: Squid logged {}, icaptap recorded {recorded}",
                adapted(method)
            ));
        }
    }
    disagreements.extend(exchanges.iter().filter_map(unexpected_alarms));
    // The unquoted tag is said where it is: on e2guardian's answers.
    assert!(exchanges
        .iter()
        .filter(|x| x.method.as_deref() == Some("REQMOD"))
        .all(|x| x.anomalies.iter().any(|a| a.code == "istag-invalid")));
    for c in &run.connections {
        assert!(c.anomalies.is_empty(), "conn {}: {:?}", c.conn, c.anomalies);
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

/// e2guardian as the ICAP server blocking a download its filter group
/// bans (Debian's default list bans `.exe`): the user gets e2guardian's
/// "Access Denied" page instead of the file. icaptap records the
/// exchange that carried the block page `blocked` (a policy block, not an
/// infection: no threat name), with the status the user got; when that
/// is the REQMOD, there is no RESPMOD (the origin was never asked). The
/// allowed download is `clean` both ways, and icaptap records as many
/// adaptations as Squid's icap_log, whose one ICAP_SAT is the block.
#[test]
fn e2guardian_icap_server_blocking_a_banned_download_via_icaptap() {
    private_network();
    let tmp = tempfile::tempdir().unwrap();
    let (urls, run) = e2guardian_server_run(
        tmp.path(),
        vec![
            ("/allowed.txt".to_string(), b"an allowed page\n".to_vec()),
            ("/setup.exe".to_string(), b"MZ a banned download\n".to_vec()),
        ],
        &[("127.0.0.1", "/allowed.txt"), ("127.0.0.1", "/setup.exe")],
    );
    let (allowed, banned) = (&urls[0], &urls[1]);
    let mut disagreements = Vec::new();
    let (status, body) = &run.fetched[0];
    if *status != 200 || body != "an allowed page\n" {
        disagreements.push(format!("{allowed}: the user got {status}"));
    }
    let (denied_status, body) = &run.fetched[1];
    if body.contains("a banned download") || !body.contains("Access Denied") {
        disagreements.push(format!(
            "{banned}: the user got {denied_status} {body:.200}, not the block page"
        ));
    }
    let of = |url: &String, method: &str| -> Vec<&ExchangeRecord> {
        run.exchanges
            .iter()
            .filter(|x| x.method.as_deref() == Some(method) && x.http_url.as_ref() == Some(url))
            .collect()
    };
    for method in ["REQMOD", "RESPMOD"] {
        match of(allowed, method)[..] {
            [x] if x.verdict == "clean" => {}
            ref other => disagreements.push(format!("{allowed} {method}: icaptap {other:?}")),
        }
    }
    let (reqmod, respmod) = (of(banned, "REQMOD"), of(banned, "RESPMOD"));
    let blocked: Vec<&&ExchangeRecord> = reqmod
        .iter()
        .chain(&respmod)
        .filter(|x| x.verdict == "blocked")
        .collect();
    match blocked[..] {
        [x] => {
            if x.threat.is_some() || x.http_status_returned != Some(*denied_status) {
                disagreements.push(format!(
                    "{banned}: icaptap's block says threat {:?}, status {:?}; the user got {denied_status}",
                    x.threat, x.http_status_returned
                ));
            }
            let before_origin = x.method.as_deref() == Some("REQMOD");
            if before_origin && !respmod.is_empty() {
                disagreements.push(format!("{banned}: a RESPMOD after the REQMOD block"));
            }
            // Squid took the block page as the service's own answer
            // (ICAP_SAT: satisfied), for the same method.
            let method = x.method.as_deref().unwrap_or("?");
            let satisfied: Vec<&String> = run
                .icap_log
                .iter()
                .filter(|l| l.contains("ICAP_SAT/"))
                .collect();
            if satisfied.len() != 1 || !satisfied[0].contains(&format!(" {method} ")) {
                disagreements.push(format!("Squid's ICAP_SAT lines: {satisfied:?}"));
            }
        }
        _ => disagreements.push(format!(
            "{banned}: icaptap REQMOD {reqmod:?} RESPMOD {respmod:?}"
        )),
    }
    // Squid's icap_log has one line per adaptation icaptap recorded.
    let squid_lines = run
        .icap_log
        .iter()
        .filter(|l| l.contains(" REQMOD ") || l.contains(" RESPMOD "))
        .count();
    let recorded = run
        .exchanges
        .iter()
        .filter(|x| matches!(x.method.as_deref(), Some("REQMOD" | "RESPMOD")))
        .count();
    if squid_lines != recorded {
        disagreements.push(format!(
            "Squid logged {squid_lines} adaptations, icaptap recorded {recorded}"
        ));
    }
    disagreements.extend(run.exchanges.iter().filter_map(unexpected_alarms));
    for c in &run.connections {
        assert!(c.anomalies.is_empty(), "conn {}: {:?}", c.conn, c.anomalies);
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}
