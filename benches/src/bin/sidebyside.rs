//! `sidebyside`: icaptap next to the alternatives a user would pick, in one
//! run on 127.0.0.1. For each ICAP server (the bench echo server, then
//! c-icap's `echo`), it starts icaptap with full recording, icaptap with
//! `--no-pcap`, HAProxy (`mode tcp`) and socat as separate processes, and
//! measures them and the direct path round by round, configuration after
//! configuration (A B C A B C ...), so that drift of a shared, noisy machine
//! falls on all of them alike. Results: `target/sidebyside/results.{json,md}`.
//!
//! With `--tls` it measures ICAP over TLS instead: the same servers behind
//! TLS (c-icap's `TlsPort`, the echo server behind rustls), the bench client
//! speaking TLS on keep-alive connections, and as the paths direct TLS,
//! icaptap with `--tls` and `--upstream-tls` (full recording and
//! `--no-pcap`), and HAProxy terminating and re-originating TLS (`bind ...
//! ssl crt`, `server ... ssl`), with certificates the run makes. Results:
//! `target/sidebyside/tls/results.{json,md}`.
//!
//! Run: `cargo run --release -p icaptap-benches --bin sidebyside` (see
//! docs/performance.md). `sidebyside echo-server ADDR` is the echo server
//! process the harness starts.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use icaptap_benches::client::{
    options_request, respmod_request, BenchConnection, Endpoint, TlsDial,
};
use icaptap_benches::host::{self, load_average, machine, target_dir, utc_now, workspace_root};
use icaptap_benches::measure::{self, MeasureError, ThroughputRun};
use icaptap_benches::peers::{self, Peer, PeerError};
use icaptap_benches::procstat::{self, Scheduling};
use icaptap_benches::report::{
    self, ConfigResults, LatencyFigures, MemoryFigures, PerRoundTrip, Results, ServerResults,
    StretchFigure, ThroughputFigures,
};
use icaptap_benches::tls::BenchPki;

