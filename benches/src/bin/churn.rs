//! Churn: how a normal ICAP client fares while other clients open and
//! close connections as fast as they can, direct to c-icap and through
//! `icaptap proxy`, side by side in one run. Not a timed test; see
//! docs/performance.md for figures.
//!
//! ```sh
//! cargo build --release -p icaptap --bin icaptap -p icaptap-benches --bin churn
//! target/release/churn --secs 10 --churners 4
//! ```
//!
//! The normal client sends one OPTIONS per new connection (connect, send,
//! read the answer head, close) every 10 ms and its latency includes the
//! connect: a connection stuck in a full accept queue shows as a SYN
//! retransmission (1 s). The churners connect and close without sending.
//! After each run the sockets left in CLOSE_WAIT on the path's ports are
//! counted (`ss`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use icaptap_benches::client::options_request;
use icaptap_benches::peers::{start_cicap, start_icaptap};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser, Debug)]
struct Args {
    /// Seconds of churn per path.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Threads that connect and close in a loop.
    #[arg(long, default_value_t = 4)]
    churners: usize,
    /// The icaptap binary (default: the one beside this program).
    #[arg(long)]
    icaptap: Option<PathBuf>,
}

/// One path's figures.
struct Figures {
    path: &'static str,
    churn_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    failed: u64,
    close_wait: usize,
}

fn main() -> Result<(), Error> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let icaptap = match args.icaptap.clone() {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .ok_or("no directory")?
            .join("icaptap"),
    };
    let cicap = start_cicap(tmp.path())?;
    let mut rows = vec![measure("direct", cicap.addr, cicap.addr, &args)?];
    let proxy = start_icaptap(&icaptap, cicap.addr, false, tmp.path())?;
    rows.push(measure("icaptap", proxy.addr, cicap.addr, &args)?);
    drop(proxy);
    println!(
        "| path | churn connections/s | normal client p50 | p99 | max | failed | CLOSE_WAIT after |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {} | {} |",
            r.path, r.churn_per_sec, r.p50_ms, r.p99_ms, r.max_ms, r.failed, r.close_wait
        );
    }
    Ok(())
}

fn measure(
    path: &'static str,
    addr: SocketAddr,
    sensor: SocketAddr,
    args: &Args,
) -> Result<Figures, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicU64::new(0));
    let churners: Vec<_> = (0..args.churners)
        .map(|_| {
            let stop = stop.clone();
            let churned = churned.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
                        drop(s);
                        churned.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut failed = 0;
    let request = options_request(sensor);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(args.secs) {
        let t = Instant::now();
        match exchange(addr, &request) {
            Ok(()) => hist.record(t.elapsed().as_micros().max(1) as u64)?,
            Err(_) => failed += 1,
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for c in churners {
        let _ = c.join();
    }
    // Let closes finish before counting what is stuck.
    std::thread::sleep(Duration::from_secs(1));
    let close_wait = close_wait_count(&[addr.port(), sensor.port()]);
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(Figures {
        path,
        churn_per_sec: churned.load(Ordering::Relaxed) as f64 / elapsed,
        p50_ms: ms(hist.value_at_quantile(0.5)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        max_ms: ms(hist.max()),
        failed,
        close_wait,
    })
}

/// One OPTIONS on a fresh connection, to the end of the answer's head.
fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    s.write_all(request)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

/// Sockets in CLOSE_WAIT on any of `ports` (local side), from `ss`.
fn close_wait_count(ports: &[u16]) -> usize {
    let out = Command::new("ss")
        .args(["-Htan", "state", "close-wait"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter(|l| {
            l.split_whitespace()
                .any(|f| ports.iter().any(|p| f.ends_with(&format!(":{p}"))))
        })
        .count()
}
