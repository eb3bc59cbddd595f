//! A leg of a connection: plain TCP, or TLS over it (icaptap the server on
//! the client leg, the client on the sensor leg). Reads and writes are the
//! decrypted bytes; the TCP socket underneath stays reachable for what only
//! it can do (a reset on close, addresses).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// One leg, plain or TLS.
#[derive(Debug)]
pub enum LegStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, icaptap the server (the ICAP client's leg).
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS, icaptap the client (the sensor's leg).
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl LegStream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            LegStream::Plain(s) => s,
            LegStream::Server(s) => s.get_ref().0,
            LegStream::Client(s) => s.get_ref().0,
        }
    }

    /// Whether this leg speaks TLS: its writes are buffered by the TLS
    /// session and must be flushed.
    pub fn is_tls(&self) -> bool {
        !matches!(self, LegStream::Plain(_))
    }

    /// The plain TCP stream, when the leg is plain.
    pub fn as_plain_mut(&mut self) -> Option<&mut TcpStream> {
        match self {
            LegStream::Plain(s) => Some(s),
            _ => None,
        }
    }
}

/// A TLS peer that closes its TCP connection without a `close_notify`
/// alert (many ICAP clients and servers do) has ended its stream all the
/// same: an end of stream, as a FIN on a plain leg, not a broken read.
fn eof_is_end(read: Poll<io::Result<()>>) -> Poll<io::Result<()>> {
    match read {
        Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
        other => other,
    }
}

impl AsyncRead for LegStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LegStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            LegStream::Server(s) => eof_is_end(Pin::new(s.as_mut()).poll_read(cx, buf)),
            LegStream::Client(s) => eof_is_end(Pin::new(s.as_mut()).poll_read(cx, buf)),
        }
    }
}

impl AsyncWrite for LegStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            LegStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            LegStream::Server(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            LegStream::Client(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LegStream::Plain(s) => Pin::new(s).poll_flush(cx),
            LegStream::Server(s) => Pin::new(s.as_mut()).poll_flush(cx),
            LegStream::Client(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LegStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            LegStream::Server(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            LegStream::Client(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
