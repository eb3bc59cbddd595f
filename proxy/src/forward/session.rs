//! One proxied connection: the client leg accepted by the listener, the
//! sensor leg opened here, and two copy loops that move the same bytes from
//! each leg to the other while offering every chunk, as a refcounted
//! [`Bytes`], to the side paths (see [`crate::tap`]).
//!
//! Connection semantics are mirrored so that the peers see what they would
//! see without icaptap in between: a FIN becomes a FIN (half-close, the
//! other direction keeps flowing), a reset becomes a reset, a sensor that
//! refuses the connection makes the client's connection reset.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::counters::{FdLimitAlarm, ForwardCounters, OpenConnection};
use super::loops;
use super::options::ForwardConfig;
use super::tls::LegStream;
use crate::tap::{
    self, CloseKind, ConnId, ConnMeta, ConnectFailure, Direction, Tap, TapEvent, TapQueue,
    TapSinks, TlsFacts, TlsSide,
};

/// How long cut sessions may take, after the drain period, to hand their
/// last taps over (they never wait on a side path: see [`deliver_end`]).
pub const END_TAP_WAIT: Duration = Duration::from_secs(10);

/// What every session of one listener shares.
#[derive(Debug)]
pub(crate) struct SessionShared {
    pub(crate) cfg: ForwardConfig,
    pub(crate) sinks: TapSinks,
    pub(crate) counters: Arc<ForwardCounters>,
    pub(crate) fd_alarm: FdLimitAlarm,
    /// Cancelled when the drain period is over: open sessions are cut.
    pub(crate) hard_stop: CancellationToken,
}

/// One client connection and its sensor leg.
#[derive(Debug)]
pub(crate) struct Session {
    shared: Arc<SessionShared>,
    id: ConnId,
    client: TcpStream,
    client_addr: SocketAddr,
    /// Held for the session's whole life: it is the connection limit.
    _permit: OwnedSemaphorePermit,
}

/// Why one copy loop stopped.
#[derive(Debug)]
enum PumpEnd {
    /// The sending leg closed its side (FIN), passed on as a FIN.
    Fin,
    /// Reading from the sending leg failed: it was reset or broke.
    ReadFailed(io::Error),
    /// Writing to the receiving leg failed: that leg was reset or broke.
    WriteFailed(io::Error),
    /// The other copy loop hit a reset; this one stopped with it.
    Aborted,
    /// The drain period at shutdown is over.
    Shutdown,
}

/// How a copy loop ended, in the words of a log line.
impl std::fmt::Display for PumpEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PumpEnd::Fin => f.write_str("fin"),
            PumpEnd::ReadFailed(e) => write!(f, "read failed: {e}"),
            PumpEnd::WriteFailed(e) => write!(f, "write failed: {e}"),
            PumpEnd::Aborted => f.write_str("aborted"),
            PumpEnd::Shutdown => f.write_str("shutdown"),
        }
    }
}

impl Session {
    pub(crate) fn new(
        shared: Arc<SessionShared>,
        id: ConnId,
        client: TcpStream,
        client_addr: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) -> Session {
        Session {
            shared,
            id,
            client,
            client_addr,
            _permit: permit,
        }
    }

