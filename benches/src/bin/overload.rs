//! `overload`: how far icaptap's records and capture stay whole under load,
//! side by side with tcpdump on the direct path, in one run on 127.0.0.1.
//!
//! For each body size (4 KiB, 1 MiB) it climbs a ladder of offered RESPMOD
//! rates (open loop: [`icaptap_benches::openloop`]); at each rate it runs
//! one step on (a) the direct path, client to ICAP server, with `tcpdump -i
//! lo -nn -s 0 -B 65536 -U -w FILE 'tcp port P'` capturing, and (b) client to
//! the release `icaptap proxy` (full recording, default queues) to the same
//! server. icaptap's records are judged request by request
//! ([`icaptap_benches::judge`]); both captures are measured the same way:
//! `icaptap analyze` on the file, and the answered requests whose exchange
//! it finds whole (`clean`, decoded completely). Results:
//! `target/overload/results.{json,md}`.
//!
//! Run: `cargo run --release -p icaptap-benches --bin overload` (as root,
//! for tcpdump; see docs/performance.md). `overload echo-server ADDR` is
//! the echo server process the harness starts.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use clap::{Parser, Subcommand};
use icaptap_benches::host::{self, load_average, machine, target_dir, utc_now};
use icaptap_benches::judge::{self, Judged};
use icaptap_benches::openloop::{self, Outcome, Step};
use icaptap_benches::peers::{self, Peer, PeerError};
use icaptap_benches::report::Machine;
use icaptap_benches::tcpdump::{self, Tcpdump, TcpdumpCounts, TcpdumpError};
use serde::Serialize;
use serde_json::Value;

#[path = "overload/table.rs"]
mod table;

/// How long tcpdump is left to write what it still holds after a step's
/// last answer, before it is stopped (it loses what it has not written at
/// SIGINT; icaptap drains its queues on SIGTERM by itself).
const CAPTURE_SETTLE: Duration = Duration::from_secs(1);

/// How long icaptap may take to finish its files after SIGTERM.
const ICAPTAP_STOP: Duration = Duration::from_secs(120);

#[derive(Debug, Parser)]
#[command(about = "icaptap's records and capture under overload, next to tcpdump")]
pub struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Seconds each step starts requests for.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Seconds after a step's last scheduled start for its last answers.
    #[arg(long, default_value_t = 5.0)]
    grace: f64,
    /// Body sizes to run, of `4k` and `1m`.
    #[arg(long, value_delimiter = ',', default_value = "4k,1m")]
    sizes: Vec<String>,
    /// Offered rates (requests/s) for 4 KiB bodies.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "500,1000,2000,4000,8000,16000"
    )]
    rates_4k: Vec<f64>,
    /// Offered rates (requests/s) for 1 MiB bodies.
    #[arg(long, value_delimiter = ',', default_value = "25,50,75,100,200,400")]
    rates_1m: Vec<f64>,
    /// Keep-alive connections of the client's pool.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// ICAP servers, of `bench-echo` and `c-icap` (its `echo` service).
    #[arg(long, value_delimiter = ',', default_value = "bench-echo,c-icap")]
    servers: Vec<String>,
    /// The icaptap binary (default: built with `cargo build --release -p icaptap`).
    #[arg(long)]
    icaptap: Option<PathBuf>,
    /// Where results go (default: target/overload).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep every step's captures and icaptap output (under OUT/work).
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Serve the bench ICAP echo server on ADDR (started by the harness).
    EchoServer {
        /// Listen address.
        addr: SocketAddr,
    },
}

#[derive(Debug, thiserror::Error)]
enum HarnessError {
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error(transparent)]
    Tcpdump(#[from] TcpdumpError),
    #[error("{0}")]
    Setup(String),
    #[error("cannot write {0:?}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// One capture measured by `icaptap analyze`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CaptureFigures {
    /// Bytes of the capture file(s).
    pub file_bytes: u64,
    /// Answered requests whose exchange the capture holds whole (for
    /// icaptap's capture: in both legs).
    pub complete: u64,
    /// The judgement of each leg's records (one leg for tcpdump).
    pub legs: Vec<(String, Judged)>,
    /// `evidence.complete` of analyze's summary.
    pub analyze_evidence_complete: Option<bool>,
}

/// The direct path's step.
#[derive(Clone, Debug, Serialize)]
pub struct DirectStep {
    /// What the client saw.
    pub client: Outcome,
    /// tcpdump's exit counts.
    pub tcpdump: TcpdumpCounts,
    /// tcpdump's capture, measured by `icaptap analyze`.
    pub capture: CaptureFigures,
}

/// icaptap's step.
#[derive(Clone, Debug, Serialize)]
pub struct IcaptapStep {
    /// What the client saw.
    pub client: Outcome,
    /// icaptap's own records, judged.
    pub records: Judged,
    /// From summary.json: `exchanges`, `drops`, `evidence`,
    /// `incomplete_exchanges`, `unobserved_bytes`, `forwarded`.
    pub summary: Value,
    /// icaptap's capture, measured by `icaptap analyze`.
    pub capture: CaptureFigures,
    /// Whether icaptap exited by itself after SIGTERM, and how.
    pub exit: String,
}

