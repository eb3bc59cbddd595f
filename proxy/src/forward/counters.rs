//! Live counters of the forwarding path. Sessions bump them with relaxed
//! atomics (one add per read, no lock); the status line and the metrics
//! endpoint read them at any time through a shared [`ForwardCounters`], and
//! [`ForwardStats`] is a plain snapshot for the summary at exit.
//! [`FdLimitAlarm`] counts hits of the open-file limit, from accepts and
//! connects alike, and warns about them now and then.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::warn;

/// Counters shared by the listener, its sessions and whoever reports on them.
#[derive(Debug, Default)]
pub struct ForwardCounters {
    /// Client connections accepted since start.
    pub connections_total: AtomicU64,
    /// Client connections being served now.
    pub connections_open: AtomicU64,
    /// Connections whose sensor leg could not be opened (refused, timed out...).
    pub connect_failures: AtomicU64,
    /// Bytes forwarded from ICAP clients to the sensor.
    pub bytes_client_to_sensor: AtomicU64,
    /// Bytes forwarded from the sensor to ICAP clients.
    pub bytes_sensor_to_client: AtomicU64,
    /// Bytes read from one leg (and counted above) that could not be
    /// written to the other, because it went away while they were on their
    /// way.
    pub undelivered_bytes: AtomicU64,
    /// Connections that ended in a reset (from either side), passed on.
    pub resets: AtomicU64,
    /// Connections still open when the drain period ran out, closed by icaptap.
    pub cut_at_shutdown: AtomicU64,
    /// Clients that left, having sent nothing, before their sensor leg was
    /// up (no sensor leg was opened for them).
    pub client_gone_before_connect: AtomicU64,
    /// Connections closed by icaptap after `--idle-timeout` with nothing sent.
    pub idle_closed: AtomicU64,
    /// Accepts or connects that failed on the open-file limit.
    pub fd_limit_hits: AtomicU64,
    /// Accepts that failed for another reason.
    pub accept_errors: AtomicU64,
    /// End-of-connection taps (`Closed`, `ConnectFailed`, `Finished`) a side
    /// path did not take because it had stopped.
    pub end_taps_lost: AtomicU64,
}

impl ForwardCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters' values now.
    pub fn snapshot(&self) -> ForwardStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ForwardStats {
            connections_total: get(&self.connections_total),
            connections_open: get(&self.connections_open),
            connect_failures: get(&self.connect_failures),
            bytes_client_to_sensor: get(&self.bytes_client_to_sensor),
            bytes_sensor_to_client: get(&self.bytes_sensor_to_client),
            undelivered_bytes: get(&self.undelivered_bytes),
            resets: get(&self.resets),
            cut_at_shutdown: get(&self.cut_at_shutdown),
            idle_closed: get(&self.idle_closed),
            client_gone_before_connect: get(&self.client_gone_before_connect),
            fd_limit_hits: get(&self.fd_limit_hits),
            accept_errors: get(&self.accept_errors),
            end_taps_lost: get(&self.end_taps_lost),
        }
    }
}

/// A snapshot of [`ForwardCounters`]; field meanings are the same.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[allow(missing_docs)]
pub struct ForwardStats {
    pub connections_total: u64,
    pub connections_open: u64,
    pub connect_failures: u64,
    pub bytes_client_to_sensor: u64,
    pub bytes_sensor_to_client: u64,
    pub undelivered_bytes: u64,
    pub resets: u64,
    pub cut_at_shutdown: u64,
    pub idle_closed: u64,
    pub client_gone_before_connect: u64,
    pub fd_limit_hits: u64,
    pub accept_errors: u64,
    pub end_taps_lost: u64,
}

/// Counts a connection as open for as long as it lives, even if its task
/// ends early.
#[derive(Debug)]
pub(crate) struct OpenConnection<'a> {
    open: &'a AtomicU64,
}

impl<'a> OpenConnection<'a> {
    pub(crate) fn new(counters: &'a ForwardCounters) -> OpenConnection<'a> {
        counters.connections_open.fetch_add(1, Ordering::Relaxed);
        OpenConnection {
            open: &counters.connections_open,
        }
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How often the open-file limit warning may repeat while the limit holds.
pub const FD_LIMIT_WARN_EVERY: Duration = Duration::from_secs(60);

/// `EMFILE` and `ENFILE`: the same numbers on Linux and the BSDs.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// Tells the operator, clearly and not on every failure, that the process
/// ran out of file descriptors.
#[derive(Debug)]
pub(crate) struct FdLimitAlarm {
    started: Instant,
    /// Milliseconds after `started` of the last warning, plus one (0 = never).
    last_warned: AtomicU64,
}

impl Default for FdLimitAlarm {
    fn default() -> Self {
        FdLimitAlarm {
            started: Instant::now(),
            last_warned: AtomicU64::new(0),
        }
    }
}

impl FdLimitAlarm {
    /// Whether `e` is the per-process or system-wide open-file limit.
    pub(crate) fn is_fd_limit(e: &io::Error) -> bool {
        matches!(e.raw_os_error(), Some(EMFILE) | Some(ENFILE))
    }

    /// Counts one hit and warns if it has not warned lately.
    pub(crate) fn raise(&self, counters: &ForwardCounters) {
        ForwardCounters::add(&counters.fd_limit_hits, 1);
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last_warned.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= FD_LIMIT_WARN_EVERY.as_millis() as u64;
        if due
            && self
                .last_warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let open = counters.connections_open.load(Ordering::Relaxed);
            let hits = counters.fd_limit_hits.load(Ordering::Relaxed);
            warn!(
                open,
                hits,
                "open-file limit reached ({open} connections open); raise `ulimit -n` or lower --max-connections"
            );
        }
    }
}
