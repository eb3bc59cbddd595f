//! Synthetic captures: TCP conversations written as pcap or pcapng frames on
//! any link type analysis reads. Tests build the cases reassembly must
//! handle (reordering, loss, retransmission, wrap-around) from them, and the
//! benchmark builds large realistic ICAP captures without a network.
//!
//! IP and TCP headers (with checksums) come from etherparse; link headers
//! come from the packet toolkit ([`crate::capture::packet::link`]), since
//! etherparse builds neither Linux cooked v2 nor BSD loopback headers.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};

use etherparse::PacketBuilder;

use crate::capture::packet::blocks::{self, ByteOrder, Interface, PacketOptions};
use crate::capture::packet::link::LinkHeader;
use crate::capture::packet::TcpFlags;
use crate::tap::{Direction, Micros};

/// The link layer frames are written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntheticLink {
    /// Ethernet II.
    Ethernet,
    /// Ethernet with one 802.1Q tag.
    Vlan(u16),
    /// Ethernet with an 802.1ad outer and an 802.1Q inner tag.
    QinQ(u16, u16),
    /// Linux cooked capture v1.
    Sll,
    /// Linux cooked capture v2 (`tcpdump -i any`).
    Sll2,
    /// Raw IP (LINKTYPE_RAW).
    Raw,
    /// BSD loopback, address family in little-endian host order.
    Null,
    /// OpenBSD loopback, address family big-endian.
    Loop,
}

/// Source and destination MACs of synthetic Ethernet frames.
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

impl SyntheticLink {
    /// The header this link writes in front of every packet.
    fn header(self) -> LinkHeader {
        let ethernet = |outer_vlan, vlan| LinkHeader::Ethernet {
            dst: MAC_B,
            src: MAC_A,
            outer_vlan,
            vlan,
        };
        match self {
            SyntheticLink::Ethernet => ethernet(None, None),
            SyntheticLink::Vlan(id) => ethernet(None, Some(id)),
            SyntheticLink::QinQ(outer, inner) => ethernet(Some(outer), Some(inner)),
            SyntheticLink::Sll => LinkHeader::Sll { src: MAC_A },
            SyntheticLink::Sll2 => LinkHeader::Sll2 {
                src: MAC_A,
                ifindex: 1,
            },
            SyntheticLink::Raw => LinkHeader::Raw,
            SyntheticLink::Null => LinkHeader::Null,
            SyntheticLink::Loop => LinkHeader::Loop,
        }
    }

    /// The LINKTYPE_ number of this link.
    pub fn linktype(self) -> u32 {
        self.header().linktype()
    }

    /// `ip` (an IPv4 or IPv6 packet) wrapped in this link's header.
    pub fn frame(self, ip: &[u8]) -> Vec<u8> {
        let v6 = ip.first().is_some_and(|b| b >> 4 == 6);
        let mut f = Vec::with_capacity(ip.len() + 24);
        self.header().write(v6, &mut f);
        f.extend_from_slice(ip);
        f
    }
}

/// One TCP segment, not yet encoded: tests reorder, split, repeat or drop
/// these before writing them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Which way it goes.
    pub dir: Direction,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// TcpFlags.
    pub flags: TcpFlags,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Segment {
    /// The part of this segment's payload in `range`, with its sequence
    /// number (to build overlaps and split segments).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Segment {
        Segment {
            seq: self.seq.wrapping_add(range.start as u32),
            payload: self.payload[range].to_vec(),
            flags: TcpFlags {
                fin: false,
                ..self.flags
            },
            ..self.clone()
        }
    }
}

/// A TCP conversation between an ICAP client and server, tracking both
/// sides' sequence numbers as segments are produced.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// The client end.
    pub client: SocketAddr,
    /// The server end.
    pub server: SocketAddr,
    client_next: u32,
    server_next: u32,
}

impl Conversation {
    /// A conversation whose sides start at initial sequence numbers
    /// `client_isn` and `server_isn`.
    pub fn new(client: SocketAddr, server: SocketAddr, client_isn: u32, server_isn: u32) -> Self {
        Conversation {
            client,
            server,
            client_next: client_isn,
            server_next: server_isn,
        }
    }

    fn next(&mut self, dir: Direction) -> (&mut u32, u32) {
        match dir {
            Direction::Request => (&mut self.client_next, self.server_next),
            Direction::Response => (&mut self.server_next, self.client_next),
        }
    }

    /// SYN, SYN-ACK, ACK.
    pub fn handshake(&mut self) -> Vec<Segment> {
        let syn = self.control(
            Direction::Request,
            TcpFlags {
                syn: true,
                ..TcpFlags::default()
            },
        );
        let syn_ack = self.control(
            Direction::Response,
            TcpFlags {
                syn: true,
                ack: true,
                ..TcpFlags::default()
            },
        );
        let ack = self.control(
            Direction::Request,
            TcpFlags {
                ack: true,
                ..TcpFlags::default()
            },
        );
        vec![syn, syn_ack, ack]
    }