    /// Serves the connection to its end; never fails: every failure is
    /// mirrored to the peers, reported as taps and counted.
    pub(crate) async fn run(self) {
        let Session {
            shared,
            id,
            client,
            client_addr,
            _permit,
        } = self;
        let _open = OpenConnection::new(&shared.counters);
        let opened = tap::now_micros();
        let cfg = &shared.cfg;
        let listen = client.local_addr().unwrap_or(cfg.listen);

        let (upstream, original) = destination(cfg, &client, listen, id);
        // The address this client asked for: one of icaptap's own sensor
        // legs asks for the address icaptap dialled.
        let asked = original.unwrap_or(listen);
        // The connection as its records name it: the sensor leg's local
        // address once it is connected, the sensor's as reached.
        let meta_with = |upstream_local: Option<SocketAddr>, server: SocketAddr| {
            Arc::new(ConnMeta {
                id,
                client: client_addr,
                listen,
                upstream_local,
                server,
                opened,
            })
        };
        let meta_unconnected = || meta_with(None, upstream);
        let accepted = match loops::accepted(client_addr, asked) {
            Ok(registered) => registered,
            Err(found) => {
                looped(
                    &shared,
                    meta_unconnected(),
                    LegStream::Plain(client),
                    None,
                    &found,
                )
                .await;
                return;
            }
        };
        // ICAP over TLS: the client's handshake first, so that a client
        // that cannot speak it costs no sensor leg.
        let mut tls = TlsFacts::default();
        let client = match &cfg.tls.listen {
            None => LegStream::Plain(client),
            Some(listen_tls) => match listen_tls
                .accept(nodelay(client), cfg.connect_timeout)
                .await
            {
                Ok((leg, facts)) => {
                    tls.client = Some(facts);
                    leg
                }
                Err(failed) => {
                    let cause = ConnectFailure::Tls(TlsSide::Client, failed.failure);
                    connect_failed(&shared, meta_unconnected(), failed.error, cause).await;
                    return;
                }
            },
        };
        let connecting = tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(upstream));
        // A client that leaves, having sent nothing, before the sensor leg
        // is up gets no sensor leg: under connect/close churn the sensor
        // would otherwise be handed a connection for every one that is
        // already gone, and the clients still there wait behind them.
        let connected = tokio::select! {
            biased;
            // Found to be a round of a forwarding loop: connect no further.
            _ = accepted.looped().cancelled() => {
                let found = loops::Loop {
                    local: client_addr,
                    listen: asked,
                };
                looped(&shared, meta_unconnected(), client, None, &found).await;
                return;
            }
            // Looked at before the connect starts: a client already gone
            // (one of a loop's rounds whose connect was abandoned, among
            // others) opens no sensor leg at all.
            () = client_gone(&client) => {
                drop(client);
                let error = "the client closed the connection".to_string();
                connect_failed(&shared, meta_unconnected(), error, ConnectFailure::ClientGone).await;
                return;
            }
            connected = connecting => connected,
        };
        let server = match connected {
            Ok(Ok(server)) => server,
            Ok(Err(e)) => {
                let meta = meta_unconnected();
                let local_limit = FdLimitAlarm::is_fd_limit(&e);
                let cause = if local_limit {
                    ConnectFailure::LocalLimit
                } else {
                    ConnectFailure::Sensor
                };
                if local_limit {
                    shared.fd_alarm.raise(&shared.counters);
                }
                // A refusal is passed on as a reset: that is what the client
                // would have seen connecting to the sensor itself.
                let refused = e.kind() == io::ErrorKind::ConnectionRefused;
                if refused {
                    let _ = client.tcp().set_zero_linger();
                }
                drop(client);
                let error = if local_limit {
                    format!(
                        "icaptap's open-file limit stopped it connecting to sensor {} ({}): {e}",
                        upstream,
                        upstream_name(cfg, upstream)
                    )
                } else {
                    format!(
                        "connecting to sensor {} ({}): {e}",
                        upstream,
                        upstream_name(cfg, upstream)
                    )
                };
                connect_failed(&shared, meta, error, cause).await;
                return;
            }
            Err(_elapsed) => {
                let meta = meta_unconnected();
                drop(client);
                let error = format!(
                    "sensor {} ({}) did not accept the connection within {:?}",
                    upstream,
                    upstream_name(cfg, upstream),
                    cfg.connect_timeout
                );
                connect_failed(&shared, meta, error, ConnectFailure::Sensor).await;
                return;
            }
        };
        let local = server.local_addr().ok();
        let _outgoing = match local.map(|l| loops::connected(l, upstream, Some(&accepted))) {
            Some(Ok(registered)) => Some(registered),
            None => None,
            Some(Err(found)) => {
                looped(
                    &shared,
                    meta_with(local, upstream),
                    client,
                    Some(server),
                    &found,
                )
                .await;
                return;
            }
        };
        let server = match &cfg.tls.upstream {
            None => LegStream::Plain(server),
            Some(upstream_tls) => match upstream_tls
                .connect(nodelay(server), cfg.connect_timeout)
                .await
            {
                Ok((leg, facts)) => {
                    tls.sensor = Some(facts);
                    leg
                }
                Err(failed) => {
                    // As a sensor that refused: the client sees a reset.
                    let _ = client.tcp().set_zero_linger();
                    drop(client);
                    let cause = ConnectFailure::Tls(TlsSide::Sensor, failed.failure);
                    connect_failed(&shared, meta_with(local, upstream), failed.error, cause).await;
                    return;
                }
            },
        };