/// Body of the latency RESPMOD.
const SMALL_BODY: usize = 4 * 1024;
/// Body of the throughput RESPMOD.
const LARGE_BODY: usize = 1 << 20;
/// Body of the second busy-memory run (memory must not grow with it).
const HUGE_BODY: usize = 8 << 20;
/// Connections of the throughput figure.
const THROUGHPUT_CONNECTIONS: usize = 8;
/// Idle connections of the memory figure.
const IDLE_CONNECTIONS: usize = 1000;
/// Busy connections of the memory figure.
const ACTIVE_CONNECTIONS: usize = 100;
/// Requests c-icap-stretch sends through each path: few, because it
/// paces itself (about 6 requests per second even direct to c-icap here),
/// so it cross-checks that the paths work rather than their speed.
const STRETCH_REQUESTS: u64 = 100;
/// How long one c-icap-stretch run may take before it is stopped.
const STRETCH_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(about = "icaptap side by side with the direct path, HAProxy and socat")]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Rounds; each round measures every configuration once per figure.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Round trips per configuration per round, for each latency figure.
    #[arg(long, default_value_t = 2000)]
    latency_requests: usize,
    /// Seconds per configuration per round for the throughput figure.
    #[arg(long, default_value_t = 2.0)]
    throughput_seconds: f64,
    /// Seconds of each busy-memory run.
    #[arg(long, default_value_t = 3.0)]
    memory_seconds: f64,
    /// Skip c-icap (bench echo server only).
    #[arg(long)]
    no_cicap: bool,
    /// Skip the bench echo server (c-icap only).
    #[arg(long)]
    no_bench_echo: bool,
    /// Do not install missing Debian packages.
    #[arg(long)]
    no_install: bool,
    /// Run the codec and recorder criterion benches first (else their
    /// latest results in target/criterion are reported).
    #[arg(long)]
    criterion: bool,
    /// The icaptap binary (default: built with `cargo build --release -p icaptap`).
    #[arg(long)]
    icaptap: Option<PathBuf>,
    /// Another icaptap binary (e.g. built before a change) to measure with
    /// full recording next to the current one, as `icaptap-full-before`.
    #[arg(long)]
    before: Option<PathBuf>,
    /// Where results go (default: target/sidebyside, with --tls
    /// target/sidebyside/tls).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Measure ICAP over TLS instead: direct TLS, icaptap with --tls and
    /// --upstream-tls, HAProxy terminating and re-originating TLS (no
    /// socat, memory or c-icap-stretch figures).
    #[arg(long)]
    tls: bool,
    /// With --tls: keep the run's files (certificates, configurations, the
    /// peers' logs, icaptap's run directories) in DIR instead of a
    /// temporary directory.
    #[arg(long, value_name = "DIR", requires = "tls")]
    keep_files: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Only load: RESPMOD (or OPTIONS with --body 0 --options) to ADDR,
    /// for profiling a proxy by hand.
    Load {
        /// Proxy or server address.
        addr: SocketAddr,
        /// Body bytes per RESPMOD.
        #[arg(long, default_value_t = LARGE_BODY)]
        body: usize,
        /// Send OPTIONS instead.
        #[arg(long)]
        options: bool,
        /// Connections.
        #[arg(long, default_value_t = THROUGHPUT_CONNECTIONS)]
        connections: usize,
        /// Seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// Serve the bench ICAP echo server on ADDR (started by the harness).
    EchoServer {
        /// Listen address.
        addr: SocketAddr,
        /// Serve over TLS with this certificate chain (PEM).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
}

#[derive(Debug, thiserror::Error)]
enum HarnessError {
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("{config} against {server}: {source}")]
    Measure {
        config: String,
        server: String,
        source: MeasureError,
    },
    #[error("{0}")]
    Setup(String),
    #[error("cannot write the results: {0}")]
    Write(std::io::Error),
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Mode::EchoServer {
        addr,
        tls_cert,
        tls_key,
    }) = &args.mode
    {
        let addr = *addr;
        let served = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => icaptap_benches::echo::run_echo_server_tls(addr, cert, key),
            _ => icaptap_benches::echo::run_echo_server(addr),
        };
        return match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench echo server on {addr}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Mode::Load {
        addr,
        body,
        options,
        connections,
        seconds,
    }) = args.mode
    {
        return load_only(addr, body, options, connections, seconds);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sidebyside: {e}");
            ExitCode::FAILURE
        }
    }
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs the Debian packages of the peers that are missing.
fn ensure_tools(install: bool) -> Result<(), HarnessError> {
    let wanted = [
        ("haproxy", "haproxy"),
        ("socat", "socat"),
        ("c-icap", "c-icap"),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(program, _)| !have(program))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !install {
        return Err(HarnessError::Setup(format!(
            "missing programs from the Debian packages {missing:?}; install them or drop --no-install"
        )));
    }
    eprintln!("sidebyside: installing {missing:?} with apt-get");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut install_args = vec!["install", "-y"];
    install_args.extend(&missing);
    // A fresh machine may have stale package lists: update once, retry.
    let installed = apt(&install_args) || (apt(&["update"]) && apt(&install_args));
    if !installed {
        return Err(HarnessError::Setup(format!(
            "apt-get could not install {missing:?}; install them by hand (as root)"
        )));
    }
    Ok(())
}

/// The release icaptap binary, built if needed.
fn icaptap_binary(args: &Args) -> Result<PathBuf, HarnessError> {
    if let Some(path) = &args.icaptap {
        return Ok(path.clone());
    }
    host::release_icaptap().ok_or_else(|| {
        HarnessError::Setup(
            "`cargo build --release -p icaptap` failed; see its output above".to_owned(),
        )
    })
}

/// One path from the client to the server.
struct Route {
    name: String,
    addr: SocketAddr,
    /// How the client speaks TLS to `addr`, in the TLS section.
    tls: Option<TlsDial>,
    proxy: Option<Peer>,
}

impl Route {
    /// Where the bench client connects.
    fn endpoint(&self) -> Endpoint {
        Endpoint {
            addr: self.addr,
            tls: self.tls.clone(),
        }
    }
}