/// One rung of the ladder.
#[derive(Clone, Debug, Serialize)]
pub struct Rung {
    /// Offered requests per second.
    pub rate: f64,
    /// 1-minute load average just before the rung.
    pub load: f64,
    /// Direct path with tcpdump.
    pub direct: DirectStep,
    /// Through icaptap.
    pub icaptap: IcaptapStep,
}

/// One server and body size.
#[derive(Clone, Debug, Serialize)]
pub struct Ladder {
    /// `bench-echo` or `c-icap`.
    pub server: String,
    /// Body bytes.
    pub body: usize,
    /// The rungs, slowest first.
    pub rungs: Vec<Rung>,
}

/// A whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Results {
    /// UTC date and time of the start.
    pub date: String,
    /// Where.
    pub machine: Machine,
    /// The command line.
    pub command: String,
    /// The tcpdump command (port and file vary).
    pub tcpdump: String,
    /// Settings.
    pub seconds: f64,
    /// Client connections.
    pub connections: usize,
    /// Every ladder.
    pub ladders: Vec<Ladder>,
    /// Records false or incomplete at a rate forwarding sustained.
    pub findings: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Mode::EchoServer { addr }) = args.mode {
        return match icaptap_benches::echo::run_echo_server(addr) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench echo server on {addr}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&args) {
        Ok(findings) if findings.is_empty() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(3),
        Err(e) => {
            eprintln!("overload: {e}");
            ExitCode::FAILURE
        }
    }
}

fn body_size(name: &str) -> Result<usize, HarnessError> {
    match name {
        "4k" => Ok(4 * 1024),
        "1m" => Ok(1 << 20),
        other => Err(HarnessError::Setup(format!(
            "unknown body size `{other}`: give 4k or 1m"
        ))),
    }
}

