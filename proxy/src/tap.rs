//! What a connection reports about itself, and how those reports reach the
//! side paths (observer, recorder) without ever slowing forwarding.
//!
//! A [`Tap`] is one fact about one connection: it opened, bytes went one way
//! (a refcounted [`Bytes`], never a copy), a direction closed, it finished.
//! The live proxy produces taps from sockets; offline analysis produces the
//! same taps from reassembled captures, so both feed one observer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
pub use icap_codec::Direction;
use tokio::sync::mpsc;

/// A connection's id, unique within one run (1, 2, 3...).
pub type ConnId = u64;

/// Microseconds since the UNIX epoch.
pub type Micros = u64;

/// The current wall-clock time in microseconds since the UNIX epoch.
pub fn now_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The addresses of one proxied (or captured) ICAP connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnMeta {
    /// Connection id.
    pub id: ConnId,
    /// The ICAP client's address (the web proxy).
    pub client: SocketAddr,
    /// The address the client connected to (icaptap's listening address,
    /// or the sensor's address when analysing a capture).
    pub listen: SocketAddr,
    /// icaptap's own address on the sensor leg, when connected.
    pub upstream_local: Option<SocketAddr>,
    /// The ICAP server's address (the sensor).
    pub server: SocketAddr,
    /// When the client's connection was accepted (or its first packet seen).
    pub opened: Micros,
}

/// How one direction of a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseKind {
    /// An orderly close (FIN).
    Fin,
    /// A reset (RST) or a hard socket error.
    Reset,
    /// icaptap closed it after an idle or connect timeout.
    Timeout,
    /// icaptap closed it while shutting down.
    Shutdown,
}

impl CloseKind {
    /// `fin`, `reset`, `timeout` or `shutdown`, as written in records.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseKind::Fin => "fin",
            CloseKind::Reset => "reset",
            CloseKind::Timeout => "timeout",
            CloseKind::Shutdown => "shutdown",
        }
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TapEvent {
    /// The client connected and the sensor leg is up.
    Open,
    /// The client connected but the sensor could not be reached; the
    /// client connection is closed.
    ConnectFailed {
        /// Why, in words (refused, timed out, unreachable...).
        error: String,
    },
    /// Bytes forwarded in `dir`, starting at stream offset `offset`.
    /// Offsets let a consumer see bytes it never got (a gap).
    Data {
        /// Which way the bytes went.
        dir: Direction,
        /// Stream offset of the first byte.
        offset: u64,
        /// The bytes, exactly as forwarded.
        bytes: Bytes,
    },
    /// The sender of `dir` stopped sending: its stream is over.
    Closed {
        /// Which direction ended.
        dir: Direction,
        /// How.
        how: CloseKind,
    },
    /// Both directions are over; nothing more will come for this connection.
    Finished,
}

/// One report about one connection.
#[derive(Clone, Debug)]
pub struct Tap {
    /// The connection.
    pub conn: Arc<ConnMeta>,
    /// When it happened (microseconds since the UNIX epoch).
    pub at: Micros,
    /// The capture frame number that carried it (offline analysis only).
    pub frame: Option<u64>,
    /// What happened.
    pub event: TapEvent,
}

/// Counts what a side path missed because it was behind.
#[derive(Debug, Default)]
pub struct DropCounters {
    /// Taps not delivered.
    pub taps: AtomicU64,
    /// Payload bytes in taps not delivered.
    pub bytes: AtomicU64,
}

/// A side path's inbox: a bounded queue that the forwarding path offers
/// taps to without waiting. When it is full the tap is dropped and counted.
#[derive(Clone, Debug)]
pub struct TapQueue {
    tx: mpsc::Sender<Tap>,
    drops: Arc<DropCounters>,
}

impl TapQueue {
    /// A queue holding at most `capacity` taps, and its receiving end.
    pub fn bounded(capacity: usize) -> (TapQueue, mpsc::Receiver<Tap>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            TapQueue {
                tx,
                drops: Arc::new(DropCounters::default()),
            },
            rx,
        )
    }

    /// Offers `tap` without waiting; drops and counts it when the queue is
    /// full or its consumer is gone. Returns whether it was queued.
    pub fn offer(&self, tap: Tap) -> bool {
        let len = match &tap.event {
            TapEvent::Data { bytes, .. } => bytes.len() as u64,
            _ => 0,
        };
        match self.tx.try_send(tap) {
            Ok(()) => true,
            Err(_) => {
                self.drops.taps.fetch_add(1, Ordering::Relaxed);
                self.drops.bytes.fetch_add(len, Ordering::Relaxed);
                false
            }
        }
    }

    /// Delivers `tap`, waiting for room: only for the few taps that must not
    /// be lost (a connection's end), sent after forwarding is over.
    pub async fn deliver(&self, tap: Tap) {
        if self.tx.send(tap).await.is_err() {
            self.drops.taps.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What this queue dropped so far.
    pub fn drops(&self) -> &Arc<DropCounters> {
        &self.drops
    }
}

/// Every side path a session reports to.
#[derive(Clone, Debug, Default)]
pub struct TapSinks {
    /// The observer's queue (decoding, verdicts, logs), if observing.
    pub observer: Option<TapQueue>,
    /// The recorder's queue (pcap), if recording.
    pub recorder: Option<TapQueue>,
}

impl TapSinks {
    /// Offers `tap` to every side path without waiting.
    pub fn offer(&self, tap: Tap) {
        if let Some(r) = &self.recorder {
            r.offer(tap.clone());
        }
        if let Some(o) = &self.observer {
            o.offer(tap);
        }
    }

    /// Delivers `tap` to every side path, waiting for room.
    pub async fn deliver(&self, tap: Tap) {
        if let Some(r) = &self.recorder {
            r.deliver(tap.clone()).await;
        }
        if let Some(o) = &self.observer {
            o.deliver(tap).await;
        }
    }
}