fn start_paths(
    icaptap: &Path,
    before: Option<&Path>,
    server: &Peer,
    dir: &Path,
) -> Result<Vec<Route>, HarnessError> {
    let up = server.addr;
    let mut paths = vec![Route {
        name: report::DIRECT.to_owned(),
        addr: up,
        tls: None,
        proxy: None,
    }];
    for proxy in [
        peers::start_icaptap(icaptap, up, true, dir)?,
        peers::start_icaptap(icaptap, up, false, dir)?,
        peers::start_haproxy(up, dir)?,
        peers::start_socat(up, dir)?,
    ]
    .into_iter()
    .chain(
        before
            .map(|b| peers::start_icaptap_as("icaptap-full-before", b, up, true, dir))
            .transpose()?,
    ) {
        paths.push(Route {
            name: proxy.name.clone(),
            addr: proxy.addr,
            tls: None,
            proxy: Some(proxy),
        });
    }
    Ok(paths)
}

fn run(args: &Args) -> Result<(), HarnessError> {
    ensure_tools(!args.no_install)?;
    let icaptap = icaptap_binary(args)?;
    if args.tls {
        return run_tls(args, &icaptap);
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| target_dir().join("sidebyside"));
    if args.criterion {
        run_criterion();
    }
    let work = tempfile::tempdir()
        .map_err(|e| HarnessError::Setup(format!("temporary directory: {e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| HarnessError::Setup(format!("tokio runtime: {e}")))?;
    let mut results = Results {
        date: utc_now(),
        machine: machine(),
        ..Results::default()
    };
    for (k, v) in [
        ("rounds", args.rounds.to_string()),
        (
            "latency_requests_per_round",
            args.latency_requests.to_string(),
        ),
        (
            "throughput_seconds_per_round",
            args.throughput_seconds.to_string(),
        ),
        ("throughput_connections", THROUGHPUT_CONNECTIONS.to_string()),
        ("memory_seconds", args.memory_seconds.to_string()),
    ] {
        results.settings.insert(k.to_owned(), v);
    }
    let mut servers: Vec<&str> = Vec::new();
    if !args.no_bench_echo {
        servers.push("bench-echo");
    }
    if !args.no_cicap {
        servers.push("c-icap");
    }
    for name in servers {
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| HarnessError::Setup(format!("{}: {e}", dir.display())))?;
        let server = if name == "c-icap" {
            peers::start_cicap(&dir)?
        } else {
            peers::start_bench_echo(&dir)?
        };
        eprintln!("sidebyside: server {name} on {}", server.addr);
        let paths = start_paths(&icaptap, args.before.as_deref(), &server, &dir)?;
        let mut table = match runtime.block_on(compare(args, name, &server, &paths, true)) {
            Ok(table) => table,
            Err(e) => {
                // One server failing must not lose the other's figures.
                eprintln!("sidebyside: {name} left out: {e}");
                results.failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        drop(paths);
        if name == "bench-echo" {
            // Fresh proxies: a memory figure must not inherit what the
            // allocator kept from the throughput runs.
            let mem_dir = dir.join("memory");
            std::fs::create_dir_all(&mem_dir)
                .map_err(|e| HarnessError::Setup(format!("{}: {e}", mem_dir.display())))?;
            let paths = start_paths(&icaptap, args.before.as_deref(), &server, &mem_dir)?;
            for path in &paths {
                let Some(proxy) = &path.proxy else { continue };
                eprintln!("sidebyside: memory of {}", path.name);
                let m = runtime
                    .block_on(memory(args, server.addr, path.addr, proxy.pid()))
                    .map_err(|source| HarnessError::Measure {
                        config: path.name.clone(),
                        server: name.to_owned(),
                        source,
                    })?;
                if let Some(c) = table.configs.iter_mut().find(|c| c.name == path.name) {
                    c.memory = Some(m);
                }
            }
        } else if have("c-icap-stretch") {
            results.stretch = stretch(&server, &paths_for_stretch(&icaptap, &server, &dir)?);
        }
        results.targets.extend(table.check_targets());
        results.servers.push(table);
        // Written after each server, so an interrupted run keeps its figures.
        results.write(&out).map_err(HarnessError::Write)?;
    }
    results.criterion = report::read_criterion(&target_dir().join("criterion"));
    results.machine.load_after = load_average();
    results.write(&out).map_err(HarnessError::Write)?;
    println!("{}", results.markdown());
    eprintln!("sidebyside: results in {}", out.display());
    Ok(())
}

/// The TLS section: every server behind TLS, each TLS path in front of it,
/// the same latency and throughput figures as the plain section.
fn run_tls(args: &Args, icaptap: &Path) -> Result<(), HarnessError> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| target_dir().join("sidebyside").join("tls"));
    let temporary;
    let work: &Path = match &args.keep_files {
        Some(dir) => dir,
        None => {
            temporary = tempfile::tempdir()
                .map_err(|e| HarnessError::Setup(format!("temporary directory: {e}")))?;
            temporary.path()
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| HarnessError::Setup(format!("tokio runtime: {e}")))?;
    let pki = BenchPki::make(&work.join("pki")).map_err(|e| HarnessError::Setup(e.to_string()))?;
    let dial = pki
        .client()
        .map_err(|e| HarnessError::Setup(e.to_string()))?;
    let mut results = Results {
        date: utc_now(),
        machine: machine(),
        ..Results::default()
    };
    for (k, v) in [
        ("mode", "ICAP over TLS".to_owned()),
        ("rounds", args.rounds.to_string()),
        (
            "latency_requests_per_round",
            args.latency_requests.to_string(),
        ),
        (
            "throughput_seconds_per_round",
            args.throughput_seconds.to_string(),
        ),
        ("throughput_connections", THROUGHPUT_CONNECTIONS.to_string()),
    ] {
        results.settings.insert(k.to_owned(), v);
    }
    let mut servers: Vec<&str> = Vec::new();
    if !args.no_bench_echo {
        servers.push("bench-echo");
    }
    if !args.no_cicap {
        servers.push("c-icap");
    }
    for name in servers {
        let label = format!("{name} over TLS");
        let dir = work.join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| HarnessError::Setup(format!("{}: {e}", dir.display())))?;
        let server = if name == "c-icap" {
            peers::start_cicap_tls(&dir, &pki)?
        } else {
            peers::start_bench_echo_tls(&dir, &pki)?
        };
        eprintln!("sidebyside: server {label} on {}", server.addr);
        let up = server.addr;
        let mut paths = vec![Route {
            name: report::DIRECT.to_owned(),
            addr: up,
            tls: Some(dial.clone()),
            proxy: None,
        }];
        for proxy in [
            peers::start_icaptap_tls(icaptap, up, true, &pki, &dir)?,
            peers::start_icaptap_tls(icaptap, up, false, &pki, &dir)?,
            peers::start_haproxy_tls(up, &pki, &dir)?,
        ] {
            paths.push(Route {
                name: proxy.name.clone(),
                addr: proxy.addr,
                tls: Some(dial.clone()),
                proxy: Some(proxy),
            });
        }
        // What the client leg negotiates on each path, for the report.
        let mut negotiated: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for path in &paths {
            let tls = runtime
                .block_on(BenchConnection::open(&path.endpoint()))
                .map(|c| c.tls().unwrap_or("plain").to_owned())
                .map_err(|e| HarnessError::Setup(format!("{label} via {}: {e}", path.name)))?;
            negotiated.entry(tls).or_default().push(&path.name);
        }
        let seen: Vec<String> = negotiated
            .iter()
            .map(|(tls, paths)| format!("{tls} ({})", paths.join(" ")))
            .collect();
        results
            .settings
            .insert(format!("client_tls_{name}"), seen.join("; "));
        // c-icap 0.5.10's TlsPort closes connections in the middle of 1 MiB
        // answers under the throughput load (direct as well as through every
        // proxy): the throughput figure is the bench echo server's only.
        let with_throughput = name != "c-icap";
        if !with_throughput {
            results.settings.insert(
                "throughput_c-icap".to_owned(),
                "not measured (c-icap's TlsPort closes connections mid-answer under 8 x 1 MiB)"
                    .to_owned(),
            );
        }
        match runtime.block_on(compare(args, &label, &server, &paths, with_throughput)) {
            Ok(table) => results.servers.push(table),
            Err(e) => {
                eprintln!("sidebyside: {label} left out: {e}");
                results.failures.push(format!("{label}: {e}"));
            }
        }
        results.write(&out).map_err(HarnessError::Write)?;
    }
    results.machine.load_after = load_average();
    results.write(&out).map_err(HarnessError::Write)?;
    println!("{}", results.markdown());
    eprintln!("sidebyside: results in {}", out.display());
    Ok(())
}

/// Moves every thread of `pids`, and of their child processes (c-icap's
/// and socat's workers), to the CPUs in `cpus` (taskset's list syntax).
fn pin(pids: &[u32], cpus: &str) -> Result<(), HarnessError> {
    let mut all: Vec<u32> = pids.to_vec();
    // Children, found by their parent in /proc/PID/stat (field 4).
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // The command name is in parentheses and may hold spaces.
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if parent.is_some_and(|p| pids.contains(&p)) {
                all.push(pid);
            }
        }
    }
    for pid in all {
        let status = Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| HarnessError::Setup(format!("taskset (util-linux): {e}")))?;
        // A child that exited meanwhile is not an error.
        if !status.success() && std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(HarnessError::Setup(format!(
                "taskset could not move process {pid} to CPUs {cpus}"
            )));
        }
    }
    Ok(())
}

