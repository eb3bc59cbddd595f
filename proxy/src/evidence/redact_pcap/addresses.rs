//! The IP header of a rewritten packet: its addresses replaced by their
//! pseudonyms (`--pseudonymise-ips`), and its IPv4 header and TCP
//! checksums recomputed by the packet toolkit.

use std::net::IpAddr;

use crate::capture::packet::checksum;
use crate::evidence::pseudonym::Pseudonyms;

/// Rewrites addresses (with pseudonyms) and recomputes the IPv4 header and
/// TCP checksums over what the frame holds, when it holds the whole segment.
pub(super) fn fix_ip_and_checksums(ip: &mut [u8], pseudonyms: Option<&mut Pseudonyms>) {
    if let Some(p) = pseudonyms {
        pseudonymise_addresses(ip, p);
    }
    checksum::refresh_tcp_ip(ip);
}

/// Replaces the source and destination addresses of the TCP/IP packet `ip`
/// with their pseudonyms.
fn pseudonymise_addresses(ip: &mut [u8], p: &mut Pseudonyms) {
    match ip.first().map(|b| b >> 4) {
        Some(4) => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ip.len() < ihl.max(20) || ip[9] != 6 {
                return;
            }
            for at in [12usize, 16] {
                let mut a = [0u8; 4];
                a.copy_from_slice(&ip[at..at + 4]);
                if let IpAddr::V4(n) = p.map(IpAddr::from(a)) {
                    ip[at..at + 4].copy_from_slice(&n.octets());
                }
            }
        }
        Some(6) => {
            if ip.len() < 40 || ip[6] != 6 {
                return;
            }
            for at in [8usize, 24] {
                let mut a = [0u8; 16];
                a.copy_from_slice(&ip[at..at + 16]);
                if let IpAddr::V6(n) = p.map(IpAddr::from(a)) {
                    ip[at..at + 16].copy_from_slice(&n.octets());
                }
            }
        }
        _ => {}
    }
}