fn run(args: &Args) -> Result<Vec<String>, HarnessError> {
    let icaptap = match &args.icaptap {
        Some(p) => p.clone(),
        None => host::release_icaptap().ok_or_else(|| {
            HarnessError::Setup("`cargo build --release -p icaptap` failed".to_owned())
        })?,
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| target_dir().join("overload"));
    let work = out.join("work");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| HarnessError::Write(work.clone(), e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| HarnessError::Setup(format!("tokio runtime: {e}")))?;
    let mut results = Results {
        date: utc_now(),
        machine: machine(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        tcpdump: tcpdump::command_line(0, Path::new("FILE")).replace("port 0", "port P"),
        seconds: args.seconds,
        connections: args.connections,
        ladders: Vec::new(),
        findings: Vec::new(),
    };
    for server_name in &args.servers {
        let server = match server_name.as_str() {
            "bench-echo" => peers::start_bench_echo(&work)?,
            "c-icap" => peers::start_cicap(&work)?,
            other => {
                return Err(HarnessError::Setup(format!(
                    "unknown server `{other}`: give bench-echo or c-icap"
                )))
            }
        };
        for size in &args.sizes {
            let body = body_size(size)?;
            let rates = if body > 4096 {
                &args.rates_1m
            } else {
                &args.rates_4k
            };
            let mut ladder = Ladder {
                server: server_name.clone(),
                body,
                rungs: Vec::new(),
            };
            for &rate in rates {
                let load = load_average();
                eprintln!("overload: {server_name} {size} at {rate}/s (load {load:.2})");
                let tag = |path: &str| format!("{server_name}-{size}-{rate}-{path}");
                let step = |target: SocketAddr, tag: String| Step {
                    target,
                    service: server.addr,
                    body,
                    rate,
                    duration: Duration::from_secs_f64(args.seconds),
                    connections: args.connections,
                    grace: Duration::from_secs_f64(args.grace),
                    tag,
                };
                let dir = work.join(tag("step"));
                fs::create_dir_all(&dir).map_err(|e| HarnessError::Write(dir.clone(), e))?;
                let direct = direct_step(
                    &runtime,
                    &icaptap,
                    &server,
                    step(server.addr, tag("direct")),
                    &dir,
                )?;
                let through = icaptap_step(&runtime, &icaptap, &server, &dir, |addr| {
                    step(addr, tag("icaptap"))
                })?;
                eprintln!("  {}", table::one_line(&direct, &through));
                if !args.keep {
                    let _ = fs::remove_dir_all(&dir);
                }
                ladder.rungs.push(Rung {
                    rate,
                    load,
                    direct,
                    icaptap: through,
                });
            }
            results.findings.extend(table::findings(&ladder, args));
            results.ladders.push(ladder);
        }
        drop(server);
    }
    results.machine.load_after = load_average();
    fs::create_dir_all(&out).map_err(|e| HarnessError::Write(out.clone(), e))?;
    let json = serde_json::to_string_pretty(&results).unwrap_or_default();
    let md = table::markdown(&results);
    for (name, text) in [("results.json", json), ("results.md", md.clone())] {
        let path = out.join(name);
        fs::write(&path, text).map_err(|e| HarnessError::Write(path, e))?;
    }
    println!("{md}");
    eprintln!("overload: results in {}", out.display());
    if !args.keep {
        let _ = fs::remove_dir_all(&work);
    }
    Ok(results.findings)
}

/// Direct path with tcpdump capturing the server's port.
fn direct_step(
    runtime: &tokio::runtime::Runtime,
    icaptap: &Path,
    server: &Peer,
    step: Step,
    dir: &Path,
) -> Result<DirectStep, HarnessError> {
    let file = dir.join("tcpdump.pcap");
    let dump = Tcpdump::start(server.addr.port(), &file)?;
    let client = runtime.block_on(openloop::run(&step));
    std::thread::sleep(CAPTURE_SETTLE);
    let counts = dump.stop()?;
    let capture = analyze(
        icaptap,
        std::slice::from_ref(&file),
        &[server.addr.port()],
        &dir.join("tcpdump-analyze"),
        &client,
        &step,
        None,
    );
    Ok(DirectStep {
        client,
        tcpdump: counts,
        capture,
    })
}

/// Through a fresh `icaptap proxy` (its own output directory per step).
fn icaptap_step(
    runtime: &tokio::runtime::Runtime,
    icaptap: &Path,
    server: &Peer,
    dir: &Path,
    step: impl Fn(SocketAddr) -> Step,
) -> Result<IcaptapStep, HarnessError> {
    let run_dir = dir.join("icaptap-out");
    let proxy = peers::start_icaptap_with("icaptap", icaptap, server.addr, &run_dir, &[], dir)?;
    let step = step(proxy.addr);
    let listen = proxy.addr;
    let client = runtime.block_on(openloop::run(&step));
    let exit = match proxy.stop(ICAPTAP_STOP) {
        Ok(Some(status)) => format!("{status}"),
        Ok(None) => format!("killed after {ICAPTAP_STOP:?}"),
        Err(e) => format!("wait failed: {e}"),
    };
    let records = judge::read_records(&run_dir.join("exchanges.jsonl"));
    let records = judge::judge(&records, &client.fates, &step.tag, step.body as u64);
    let summary_text = fs::read_to_string(run_dir.join("summary.json")).unwrap_or_default();
    let full: Value = serde_json::from_str(&summary_text).unwrap_or(Value::Null);
    let mut summary = serde_json::Map::new();
    for key in [
        "exchanges",
        "by_verdict",
        "drops",
        "evidence",
        "incomplete_exchanges",
        "unobserved_bytes",
        "forwarded",
    ] {
        summary.insert(
            key.to_owned(),
            full.get(key).cloned().unwrap_or(Value::Null),
        );
    }
    let files = capture_files(&run_dir);
    let capture = analyze(
        icaptap,
        &files,
        &[server.addr.port(), listen.port()],
        &dir.join("icaptap-analyze"),
        &client,
        &step,
        Some(server.addr),
    );
    Ok(IcaptapStep {
        client,
        records,
        summary: Value::Object(summary),
        capture,
        exit,
    })
}

/// icaptap's capture files in a run directory, in write order.
fn capture_files(run_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(run_dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("capture") && n.contains(".pcap"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// `icaptap analyze` on `files`, its records judged per leg. With
/// `sensor`, the capture is icaptap's (two legs, both must hold an
/// exchange for it to count); without, tcpdump's (one connection per
/// client connection).
fn analyze(
    icaptap: &Path,
    files: &[PathBuf],
    ports: &[u16],
    out: &Path,
    client: &Outcome,
    step: &Step,
    sensor: Option<SocketAddr>,
) -> CaptureFigures {
    let file_bytes = files
        .iter()
        .filter_map(|f| fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let mut cmd = Command::new(icaptap);
    cmd.arg("analyze").args(files);
    for p in ports {
        cmd.arg("--port").arg(p.to_string());
    }
    cmd.arg("--out").arg(out).arg("--no-progress");
    let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
    let records = judge::read_records(&out.join("exchanges.jsonl"));
    let summary: Value = fs::read_to_string(out.join("summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let mut legs: Vec<(String, Judged)> = judge::by_server(records)
        .into_iter()
        .map(|(server, recs)| {
            let name = match sensor {
                Some(s) if s.to_string() == server => format!("sensor leg ({server})"),
                Some(_) => format!("client leg ({server})"),
                None => server.clone(),
            };
            (
                name,
                judge::judge(&recs, &client.fates, &step.tag, step.body as u64),
            )
        })
        .filter(|(_, j)| j.records > 0)
        .collect();
    let wanted_legs = if sensor.is_some() { 2 } else { 1 };
    let complete = if legs.len() >= wanted_legs {
        legs.iter().map(|(_, j)| j.clean_true).min().unwrap_or(0)
    } else {
        0
    };
    legs.sort_by(|a, b| a.0.cmp(&b.0));
    CaptureFigures {
        file_bytes,
        complete,
        legs,
        analyze_evidence_complete: summary
            .get("evidence")
            .and_then(|e| e.get("complete"))
            .and_then(Value::as_bool),
    }
}