/// Latency and throughput (unless `with_throughput` is off) of every path,
/// alternating paths in each round.
async fn compare(
    args: &Args,
    server_name: &str,
    server_peer: &Peer,
    paths: &[Route],
    with_throughput: bool,
) -> Result<ServerResults, HarnessError> {
    let server = server_peer.addr;
    // Every process of the measurement: this client, the server, the proxies.
    let mut processes = vec![std::process::id(), server_peer.pid()];
    processes.extend(paths.iter().filter_map(|p| p.proxy.as_ref().map(Peer::pid)));
    let all_cpus = format!(
        "0-{}",
        std::thread::available_parallelism().map_or(0, |n| n.get() - 1)
    );
    // The same request bytes on every path: the URI names the server.
    let options = options_request(server);
    let small = respmod_request(server, SMALL_BODY);
    let large = respmod_request(server, LARGE_BODY);
    let new_hist =
        || Histogram::<u64>::new(3).map_err(|e| HarnessError::Setup(format!("histogram: {e}")));
    // Round trips by placement, figure and path.
    const FREE: usize = 0;
    const ONE_CPU: usize = 1;
    const OPTIONS: usize = 0;
    const SMALL: usize = 1;
    let mut latency: Vec<Vec<Vec<Histogram<u64>>>> = Vec::new();
    for _placement in [FREE, ONE_CPU] {
        let mut figures = Vec::new();
        for _figure in [OPTIONS, SMALL] {
            figures.push(
                paths
                    .iter()
                    .map(|_| new_hist())
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
        latency.push(figures);
    }
    // The proxy's thread switches over each figure's runs, and the round
    // trips they were spread over (warm-up and refusals included: the
    // proxy switched for those too).
    let mut switches = vec![vec![vec![(Scheduling::default(), 0u64); paths.len()]; 2]; 2];
    let mut runs: Vec<Vec<ThroughputRun>> = paths.iter().map(|_| Vec::new()).collect();
    let mut refused = vec![[0u64; 2]; paths.len()];
    let fail = |path: &Route| {
        let config = path.name.clone();
        let server = server_name.to_owned();
        move |source| HarnessError::Measure {
            config,
            server,
            source,
        }
    };
    // Warm-up: connections, caches, c-icap's threads.
    for path in paths {
        let mut scratch = new_hist()?;
        measure::latency(
            path.endpoint(),
            &small,
            SMALL_BODY as u64,
            200,
            &mut scratch,
        )
        .await
        .map_err(fail(path))?;
    }
    let seconds = Duration::from_secs_f64(args.throughput_seconds);
    // Rotating the order each round: no path always runs right after the
    // same neighbour.
    let order_of = |round: usize| -> Vec<usize> {
        (0..paths.len())
            .map(|i| (i + round) % paths.len())
            .collect()
    };
    // Every latency round first, then every throughput round: once c-icap
    // has spooled 1 MiB bodies, its `echo` service answers some well-formed
    // requests with `400 Bad request` and closes, which would cut the
    // latency runs short.
    for round in 0..args.rounds {
        let started = Instant::now();
        let order = order_of(round);
        // Where the scheduler puts them, then the same round trips with
        // every process on CPU 0: on this kind of machine (a VM) a wake-up
        // across CPUs costs tens of
        // microseconds, so where the scheduler happens to put client,
        // proxy and server decides the free figures; on one CPU each
        // configuration is charged only for the work it does.
        for (placement, cpus) in [(FREE, None), (ONE_CPU, Some("0"))] {
            if let Some(cpus) = cpus {
                pin(&processes, cpus)?;
            }
            for (figure, request, body) in [(OPTIONS, &options, 0), (SMALL, &small, SMALL_BODY)] {
                for &i in &order {
                    let proxy = paths[i].proxy.as_ref().map(Peer::pid);
                    let before = proxy.and_then(|pid| procstat::scheduling(pid).ok());
                    let refusals = measure::latency(
                        paths[i].endpoint(),
                        request,
                        body as u64,
                        args.latency_requests,
                        &mut latency[placement][figure][i],
                    )
                    .await
                    .map_err(fail(&paths[i]))?;
                    refused[i][figure] += refusals;
                    let after = proxy.and_then(|pid| procstat::scheduling(pid).ok());
                    if let (Some(before), Some(after)) = (before, after) {
                        let (sum, trips) = &mut switches[placement][figure][i];
                        sum.add(&after.since(&before));
                        *trips +=
                            (measure::LATENCY_WARM_UP + args.latency_requests) as u64 + refusals;
                    }
                }
            }
        }
        pin(&processes, &all_cpus)?;
        eprintln!(
            "sidebyside: {server_name}: latency round {}/{} in {:.1} s",
            round + 1,
            args.rounds,
            started.elapsed().as_secs_f64()
        );
    }
    let throughput_rounds = if with_throughput { args.rounds } else { 0 };
    for round in 0..throughput_rounds {
        let started = Instant::now();
        for i in order_of(round) {
            let pid = paths[i].proxy.as_ref().map(Peer::pid);
            let run = measure::throughput(
                paths[i].endpoint(),
                &large,
                LARGE_BODY as u64,
                THROUGHPUT_CONNECTIONS,
                seconds,
                pid,
            )
            .await
            .map_err(fail(&paths[i]))?;
            runs[i].push(run);
        }
        eprintln!(
            "sidebyside: {server_name}: throughput round {}/{} in {:.1} s",
            round + 1,
            args.rounds,
            started.elapsed().as_secs_f64()
        );
    }
    let configs = paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let figures = |placement: usize, figure: usize| {
                let (sum, trips) = &switches[placement][figure][i];
                LatencyFigures {
                    refused: refused[i][figure],
                    per_round_trip: PerRoundTrip::of(sum, *trips),
                    ..LatencyFigures::of(&latency[placement][figure][i])
                }
            };
            ConfigResults {
                name: path.name.clone(),
                options: figures(FREE, OPTIONS),
                respmod_4k: figures(FREE, SMALL),
                options_one_cpu: Some(LatencyFigures {
                    refused: 0,
                    ..figures(ONE_CPU, OPTIONS)
                }),
                respmod_4k_one_cpu: Some(LatencyFigures {
                    refused: 0,
                    ..figures(ONE_CPU, SMALL)
                }),
                throughput: ThroughputFigures::of(&runs[i]),
                memory: None,
            }
        })
        .collect();
    Ok(ServerResults {
        server: server_name.to_owned(),
        configs,
    })
}