        // Both legs carry small request/response heads that must not wait
        // for Nagle's algorithm: icaptap adds no latency of its own.
        let _ = client.tcp().set_nodelay(true);
        let _ = server.tcp().set_nodelay(true);
        let meta = meta_with(local, server.tcp().peer_addr().unwrap_or(upstream));
        debug!(conn = id, client = %client_addr, sensor = %meta.server, "connection open");
        shared.sinks.offer(Tap {
            conn: meta.clone(),
            at: tap::now_micros(),
            frame: None,
            event: TapEvent::Open,
        });
        if tls.client.is_some() || tls.sensor.is_some() {
            shared.sinks.offer(Tap {
                conn: meta.clone(),
                at: tap::now_micros(),
                frame: None,
                event: TapEvent::Tls(Box::new(tls)),
            });
        }
        forward(&shared, meta, client, server).await;
    }
}

/// Where this connection goes: `--upstream`, or in transparent mode the
/// address the client was redirected from (also returned, when there is
/// one).
fn destination(
    cfg: &ForwardConfig,
    client: &TcpStream,
    listen: SocketAddr,
    id: ConnId,
) -> (SocketAddr, Option<SocketAddr>) {
    let Some(mode) = cfg.transparent else {
        return (cfg.upstream, None);
    };
    match super::transparent::original_destination(client, listen, cfg.listen, mode) {
        Ok(Some(original)) => (original, Some(original)),
        Ok(None) => (cfg.upstream, None),
        Err(e) => {
            warn!(
                conn = id,
                "cannot read the original destination ({e}); forwarding to --upstream {}",
                cfg.upstream
            );
            (cfg.upstream, None)
        }
    }
}

/// The sensor's name for messages: as the user typed it for `--upstream`,
/// or "original destination" in transparent mode.
fn upstream_name(cfg: &ForwardConfig, upstream: SocketAddr) -> &str {
    if upstream == cfg.upstream {
        &cfg.upstream_name
    } else {
        "original destination"
    }
}

/// `stream` with Nagle's algorithm off: a TLS handshake's small flights
/// must not wait for it either.
fn nodelay(stream: TcpStream) -> TcpStream {
    let _ = stream.set_nodelay(true);
    stream
}

/// Reports a connection whose sensor leg never came up.
/// Only a sensor's failure is warned about here: the open-file limit has
/// its own alarm, and a client that left is nobody's fault.
async fn connect_failed(
    shared: &SessionShared,
    meta: Arc<ConnMeta>,
    error: String,
    cause: ConnectFailure,
) {
    match cause {
        ConnectFailure::Sensor => {
            ForwardCounters::add(&shared.counters.connect_failures, 1);
            warn!(conn = meta.id, client = %meta.client, "{error}; client connection closed");
        }
        ConnectFailure::Loop => {
            ForwardCounters::add(&shared.counters.connect_failures, 1);
            warn!(conn = meta.id, client = %meta.client, "{error}");
        }
        ConnectFailure::Tls(TlsSide::Sensor, _) => {
            ForwardCounters::add(&shared.counters.connect_failures, 1);
            warn!(conn = meta.id, client = %meta.client, "{error}; client connection closed");
        }
        ConnectFailure::Tls(TlsSide::Client, _) => {
            warn!(conn = meta.id, client = %meta.client, "{error}");
        }
        ConnectFailure::LocalLimit => {
            ForwardCounters::add(&shared.counters.connect_failures, 1);
            debug!(conn = meta.id, client = %meta.client, "{error}; client connection closed");
        }
        ConnectFailure::ClientGone => {
            ForwardCounters::add(&shared.counters.client_gone_before_connect, 1);
            debug!(conn = meta.id, client = %meta.client, "{error} before the sensor leg was up");
        }
    }
    let at = tap::now_micros();
    deliver_end(shared, &meta, at, TapEvent::ConnectFailed { error, cause });
    deliver_end(shared, &meta, at, TapEvent::Finished);
}

