//! Running a suite: icaptap's sensor (the mock sensor behind the
//! in-process icaptap proxy, which records every exchange) and the web
//! origin are started, each case's downloads go through the vendor's HTTP
//! proxy, then the recorded exchanges and connections are read back and
//! every case is judged. A case whose download could not reach the vendor's
//! proxy is an error, never judged: nothing was tested.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinSet;

use super::download::{fetch, Download};
use super::judge::{self, SensorView};
use super::origin::{clean_path, file_for, Origin};
use super::report::{CaseResult, CheckReport};
use super::suite::{case_dir, Check, DownPolicy, Suite, URL_PREFIX};
use super::CheckError;
use crate::forward::tls::{self_signed::CERT_FILE, tls_server, TlsSetup};
use crate::forward::ForwardConfig;
use crate::jobs::proxy::{start, ProxyPlan, RunningProxy};
use crate::output::records::{ConnectionRecord, ExchangeRecord};
use crate::output::{parse_rfc3339, rfc3339};
use crate::tap::now_micros;
use crate::toolkit::scenario::Scenario;
use crate::toolkit::sensor::{Sensor, SensorHandle, SensorStats};

/// Size of the clean file of the slow and identity cases.
const SMALL_FILE: u64 = 16 * 1024;

/// Connection ids of each restarted part are shifted by this much.
const PART_CONN_SHIFT: u64 = 1_000_000_000;

/// Pause between stopping the sensor and the sensor-down download.
const DOWN_SETTLE: Duration = Duration::from_secs(1);

/// How often `wait_for_options` looks at the sensor's counters.
const OPTIONS_POLL: Duration = Duration::from_millis(100);

/// What the user got in one case, before judging.
enum Seen {
    One(Download, Bytes),
    Many(Vec<(Download, Bytes)>),
    Down {
        download: Download,
        want: Bytes,
        from: u64,
        to: u64,
    },
}

/// A started check: sensor, icaptap proxy in front of it, origin.
#[derive(Debug)]
pub struct CheckEnv {
    suite: Suite,
    scenario: Scenario,
    sensor: Option<SensorHandle>,
    proxy: Option<RunningProxy>,
    /// icaptap's listening address, fixed for the whole run.
    listen: SocketAddr,
    /// Output directories written so far: the run's own, then one per
    /// restart of icaptap after a sensor-down case.
    parts: Vec<PathBuf>,
    origin: Origin,
    out: PathBuf,
    /// The TLS of icaptap's listener (`sensor.tls`): one certificate for
    /// the whole run, kept over the restarts after `sensor-down`.
    tls: TlsSetup,
}

impl CheckEnv {
    /// Starts the sensor on a free loopback port, icaptap on the suite's
    /// sensor address in front of it (recording into `out`), and the
    /// origin.
    pub async fn start(suite: Suite, out: &Path) -> Result<CheckEnv, CheckError> {
        let scenario = suite.scenario()?;
        let tls = if suite.sensor.tls {
            let identity = match (&suite.sensor.tls_cert, &suite.sensor.tls_key) {
                (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
                _ => None,
            };
            let listen = tls_server(identity, Vec::new(), suite.sensor.listen.ip(), None)
                .map_err(|e| CheckError::Tls(Box::new(e)))?;
            TlsSetup {
                listen: Some(std::sync::Arc::new(listen)),
                upstream: None,
            }
        } else {
            TlsSetup::default()
        };
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let sensor = Sensor::bind(loopback, scenario.clone()).await?.spawn();
        let proxy = start_icaptap(suite.sensor.listen, sensor.addr(), out, &tls).await?;
        let listen = proxy.listen;
        let origin =
            Origin::start(suite.origin.listen)
                .await
                .map_err(|source| CheckError::Origin {
                    addr: suite.origin.listen,
                    source,
                })?;
        Ok(CheckEnv {
            suite,
            scenario,
            sensor: Some(sensor),
            proxy: Some(proxy),
            listen,
            parts: vec![out.to_path_buf()],
            origin,
            out: out.to_path_buf(),
            tls,
        })
    }

    /// The certificate icaptap generated for its TLS listener (the file in
    /// the output directory the vendor must trust, and its SHA-256), when
    /// the suite asks for TLS without a certificate of its own.
    pub fn tls_certificate(&self) -> Option<(PathBuf, String)> {
        let listen = self.tls.listen.as_ref()?;
        let cert = listen.generated.as_ref()?;
        Some((self.out.join(CERT_FILE), cert.sha256.clone()))
    }

    /// Where the vendor's ICAP client must connect.
    pub fn icap_listen(&self) -> SocketAddr {
        self.listen
    }

    /// The origin's address.
    pub fn origin_addr(&self) -> SocketAddr {
        self.origin.addr
    }

    /// Waits at most `limit` for the vendor's first OPTIONS request;
    /// returns whether it came.
    pub async fn wait_for_options(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let seen = self
                .sensor
                .as_ref()
                .is_some_and(|s| SensorStats::get(&s.stats().options) > 0);
            if seen {
                return true;
            }
            tokio::time::sleep(OPTIONS_POLL).await;
        }
        false
    }

