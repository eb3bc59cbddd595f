//! The Internet checksum (RFC 1071) of IPv4 headers and TCP segments, fast
//! enough to run over every forwarded byte: the recorder sums synthesized
//! segments with it, and redaction refreshes the checksums of the packets
//! it rewrote ([`refresh_tcp_ip`]).
//!
//! The ones'-complement sum is associative and commutative, so the recorder
//! sums a segment's payload once ([`payload_sum`], shared by both legs when
//! they cut the stream the same way) and adds the few header words of each
//! leg to it ([`tcp_checksum`]). The payload is read eight bytes at a time in
//! native (little-endian) order and folded to 16 bits at the end; RFC 1071
//! section 2(B) shows that summing in the other byte order gives the same
//! sum with its two bytes swapped.

use std::net::IpAddr;

/// The ones'-complement sum of `data` as big-endian 16-bit words (a last
/// odd byte is padded with a zero), folded to 16 bits.
pub(crate) fn payload_sum(data: &[u8]) -> u16 {
    // Each 8-byte word is added as two 32-bit halves into a 64-bit
    // accumulator: no carry is lost for inputs below 16 GiB.
    let mut acc = 0u64;
    let mut words = data.chunks_exact(8);
    for w in words.by_ref() {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let v = u64::from_le_bytes(b);
        acc += (v & 0xffff_ffff) + (v >> 32);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        let v = u64::from_le_bytes(b);
        acc += (v & 0xffff_ffff) + (v >> 32);
    }
    fold(acc).swap_bytes()
}

/// Folds a sum of 16-bit words with end-around carries.
fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Adds big-endian 16-bit words of `bytes` (even length) to `acc`.
fn add_words(acc: u64, bytes: &[u8]) -> u64 {
    bytes
        .chunks_exact(2)
        .fold(acc, |a, w| a + u64::from(u16::from_be_bytes([w[0], w[1]])))
}

/// The checksum of a TCP segment from `src` to `dst` whose header (with
/// its checksum field zero) is `header` and whose payload of `payload_len`
/// bytes sums to `payload` ([`payload_sum`]).
pub(crate) fn tcp_checksum(
    src: IpAddr,
    dst: IpAddr,
    header: &[u8],
    payload: u16,
    payload_len: usize,
) -> u16 {
    let tcp_len = (header.len() + payload_len) as u64;
    // Pseudo-header: addresses, protocol 6 and the TCP length (RFC 9293
    // section 3.1; RFC 8200 section 8.1 for IPv6, with a 32-bit length).
    let mut acc = 6 + (tcp_len & 0xffff) + (tcp_len >> 16);
    for ip in [src, dst] {
        acc = match ip {
            IpAddr::V4(v4) => add_words(acc, &v4.octets()),
            IpAddr::V6(v6) => add_words(acc, &v6.octets()),
        };
    }
    acc = add_words(acc, header);
    acc += u64::from(payload);
    !fold(acc)
}

/// The IPv4 header checksum of `header` (its checksum field zero).
pub(crate) fn ipv4_header_checksum(header: &[u8]) -> u16 {
    !fold(add_words(0, header))
}

/// Recomputes, in place, the checksums of the TCP/IP packet `ip` after its
/// bytes were changed: the IPv4 header checksum, and the TCP checksum when
/// `ip` holds the whole segment (its IP length fits in what is captured).
/// Packets that are not TCP over IPv4 or IPv6 (without extension headers)
/// are left alone.
pub(crate) fn refresh_tcp_ip(ip: &mut [u8]) {
    let Some(version) = ip.first().map(|b| b >> 4) else {
        return;
    };
    match version {
        4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ip.len() < ihl.max(20) || ip[9] != IPPROTO_TCP {
                return;
            }
            ip[10..12].fill(0);
            let sum = ipv4_header_checksum(&ip[..ihl]);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if total <= ip.len() && total >= ihl + 20 {
                let src = IpAddr::from(<[u8; 4]>::try_from(&ip[12..16]).unwrap_or_default());
                let dst = IpAddr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap_or_default());
                refresh_tcp(src, dst, &mut ip[ihl..total]);
            }
        }
        6 => {
            if ip.len() < 40 || ip[6] != IPPROTO_TCP {
                return;
            }
            let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if 40 + len <= ip.len() && len >= 20 {
                let src = IpAddr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap_or_default());
                let dst = IpAddr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap_or_default());
                refresh_tcp(src, dst, &mut ip[40..40 + len]);
            }
        }
        _ => {}
    }
}

