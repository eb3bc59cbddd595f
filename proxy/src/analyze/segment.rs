//! IP and TCP headers, peeled down to a TCP segment: addresses, sequence and
//! acknowledgement numbers, flags and payload. IPv4 and IPv6 (with extension
//! headers) are parsed by etherparse in its lax mode, so a packet cut by the
//! snapshot length still yields the payload bytes that were captured, and a
//! zero IPv4 total length (TCP segmentation offload) falls back to the
//! captured length.

use std::net::SocketAddr;

use etherparse::{IpNumber, LaxIpSlice, TcpSlice};

use crate::capture::packet::TcpFlags;

/// One TCP segment of a captured packet.
#[derive(Debug, Clone, Copy)]
pub struct TcpSegment<'a> {
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Sequence number of the first payload byte (or of the SYN/FIN).
    pub seq: u32,
    /// Acknowledgement number (meaningful when `flags.ack`).
    pub ack: u32,
    /// Flags.
    pub flags: TcpFlags,
    /// The captured payload (may be shorter than sent: snaplen).
    pub payload: &'a [u8],
}

/// Why a packet yielded no segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotTcp {
    /// Not IP, not TCP, or headers too short to read.
    Other,
    /// A fragment of a fragmented IP packet: not reassembled (rare for TCP,
    /// which sizes segments to the path MTU).
    Fragment,
}

/// The TCP segment in the IP packet `ip`.
pub fn tcp_segment(ip: &[u8]) -> Result<TcpSegment<'_>, NotTcp> {
    let (ip, _ext_err) = LaxIpSlice::from_slice(ip).map_err(|_| NotTcp::Other)?;
    let payload = ip.payload();
    if payload.ip_number != IpNumber::TCP {
        return Err(NotTcp::Other);
    }
    if payload.fragmented {
        return Err(NotTcp::Fragment);
    }
    let tcp = TcpSlice::from_slice(payload.payload).map_err(|_| NotTcp::Other)?;
    Ok(TcpSegment {
        src: SocketAddr::new(ip.source_addr(), tcp.source_port()),
        dst: SocketAddr::new(ip.destination_addr(), tcp.destination_port()),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        flags: TcpFlags {
            syn: tcp.syn(),
            ack: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
            psh: tcp.psh(),
        },
        payload: tcp.payload(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    #[test]
    fn ipv6_segment_fields() {
        let b = PacketBuilder::ipv6([1; 16], [2; 16], 64)
            .tcp(40000, 1344, 7, 1000)
            .ack(99)
            .fin();
        let mut out = Vec::new();
        b.write(&mut out, b"abc").unwrap();
        let s = tcp_segment(&out).unwrap();
        assert_eq!(s.src.port(), 40000);
        assert_eq!(s.dst.port(), 1344);
        assert_eq!((s.seq, s.ack), (7, 99));
        assert!(s.flags.fin && s.flags.ack && !s.flags.syn);
        assert_eq!(s.payload, b"abc");
    }

    #[test]
    fn udp_is_not_tcp() {
        let mut out = Vec::new();
        PacketBuilder::ipv4([1; 4], [2; 4], 64)
            .udp(1, 2)
            .write(&mut out, b"x")
            .unwrap();
        assert_eq!(tcp_segment(&out).unwrap_err(), NotTcp::Other);
    }

    #[test]
    fn snaplen_cut_keeps_captured_payload() {
        let mut out = Vec::new();
        PacketBuilder::ipv4([1; 4], [2; 4], 64)
            .tcp(1, 1344, 5, 100)
            .write(&mut out, b"0123456789")
            .unwrap();
        out.truncate(out.len() - 4);
        assert_eq!(tcp_segment(&out).unwrap().payload, b"012345");
    }
}
