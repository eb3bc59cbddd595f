//! Synthesized Ethernet/IP/TCP frames for one leg of a proxied connection,
//! so a capture of what icaptap forwarded reads in Wireshark as if tcpdump
//! had run on that leg (RFC 9293 segment rules; RFC 3507 rides on top).
//!
//! Sequence numbers are derived from stream offsets (`seq = isn + 1 +
//! offset`), never accumulated: a gap in the taps therefore shows in the
//! capture as exactly the missing bytes, and a file that starts mid-connection
//! after a rotation carries on with the right numbers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::packet::blocks::{CLIENT_LEG_IF_NAME, SENSOR_LEG_IF_NAME};
use super::packet::link::LinkHeader;
use super::packet::{checksum, TcpFlags};
use crate::tap::{Direction, Micros};

/// Window scale announced in SYNs: a scaled window of 8 MiB keeps
/// Wireshark from flagging "window full" for the large reads icaptap makes.
const WINDOW_SCALE: u8 = 7;
/// Raw window field of every non-SYN segment (times 2^7 = 8 MiB).
const WINDOW: u16 = 0xffff;
const TTL: u8 = 64;
const ETHERNET_HEADER: usize = 14;
const TCP_HEADER: usize = 20;
/// MSS (4 bytes), NOP, window scale (3 bytes).
const SYN_OPTIONS: usize = 8;
const IPPROTO_TCP: u8 = 6;

/// Which leg of the proxied connection a frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Leg {
    /// ICAP client <-> icaptap's listening address.
    Client,
    /// icaptap's upstream socket <-> the ICAP server.
    Sensor,
}

impl Leg {
    /// The interface name written in pcapng (`if_name`).
    pub fn if_name(self) -> &'static str {
        match self {
            Leg::Client => CLIENT_LEG_IF_NAME,
            Leg::Sensor => SENSOR_LEG_IF_NAME,
        }
    }

    /// Index into per-leg arrays.
    pub(crate) fn index(self) -> usize {
        match self {
            Leg::Client => 0,
            Leg::Sensor => 1,
        }
    }
}

/// One synthesized frame, ready to write; its stored bytes (see
/// [`SynthFrame::captured`]) are kept apart, in the hold-back buffer.
#[derive(Clone, Debug)]
pub struct SynthFrame {
    /// The leg (pcapng interface) it was seen on.
    pub leg: Leg,
    /// Timestamp, microseconds since the UNIX epoch.
    pub at: Micros,
    /// Length of the whole frame as it was on the wire.
    pub len: usize,
    /// How many bytes of it are stored (fewer when a body is cut).
    pub captured: usize,
    /// pcapng packet comments.
    pub comments: Vec<String>,
}

/// Why a frame could not be built.
#[derive(Debug, thiserror::Error)]
#[error("recorder: cannot synthesize a TCP segment of {len} payload bytes on the {leg} ({detail}); this is a bug in icaptap, please report it")]
pub struct SynthError {
    leg: &'static str,
    len: usize,
    detail: String,
}

/// One TCP connection on one leg: `a` opened it (the ICAP client on the
/// client leg, icaptap's upstream socket on the sensor leg), so requests go
/// a -> b and responses b -> a.
#[derive(Clone, Debug)]
pub(crate) struct Flow {
    leg: Leg,
    ip: [IpAddr; 2],
    port: [u16; 2],
    mac: [[u8; 6]; 2],
    isn: [u32; 2],
    mss: usize,
}

impl Flow {
    /// A flow from `a` to `b`; `seed` makes initial sequence numbers differ
    /// between connections and legs; `mtu` bounds every segment.
    pub fn new(leg: Leg, a: SocketAddr, b: SocketAddr, seed: u64, mtu: usize) -> Flow {
        let (ip_a, ip_b) = same_family(a.ip(), b.ip());
        let ip_header = if ip_a.is_ipv4() { 20 } else { 40 };
        // Locally administered MACs that name the role: 02:00:00:00:<leg>:<end>.
        let leg_byte = leg.index() as u8 + 1;
        let mix = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (leg_byte as u64) << 60;
        Flow {
            leg,
            ip: [ip_a, ip_b],
            port: [a.port(), b.port()],
            mac: [[2, 0, 0, 0, leg_byte, 1], [2, 0, 0, 0, leg_byte, 2]],
            isn: [mix as u32, (mix >> 32) as u32],
            mss: mtu.saturating_sub(ip_header + TCP_HEADER).max(64),
        }
    }

    /// Largest payload of one segment.
    pub fn mss(&self) -> usize {
        self.mss
    }

    /// The sequence number of stream byte `offset` going `dir`.
    pub fn seq(&self, dir: Direction, offset: u64) -> u32 {
        self.isn[dir.index()]
            .wrapping_add(1)
            .wrapping_add(offset as u32)
    }

