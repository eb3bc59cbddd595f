//! The packet toolkit: what every part of icaptap that writes or rewrites
//! packets shares, so a fix lands once. The recorder (synthesized legs),
//! the synthetic captures of tests and benchmarks
//! ([`crate::analyze::synthetic`]) and capture redaction
//! ([`crate::evidence::redact_pcap`]) all use it; the capture reader
//! ([`crate::analyze`]) uses its link headers and TCP flags.
//!
//! - [`TcpFlags`]: the TCP control bits (RFC 9293 section 3.1);
//! - [`checksum`]: the IPv4 header and TCP checksums (RFC 1071);
//! - [`link`]: link-layer headers, read down to the IP packet and written
//!   in front of one;
//! - [`blocks`]: pcap and pcapng file headers and packet blocks.

pub mod blocks;
pub mod checksum;
pub mod link;

/// TCP control bits of a segment (RFC 9293 section 3.1), as read from a
/// capture or written into a synthesized one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags {
    /// SYN: the sequence number is the initial one.
    pub syn: bool,
    /// ACK: the acknowledgement number is valid.
    pub ack: bool,
    /// FIN: the sender's stream ends after this segment's payload.
    pub fin: bool,
    /// RST: the connection is aborted.
    pub rst: bool,
    /// PSH: the sender pushed what it has.
    pub psh: bool,
}

impl TcpFlags {
    /// Only ACK: what every segment after the handshake carries.
    pub const ACK: TcpFlags = TcpFlags {
        syn: false,
        ack: true,
        fin: false,
        rst: false,
        psh: false,
    };

    /// The flags byte of a TCP header (byte 13: CWR ECE URG ACK PSH RST SYN FIN).
    pub fn bits(self) -> u8 {
        u8::from(self.fin)
            | u8::from(self.syn) << 1
            | u8::from(self.rst) << 2
            | u8::from(self.psh) << 3
            | u8::from(self.ack) << 4
    }
}