    /// The vendor configuration the suite expects, in words.
    pub fn vendor_setup(&self) -> String {
        vendor_setup(
            &self.suite,
            self.icap_listen(),
            self.suite.proxy,
            self.tls_certificate(),
        )
    }

    /// Runs every case through the vendor proxy at `proxy` (the suite's
    /// when `None`), stops everything and judges.
    pub async fn run(mut self, proxy: Option<SocketAddr>) -> Result<CheckReport, CheckError> {
        let proxy_addr = proxy.unwrap_or(self.suite.proxy);
        let started_at = rfc3339(now_micros());
        let started = Instant::now();
        let timeout = self.suite.timeout;
        let mut seen = Vec::new();
        for (i, case) in self.suite.cases.clone().iter().enumerate() {
            let dir = case_dir(i, &case.check);
            let t0 = Instant::now();
            let s = self.drive(&case.check, &dir, proxy_addr, timeout).await?;
            seen.push((s, t0.elapsed()));
        }
        let vendor_setup = vendor_setup(
            &self.suite,
            self.icap_listen(),
            proxy_addr,
            self.tls_certificate(),
        );
        if let Some(proxy) = self.proxy.take() {
            proxy.stop().await?;
        }
        if let Some(sensor) = self.sensor.take() {
            sensor.shutdown().await;
        }
        self.origin.stop();
        let (exchanges, connections) = read_parts(&self.parts)?;
        let mut results = Vec::new();
        for (i, (case, (s, elapsed))) in self.suite.cases.iter().zip(seen).enumerate() {
            let dir = case_dir(i, &case.check);
            let (passed, error, detail) = match unreachable(&s) {
                Some(why) => {
                    let reason = format!(
                        "{why}; nothing was tested: start the vendor's HTTP proxy, or give its \
                         address with --proxy (the suite's `proxy`), then run the check again"
                    );
                    (false, Some(reason), format!("not tested: {why}"))
                }
                None => {
                    let (passed, detail) =
                        judge_case(&self.suite, &case.check, &dir, s, &exchanges, &connections);
                    match refusal_unattributable(&case.check, passed, &exchanges) {
                        Some(why) => (false, Some(why.clone()), format!("not tested: {why}")),
                        None => (passed, None, detail),
                    }
                }
            };
            results.push(CaseResult {
                title: case.title(),
                check: case.check.id(),
                passed,
                error,
                detail,
                elapsed,
            });
        }
        Ok(CheckReport {
            suite: self.suite.name.clone(),
            started_at,
            elapsed: started.elapsed(),
            vendor_setup,
            out: self.out.clone(),
            results,
        })
    }

