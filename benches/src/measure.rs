//! The measurements of one configuration (a client, maybe a proxy, a
//! server): round-trip latency on one keep-alive connection, throughput
//! over several connections with the proxy's CPU time, and the proxy's
//! resident memory with many idle or busy connections. Each runs on the
//! caller's (single-threaded) runtime; the caller alternates configurations.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use crate::client::{options_request, BenchClientError, BenchConnection, Endpoint};
use crate::procstat;

/// Round trips at the start of each latency run that are not recorded:
/// they pay for connecting and for cold caches.
pub const LATENCY_WARM_UP: usize = 20;

/// `400` answers a latency run tolerates (and counts)
/// before it fails.
pub const MAX_REFUSED: u64 = 50;

/// How often resident memory is sampled during a busy run.
pub const MEMORY_SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// How long idle connections sit before memory is read, so that every
/// proxy has finished setting them up.
pub const IDLE_SETTLE: Duration = Duration::from_secs(1);

/// A failure of one measurement.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// The client failed.
    #[error(transparent)]
    Client(#[from] BenchClientError),
    /// `/proc` could not be read for the process under test.
    #[error("reading /proc for pid {pid} failed: {source}; did the proxy exit?")]
    Proc {
        /// The process.
        pid: u32,
        /// What the system said.
        source: std::io::Error,
    },
    /// The answer was not the expected echo.
    #[error(
        "{what}: expected ICAP 200 echoing {expected} body bytes, got status {status} with {got}"
    )]
    WrongAnswer {
        /// Which measurement.
        what: &'static str,
        /// Expected body bytes.
        expected: u64,
        /// Status received.
        status: u16,
        /// Body bytes received.
        got: u64,
    },
}

fn check(
    what: &'static str,
    trip: &crate::client::RoundTrip,
    body: u64,
) -> Result<(), MeasureError> {
    if trip.status == 200 && trip.body_bytes == body {
        Ok(())
    } else {
        Err(MeasureError::WrongAnswer {
            what,
            expected: body,
            status: trip.status,
            got: trip.body_bytes,
        })
    }
}

/// Sends `count` requests one after another on one keep-alive connection
/// (reconnecting only if the server closes) and records each round trip,
/// in microseconds, into `hist`. Returns how many answers were a server's
/// `400` refusal (see [`MAX_REFUSED`]). `to` is an address, or an
/// [`Endpoint`] that says TLS (its handshake is not timed).
pub async fn latency(
    to: impl Into<Endpoint>,
    request: &Bytes,
    body: u64,
    count: usize,
    hist: &mut Histogram<u64>,
) -> Result<u64, MeasureError> {
    let to = to.into();
    let mut conn = BenchConnection::open(&to).await?;
    let mut refused = 0u64;
    for i in 0..LATENCY_WARM_UP + count {
        let trip = conn.round_trip(request).await?;
        // c-icap now and then answers a well-formed request with `400` (seen
        // direct, without any proxy, usually with `Connection: close`):
        // counted, not timed, and the run goes on on a new connection.
        if trip.status == 400 && refused < MAX_REFUSED {
            refused += 1;
            conn = BenchConnection::open(&to).await?;
            continue;
        }
        check("latency", &trip, body)?;
        if i >= LATENCY_WARM_UP {
            let us = u64::try_from(trip.elapsed.as_micros()).unwrap_or(u64::MAX);
            hist.saturating_record(us.max(1));
        }
        if trip.closing {
            conn = BenchConnection::open(&to).await?;
        }
    }
    Ok(refused)
}

/// What a throughput run measured.
#[derive(Clone, Copy, Debug)]
pub struct ThroughputRun {
    /// Bytes through the path, both directions (requests written plus
    /// answers read by the client).
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
    /// CPU seconds the proxy process used, if there is one.
    pub proxy_cpu_seconds: Option<f64>,
    /// Round trips completed.
    pub requests: u64,
}