    /// A segment without payload; SYN and FIN take one sequence number.
    pub fn control(&mut self, dir: Direction, flags: TcpFlags) -> Segment {
        let (next, ack) = self.next(dir);
        let seq = *next;
        if flags.syn || flags.fin {
            *next = next.wrapping_add(1);
        }
        Segment {
            dir,
            seq,
            ack,
            flags,
            payload: Vec::new(),
        }
    }

    /// Payload going `dir`, in segments of at most `mss` bytes.
    pub fn data(&mut self, dir: Direction, payload: &[u8], mss: usize) -> Vec<Segment> {
        payload
            .chunks(mss.max(1))
            .map(|chunk| {
                let (next, ack) = self.next(dir);
                let seq = *next;
                *next = next.wrapping_add(chunk.len() as u32);
                Segment {
                    dir,
                    seq,
                    ack,
                    flags: TcpFlags {
                        ack: true,
                        ..TcpFlags::default()
                    },
                    payload: chunk.to_vec(),
                }
            })
            .collect()
    }

    /// A FIN from `dir`.
    pub fn fin(&mut self, dir: Direction) -> Segment {
        self.control(
            dir,
            TcpFlags {
                fin: true,
                ack: true,
                ..TcpFlags::default()
            },
        )
    }

    /// A pure ACK from `dir` of everything the other side sent so far.
    pub fn ack(&mut self, dir: Direction) -> Segment {
        self.control(
            dir,
            TcpFlags {
                ack: true,
                ..TcpFlags::default()
            },
        )
    }

    /// The IP packet of `seg`.
    pub fn ip_packet(&self, seg: &Segment) -> Vec<u8> {
        let (src, dst) = match seg.dir {
            Direction::Request => (self.client, self.server),
            Direction::Response => (self.server, self.client),
        };
        let builder = match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
            (s, d) => PacketBuilder::ipv6(v6_octets(s), v6_octets(d), 64),
        };
        let mut tcp = builder.tcp(src.port(), dst.port(), seg.seq, 65535);
        if seg.flags.ack {
            tcp = tcp.ack(seg.ack);
        }
        if seg.flags.syn {
            tcp = tcp.syn();
        }
        if seg.flags.fin {
            tcp = tcp.fin();
        }
        if seg.flags.rst {
            tcp = tcp.rst();
        }
        let mut out = Vec::with_capacity(tcp.size(seg.payload.len()));
        // Writing to a Vec fails only for payloads over the IP length
        // limit, which synthetic traffic never builds; such a packet is
        // left empty (and then skipped as not IP) rather than panicking.
        if tcp.write(&mut out, &seg.payload).is_err() {
            out.clear();
        }
        out
    }
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// The container format of a synthetic capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntheticFormat {
    /// Classic pcap, microsecond timestamps.
    Pcap,
    /// pcapng with nanosecond timestamps (if_tsresol = 9).
    PcapNg,
}

/// Writes frames of one link type to a pcap or pcapng stream (big-endian,
/// as tcpdump on a big-endian machine would).
pub struct SyntheticWriter<W: Write> {
    out: W,
    format: SyntheticFormat,
    /// The block being written.
    block: Vec<u8>,
}

impl<W: Write> std::fmt::Debug for SyntheticWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticWriter")
            .field("format", &self.format)
            .finish()
    }
}

/// Snapshot length written in synthetic captures.
const SNAPLEN: u32 = 262_144;
/// Byte order of synthetic captures.
const ORDER: ByteOrder = ByteOrder::Big;

impl<W: Write> SyntheticWriter<W> {
    /// A capture of `format` whose frames are of `linktype`.
    pub fn new(mut out: W, format: SyntheticFormat, linktype: u32) -> io::Result<Self> {
        let mut head = Vec::new();
        match format {
            SyntheticFormat::Pcap => {
                blocks::pcap_header(&mut head, ORDER, false, SNAPLEN, linktype)
            }
            SyntheticFormat::PcapNg => {
                blocks::pcapng_section_header(&mut head, ORDER, None, None);
                let iface = Interface {
                    linktype: linktype as u16,
                    snaplen: SNAPLEN,
                    name: None,
                    description: None,
                    tsresol: Some(9),
                };
                blocks::pcapng_interface(&mut head, ORDER, &iface);
            }
        }
        out.write_all(&head)?;
        Ok(SyntheticWriter {
            out,
            format,
            block: head,
        })
    }

    /// Appends one frame captured at `at`.
    pub fn frame(&mut self, at: Micros, data: &[u8]) -> io::Result<()> {
        self.block.clear();
        let len = data.len() as u32;
        match self.format {
            SyntheticFormat::Pcap => blocks::pcap_record(
                &mut self.block,
                ORDER,
                (at / 1_000_000) as u32,
                (at % 1_000_000) as u32,
                data,
                len,
            ),
            SyntheticFormat::PcapNg => blocks::pcapng_enhanced_packet(
                &mut self.block,
                ORDER,
                0,
                at * 1000,
                data,
                len,
                PacketOptions::Comments(&[]),
            ),
        }
        self.out.write_all(&self.block)
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}
