//! ICAP found on any port: the flow table decodes flows on the ICAP ports
//! it was given (1344 and `--port`), and this looks at every other TCP
//! flow's first payload. A flow whose client opens with an ICAP request
//! line (`OPTIONS icap://...`, `REQMOD icap://...`, `RESPMOD icap://...`)
//! or whose server opens with an ICAP status line (`ICAP/1.0 200`) is ICAP:
//! its server port joins the ICAP ports, and the packets held while the
//! flow was undecided (its handshake) are handed back so that the flow is
//! decoded from its first packet. Any other first payload makes the flow
//! not ICAP for good, so bytes later in a web download never count.
//!
//! Ports are a hint, not a gate. What was seen is kept for the case where
//! nothing is ICAP: the busiest TCP ports, so that the user is told where
//! to look instead of "0 exchanges".
//!
//! Memory is bounded: flows held undecided, packets held per flow, flows
//! remembered as not ICAP and ports counted.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;

use bytes::Bytes;

use super::frames::Frame;
use super::segment::TcpSegment;
use crate::tap::Micros;

/// Undecided flows held at once; past it, new flows are decided on their
/// first payload without their handshake held.
const MAX_UNDECIDED: usize = 10_000;

/// Packets held per undecided flow (a handshake is three).
const MAX_HELD_PER_FLOW: usize = 8;

/// Flows remembered as not ICAP; past it the memory starts again (a flow
/// forgotten mid-stream is looked at again, and a later segment of it
/// would have to start with an ICAP line to be taken).
const MAX_NOT_ICAP: usize = 100_000;

/// Distinct ports counted for the "ports seen" list.
const MAX_PORTS_COUNTED: usize = 4_096;

/// A packet held while its flow was undecided, to be handed back in order.
#[derive(Debug, Clone)]
pub struct HeldFrame {
    /// Frame number in its file.
    pub number: u64,
    /// Packet time.
    pub at: Micros,
    /// Link type of its interface.
    pub linktype: u32,
    /// The captured bytes.
    pub data: Bytes,
    /// Bytes of the file read when it was read.
    pub file_bytes_read: u64,
    /// On icaptap's sensor leg.
    pub icaptap_sensor_leg: bool,
}

impl HeldFrame {
    fn of(frame: &Frame<'_>) -> HeldFrame {
        HeldFrame {
            number: frame.number,
            at: frame.at,
            linktype: frame.linktype,
            data: frame.data.clone(),
            file_bytes_read: frame.file_bytes_read,
            icaptap_sensor_leg: frame.icaptap_sensor_leg,
        }
    }

    /// The frame again, to feed the flow table.
    pub fn frame(&self) -> Frame<'_> {
        Frame {
            number: self.number,
            at: self.at,
            linktype: self.linktype,
            data: &self.data,
            file_bytes_read: self.file_bytes_read,
            icaptap_sensor_leg: self.icaptap_sensor_leg,
        }
    }
}

/// What to do with a packet of a flow on no ICAP port.
#[derive(Debug)]
pub enum Look {
    /// Held until its flow shows its first payload.
    Held,
    /// Not ICAP (counted as other traffic), with the packets that were
    /// held for its flow and are now dropped.
    NotIcap {
        /// Packets dropped with it.
        dropped: usize,
    },
    /// The flow is ICAP, served on `server_port`: feed `held`, then this
    /// packet.
    Icap {
        /// The server's port, now an ICAP port.
        server_port: u16,
        /// The flow's earlier packets, in capture order.
        held: Vec<HeldFrame>,
    },
}

/// The two ends of a flow, either way round.
type Pair = (SocketAddr, SocketAddr);

fn pair(seg: &TcpSegment<'_>) -> Pair {
    if seg.src <= seg.dst {
        (seg.src, seg.dst)
    } else {
        (seg.dst, seg.src)
    }
}

/// Which end opens an ICAP flow with `payload`: `Some(true)` for a client
/// (an ICAP request line), `Some(false)` for a server (a status line),
/// `None` for neither, and `Err(())` when `payload` is too short to tell
/// and could still become one.
fn opens_icap(payload: &[u8]) -> Result<Option<bool>, ()> {
    const REQUESTS: [&[u8]; 3] = [b"OPTIONS icap://", b"REQMOD icap://", b"RESPMOD icap://"];
    const STATUS: &[u8] = b"ICAP/1.";
    for request in REQUESTS {
        if starts_with_ignoring_scheme_case(payload, request) {
            return Ok(Some(true));
        }
    }
    if payload.len() >= STATUS.len() + 5
        && payload.starts_with(STATUS)
        && payload[STATUS.len() + 1] == b' '
        && payload[STATUS.len() + 2..STATUS.len() + 5]
            .iter()
            .all(u8::is_ascii_digit)
    {
        return Ok(Some(false));
    }
    let could_be = REQUESTS
        .iter()
        .chain(&[&b"ICAP/1.0 200"[..]])
        .any(|sig| payload.len() < sig.len() && sig[..payload.len()].eq_ignore_ascii_case(payload));
    if could_be {
        Err(())
    } else {
        Ok(None)
    }
}