    async fn drive(
        &mut self,
        check: &Check,
        dir: &str,
        proxy: SocketAddr,
        timeout: Duration,
    ) -> Result<Seen, CheckError> {
        let one = |path: String| {
            let url = self.origin.url(&path);
            let want = file_for(&path).unwrap_or_default();
            async move { Seen::One(fetch(proxy, &url, timeout).await, want) }
        };
        Ok(match check {
            Check::CleanIntact { size } | Check::PreviewHonoured { size } => {
                one(clean_path(dir, *size)).await
            }
            Check::InfectedBlocked => one(format!("{dir}eicar.com")).await,
            Check::SensorSlow { .. } | Check::IdentityHeaders { .. } => {
                one(clean_path(dir, SMALL_FILE)).await
            }
            Check::MaxConnections { downloads, .. } => {
                let mut set = JoinSet::new();
                for k in 0..*downloads {
                    // A distinct size per download tells their records apart.
                    let path = clean_path(dir, SMALL_FILE + k as u64);
                    let url = self.origin.url(&path);
                    let want = file_for(&path).unwrap_or_default();
                    set.spawn(async move { (fetch(proxy, &url, timeout).await, want) });
                }
                let mut all = Vec::new();
                while let Some(done) = set.join_next().await {
                    if let Ok(pair) = done {
                        all.push(pair);
                    }
                }
                Seen::Many(all)
            }
            Check::SensorDown { .. } => {
                // The vendor's sensor address must refuse connections, as
                // a dead sensor host does: icaptap in front of the mock
                // sensor stops too (a listener that accepts and then
                // closes is another failure, "server closed", which
                // vendors treat differently).
                let from = now_micros();
                if let Some(p) = self.proxy.take() {
                    p.stop().await?;
                }
                if let Some(sensor) = self.sensor.take() {
                    sensor.shutdown().await;
                }
                // A sensor rarely dies mid-download: let the vendor see its
                // pooled connections close first, as it would in the field.
                tokio::time::sleep(DOWN_SETTLE).await;
                let path = clean_path(dir, SMALL_FILE);
                let url = self.origin.url(&path);
                let download = fetch(proxy, &url, timeout).await;
                let to = now_micros();
                // Later cases need the sensor again, on the same address;
                // icaptap records them into a directory of their own.
                let sensor =
                    Sensor::bind(SocketAddr::from(([127, 0, 0, 1], 0)), self.scenario.clone())
                        .await?
                        .spawn();
                let part = self
                    .out
                    .join(format!("after-sensor-down-{}", self.parts.len()));
                self.proxy =
                    Some(start_icaptap(self.listen, sensor.addr(), &part, &self.tls).await?);
                self.sensor = Some(sensor);
                self.parts.push(part);
                Seen::Down {
                    download,
                    want: file_for(&path).unwrap_or_default(),
                    from,
                    to,
                }
            }
        })
    }
}

async fn start_icaptap(
    listen: SocketAddr,
    sensor: SocketAddr,
    out: &Path,
    tls: &TlsSetup,
) -> Result<RunningProxy, CheckError> {
    let mut forward = ForwardConfig::new(listen, sensor);
    forward.drain = Duration::from_secs(2);
    // The proxy writes a generated certificate into `out`.
    forward.tls = tls.clone();
    Ok(start(ProxyPlan::new(forward, out.to_path_buf())).await?)
}

/// Every part's records; connection ids of later parts are shifted so
/// they stay unique over the run.
fn read_parts(
    parts: &[PathBuf],
) -> Result<(Vec<ExchangeRecord>, Vec<ConnectionRecord>), CheckError> {
    let mut exchanges = Vec::new();
    let mut connections = Vec::new();
    for (i, dir) in parts.iter().enumerate() {
        let shift = i as u64 * PART_CONN_SHIFT;
        let mut x: Vec<ExchangeRecord> = read_jsonl(&dir.join("exchanges.jsonl"))?;
        let mut c: Vec<ConnectionRecord> = read_jsonl(&dir.join("connections.jsonl"))?;
        x.iter_mut().for_each(|r| r.conn += shift);
        c.iter_mut().for_each(|r| r.conn += shift);
        exchanges.append(&mut x);
        connections.append(&mut c);
    }
    Ok((exchanges, connections))
}

/// Why a case's download never reached the vendor's proxy, if one did not.
fn unreachable(seen: &Seen) -> Option<String> {
    match seen {
        Seen::One(d, _) | Seen::Down { download: d, .. } => d.unreachable.clone(),
        Seen::Many(all) => {
            let n = all.len();
            let failed: Vec<&String> = all
                .iter()
                .filter_map(|(d, _)| d.unreachable.as_ref())
                .collect();
            match failed.first() {
                Some(first) if failed.len() == n => Some((*first).clone()),
                Some(first) => Some(format!("{} of {n} downloads: {first}", failed.len())),
                None => None,
            }
        }
    }
}

