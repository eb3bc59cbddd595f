//! The tap vocabulary: what a connection reports about itself.
//!
//! A [`Tap`] is one fact about one connection: it opened, bytes went one way
//! (a refcounted [`Bytes`], never a copy), a direction closed, it finished.
//! The live proxy produces taps from sockets; offline analysis produces the
//! same taps from reassembled captures, so both feed one observer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
pub use icap_codec::Direction;

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
    /// icaptap reset the sender's leg because the other side went away
    /// (reset or broke): the sender did not end its stream, icaptap cut it
    /// on the other side's behalf.
    IcaptapReset,
}

impl CloseKind {
    /// `fin`, `reset`, `timeout`, `shutdown` or `icaptap-reset`, as written
    /// in records.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseKind::Fin => "fin",
            CloseKind::Reset => "reset",
            CloseKind::Timeout => "timeout",
            CloseKind::Shutdown => "shutdown",
            CloseKind::IcaptapReset => "icaptap-reset",
        }
    }
}

/// Why a sensor leg was never opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The sensor refused, did not answer in time, or was unreachable.
    #[default]
    Sensor,
    /// icaptap's own open-file limit (EMFILE, ENFILE): the sensor was not
    /// asked.
    LocalLimit,
    /// The client closed (or reset) its connection, having sent nothing,
    /// before the sensor leg was up; icaptap stopped connecting.
    ClientGone,
    /// The sensor leg led back into icaptap (a forwarding loop): closed by
    /// icaptap, not refused by a sensor.
    Loop,
    /// A TLS leg did not come up (see [`super::tls`]).
    Tls(super::tls::TlsSide, super::tls::TlsFailure),
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TapEvent {
    /// The client connected and the sensor leg is up.
    Open,
    /// Sent right after `Open` when a leg speaks TLS: what each
    /// handshake settled.
    Tls(Box<super::tls::TlsFacts>),
    /// The client connected but the sensor could not be reached; the
    /// client connection is closed.
    ConnectFailed {
        /// Why, in words (refused, timed out, unreachable...).
        error: String,
        /// Whose failure it was.
        cause: ConnectFailure,
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
    /// Offered just before a `Data` tap whose bytes could not be written
    /// to the receiving leg at once (the receiver's window was full, or the
    /// write failed): of `dir`'s stream only the bytes before `sent` have
    /// reached the receiving leg so far. A `Sent` or an `Undelivered` of
    /// `dir` follows. A write that succeeds whole at once (the usual case)
    /// is reported by its `Data` tap alone.
    Pending {
        /// Which way the bytes go.
        dir: Direction,
        /// Stream offset up to which bytes were written to the receiving leg.
        sent: u64,
    },
    /// The write announced by `Pending` finished: the receiving leg took
    /// `dir`'s bytes up to stream offset `upto`.
    Sent {
        /// Which way the bytes went.
        dir: Direction,
        /// Stream offset up to which bytes were written to the receiving leg.
        upto: u64,
    },
    /// Bytes icaptap read from the sender of `dir` (reported by a `Data`
    /// tap) but could not write to the receiving leg, which went away: the
    /// receiver never got stream bytes `offset..offset + len`.
    Undelivered {
        /// Which way the bytes were going.
        dir: Direction,
        /// Stream offset of the first byte not delivered.
        offset: u64,
        /// How many bytes were not delivered.
        len: u64,
    },
    /// Bytes of `dir` from stream offset `offset` on were dropped before
    /// this side path got them (its queue was full): said at once, as a
    /// control tap that is never dropped, so that the side path knows
    /// before it decodes anything that came later on either direction. The
    /// next `Data` of `dir` (or the end of the connection) shows how many.
    Lost {
        /// Which way the dropped bytes went.
        dir: Direction,
        /// Stream offset of the first byte dropped.
        offset: u64,
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