/// `payload` starts with `sig`, the `icap://` scheme in any case (RFC 3986
/// schemes are case-insensitive), the method exactly.
fn starts_with_ignoring_scheme_case(payload: &[u8], sig: &[u8]) -> bool {
    let method = sig.iter().position(|&b| b == b' ').map_or(0, |i| i + 1);
    payload.len() >= sig.len()
        && payload[..method] == sig[..method]
        && payload[method..sig.len()].eq_ignore_ascii_case(&sig[method..])
}

#[derive(Debug, Default)]
struct Undecided {
    held: Vec<HeldFrame>,
}

/// What the flows on no ICAP port showed, and the ports found to carry
/// ICAP.
#[derive(Debug, Default)]
pub struct Discovery {
    undecided: HashMap<Pair, Undecided>,
    not_icap: HashSet<Pair>,
    /// Flows per port: the SYN's destination, else the lower port.
    ports_seen: HashMap<u16, u64>,
    found: BTreeSet<u16>,
}

impl Discovery {
    /// Looks at one packet of a flow on no ICAP port.
    pub fn look(&mut self, frame: &Frame<'_>, seg: &TcpSegment<'_>) -> Look {
        let key = pair(seg);
        if self.not_icap.contains(&key) {
            return Look::NotIcap { dropped: 0 };
        }
        if !self.undecided.contains_key(&key) {
            self.count_port(seg);
        }
        if seg.payload.is_empty() {
            return self.hold(key, frame);
        }
        match opens_icap(seg.payload) {
            Err(()) => self.hold(key, frame),
            Ok(Some(client_sent)) => {
                let server_port = if client_sent {
                    seg.dst.port()
                } else {
                    seg.src.port()
                };
                self.found.insert(server_port);
                let held = self.undecided.remove(&key).unwrap_or_default().held;
                Look::Icap { server_port, held }
            }
            Ok(None) => {
                let dropped = self.undecided.remove(&key).map_or(0, |u| u.held.len());
                if self.not_icap.len() >= MAX_NOT_ICAP {
                    self.not_icap.clear();
                }
                self.not_icap.insert(key);
                Look::NotIcap { dropped }
            }
        }
    }

    fn hold(&mut self, key: Pair, frame: &Frame<'_>) -> Look {
        if !self.undecided.contains_key(&key) && self.undecided.len() >= MAX_UNDECIDED {
            return Look::NotIcap { dropped: 0 };
        }
        let flow = self.undecided.entry(key).or_default();
        if flow.held.len() >= MAX_HELD_PER_FLOW {
            return Look::NotIcap { dropped: 0 };
        }
        flow.held.push(HeldFrame::of(frame));
        Look::Held
    }

    fn count_port(&mut self, seg: &TcpSegment<'_>) {
        let port = if seg.flags.syn && !seg.flags.ack {
            seg.dst.port()
        } else if seg.flags.syn {
            seg.src.port()
        } else {
            seg.src.port().min(seg.dst.port())
        };
        if let Some(n) = self.ports_seen.get_mut(&port) {
            *n += 1;
        } else if self.ports_seen.len() < MAX_PORTS_COUNTED {
            self.ports_seen.insert(port, 1);
        }
    }

    /// Ports found to carry ICAP that were not ICAP ports to begin with.
    pub fn found(&self) -> &BTreeSet<u16> {
        &self.found
    }

    /// Packets still held for flows that never showed a payload: not ICAP
    /// as far as the capture shows.
    pub fn held_at_end(&self) -> usize {
        self.undecided.values().map(|u| u.held.len()).sum()
    }

    /// The busiest TCP ports of the flows on no ICAP port, most flows
    /// first, at most `n`.
    pub fn busiest_ports(&self, n: usize) -> Vec<(u16, u64)> {
        let mut ports: Vec<(u16, u64)> = self.ports_seen.iter().map(|(&p, &c)| (p, c)).collect();
        ports.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        ports.truncate(n);
        ports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_icap_first_line_is_told_from_anything_else_and_short_prefixes_wait() {
        assert_eq!(
            opens_icap(b"OPTIONS icap://s/x ICAP/1.0\r\n"),
            Ok(Some(true))
        );
        assert_eq!(
            opens_icap(b"RESPMOD ICAP://s/av ICAP/1.0\r\n"),
            Ok(Some(true))
        );
        assert_eq!(
            opens_icap(b"REQMOD icap://s/r ICAP/1.0\r\n"),
            Ok(Some(true))
        );
        assert_eq!(opens_icap(b"ICAP/1.0 200 OK\r\n"), Ok(Some(false)));
        assert_eq!(opens_icap(b"GET / HTTP/1.1\r\n"), Ok(None));
        assert_eq!(opens_icap(b"HTTP/1.1 200 OK\r\n"), Ok(None));
        assert_eq!(opens_icap(b"OPTIONS * HTTP/1.1\r\n"), Ok(None));
        assert_eq!(opens_icap(b"respmod icap://s ICAP/1.0\r\n"), Ok(None));
        assert_eq!(opens_icap(b"RESP"), Err(()));
        assert_eq!(opens_icap(b"ICAP/1"), Err(()));
        assert_eq!(opens_icap(b"\x16\x03\x01"), Ok(None));
    }
}