/// Closes a connection of a forwarding loop before a byte of it is
/// forwarded: both legs are reset, as a refused sensor would have the
/// client see it, and it is reported as a failed connect that looped.
async fn looped(
    shared: &SessionShared,
    meta: Arc<ConnMeta>,
    client: LegStream,
    server: Option<TcpStream>,
    found: &loops::Loop,
) {
    let _ = client.tcp().set_zero_linger();
    drop(client);
    if let Some(server) = server {
        let _ = server.set_zero_linger();
        drop(server);
    }
    let error = format!(
        "forwarding loop: icaptap's own connection to the sensor from {} came back to icaptap at {}; \
         closed without forwarding. The sensor address ({}) leads to icaptap itself: point \
         --upstream (or the --route) at the sensor, or exclude icaptap's own traffic from the \
         transparent redirect",
        found.local,
        found.listen,
        upstream_name(&shared.cfg, meta.server)
    );
    connect_failed(shared, meta, error, ConnectFailure::Loop).await;
}

/// Both directions' halves of one connection, for [`run_pumps`].
struct Halves<'a, CR, CW, SR, SW> {
    client_read: &'a mut CR,
    client_write: &'a mut CW,
    server_read: &'a mut SR,
    server_write: &'a mut SW,
    /// Whether writes to the sensor and to the client (in that order) must
    /// be flushed: a TLS leg buffers them in its session.
    flush: [bool; 2],
}

/// Runs both copy loops to their end (or until `--idle-timeout`); the
/// second value says whether the idle timeout ended them.
async fn run_pumps<CR, CW, SR, SW>(
    shared: &SessionShared,
    meta: &Arc<ConnMeta>,
    halves: Halves<'_, CR, CW, SR, SW>,
    abort: &CancellationToken,
    activity: &Activity,
) -> ((PumpEnd, PumpEnd), bool)
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    SR: AsyncRead + Unpin,
    SW: AsyncWrite + Unpin,
{
    let [flush_server, flush_client] = halves.flush;
    let pumps = async {
        tokio::join!(
            pump(
                shared,
                meta,
                Direction::Request,
                halves.client_read,
                (halves.server_write, flush_server),
                abort,
                activity,
            ),
            pump(
                shared,
                meta,
                Direction::Response,
                halves.server_read,
                (halves.client_write, flush_client),
                abort,
                activity,
            ),
        )
    };
    let mut pumps = std::pin::pin!(pumps);
    tokio::select! {
        biased;
        ends = &mut pumps => (ends, false),
        () = activity.idle_for(shared.cfg.idle_timeout) => {
            abort.cancel();
            (pumps.await, true)
        }
    }
}