/// The memory figures of one fresh proxy.
async fn memory(
    args: &Args,
    server: SocketAddr,
    addr: SocketAddr,
    pid: u32,
) -> Result<MemoryFigures, MeasureError> {
    let proc_err = |source| MeasureError::Proc { pid, source };
    let at_start = icaptap_benches::procstat::resident_bytes(pid).map_err(proc_err)?;
    let idle_1000 = measure::idle_memory(addr, server, pid, IDLE_CONNECTIONS).await?;
    // Let every proxy close the idle connections before the busy runs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seconds = Duration::from_secs_f64(args.memory_seconds);
    let large = respmod_request(server, LARGE_BODY);
    let active_100_1mib = measure::active_memory(
        addr,
        &large,
        LARGE_BODY as u64,
        pid,
        ACTIVE_CONNECTIONS,
        seconds,
    )
    .await?;
    let huge = respmod_request(server, HUGE_BODY);
    let active_100_8mib = measure::active_memory(
        addr,
        &huge,
        HUGE_BODY as u64,
        pid,
        ACTIVE_CONNECTIONS,
        seconds,
    )
    .await?;
    Ok(MemoryFigures {
        at_start,
        idle_1000,
        active_100_1mib,
        active_100_8mib,
    })
}

/// The paths the c-icap-stretch cross-check uses: direct, icaptap with
/// full recording, HAProxy (fresh processes).
fn paths_for_stretch(
    icaptap: &Path,
    server: &Peer,
    dir: &Path,
) -> Result<Vec<Route>, HarnessError> {
    let dir = dir.join("stretch");
    std::fs::create_dir_all(&dir)
        .map_err(|e| HarnessError::Setup(format!("{}: {e}", dir.display())))?;
    let full = peers::start_icaptap(icaptap, server.addr, true, &dir)?;
    let haproxy = peers::start_haproxy(server.addr, &dir)?;
    Ok(vec![
        Route {
            name: report::DIRECT.to_owned(),
            addr: server.addr,
            tls: None,
            proxy: None,
        },
        Route {
            name: full.name.clone(),
            addr: full.addr,
            tls: None,
            proxy: Some(full),
        },
        Route {
            name: haproxy.name.clone(),
            addr: haproxy.addr,
            tls: None,
            proxy: Some(haproxy),
        },
    ])
}

