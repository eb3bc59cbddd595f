//! The bench client: one keep-alive ICAP connection that times whole round
//! trips (first request byte written to the end of the final answer, RFC
//! 3507 section 4.3), writing and reading at the same time so that a 1 MiB
//! echo never deadlocks on full socket buffers.
//!
//! It is leaner than `icaptap client` (it keeps no body, builds no report)
//! because on a 2-core machine the client's CPU is taken from the proxy
//! under test; every configuration pays the same client cost.
//!
//! An [`Endpoint`] with [`TlsDial`] makes the same connection over TLS
//! (ICAPS, rustls): the handshake happens at connect, before any round
//! trip is timed, and the connection is then kept alive like a plain one.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use icap_codec::{Decoder, Direction, Event};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Bytes read per `read` call.
pub const CLIENT_READ_SIZE: usize = 256 * 1024;

/// Body bytes per ICAP chunk in the requests the benches send (Squid sends
/// chunks of what it received, typically up to 16 KiB or more).
pub const REQUEST_CHUNK_SIZE: usize = 64 * 1024;

/// Time allowed for one round trip before the bench calls it failed.
pub const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a round trip failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchClientError {
    /// The connection could not be opened.
    #[error(
        "bench client: connecting to {addr} failed: {source}; is the server or proxy running?"
    )]
    Connect {
        /// Where to.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// The TLS handshake failed.
    #[error("bench client: the TLS handshake with {addr} failed: {source}; does it speak TLS with the bench certificate?")]
    Handshake {
        /// Where to.
        addr: SocketAddr,
        /// What rustls or the system said.
        source: std::io::Error,
    },
    /// Writing the request failed.
    #[error("bench client: writing the request failed at request byte {offset}: {source}")]
    Write {
        /// Request bytes written before the failure.
        offset: u64,
        /// What the system said.
        source: std::io::Error,
    },
    /// Reading the answer failed.
    #[error("bench client: reading the answer failed at stream byte {offset}: {source}")]
    Read {
        /// Response stream offset.
        offset: u64,
        /// What the system said.
        source: std::io::Error,
    },
    /// The server closed before the answer was complete.
    #[error("bench client: the server closed the connection at stream byte {offset} before the answer was complete; raise its keep-alive limit")]
    Closed {
        /// Response stream offset.
        offset: u64,
    },
    /// No complete answer in time.
    #[error("bench client: no complete answer within {ROUND_TRIP_TIMEOUT:?}")]
    Timeout,
}

/// What one round trip measured.
#[derive(Clone, Copy, Debug)]
pub struct RoundTrip {
    /// First request byte written to the last answer byte read.
    pub elapsed: Duration,
    /// Final ICAP status.
    pub status: u16,
    /// Request bytes written.
    pub sent: u64,
    /// Answer bytes read.
    pub received: u64,
    /// De-chunked body bytes in the answer.
    pub body_bytes: u64,
    /// Whether the server said `Connection: close`.
    pub closing: bool,
    /// Whether the answer's body equalled the expected one byte for byte
    /// (true when no body was expected: see [`BenchConnection::round_trip_parts`]).
    pub intact: bool,
}

/// How to speak TLS to an endpoint: the client configuration (what it
/// trusts) and the name to ask for and verify.
#[derive(Clone, Debug)]
pub struct TlsDial {
    /// rustls's client configuration.
    pub config: Arc<ClientConfig>,
    /// SNI and the name the certificate must be valid for.
    pub name: ServerName<'static>,
}

/// Where the bench client connects: an address, in plain ICAP or over TLS.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The server or proxy.
    pub addr: SocketAddr,
    /// TLS, or plain ICAP when `None`.
    pub tls: Option<TlsDial>,
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Endpoint {
        Endpoint { addr, tls: None }
    }
}

type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

/// The reading half of a plain or TLS connection.
#[derive(Debug)]
enum ReadSide {
    Plain(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<ClientTls>),
}

/// The writing half of a plain or TLS connection.
#[derive(Debug)]
enum WriteSide {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<ClientTls>),
}