/// Runs both copy loops to their end, then mirrors how they ended.
async fn forward(
    shared: &SessionShared,
    meta: Arc<ConnMeta>,
    mut client: LegStream,
    mut server: LegStream,
) {
    // A child of the hard stop: cancelling it stops this session only.
    let abort = shared.hard_stop.child_token();
    let activity = Activity::default();
    let flush = [server.is_tls(), client.is_tls()];
    let ((up, down), idle) = match (client.as_plain_mut(), server.as_plain_mut()) {
        // Plain TCP both ways: the halves borrow the sockets, no lock.
        (Some(c), Some(s)) => {
            let (mut client_read, mut client_write) = c.split();
            let (mut server_read, mut server_write) = s.split();
            let halves = Halves {
                client_read: &mut client_read,
                client_write: &mut client_write,
                server_read: &mut server_read,
                server_write: &mut server_write,
                flush,
            };
            run_pumps(shared, &meta, halves, &abort, &activity).await
        }
        _ => {
            let (mut client_read, mut client_write) = tokio::io::split(&mut client);
            let (mut server_read, mut server_write) = tokio::io::split(&mut server);
            let halves = Halves {
                client_read: &mut client_read,
                client_write: &mut client_write,
                server_read: &mut server_read,
                server_write: &mut server_write,
                flush,
            };
            run_pumps(shared, &meta, halves, &abort, &activity).await
        }
    };
    // Nothing was sent either way for --idle-timeout: both legs are closed
    // with a FIN, as a peer's own keep-alive timeout would close them.
    let idle = idle && !shared.hard_stop.is_cancelled();

    let broken = !idle
        && [&up, &down]
            .iter()
            .any(|end| matches!(end, PumpEnd::ReadFailed(_) | PumpEnd::WriteFailed(_)));
    let cut = [&up, &down]
        .iter()
        .any(|end| matches!(end, PumpEnd::Shutdown));
    if broken || cut {
        // Closing with a zero linger sends a reset: a peer cut off midway
        // must not mistake the end for a complete message.
        let _ = client.tcp().set_zero_linger();
        let _ = server.tcp().set_zero_linger();
    }
    drop(client);
    drop(server);

    let at = tap::now_micros();
    let mut closes = Vec::with_capacity(2);
    if broken {
        ForwardCounters::add(&shared.counters.resets, 1);
        // A direction whose sender broke ended in that sender's reset; every
        // other direction still open was cut by icaptap on the broken
        // side's behalf (its sender did nothing). The senders' resets are
        // reported first, so a reader of the taps can tell who reset.
        let mut broke = [false; 2];
        for (dir, end) in [(Direction::Request, &up), (Direction::Response, &down)] {
            match end {
                PumpEnd::ReadFailed(e) => {
                    debug!(
                        conn = meta.id,
                        "{} reset the connection: {e}",
                        sender_name(dir)
                    );
                    broke[dir.index()] = true;
                }
                PumpEnd::WriteFailed(e) => {
                    debug!(
                        conn = meta.id,
                        "{} reset the connection: {e}",
                        receiver_name(dir)
                    );
                    broke[dir.opposite().index()] = true;
                }
                PumpEnd::Fin | PumpEnd::Aborted | PumpEnd::Shutdown => {}
            }
        }
        for (dir, end) in [(Direction::Request, &up), (Direction::Response, &down)] {
            if !matches!(end, PumpEnd::Fin) {
                let how = if broke[dir.index()] {
                    CloseKind::Reset
                } else {
                    CloseKind::IcaptapReset
                };
                closes.push((dir, how));
            }
        }
        closes.sort_by_key(|(_, how)| *how != CloseKind::Reset);
        for (dir, how) in closes {
            deliver_end(shared, &meta, at, TapEvent::Closed { dir, how });
        }
    } else if idle {
        ForwardCounters::add(&shared.counters.idle_closed, 1);
        debug!(
            conn = meta.id,
            "idle for {:?}: closed", shared.cfg.idle_timeout
        );
        for (dir, end) in [(Direction::Request, &up), (Direction::Response, &down)] {
            if !matches!(end, PumpEnd::Fin) {
                let event = TapEvent::Closed {
                    dir,
                    how: CloseKind::Timeout,
                };
                deliver_end(shared, &meta, at, event);
            }
        }
    } else if cut {
        ForwardCounters::add(&shared.counters.cut_at_shutdown, 1);
        for (dir, end) in [(Direction::Request, &up), (Direction::Response, &down)] {
            if !matches!(end, PumpEnd::Fin) {
                let event = TapEvent::Closed {
                    dir,
                    how: CloseKind::Shutdown,
                };
                deliver_end(shared, &meta, at, event);
            }
        }
    }
    debug!(conn = meta.id, up = %up, down = %down, "connection finished");
    deliver_end(shared, &meta, at, TapEvent::Finished);
}