impl ThroughputRun {
    /// Bytes per second.
    pub fn bytes_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Proxy CPU seconds per GiB through the path.
    pub fn cpu_seconds_per_gib(&self) -> Option<f64> {
        let gib = self.bytes as f64 / (1u64 << 30) as f64;
        self.proxy_cpu_seconds
            .filter(|_| gib > 0.0)
            .map(|cpu| cpu / gib)
    }
}

fn cpu(pid: Option<u32>) -> Result<Option<f64>, MeasureError> {
    pid.map(|pid| procstat::cpu_seconds(pid).map_err(|source| MeasureError::Proc { pid, source }))
        .transpose()
}

/// Runs `connections` clients sending `request` back to back for
/// `duration`, and reads the proxy's CPU time around the run (TLS
/// handshakes, if `to` says TLS, happen before it).
pub async fn throughput(
    to: impl Into<Endpoint>,
    request: &Bytes,
    body: u64,
    connections: usize,
    duration: Duration,
    proxy: Option<u32>,
) -> Result<ThroughputRun, MeasureError> {
    let to = to.into();
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(BenchConnection::open(&to).await?);
    }
    let cpu_before = cpu(proxy)?;
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in conns {
        let request = request.clone();
        tasks.spawn(async move {
            let mut bytes = 0u64;
            let mut requests = 0u64;
            while Instant::now() < deadline {
                let trip = conn.round_trip(&request).await?;
                check("throughput", &trip, body)?;
                bytes += trip.sent + trip.received;
                requests += 1;
            }
            Ok::<_, MeasureError>((bytes, requests))
        });
    }
    let mut run = ThroughputRun {
        bytes: 0,
        seconds: 0.0,
        proxy_cpu_seconds: None,
        requests: 0,
    };
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((bytes, requests))) => {
                run.bytes += bytes;
                run.requests += requests;
            }
            Ok(Err(e)) => failure = Some(e),
            Err(_) => {}
        }
    }
    run.seconds = start.elapsed().as_secs_f64();
    if let (Some(before), Some(after)) = (cpu_before, cpu(proxy)?) {
        run.proxy_cpu_seconds = Some(after - before);
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(run),
    }
}

/// Resident memory of the proxy with `count` idle connections open, each
/// having completed one OPTIONS exchange (as an ICAP client's pool looks).
pub async fn idle_memory(
    addr: SocketAddr,
    server: SocketAddr,
    proxy: u32,
    count: usize,
) -> Result<u64, MeasureError> {
    let request = options_request(server);
    let mut conns = Vec::with_capacity(count);
    for _ in 0..count {
        let mut conn = BenchConnection::connect(addr).await?;
        let trip = conn.round_trip(&request).await?;
        check("idle connections", &trip, 0)?;
        conns.push(conn);
    }
    tokio::time::sleep(IDLE_SETTLE).await;
    let rss = procstat::resident_bytes(proxy)
        .map_err(|source| MeasureError::Proc { pid: proxy, source })?;
    drop(conns);
    Ok(rss)
}

/// Peak resident memory of the proxy while `count` connections each send
/// `request` back to back for `duration`.
pub async fn active_memory(
    addr: SocketAddr,
    request: &Bytes,
    body: u64,
    proxy: u32,
    count: usize,
    duration: Duration,
) -> Result<u64, MeasureError> {
    let sampler = async {
        let mut peak = 0u64;
        let end = Instant::now() + duration;
        while Instant::now() < end {
            let rss = procstat::resident_bytes(proxy)
                .map_err(|source| MeasureError::Proc { pid: proxy, source })?;
            peak = peak.max(rss);
            tokio::time::sleep(MEMORY_SAMPLE_EVERY).await;
        }
        Ok::<u64, MeasureError>(peak)
    };
    let load = throughput(addr, request, body, count, duration, None);
    let (peak, run) = tokio::join!(sampler, load);
    run?;
    peak
}