/// Runs c-icap-stretch (4 threads, a 4 KiB body) through each path and
/// times it; a failed run is left out and said so.
fn stretch(server: &Peer, paths: &[Route]) -> Vec<StretchFigure> {
    let body = std::env::temp_dir().join(format!("sidebyside-stretch-{}.bin", std::process::id()));
    let pattern: Vec<u8> = (0..SMALL_BODY).map(|i| b'a' + (i % 26) as u8).collect();
    if let Err(e) = std::fs::write(&body, pattern) {
        eprintln!(
            "sidebyside: c-icap-stretch skipped: cannot write {}: {e}",
            body.display()
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    for path in paths {
        let started = Instant::now();
        let status = Command::new("c-icap-stretch")
            .args([
                "-i",
                &path.addr.ip().to_string(),
                "-p",
                &path.addr.port().to_string(),
            ])
            .args(["-s", "echo", "-m", &STRETCH_REQUESTS.to_string(), "-t", "4"])
            .arg(&body)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|child| wait_at_most(child, STRETCH_TIMEOUT));
        match status {
            Ok(Some(s)) if s.success() => out.push(StretchFigure {
                config: path.name.clone(),
                requests: STRETCH_REQUESTS,
                seconds: started.elapsed().as_secs_f64(),
            }),
            other => eprintln!(
                "sidebyside: c-icap-stretch through {} against {} failed: {other:?}",
                path.name, server.addr
            ),
        }
    }
    let _ = std::fs::remove_file(&body);
    out
}

/// Runs the codec and recorder criterion benches, so their figures are
/// from this machine now.
fn run_criterion() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    for bench in [
        vec!["bench", "-p", "icap-codec", "--bench", "decoder"],
        vec![
            "bench",
            "-p",
            "icaptap-benches",
            "--bench",
            "recorder",
            "--",
            "--warm-up-time",
            "1",
            "--measurement-time",
            "5",
        ],
    ] {
        let ok = Command::new(&cargo)
            .args(&bench)
            .current_dir(workspace_root())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "sidebyside: `cargo {}` failed; its figures are the older ones",
                bench.join(" ")
            );
        }
    }
}

/// `sidebyside load`: the throughput client alone, printing what it did.
fn load_only(
    addr: SocketAddr,
    body: usize,
    options: bool,
    connections: usize,
    seconds: f64,
) -> ExitCode {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("sidebyside load: cannot start a tokio runtime");
        return ExitCode::FAILURE;
    };
    let (request, expected) = if options {
        (options_request(addr), 0)
    } else {
        (respmod_request(addr, body), body as u64)
    };
    let duration = Duration::from_secs_f64(seconds);
    match runtime.block_on(measure::throughput(
        addr,
        &request,
        expected,
        connections,
        duration,
        None,
    )) {
        Ok(run) => {
            println!(
                "{} round trips in {:.2} s: {:.0} per second, {:.1} MiB/s",
                run.requests,
                run.seconds,
                run.requests as f64 / run.seconds,
                run.bytes_per_second() / (1u64 << 20) as f64
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sidebyside load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for `child` at most `limit`; kills it after that (`None`).
fn wait_at_most(
    mut child: std::process::Child,
    limit: Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill()?;
    child.wait()?;
    Ok(None)
}