/// Copies one direction: read into a buffer, offer the chunk to the side
/// paths, write the same bytes to the other leg (and flush them, when
/// `writer` says so: a TLS leg). Offsets count from 0.
async fn pump<R, W>(
    shared: &SessionShared,
    meta: &Arc<ConnMeta>,
    dir: Direction,
    reader: &mut R,
    (writer, flush): (&mut W, bool),
    abort: &CancellationToken,
    activity: &Activity,
) -> PumpEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let buffer_size = shared.cfg.buffer_size;
    // Small reads share one allocation until it runs low; the side paths
    // keep their chunks alive by refcount, so the buffer is only reused
    // (rather than reallocated) once they let go.
    let refill_below = (buffer_size / 4).max(1);
    let byte_counter = match dir {
        Direction::Request => &shared.counters.bytes_client_to_sensor,
        Direction::Response => &shared.counters.bytes_sensor_to_client,
    };
    let stopped = || {
        if shared.hard_stop.is_cancelled() {
            PumpEnd::Shutdown
        } else {
            PumpEnd::Aborted
        }
    };
    let mut buf = BytesMut::with_capacity(buffer_size);
    let mut offset: u64 = 0;
    // Whether the observer dropped the last data tap of this direction.
    let mut dropping = false;
    loop {
        if buf.capacity() < refill_below {
            buf.reserve(buffer_size);
        }
        let read = tokio::select! {
            biased;
            _ = abort.cancelled() => return stopped(),
            read = reader.read_buf(&mut buf) => read,
        };
        match read {
            Ok(0) => {
                let shut = tokio::select! {
                    biased;
                    _ = abort.cancelled() => return stopped(),
                    shut = writer.shutdown() => shut,
                };
                if let Err(e) = shut {
                    abort.cancel();
                    return PumpEnd::WriteFailed(e);
                }
                debug!(
                    conn = meta.id,
                    from = sender_name(dir),
                    offset,
                    "{} closed its side (FIN), passed on",
                    sender_name(dir)
                );
                shared.sinks.offer(Tap {
                    conn: meta.clone(),
                    at: tap::now_micros(),
                    frame: None,
                    event: TapEvent::Closed {
                        dir,
                        how: CloseKind::Fin,
                    },
                });
                return PumpEnd::Fin;
            }
            Ok(n) => {
                activity.touch();
                let at = tap::now_micros();
                let bytes: Bytes = buf.split().freeze();
                ForwardCounters::add(byte_counter, n as u64);
                let tap = Tap {
                    conn: meta.clone(),
                    at,
                    frame: None,
                    event: TapEvent::Data {
                        dir,
                        offset,
                        bytes: bytes.clone(),
                    },
                };
                offset += n as u64;
                // The bytes go out first and the side paths hear of them
                // after: offering wakes their threads, and that must not
                // delay the peer. The tap is still offered before this
                // task can run the other direction (both pumps share one
                // task), so side paths see the two directions in the order
                // they happened.
                let mut sent = 0usize;
                let first = write_counted(writer, &bytes, &mut sent).await;
                if let Poll::Ready(Ok(())) = first {
                    shared.sinks.offer_data(tap, &mut dropping);
                    if flush {
                        if let Err(end) = flushed(writer, abort, stopped).await {
                            return end;
                        }
                    }
                    continue;
                }
                // The write did not finish at once: the side paths hear how
                // far it got, so that the receiving leg is drawn with only
                // what was written to it.
                let chunk = offset - n as u64;
                let pending = TapEvent::Pending {
                    dir,
                    sent: chunk + sent as u64,
                };
                deliver_end(shared, meta, at, pending);
                shared.sinks.offer_data(tap, &mut dropping);
                let written = match first {
                    Poll::Ready(written) => Some(written),
                    Poll::Pending => tokio::select! {
                        biased;
                        _ = abort.cancelled() => None,
                        written = std::future::poll_fn(|cx| {
                            poll_write_counted(writer, &bytes, &mut sent, cx)
                        }) => Some(written),
                    },
                };
                let at = tap::now_micros();
                match written {
                    Some(Ok(())) => {
                        let upto = chunk + sent as u64;
                        deliver_end(shared, meta, at, TapEvent::Sent { dir, upto });
                        if flush {
                            if let Err(end) = flushed(writer, abort, stopped).await {
                                return end;
                            }
                        }
                    }
                    Some(Err(e)) => {
                        undelivered(shared, meta, dir, chunk, sent, n);
                        abort.cancel();
                        return PumpEnd::WriteFailed(e);
                    }
                    None => {
                        undelivered(shared, meta, dir, chunk, sent, n);
                        return stopped();
                    }
                }
            }
            Err(e) => {
                abort.cancel();
                return PumpEnd::ReadFailed(e);
            }
        }
    }
}

/// Flushes what a TLS leg's session holds of the last write; the pump's
/// end when that fails or the pump is stopped meanwhile.
async fn flushed<W>(
    writer: &mut W,
    abort: &CancellationToken,
    stopped: impl Fn() -> PumpEnd,
) -> Result<(), PumpEnd>
where
    W: AsyncWrite + Unpin,
{
    tokio::select! {
        biased;
        _ = abort.cancelled() => Err(stopped()),
        done = writer.flush() => done.map_err(|e| {
            abort.cancel();
            PumpEnd::WriteFailed(e)
        }),
    }
}