    /// Bytes in front of the payload: Ethernet, IP and TCP headers (no options).
    #[cfg(test)]
    pub fn header_len(&self) -> usize {
        let ip = if self.ip[0].is_ipv4() { 20 } else { 40 };
        ETHERNET_HEADER + ip + TCP_HEADER
    }

    /// The SYN of the side sending `dir` (its initial sequence number).
    pub fn syn(
        &self,
        dir: Direction,
        ack: Option<u32>,
        at: Micros,
        out: &mut Vec<u8>,
    ) -> Result<SynthFrame, SynthError> {
        let seq = self.isn[dir.index()];
        let flags = TcpFlags {
            syn: true,
            ack: ack.is_some(),
            ..TcpFlags::default()
        };
        self.segment(dir, seq, ack.unwrap_or(0), flags, &[], at, out)
    }

    /// The first sequence number after the SYN of `dir` (for the handshake's ACK).
    pub fn after_syn(&self, dir: Direction) -> u32 {
        self.isn[dir.index()].wrapping_add(1)
    }

    /// A segment sent by the side that sends `dir`, appended to `out`
    /// whole.
    #[allow(clippy::too_many_arguments)]
    pub fn segment(
        &self,
        dir: Direction,
        seq: u32,
        ack: u32,
        flags: TcpFlags,
        payload: &[u8],
        at: Micros,
        out: &mut Vec<u8>,
    ) -> Result<SynthFrame, SynthError> {
        let sum = checksum::payload_sum(payload);
        self.build(dir, seq, ack, flags, payload, sum, true, at, out)
    }

    /// A segment sent by the side that sends `dir` carrying `payload`
    /// (whose [`checksum::payload_sum`] is `payload_sum`): its headers, and
    /// the payload too when `store_payload`, are appended to `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        &self,
        dir: Direction,
        seq: u32,
        ack: u32,
        flags: TcpFlags,
        payload: &[u8],
        payload_sum: u16,
        store_payload: bool,
        at: Micros,
        out: &mut Vec<u8>,
    ) -> Result<SynthFrame, SynthError> {
        let (from, to) = match dir {
            Direction::Request => (0, 1),
            Direction::Response => (1, 0),
        };
        // TCP header (RFC 9293 section 3.1); a SYN carries MSS, NOP and
        // window scale options.
        let mut tcp = [0u8; TCP_HEADER + SYN_OPTIONS];
        let tcp_len = if flags.syn {
            TCP_HEADER + SYN_OPTIONS
        } else {
            TCP_HEADER
        };
        tcp[0..2].copy_from_slice(&self.port[from].to_be_bytes());
        tcp[2..4].copy_from_slice(&self.port[to].to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        if flags.ack {
            tcp[8..12].copy_from_slice(&ack.to_be_bytes());
        }
        tcp[12] = ((tcp_len / 4) as u8) << 4;
        tcp[13] = flags.bits();
        tcp[14..16].copy_from_slice(&WINDOW.to_be_bytes());
        if flags.syn {
            let mss = (self.mss as u16).to_be_bytes();
            tcp[20..28].copy_from_slice(&[2, 4, mss[0], mss[1], 1, 3, 3, WINDOW_SCALE]);
        }
        let tcp = &mut tcp[..tcp_len];
        let segment_len = tcp_len + payload.len();
        let (src, dst) = (self.ip[from], self.ip[to]);
        let v4 = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Some((s.octets(), d.octets())),
            _ => None,
        };
        let limit = if v4.is_some() { 65_535 - 20 } else { 65_535 };
        if segment_len > limit {
            return Err(self.error(
                payload.len(),
                format!("{segment_len} bytes of TCP segment exceed the IP length field"),
            ));
        }
        let (src, dst) = match v4 {
            Some((s, d)) => (IpAddr::from(s), IpAddr::from(d)),
            None => (IpAddr::from(v6_octets(src)), IpAddr::from(v6_octets(dst))),
        };
        let csum = checksum::tcp_checksum(src, dst, tcp, payload_sum, payload.len());
        tcp[16..18].copy_from_slice(&csum.to_be_bytes());

        let start = out.len();
        out.reserve(ETHERNET_HEADER + 40 + tcp.len() + payload.len());
        LinkHeader::ethernet(self.mac[to], self.mac[from]).write(v4.is_none(), out);
        match v4 {
            Some((s, d)) => {
                let total = (20 + segment_len) as u16;
                let mut ip = [0u8; 20];
                ip[0] = 0x45;
                ip[2..4].copy_from_slice(&total.to_be_bytes());
                ip[6] = 0x40; // don't fragment
                ip[8] = TTL;
                ip[9] = IPPROTO_TCP;
                ip[12..16].copy_from_slice(&s);
                ip[16..20].copy_from_slice(&d);
                let c = checksum::ipv4_header_checksum(&ip);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                out.extend_from_slice(&ip);
            }
            None => {
                let len = segment_len as u16;
                out.extend_from_slice(&[0x60, 0, 0, 0]);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&[IPPROTO_TCP, TTL]);
                out.extend_from_slice(&v6_octets(src));
                out.extend_from_slice(&v6_octets(dst));
            }
        }
        out.extend_from_slice(tcp);
        let len = out.len() - start + payload.len();
        if store_payload {
            out.extend_from_slice(payload);
        }
        Ok(SynthFrame {
            leg: self.leg,
            at,
            len,
            captured: out.len() - start,
            comments: Vec::new(),
        })
    }

    fn error(&self, len: usize, detail: String) -> SynthError {
        SynthError {
            leg: self.leg.if_name(),
            len,
            detail,
        }
    }
}

