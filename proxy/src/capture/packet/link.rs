//! Link-layer headers: Ethernet (with 802.1Q and QinQ tags), Linux cooked
//! capture v1 and v2 (`tcpdump -i any`), raw IP, and BSD loopback (null and
//! loop). [`ip_packet`] peels a captured frame down to its IP packet;
//! [`LinkHeader`] writes one in front of a synthesized packet. The numbers
//! are LINKTYPE_ values of the pcap and pcapng formats.

/// LINKTYPE_NULL: BSD loopback, a 4-byte address family in host order.
pub const LINKTYPE_NULL: u32 = 0;
/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// LINKTYPE_RAW: an IPv4 or IPv6 packet, no link header.
pub const LINKTYPE_RAW: u32 = 101;
/// LINKTYPE_LOOP: OpenBSD loopback, a 4-byte address family, big-endian.
pub const LINKTYPE_LOOP: u32 = 108;
/// LINKTYPE_LINUX_SLL: Linux cooked capture v1.
pub const LINKTYPE_LINUX_SLL: u32 = 113;
/// LINKTYPE_IPV4: raw IPv4.
pub const LINKTYPE_IPV4: u32 = 228;
/// LINKTYPE_IPV6: raw IPv6.
pub const LINKTYPE_IPV6: u32 = 229;
/// LINKTYPE_LINUX_SLL2: Linux cooked capture v2 (what `tcpdump -i any` writes).
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q, 802.1ad (QinQ outer tag) and the pre-standard QinQ tag.
const ETHERTYPE_VLAN_TAGS: [u16; 3] = [0x8100, 0x88a8, 0x9100];
/// More stacked tags than this is not a real packet.
const MAX_VLAN_TAGS: usize = 4;

/// Whether frames of `linktype` can be decoded.
pub fn is_supported(linktype: u32) -> bool {
    matches!(
        linktype,
        LINKTYPE_NULL
            | LINKTYPE_ETHERNET
            | LINKTYPE_RAW
            | LINKTYPE_LOOP
            | LINKTYPE_LINUX_SLL
            | LINKTYPE_IPV4
            | LINKTYPE_IPV6
            | LINKTYPE_LINUX_SLL2
    )
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]))
}

/// The IP packet in `data` (a frame of `linktype`), or `None` when the frame
/// carries something else (ARP, LLDP...) or is too short.
pub fn ip_packet(linktype: u32, data: &[u8]) -> Option<&[u8]> {
    match linktype {
        LINKTYPE_ETHERNET => after_ethertype(data, 12),
        LINKTYPE_LINUX_SLL => after_ethertype(data, 14),
        LINKTYPE_LINUX_SLL2 => {
            // The protocol type comes first; the header is 20 bytes.
            let proto = be16(data, 0)?;
            ip_by_ethertype(proto, data.get(20..)?)
        }
        LINKTYPE_RAW | LINKTYPE_IPV4 | LINKTYPE_IPV6 => ip_by_version(data),
        // The family is in the capturing host's byte order (and its value
        // differs between BSDs), so the IP version nibble decides.
        LINKTYPE_NULL | LINKTYPE_LOOP => ip_by_version(data.get(4..)?),
        _ => None,
    }
}

/// Follows the ethertype at `at`, through any VLAN tags, to the IP packet.
fn after_ethertype(data: &[u8], mut at: usize) -> Option<&[u8]> {
    let mut ethertype = be16(data, at)?;
    let mut tags = 0;
    while ETHERTYPE_VLAN_TAGS.contains(&ethertype) {
        tags += 1;
        if tags > MAX_VLAN_TAGS {
            return None;
        }
        at += 4;
        ethertype = be16(data, at)?;
    }
    ip_by_ethertype(ethertype, data.get(at + 2..)?)
}

fn ip_by_ethertype(ethertype: u16, rest: &[u8]) -> Option<&[u8]> {
    match ethertype {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => Some(rest),
        _ => None,
    }
}

fn ip_by_version(data: &[u8]) -> Option<&[u8]> {
    match data.first()? >> 4 {
        4 | 6 => Some(data),
        _ => None,
    }
}

/// 802.1ad, the outer tag of QinQ.
const ETHERTYPE_QINQ: u16 = 0x88a8;
/// 802.1Q.
const ETHERTYPE_VLAN: u16 = 0x8100;
/// ARPHRD_ETHER, the hardware type of Linux cooked headers.
const ARPHRD_ETHER: u16 = 1;
/// The Linux cooked packet type "sent by us".
const PACKET_OUTGOING: u8 = 4;
/// Address families of BSD loopback headers.
const AF_INET: u32 = 2;
/// AF_INET6 as macOS numbers it in LINKTYPE_NULL headers (FreeBSD uses 28;
/// readers go by the IP version nibble anyway).
const AF_INET6_NULL: u32 = 30;
/// AF_INET6 on OpenBSD (LINKTYPE_LOOP).
const AF_INET6_LOOP: u32 = 24;

/// A link-layer header to write in front of an IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkHeader {
    /// Ethernet II from `src` to `dst`, with an optional 802.1ad outer tag
    /// and an optional 802.1Q tag (the VLAN ids).
    Ethernet {
        /// Destination MAC.
        dst: [u8; 6],
        /// Source MAC.
        src: [u8; 6],
        /// The 802.1ad outer VLAN id (QinQ).
        outer_vlan: Option<u16>,
        /// The 802.1Q VLAN id.
        vlan: Option<u16>,
    },
    /// Linux cooked capture v1, sent by `src` (an Ethernet address).
    Sll {
        /// The sender's MAC.
        src: [u8; 6],
    },
    /// Linux cooked capture v2, sent by `src` on interface `ifindex`.
    Sll2 {
        /// The sender's MAC.
        src: [u8; 6],
        /// The interface index.
        ifindex: u32,
    },
    /// No link header (LINKTYPE_RAW).
    Raw,
    /// BSD loopback, the address family in little-endian host order.
    Null,
    /// OpenBSD loopback, the address family big-endian.
    Loop,
}

