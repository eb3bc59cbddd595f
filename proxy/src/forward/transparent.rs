//! Transparent insertion on Linux (`--transparent`): the ICAP client keeps
//! its configuration (`icap://SENSOR:1344/...`, RFC 3507 section 4.2) and
//! the kernel hands its connections to icaptap, which forwards each one to
//! the address the client meant.
//!
//! - `redirect`: an nftables/iptables `REDIRECT` (or `DNAT`) rule rewrote the
//!   destination; conntrack remembers the original, and `SO_ORIGINAL_DST`
//!   (`IP6T_SO_ORIGINAL_DST` for IPv6) reads it back.
//! - `tproxy`: a `TPROXY` rule delivered the connection unchanged to a
//!   listener with `IP_TRANSPARENT`; the accepted socket's local address is
//!   the original destination.
//!
//! A connection made to icaptap's own address (nothing redirected it) goes
//! to `--upstream`, so one instance serves both kinds of client and never
//! forwards to itself. Socket options go through the `nix` crate's safe
//! wrappers: unsafe code is forbidden in this workspace.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, setsockopt, sockopt, SockaddrIn, SockaddrIn6};

/// How connections reach icaptap in transparent mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TransparentMode {
    /// NAT `REDIRECT`/`DNAT`: the original destination from conntrack.
    Redirect,
    /// `TPROXY`: the listener takes foreign addresses (`IP_TRANSPARENT`,
    /// needs CAP_NET_ADMIN).
    Tproxy,
}

/// The address the client connected to before the kernel redirected the
/// connection, or `None` when it was not redirected (it was made to
/// `listen` itself) or the kernel does not know (no conntrack entry).
pub fn original_destination<S: AsFd>(
    socket: &S,
    local: SocketAddr,
    listen: SocketAddr,
    mode: TransparentMode,
) -> io::Result<Option<SocketAddr>> {
    let original = match mode {
        TransparentMode::Tproxy => local,
        TransparentMode::Redirect => match local {
            SocketAddr::V4(_) => match getsockopt(socket, sockopt::OriginalDst) {
                Ok(sin) => SocketAddr::V4(SocketAddrV4::from(SockaddrIn::from(sin))),
                // No NAT entry: the connection was not redirected.
                Err(nix::errno::Errno::ENOENT) => return Ok(None),
                Err(e) => return Err(io::Error::from(e)),
            },
            SocketAddr::V6(_) => match getsockopt(socket, sockopt::Ip6tOriginalDst) {
                Ok(sin6) => SocketAddr::V6(SocketAddrV6::from(SockaddrIn6::from(sin6))),
                Err(nix::errno::Errno::ENOENT) => return Ok(None),
                Err(e) => return Err(io::Error::from(e)),
            },
        },
    };
    if is_self(original, local, listen, mode) {
        return Ok(None);
    }
    Ok(Some(original))
}

/// Whether a connection was made to icaptap itself rather than redirected.
/// After NAT, conntrack gives back the local address for a connection that
/// was not rewritten. Under TPROXY nothing is rewritten, so a connection to
/// icaptap's own listening port counts as direct: listen on a port other
/// than the sensor's in that mode (docs/deploy.md).
fn is_self(
    original: SocketAddr,
    local: SocketAddr,
    listen: SocketAddr,
    mode: TransparentMode,
) -> bool {
    match mode {
        TransparentMode::Redirect => original == local,
        TransparentMode::Tproxy => {
            original.port() == listen.port()
                && (listen.ip().is_unspecified() || listen.ip() == original.ip())
        }
    }
}

/// Lets a listening socket accept connections addressed to other hosts
/// (`IP_TRANSPARENT`), as a TPROXY rule needs. Set before `bind`.
pub fn accept_foreign_addresses<S: AsFd>(socket: &S) -> io::Result<()> {
    setsockopt(socket, sockopt::IpTransparent, &true).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!(
                "cannot set IP_TRANSPARENT for --transparent tproxy: {e}; run with CAP_NET_ADMIN \
                 (the systemd unit in deploy/ grants it) or use --transparent redirect"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_direct_connection_is_not_redirected() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listen = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(listen).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let local = server.local_addr().unwrap();
        for mode in [TransparentMode::Redirect, TransparentMode::Tproxy] {
            let found = original_destination(&server, local, listen, mode).unwrap();
            assert_eq!(found, None, "{mode:?}");
        }
        drop(client);
    }
}