/// Both ends in one IP family: a leg whose ends differ (an IPv4 peer seen
/// by a dual-stack socket) is shown in IPv6 with the IPv4-mapped address,
/// and a leg whose ends are both IPv4-mapped is shown in plain IPv4.
fn same_family(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    let (a, b) = (a.to_canonical(), b.to_canonical());
    match (a, b) {
        (IpAddr::V4(x), IpAddr::V6(_)) => (IpAddr::V6(x.to_ipv6_mapped()), b),
        (IpAddr::V6(_), IpAddr::V4(y)) => (a, IpAddr::V6(y.to_ipv6_mapped())),
        _ => (a, b),
    }
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V6(v6) => v6.octets(),
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
    }
}

/// icaptap's sensor-leg address when the connection never got one (the
/// connect failed): the listening IP (or the unspecified address of the
/// server's family) and an ephemeral port derived from the connection id.
pub(crate) fn stand_in_local(listen: SocketAddr, server: SocketAddr, conn: u64) -> SocketAddr {
    let ip = if listen.is_ipv4() == server.is_ipv4() && !listen.ip().is_unspecified() {
        listen.ip()
    } else if server.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    };
    SocketAddr::new(ip, 49152 + (conn % 16384) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn flow(a: &str, b: &str) -> Flow {
        Flow::new(Leg::Sensor, a.parse().unwrap(), b.parse().unwrap(), 7, 1500)
    }

    #[test]
    fn v4_segment_round_trips_through_a_parser() {
        let f = flow("10.0.0.1:40000", "10.0.0.2:1344");
        let ack = f.after_syn(Direction::Response);
        let flags = TcpFlags {
            ack: true,
            psh: true,
            ..TcpFlags::default()
        };
        let mut data = Vec::new();
        let frame = f
            .segment(
                Direction::Request,
                f.seq(Direction::Request, 10),
                ack,
                flags,
                b"hello",
                5,
                &mut data,
            )
            .unwrap();
        assert_eq!(f.mss(), 1460);
        assert_eq!(data.len(), f.header_len() + 5);
        assert_eq!((frame.len, frame.captured), (data.len(), data.len()));
        let p = SlicedPacket::from_ethernet(&data).unwrap();
        let Some(NetSlice::Ipv4(ip)) = p.net else {
            panic!("not ipv4")
        };
        assert_eq!(ip.header().source(), [10, 0, 0, 1]);
        let Some(TransportSlice::Tcp(tcp)) = p.transport else {
            panic!("not tcp")
        };
        assert_eq!(tcp.source_port(), 40000);
        assert_eq!(
            tcp.sequence_number(),
            f.after_syn(Direction::Request).wrapping_add(10)
        );
        assert_eq!(tcp.acknowledgment_number(), ack);
        assert_eq!(tcp.payload(), b"hello");
        let expected = tcp
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), b"hello")
            .unwrap();
        assert_eq!(tcp.checksum(), expected);
    }

    #[test]
    fn mixed_families_become_v6_and_mapped_pairs_become_v4() {
        let f = flow("[::1]:40000", "127.0.0.1:1344");
        assert!(f.ip[0].is_ipv6() && f.ip[1].is_ipv6());
        assert_eq!(f.mss(), 1440);
        let g = flow("[::ffff:127.0.0.1]:40000", "[::ffff:127.0.0.2]:1344");
        assert!(g.ip[0].is_ipv4() && g.ip[1].is_ipv4());
    }

    #[test]
    fn sequence_numbers_wrap() {
        let f = flow("10.0.0.1:1", "10.0.0.2:2");
        let base = f.seq(Direction::Response, 0);
        assert_eq!(f.seq(Direction::Response, 1 << 32), base);
    }
}