impl AsyncRead for ReadSide {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadSide::Plain(r) => Pin::new(r).poll_read(cx, buf),
            ReadSide::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteSide {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteSide::Plain(w) => Pin::new(w).poll_write(cx, buf),
            WriteSide::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteSide::Plain(w) => Pin::new(w).poll_flush(cx),
            WriteSide::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteSide::Plain(w) => Pin::new(w).poll_shutdown(cx),
            WriteSide::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// One keep-alive connection.
#[derive(Debug)]
pub struct BenchConnection {
    read: ReadSide,
    write: WriteSide,
    decoder: Decoder,
    buf: BytesMut,
    events: Vec<Event>,
    received: u64,
    tls: Option<String>,
}

impl BenchConnection {
    /// Connects to `addr` with Nagle off (requests are written whole).
    pub async fn connect(addr: SocketAddr) -> Result<BenchConnection, BenchClientError> {
        BenchConnection::open(&Endpoint::from(addr)).await
    }

    /// Connects to `to`, with Nagle off, and completes the TLS handshake
    /// when `to` says TLS.
    pub async fn open(to: &Endpoint) -> Result<BenchConnection, BenchClientError> {
        let addr = to.addr;
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| BenchClientError::Connect { addr, source })?;
        let _ = stream.set_nodelay(true);
        let (read, write, tls) = match &to.tls {
            None => {
                let (read, write) = stream.into_split();
                (ReadSide::Plain(read), WriteSide::Plain(write), None)
            }
            Some(dial) => {
                let stream = tokio_rustls::TlsConnector::from(dial.config.clone())
                    .connect(dial.name.clone(), stream)
                    .await
                    .map_err(|source| BenchClientError::Handshake { addr, source })?;
                let (_, session) = stream.get_ref();
                let tls = match (
                    session.protocol_version(),
                    session.negotiated_cipher_suite(),
                ) {
                    (Some(version), Some(suite)) => format!("{version:?} {:?}", suite.suite()),
                    _ => "TLS (version not known)".to_owned(),
                };
                let (read, write) = tokio::io::split(stream);
                (ReadSide::Tls(read), WriteSide::Tls(write), Some(tls))
            }
        };
        Ok(BenchConnection {
            read,
            write,
            decoder: Decoder::new(Direction::Response),
            buf: BytesMut::new(),
            events: Vec::new(),
            received: 0,
            tls,
        })
    }

    /// The TLS version and cipher suite negotiated, for a TLS connection.
    pub fn tls(&self) -> Option<&str> {
        self.tls.as_deref()
    }

    /// Sends `request` and reads its final answer to the end.
    pub async fn round_trip(&mut self, request: &Bytes) -> Result<RoundTrip, BenchClientError> {
        self.round_trip_parts(std::slice::from_ref(request), None)
            .await
    }

    /// Sends the request made of `parts` (written in order, e.g. a head of
    /// its own and a body shared by many requests) and reads its final
    /// answer to the end; with `expected`, the answer's de-chunked body is
    /// compared with it byte for byte ([`RoundTrip::intact`]).
    pub async fn round_trip_parts(
        &mut self,
        parts: &[Bytes],
        expected: Option<&[u8]>,
    ) -> Result<RoundTrip, BenchClientError> {
        let start = Instant::now();
        let BenchConnection {
            read,
            write,
            decoder,
            buf,
            events,
            received,
            tls: _,
        } = self;
        let writing = async {
            let mut offset = 0u64;
            for part in parts {
                write
                    .write_all(part)
                    .await
                    .map_err(|source| BenchClientError::Write { offset, source })?;
                offset += part.len() as u64;
            }
            // TLS may hold back the last record until flushed; a plain
            // socket's flush does nothing.
            write
                .flush()
                .await
                .map_err(|source| BenchClientError::Write { offset, source })?;
            Ok::<(), BenchClientError>(())
        };
        let reading = read_answer(read, decoder, buf, events, received, expected);
        let both = async { tokio::try_join!(writing, reading) };
        let ((), mut trip) = tokio::time::timeout(ROUND_TRIP_TIMEOUT, both)
            .await
            .map_err(|_| BenchClientError::Timeout)??;
        trip.elapsed = start.elapsed();
        trip.sent = parts.iter().map(|p| p.len() as u64).sum();
        Ok(trip)
    }
}

async fn read_answer(
    read: &mut ReadSide,
    decoder: &mut Decoder,
    buf: &mut BytesMut,
    events: &mut Vec<Event>,
    received: &mut u64,
    expected: Option<&[u8]>,
) -> Result<RoundTrip, BenchClientError> {
    let before = *received;
    // Body bytes of the final answer compared so far, and whether they matched.
    let mut compared = 0usize;
    let mut matched = true;
    let mut trip = RoundTrip {
        elapsed: Duration::ZERO,
        status: 0,
        sent: 0,
        received: 0,
        body_bytes: 0,
        closing: false,
        intact: true,
    };
    loop {
        if buf.capacity() < CLIENT_READ_SIZE / 4 {
            buf.reserve(CLIENT_READ_SIZE);
        }
        let n = read
            .read_buf(buf)
            .await
            .map_err(|source| BenchClientError::Read {
                offset: *received,
                source,
            })?;
        if n == 0 {
            return Err(BenchClientError::Closed { offset: *received });
        }
        *received += n as u64;
        decoder.decode(buf.split().freeze(), events);
        for event in events.drain(..) {
            match event {
                Event::ResponseHead(head) if head.status != 100 => {
                    trip.status = head.status;
                    trip.closing = head
                        .headers
                        .get_str("Connection")
                        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                }
                Event::Body(data) if trip.status != 0 => {
                    if let Some(want) = expected {
                        let end = compared + data.len();
                        matched = matched && want.get(compared..end) == Some(&data[..]);
                        compared = end;
                    }
                }
                Event::MessageEnd { body_bytes, .. } if trip.status != 0 => {
                    trip.body_bytes = body_bytes;
                    trip.intact = expected.is_none_or(|want| matched && compared == want.len());
                    trip.received = *received - before;
                    return Ok(trip);
                }
                _ => {}
            }
        }
    }
}

/// An OPTIONS request for the `echo` service at `addr`.
pub fn options_request(addr: SocketAddr) -> Bytes {
    Bytes::from(format!(
        "OPTIONS icap://{addr}/echo ICAP/1.0\r\nHost: {addr}\r\nEncapsulated: null-body=0\r\n\r\n"
    ))
}

/// The URL of the encapsulated HTTP request of [`respmod_request`].
pub const DEFAULT_HTTP_URL: &str = "http://origin.test/file.bin";

/// A RESPMOD request for the `echo` service at `addr` carrying a body of
/// `size` bytes in [`REQUEST_CHUNK_SIZE`] chunks, without preview or
/// `Allow: 204`, so an echo service must send the whole body back.
pub fn respmod_request(addr: SocketAddr, size: usize) -> Bytes {
    let mut out = BytesMut::from(&respmod_head(addr, size, DEFAULT_HTTP_URL)[..]);
    out.extend_from_slice(&respmod_chunked_body(size));
    out.freeze()
}

/// The head part of a [`respmod_request`] whose encapsulated HTTP request
/// asks for `url` (the ICAP head, the HTTP request and response heads): a
/// bench that tells its requests apart gives each its own URL, which
/// icaptap's records carry as `http_url`, and sends the same
/// [`respmod_chunked_body`] after every head.
pub fn respmod_head(addr: SocketAddr, size: usize, url: &str) -> Bytes {
    let req_hdr = format!("GET {url} HTTP/1.1\r\nHost: origin.test\r\n\r\n");
    let res_hdr = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
    );
    let mut out = BytesMut::with_capacity(512 + url.len());
    out.extend_from_slice(
        format!(
            "RESPMOD icap://{addr}/echo ICAP/1.0\r\nHost: {addr}\r\nEncapsulated: req-hdr=0, res-hdr={}, res-body={}\r\n\r\n",
            req_hdr.len(),
            req_hdr.len() + res_hdr.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(req_hdr.as_bytes());
    out.extend_from_slice(res_hdr.as_bytes());
    out.freeze()
}

/// A repeating printable pattern, so a capture of it is readable.
fn pattern() -> Vec<u8> {
    (0..REQUEST_CHUNK_SIZE)
        .map(|i| b'a' + (i % 26) as u8)
        .collect()
}

/// The chunked body of a [`respmod_request`] of `size` bytes, zero chunk
/// included.
pub fn respmod_chunked_body(size: usize) -> Bytes {
    let pattern = pattern();
    let mut out = BytesMut::with_capacity(size + size / 1000 + 16);
    let mut left = size;
    while left > 0 {
        let n = left.min(REQUEST_CHUNK_SIZE);
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&pattern[..n]);
        out.extend_from_slice(b"\r\n");
        left -= n;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out.freeze()
}

/// The de-chunked body of a [`respmod_request`] of `size` bytes: what an
/// echo must send back byte for byte.
pub fn respmod_plain_body(size: usize) -> Bytes {
    let pattern = pattern();
    let mut out = BytesMut::with_capacity(size);
    let mut left = size;
    while left > 0 {
        let n = left.min(REQUEST_CHUNK_SIZE);
        out.extend_from_slice(&pattern[..n]);
        left -= n;
    }
    out.freeze()
}