/// Polls the write of `bytes` to `writer` once; `sent` counts the bytes
/// written so far (tokio's `write_all` does not say how far it got before
/// failing).
fn write_counted<'a, W>(
    writer: &'a mut W,
    bytes: &'a [u8],
    sent: &'a mut usize,
) -> impl Future<Output = Poll<io::Result<()>>> + 'a
where
    W: AsyncWrite + Unpin,
{
    std::future::poll_fn(move |cx| Poll::Ready(poll_write_counted(writer, bytes, sent, cx)))
}

/// Writes `bytes[*sent..]` to `writer` until all of it is written, the
/// writer would block, or the write fails; `sent` counts what was written.
/// On the usual path this is the loop of `write_all`, nothing more.
fn poll_write_counted<W>(
    writer: &mut W,
    bytes: &[u8],
    sent: &mut usize,
    cx: &mut std::task::Context<'_>,
) -> Poll<io::Result<()>>
where
    W: AsyncWrite + Unpin,
{
    while *sent < bytes.len() {
        let rest = &bytes[(*sent).min(bytes.len())..];
        match std::pin::Pin::new(&mut *writer).poll_write(cx, rest) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(k)) => *sent += k.min(rest.len()),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    Poll::Ready(Ok(()))
}

/// Reports the bytes of a chunk (stream offset `chunk`, `len` bytes long)
/// that were read but never written: `sent` of them were.
fn undelivered(
    shared: &SessionShared,
    meta: &Arc<ConnMeta>,
    dir: Direction,
    chunk: u64,
    sent: usize,
    len: usize,
) {
    let missing = len.saturating_sub(sent) as u64;
    if missing == 0 {
        return;
    }
    ForwardCounters::add(&shared.counters.undelivered_bytes, missing);
    debug!(
        conn = meta.id,
        from = sender_name(dir),
        offset = chunk + sent as u64,
        "{missing} bytes read from the {} never reached the {}",
        sender_name(dir),
        receiver_name(dir)
    );
    let event = TapEvent::Undelivered {
        dir,
        offset: chunk + sent as u64,
        len: missing,
    };
    deliver_end(shared, meta, tap::now_micros(), event);
}

/// Returns once the client has ended its side (FIN or reset) without
/// sending a byte; never while bytes wait to be read (they are forwarded
/// once the sensor leg is up).
async fn client_gone(client: &LegStream) {
    // A TLS client's request may already sit decrypted in its session,
    // out of sight of a peek: only a plain client is looked at.
    let LegStream::Plain(client) = client else {
        return std::future::pending().await;
    };
    let mut probe = [0u8; 1];
    match client.peek(&mut probe).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// When either leg of a session last sent something, for `--idle-timeout`.
#[derive(Debug)]
struct Activity {
    start: tokio::time::Instant,
    /// Milliseconds after `start` of the last read that returned bytes.
    last_ms: std::sync::atomic::AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            start: tokio::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Returns once nothing was read from either leg for `timeout`; never
    /// without one. One timer per session, re-armed only when it fires.
    async fn idle_for(&self, timeout: Option<Duration>) {
        let Some(timeout) = timeout else {
            return std::future::pending().await;
        };
        loop {
            let last = self.last_ms.load(std::sync::atomic::Ordering::Relaxed);
            let due = self.start + Duration::from_millis(last) + timeout;
            if tokio::time::Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

/// Hands a tap that marks the end of (part of) a connection to every side
/// path. Control taps go in past a full queue (see [`crate::tap::queue`]),
/// so this never waits; one is lost only when a side path has stopped.
fn deliver_end(shared: &SessionShared, meta: &Arc<ConnMeta>, at: tap::Micros, event: TapEvent) {
    let tap = Tap {
        conn: meta.clone(),
        at,
        frame: None,
        event,
    };
    let queues: [&Option<TapQueue>; 2] = [&shared.sinks.recorder, &shared.sinks.observer];
    for queue in queues.into_iter().flatten() {
        if !queue.offer(tap.clone()) {
            ForwardCounters::add(&shared.counters.end_taps_lost, 1);
        }
    }
}

/// Who sends in `dir`.
fn sender_name(dir: Direction) -> &'static str {
    match dir {
        Direction::Request => "client",
        Direction::Response => "sensor",
    }
}

/// Who receives in `dir`.
fn receiver_name(dir: Direction) -> &'static str {
    sender_name(dir.opposite())
}