/// IP protocol number of TCP.
const IPPROTO_TCP: u8 = 6;

/// Rewrites the checksum of the whole TCP segment `tcp` from `src` to `dst`.
fn refresh_tcp(src: IpAddr, dst: IpAddr, tcp: &mut [u8]) {
    tcp[16..18].fill(0);
    let sum = tcp_checksum(src, dst, &[], payload_sum(tcp), tcp.len());
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Ipv4Header, Ipv6Header, TcpHeader};
    use proptest::prelude::*;

    fn tcp_header(seq: u32, ack: u32) -> TcpHeader {
        let mut h = TcpHeader::new(40000, 1344, seq, 0xffff);
        h.ack = true;
        h.psh = seq % 2 == 0;
        h.acknowledgment_number = ack;
        h
    }

    proptest! {
        #[test]
        fn tcp_over_ipv4_matches_etherparse(
            payload in proptest::collection::vec(any::<u8>(), 0..3000),
            seq in any::<u32>(),
            ack in any::<u32>(),
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
        ) {
            let h = tcp_header(seq, ack);
            let mut ip = Ipv4Header::new(0, 64, etherparse::IpNumber::TCP, src, dst).unwrap();
            ip.set_payload_len(h.header_len() + payload.len()).unwrap();
            let want = h.calc_checksum_ipv4(&ip, &payload).unwrap();
            let got = tcp_checksum(
                IpAddr::from(src),
                IpAddr::from(dst),
                &h.to_bytes(),
                payload_sum(&payload),
                payload.len(),
            );
            prop_assert_eq!(got, want);
            ip.header_checksum = 0;
            let mut bytes = ip.to_bytes().to_vec();
            bytes[10] = 0;
            bytes[11] = 0;
            prop_assert_eq!(ipv4_header_checksum(&bytes), ip.calc_header_checksum());
        }

        #[test]
        fn tcp_over_ipv6_matches_etherparse(
            payload in proptest::collection::vec(any::<u8>(), 0..3000),
            seq in any::<u32>(),
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
        ) {
            let h = tcp_header(seq, seq ^ 0x5555);
            let ip = Ipv6Header {
                payload_length: (h.header_len() + payload.len()) as u16,
                next_header: etherparse::IpNumber::TCP,
                hop_limit: 64,
                source: src,
                destination: dst,
                ..Ipv6Header::default()
            };
            let want = h.calc_checksum_ipv6(&ip, &payload).unwrap();
            let got = tcp_checksum(
                IpAddr::from(src),
                IpAddr::from(dst),
                &h.to_bytes(),
                payload_sum(&payload),
                payload.len(),
            );
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn a_known_ipv4_header_with_its_checksum_sums_to_zero() {
        let header = [
            0x45u8, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header_checksum(&header), 0);
    }

    proptest! {
        #[test]
        fn refreshed_checksums_equal_the_builders(
            payload in proptest::collection::vec(any::<u8>(), 0..1600),
            seq in any::<u32>(),
            v6 in any::<bool>(),
        ) {
            let builder = if v6 {
                etherparse::PacketBuilder::ipv6([1; 16], [2; 16], 64)
            } else {
                etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            };
            let tcp = builder.tcp(40000, 1344, seq, 0xffff);
            let mut want = Vec::new();
            tcp.write(&mut want, &payload).unwrap();
            let mut got = want.clone();
            let tcp_at = if v6 { 40 } else { 20 };
            got[tcp_at + 16] ^= 0x5a;
            if !v6 {
                got[10] ^= 0xa5;
            }
            refresh_tcp_ip(&mut got);
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn sums_of_extremes() {
        for len in 0..40 {
            for byte in [0u8, 0xff, 0x80, 0x01] {
                let data = vec![byte; len];
                let mut words = 0u64;
                for pair in data.chunks(2) {
                    let hi = u64::from(pair[0]) << 8;
                    words += hi + pair.get(1).map_or(0, |b| u64::from(*b));
                }
                assert_eq!(payload_sum(&data), fold(words), "{len} x {byte:#x}");
            }
        }
        // A large payload still folds every carry.
        assert_eq!(payload_sum(&vec![0xff; 1 << 20]), 0xffff);
    }
}