impl LinkHeader {
    /// Plain Ethernet II from `src` to `dst`.
    pub const fn ethernet(dst: [u8; 6], src: [u8; 6]) -> LinkHeader {
        LinkHeader::Ethernet {
            dst,
            src,
            outer_vlan: None,
            vlan: None,
        }
    }

    /// The LINKTYPE_ number of frames with this header.
    pub fn linktype(self) -> u32 {
        match self {
            LinkHeader::Ethernet { .. } => LINKTYPE_ETHERNET,
            LinkHeader::Sll { .. } => LINKTYPE_LINUX_SLL,
            LinkHeader::Sll2 { .. } => LINKTYPE_LINUX_SLL2,
            LinkHeader::Raw => LINKTYPE_RAW,
            LinkHeader::Null => LINKTYPE_NULL,
            LinkHeader::Loop => LINKTYPE_LOOP,
        }
    }

    /// Appends the header for an IPv6 packet when `v6`, an IPv4 one
    /// otherwise, to `out`.
    pub fn write(self, v6: bool, out: &mut Vec<u8>) {
        let ethertype = if v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 }.to_be_bytes();
        match self {
            LinkHeader::Ethernet {
                dst,
                src,
                outer_vlan,
                vlan,
            } => {
                out.extend_from_slice(&dst);
                out.extend_from_slice(&src);
                if let Some(id) = outer_vlan {
                    out.extend_from_slice(&ETHERTYPE_QINQ.to_be_bytes());
                    out.extend_from_slice(&id.to_be_bytes());
                }
                if let Some(id) = vlan {
                    out.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
                    out.extend_from_slice(&id.to_be_bytes());
                }
                out.extend_from_slice(&ethertype);
            }
            LinkHeader::Sll { src } => {
                // Packet type, hardware type, address length, address
                // (padded to 8 bytes), protocol.
                out.extend_from_slice(&[0, PACKET_OUTGOING]);
                out.extend_from_slice(&ARPHRD_ETHER.to_be_bytes());
                out.extend_from_slice(&6u16.to_be_bytes());
                out.extend_from_slice(&src);
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&ethertype);
            }
            LinkHeader::Sll2 { src, ifindex } => {
                // Protocol, reserved, interface index, hardware type,
                // packet type, address length, address (padded to 8 bytes).
                out.extend_from_slice(&ethertype);
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&ifindex.to_be_bytes());
                out.extend_from_slice(&ARPHRD_ETHER.to_be_bytes());
                out.extend_from_slice(&[0, 6]);
                out.extend_from_slice(&src);
                out.extend_from_slice(&[0, 0]);
            }
            LinkHeader::Raw => {}
            LinkHeader::Null => {
                let family = if v6 { AF_INET6_NULL } else { AF_INET };
                out.extend_from_slice(&family.to_le_bytes());
            }
            LinkHeader::Loop => {
                let family = if v6 { AF_INET6_LOOP } else { AF_INET };
                out.extend_from_slice(&family.to_be_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethernet_with_stacked_vlan_tags_reaches_ip() {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x88, 0xa8, 0, 10, 0x81, 0x00, 0, 20, 0x08, 0x00]);
        frame.extend_from_slice(&[0x45, 0, 0, 20]);
        assert_eq!(
            ip_packet(LINKTYPE_ETHERNET, &frame),
            Some(&[0x45, 0, 0, 20][..])
        );
    }

    #[test]
    fn arp_is_not_ip() {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x06, 0, 1]);
        assert_eq!(ip_packet(LINKTYPE_ETHERNET, &frame), None);
    }

    #[test]
    fn loopback_families_in_either_byte_order() {
        let v6 = [30, 0, 0, 0, 0x60, 0, 0, 0];
        assert_eq!(ip_packet(LINKTYPE_NULL, &v6), Some(&v6[4..]));
        let v4 = [0, 0, 0, 2, 0x45, 0];
        assert_eq!(ip_packet(LINKTYPE_LOOP, &v4), Some(&v4[4..]));
    }

    #[test]
    fn written_headers_read_back_to_their_ip_packet() {
        let mac = [2, 0, 0, 0, 0, 1];
        let headers = [
            LinkHeader::ethernet(mac, mac),
            LinkHeader::Ethernet {
                dst: mac,
                src: mac,
                outer_vlan: Some(10),
                vlan: Some(20),
            },
            LinkHeader::Sll { src: mac },
            LinkHeader::Sll2 {
                src: mac,
                ifindex: 1,
            },
            LinkHeader::Raw,
            LinkHeader::Null,
            LinkHeader::Loop,
        ];
        for header in headers {
            for ip in [&[0x45u8, 0, 0, 20][..], &[0x60, 0, 0, 0][..]] {
                let mut frame = Vec::new();
                header.write(ip[0] >> 4 == 6, &mut frame);
                frame.extend_from_slice(ip);
                assert_eq!(ip_packet(header.linktype(), &frame), Some(ip), "{header:?}");
            }
        }
    }

    #[test]
    fn short_frames_are_not_ip() {
        assert_eq!(ip_packet(LINKTYPE_ETHERNET, &[0u8; 13]), None);
        assert_eq!(ip_packet(LINKTYPE_LINUX_SLL2, &[0x08, 0x00]), None);
        assert_eq!(ip_packet(LINKTYPE_RAW, &[]), None);
    }
}