fn judge_case(
    suite: &Suite,
    check: &Check,
    dir: &str,
    seen: Seen,
    exchanges: &[ExchangeRecord],
    connections: &[ConnectionRecord],
) -> judge::Judgement {
    let view = SensorView::of(exchanges, dir);
    match (check, seen) {
        (Check::CleanIntact { .. }, Seen::One(d, want)) => judge::clean_intact(&d, &want, &view),
        (Check::InfectedBlocked, Seen::One(d, _)) => judge::infected_blocked(&d, &view),
        (Check::SensorSlow { delay }, Seen::One(d, want)) => {
            judge::sensor_slow(&d, &want, *delay, &view)
        }
        (Check::IdentityHeaders { require, want }, Seen::One(..)) => {
            judge::identity_headers(require, want, &view)
        }
        (Check::PreviewHonoured { .. }, Seen::One(d, want)) => {
            judge::preview_honoured(&d, &want, suite.sensor.preview, &view)
        }
        (Check::MaxConnections { .. }, Seen::Many(all)) => {
            let unscanned = all
                .iter()
                .filter(|(d, want)| {
                    d.got(want)
                        && SensorView::of(exchanges, url_path(&d.url))
                            .summary()
                            .ends_with("saw nothing")
                })
                .count();
            let peak = judge::peak_per_service(exchanges, connections);
            judge::max_connections(&all, suite.sensor.max_connections, peak, unscanned)
        }
        (
            Check::SensorDown { expect },
            Seen::Down {
                download,
                want,
                from,
                to,
            },
        ) => {
            let failed = connections
                .iter()
                .filter(|c| c.connect_error.is_some())
                .filter(|c| parse_rfc3339(&c.ts).is_some_and(|t| t >= from && t <= to))
                .count();
            judge::sensor_down(&download, &want, *expect, failed)
        }
        _ => (false, "internal: the case drove another check".to_owned()),
    }
}

/// Why a `sensor-down` case that saw the download refused, as
/// fail-closed expects, tested nothing: the vendor sent no check download
/// to the sensor in the whole run (e.g. its own policy blocks the suite's
/// files before any ICAP), so a refusal while the sensor is down says
/// nothing of what the sensor being down does.
fn refusal_unattributable(
    check: &Check,
    passed: bool,
    exchanges: &[ExchangeRecord],
) -> Option<String> {
    let fail_closed = matches!(
        check,
        Check::SensorDown {
            expect: DownPolicy::FailClosed
        }
    );
    let sensor_asked = exchanges.iter().any(|x| {
        matches!(x.method.as_deref(), Some("REQMOD" | "RESPMOD"))
            && x.http_url
                .as_deref()
                .is_some_and(|u| u.contains(URL_PREFIX))
    });
    (fail_closed && passed && !sensor_asked).then(|| {
        "the download was refused while the sensor was down, but the vendor sent no download of \
         this run to the sensor (the sensor saw nothing in any case), so the refusal may be the \
         vendor's own policy: make the vendor send the suite's downloads to the sensor (its \
         ICAP services, no local blocks of the test files), then run the check again"
            .to_owned()
    })
}

fn url_path(url: &str) -> &str {
    url.split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or(url)
}

/// The vendor configuration a suite expects, in words; `generated` is the
/// certificate icaptap made for its TLS listener (file, SHA-256).
pub fn vendor_setup(
    suite: &Suite,
    icap: SocketAddr,
    proxy: SocketAddr,
    generated: Option<(PathBuf, String)>,
) -> String {
    let scheme = suite.sensor.scheme();
    let mut s = format!(
        "configure the vendor with REQMOD {scheme}://{icap}{} and RESPMOD {scheme}://{icap}{}, \
         preview on, X-Client-IP sent; downloads go through its HTTP proxy at {}",
        suite.sensor.reqmod, suite.sensor.respmod, proxy
    );
    match (suite.sensor.tls, generated, &suite.sensor.tls_cert) {
        (true, Some((file, sha256)), _) => s.push_str(&format!(
            "; ICAP over TLS with a certificate icaptap generated (SHA-256 {sha256}), written to \
             {}: make the vendor trust it (Squid: tls-cafile={} on both icaps:// services)",
            file.display(),
            file.display()
        )),
        (true, None, Some(cert)) => s.push_str(&format!(
            "; ICAP over TLS with the certificate {} (sensor.tls_cert): the vendor must trust its CA",
            cert.display()
        )),
        _ => {}
    }
    s
}

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, CheckError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CheckError::Records {
                path: path.to_path_buf(),
                what: source.to_string(),
            })
        }
    };
    // A last line without its newline was cut by a killed run: leave it
    // out, the records before it are whole.
    let whole = if text.ends_with('\n') {
        text.as_str()
    } else {
        let end = text.rfind('\n').map_or(0, |i| i + 1);
        let cut = &text[end..];
        if !cut.trim().is_empty() && serde_json::from_str::<serde_json::Value>(cut).is_err() {
            tracing::warn!(
                "{}: the last line was cut at byte {end} (icaptap was killed?); read up to it",
                path.display()
            );
            &text[..end]
        } else {
            text.as_str()
        }
    };
    whole
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| CheckError::Records {
                path: path.to_path_buf(),
                what: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}
