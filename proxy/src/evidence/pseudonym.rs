//! IP pseudonymisation for `icaptap bundle --redact --pseudonymise-ips`:
//! every address gets one stand-in for the whole bundle (captures, logs,
//! reports), so conversations still line up. An IPv4 address written as
//! text gets a stand-in of the same text length, so byte offsets in the
//! ICAP streams stay valid: `0.a.b.c` (7 characters), `10.a.b.c` (8 to 14),
//! `100.a.b.c` (15) — all in ranges that never route on the Internet.
//! IPv6 addresses become `fd00::N`; as text inside a capture they are
//! replaced by a same-length stand-in when one fits, or masked with `x`.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The mapping from real addresses to stand-ins.
#[derive(Debug, Default)]
pub struct Pseudonyms {
    map: HashMap<IpAddr, IpAddr>,
    text_v4: HashMap<usize, u64>,
    next_v6: u64,
    used: HashSet<IpAddr>,
}

/// Digit counts of the three octets after the prefix, per text length.
fn v4_layout(len: usize) -> Option<(u8, [u32; 3])> {
    match len {
        7 => Some((0, [1, 1, 1])),
        15 => Some((100, [3, 3, 3])),
        8..=14 => {
            let mut rest = len as u32 - 5;
            let mut digits = [1u32; 3];
            rest -= 3;
            for d in digits.iter_mut().rev() {
                let add = rest.min(2);
                *d += add;
                rest -= add;
            }
            Some((10, digits))
        }
        _ => None,
    }
}

/// The `n`-th octet value with `digits` digits.
fn octet(digits: u32, n: u64) -> (u8, u64) {
    let (lo, span) = match digits {
        1 => (0u64, 10u64),
        2 => (10, 90),
        _ => (100, 156),
    };
    ((lo + n % span) as u8, n / span)
}

impl Pseudonyms {
    /// An empty mapping.
    pub fn new() -> Self {
        Pseudonyms::default()
    }

    /// The stand-in for `ip` (created on first use). IPv4 stand-ins keep
    /// the text length of the original.
    pub fn map(&mut self, ip: IpAddr) -> IpAddr {
        if let Some(p) = self.map.get(&ip) {
            return *p;
        }
        let p = match ip {
            IpAddr::V4(v4) => {
                // A stand-in is never the address itself nor another's.
                let mut candidate = self.new_v4(v4.to_string().len());
                for _ in 0..1000 {
                    let c = IpAddr::V4(candidate);
                    if c != ip && !self.used.contains(&c) {
                        break;
                    }
                    candidate = self.new_v4(v4.to_string().len());
                }
                IpAddr::V4(candidate)
            }
            IpAddr::V6(_) => {
                self.next_v6 += 1;
                IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0) | u128_ip(self.next_v6))
            }
        };
        self.map.insert(ip, p);
        self.used.insert(p);
        p
    }

    fn new_v4(&mut self, len: usize) -> Ipv4Addr {
        let Some((first, digits)) = v4_layout(len) else {
            return Ipv4Addr::new(10, 0, 0, 1);
        };
        let n = self.text_v4.entry(len).or_insert(0);
        *n += 1;
        let mut k = *n;
        let mut octets = [first, 0, 0, 0];
        for i in (0..3).rev() {
            let (value, rest) = octet(digits[i], k);
            octets[i + 1] = value;
            k = rest;
        }
        if first == 100 {
            // Keep 100.64.0.0/10: second octet 100..=127.
            octets[1] = 100 + (octets[1] - 100) % 28;
        }
        Ipv4Addr::from(octets)
    }

    /// Rewrites every textual IP address in `text` (dotted quads, and IPv6
    /// in brackets or standing alone) to its stand-in; `same_length` keeps
    /// the byte length (for capture payloads).
    pub fn rewrite_text(&mut self, text: &mut Vec<u8>, same_length: bool) {
        let mut out = Vec::with_capacity(text.len());
        let mut i = 0;
        while i < text.len() {
            let is_addr_byte = |b: u8| b.is_ascii_hexdigit() || b == b'.' || b == b':';
            if !is_addr_byte(text[i]) || (i > 0 && is_word(text[i - 1])) {
                out.push(text[i]);
                i += 1;
                continue;
            }
            let end = i + text[i..].iter().take_while(|b| is_addr_byte(**b)).count();
            if end < text.len() && is_word(text[end]) {
                out.extend_from_slice(&text[i..end]);
                i = end;
                continue;
            }
            let run = &text[i..end];
            out.extend_from_slice(&self.rewrite_run(run, same_length));
            i = end;
        }
        *text = out;
    }

    /// A run of address characters: `1.2.3.4`, `1.2.3.4:1344`, `::1`...
    fn rewrite_run(&mut self, run: &[u8], same_length: bool) -> Vec<u8> {
        let Ok(s) = std::str::from_utf8(run) else {
            return run.to_vec();
        };
        // IPv4, possibly with a port.
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p))
                if h.parse::<Ipv4Addr>().is_ok() && p.bytes().all(|b| b.is_ascii_digit()) =>
            {
                (h, Some(p))
            }
            _ => (s, None),
        };
        if let Ok(v4) = host.parse::<Ipv4Addr>() {
            let p = self.map(IpAddr::V4(v4)).to_string();
            let mut out = p.into_bytes();
            if same_length && out.len() != host.len() {
                out = vec![b'x'; host.len()];
            }
            if let Some(port) = port {
                out.push(b':');
                out.extend_from_slice(port.as_bytes());
            }
            return out;
        }
        if s.matches(':').count() >= 2 {
            if let Ok(v6) = s.parse::<Ipv6Addr>() {
                let p = self.map(IpAddr::V6(v6)).to_string();
                if !same_length || p.len() == s.len() {
                    return p.into_bytes();
                }
                return vec![b'x'; s.len()];
            }
        }
        run.to_vec()
    }

    /// Every mapping made so far, as text (for the manifest's count only:
    /// the real addresses are never written).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no address was mapped.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn u128_ip(n: u64) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_stand_ins_keep_length_and_are_consistent() {
        let mut p = Pseudonyms::new();
        for text in ["1.2.3.4", "127.0.0.1", "192.168.100.200", "10.0.0.12"] {
            let ip: IpAddr = text.parse().unwrap();
            let a = p.map(ip);
            assert_eq!(a.to_string().len(), text.len(), "{text} -> {a}");
            assert_eq!(p.map(ip), a);
            assert_ne!(a, ip);
        }
        let a = p.map("127.0.0.1".parse().unwrap());
        let b = p.map("127.0.0.2".parse().unwrap());
        assert_ne!(a, b);
    }

    #[test]
    fn text_rewrite_keeps_length_and_ports() {
        let mut p = Pseudonyms::new();
        let mut t =
            b"X-Client-IP: 192.168.1.10\r\nHost: 127.0.0.1:1344\r\nServer: C-ICAP/0.5.10 v1.2"
                .to_vec();
        let before = t.len();
        p.rewrite_text(&mut t, true);
        let s = String::from_utf8(t.clone()).unwrap();
        assert_eq!(t.len(), before);
        assert!(!s.contains("192.168.1.10"), "{s}");
        assert!(!s.contains("127.0.0.1"), "{s}");
        assert!(s.contains(":1344"));
        assert!(s.contains("C-ICAP/0.5.10"), "{s}");
        let mut again = b"\"client\":\"127.0.0.1:40000\"".to_vec();
        p.rewrite_text(&mut again, false);
        let host = p.map("127.0.0.1".parse().unwrap()).to_string();
        assert!(String::from_utf8(again).unwrap().contains(&host));
    }
}
