//! The accepting side of the proxy, in the mini-redis shape: a semaphore
//! permit is taken before each accept (so connections past the limit wait
//! in the kernel's backlog, holding no file descriptor of ours), each
//! connection runs as its own task holding its permit, and shutdown stops
//! accepting at once, then waits for the permits to come back.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::counters::{FdLimitAlarm, ForwardCounters, ForwardStats};
use super::options::ForwardConfig;
use super::session::{Session, SessionShared, END_TAP_WAIT};
use crate::tap::TapSinks;

/// Connections the kernel may queue for us while every permit is taken.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Pause after an accept failed on the open-file limit: retrying at once
/// would spin, and only a closing connection can free a descriptor.
pub const FD_LIMIT_BACKOFF: Duration = Duration::from_millis(100);

/// Pause after any other failed accept (ENOBUFS, ENOMEM...).
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// A failure to start listening, before any client is served.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The listen address is taken.
    #[error("cannot listen on {addr}: the address is already in use; stop the other program on that port or choose another --listen")]
    AddrInUse {
        /// The listen address.
        addr: SocketAddr,
    },
    /// Not allowed to bind.
    #[error("cannot listen on {addr}: permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE, or choose a port above 1023")]
    PermissionDenied {
        /// The listen address.
        addr: SocketAddr,
    },
    /// The address is not one of this host's.
    #[error("cannot listen on {addr}: no interface of this host has that address; use 0.0.0.0, [::] or one of its own addresses")]
    AddrNotAvailable {
        /// The listen address.
        addr: SocketAddr,
    },
    /// Another failure.
    #[error("cannot listen on {addr}: {source}")]
    Other {
        /// The listen address.
        addr: SocketAddr,
        /// What the system said.
        source: io::Error,
    },
}

impl ForwardError {
    fn new(addr: SocketAddr, source: io::Error) -> ForwardError {
        match source.kind() {
            io::ErrorKind::AddrInUse => ForwardError::AddrInUse { addr },
            io::ErrorKind::PermissionDenied => ForwardError::PermissionDenied { addr },
            io::ErrorKind::AddrNotAvailable => ForwardError::AddrNotAvailable { addr },
            _ => ForwardError::Other { addr, source },
        }
    }
}

/// A bound, listening socket, not yet serving. Binding separately from
/// serving lets start-up errors surface before anything else starts.
#[derive(Debug)]
pub struct Listener {
    socket: TcpListener,
    local: SocketAddr,
    counters: Arc<ForwardCounters>,
    /// The last connection id handed out; shared by listeners of one run
    /// so ids stay unique across them.
    ids: Arc<AtomicU64>,
}

impl Listener {
    /// The address actually bound (with the real port when `--listen` asked
    /// for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The live counters that [`serve`] will update; clone the `Arc` for a
    /// status line or the metrics endpoint.
    pub fn counters(&self) -> Arc<ForwardCounters> {
        self.counters.clone()
    }

    /// This listener, numbering its connections in one sequence with
    /// `first` (several listeners feeding one observer need distinct ids).
    pub fn sharing_ids_with(self, first: &Listener) -> Listener {
        Listener {
            ids: first.ids.clone(),
            ..self
        }
    }
}

/// Binds `cfg.listen`, with a backlog of [`LISTEN_BACKLOG`].
pub async fn bind(cfg: &ForwardConfig) -> Result<Listener, ForwardError> {
    let addr = cfg.listen;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| ForwardError::new(addr, e))?;
    if cfg.transparent == Some(super::transparent::TransparentMode::Tproxy) {
        super::transparent::accept_foreign_addresses(&socket)
            .map_err(|source| ForwardError::Other { addr, source })?;
    }
    // A restarted icaptap must be able to bind while old connections linger
    // in TIME_WAIT.
    socket
        .set_reuseaddr(true)
        .map_err(|e| ForwardError::new(addr, e))?;
    socket.bind(addr).map_err(|e| ForwardError::new(addr, e))?;
    let socket = socket
        .listen(LISTEN_BACKLOG)
        .map_err(|e| ForwardError::new(addr, e))?;
    let local = socket
        .local_addr()
        .map_err(|e| ForwardError::new(addr, e))?;
    Ok(Listener {
        socket,
        local,
        counters: Arc::new(ForwardCounters::default()),
        ids: Arc::new(AtomicU64::new(0)),
    })
}

/// Serves clients until `shutdown` is cancelled: then stops accepting at
/// once, gives open connections `cfg.drain` to finish, cuts the rest (each
/// direction reported `Closed{Shutdown}`), and returns the final counts.
pub async fn serve(
    listener: Listener,
    cfg: &ForwardConfig,
    sinks: TapSinks,
    shutdown: CancellationToken,
) -> ForwardStats {
    let Listener {
        socket,
        local,
        counters,
        ids,
    } = listener;
    let hard_stop = CancellationToken::new();
    let shared = Arc::new(SessionShared {
        cfg: cfg.clone(),
        sinks,
        counters: counters.clone(),
        fd_alarm: FdLimitAlarm::default(),
        hard_stop: hard_stop.clone(),
    });
    let max = cfg.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(max));
    let transparent = match cfg.transparent {
        None => "off",
        Some(super::transparent::TransparentMode::Redirect) => "redirect",
        Some(super::transparent::TransparentMode::Tproxy) => "tproxy",
    };
    info!(listen = %local, upstream = %cfg.upstream, transparent, "forwarding");

    loop {
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = socket.accept() => accepted,
        };
        match accepted {
            Ok((client, client_addr)) => {
                ForwardCounters::add(&counters.connections_total, 1);
                let id = ids.fetch_add(1, Ordering::Relaxed) + 1;
                let session = Session::new(shared.clone(), id, client, client_addr, permit);
                tokio::spawn(session.run());
            }
            Err(e) if FdLimitAlarm::is_fd_limit(&e) => {
                drop(permit);
                shared.fd_alarm.raise(&counters);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(FD_LIMIT_BACKOFF) => {}
                }
            }
            // The client gave up while queued: nothing to serve, nothing wrong.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) =>
            {
                debug!("a client left before it was accepted: {e}");
            }
            Err(e) => {
                drop(permit);
                ForwardCounters::add(&counters.accept_errors, 1);
                warn!(listen = %local, "accepting a client failed: {e}; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                }
            }
        }
    }
    drop(socket);

    let open = counters.connections_open.load(Ordering::Relaxed);
    // Semaphore permits count in u32; `max` was checked against that when
    // the options were parsed, and saturates here rather than wrap.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if open > 0 {
        info!(
            open,
            drain_ms = u64::try_from(cfg.drain.as_millis()).unwrap_or(u64::MAX),
            "stopped accepting; letting open connections finish"
        );
    }
    if tokio::time::timeout(cfg.drain, permits.acquire_many(all))
        .await
        .is_err()
    {
        let open = counters.connections_open.load(Ordering::Relaxed);
        warn!(
            open,
            "drain period of {:?} is over; closing the connections still open", cfg.drain
        );
        hard_stop.cancel();
        // Cut sessions only need to hand their last taps over.
        let grace = END_TAP_WAIT * 3;
        if tokio::time::timeout(grace, permits.acquire_many(all))
            .await
            .is_err()
        {
            warn!("some connections did not finish reporting within {grace:?} after being closed");
        }
    }
    counters.snapshot()
}
