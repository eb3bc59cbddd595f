//! Capture file blocks, laid out into a byte buffer: the classic pcap file
//! header and packet records, and the pcapng blocks icaptap writes (section
//! header, interface description, enhanced packet). The recorder stages them
//! for its files, synthetic captures stream them, and redaction re-encodes
//! the packets it rewrote with them. Reading is the capture reader's
//! ([`crate::analyze`]).
//!
//! Every function appends one whole block (or record) to `out` and cannot
//! fail: the caller decides where the bytes go.

/// The byte order of a file's (or a pcapng section's) fixed-width fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    /// Most significant byte first.
    Big,
    /// Least significant byte first.
    Little,
}

impl ByteOrder {
    /// The order of the machine icaptap runs on.
    pub const NATIVE: ByteOrder = if cfg!(target_endian = "big") {
        ByteOrder::Big
    } else {
        ByteOrder::Little
    };

    /// `v` in this order.
    pub fn u16(self, v: u16) -> [u8; 2] {
        match self {
            ByteOrder::Big => v.to_be_bytes(),
            ByteOrder::Little => v.to_le_bytes(),
        }
    }

    /// `v` in this order.
    pub fn u32(self, v: u32) -> [u8; 4] {
        match self {
            ByteOrder::Big => v.to_be_bytes(),
            ByteOrder::Little => v.to_le_bytes(),
        }
    }

    /// The `u32` at `at` of `b` in this order.
    pub fn read_u32(self, b: &[u8], at: usize) -> Option<u32> {
        let raw: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(match self {
            ByteOrder::Big => u32::from_be_bytes(raw),
            ByteOrder::Little => u32::from_le_bytes(raw),
        })
    }
}

/// pcapng block type of a Section Header Block.
pub const SECTION_HEADER: u32 = 0x0a0d_0d0a;
/// pcapng block type of an Interface Description Block.
pub const INTERFACE_DESCRIPTION: u32 = 1;
/// pcapng block type of an Enhanced Packet Block.
pub const ENHANCED_PACKET: u32 = 6;

/// pcapng option codes (pcapng section 3.5 and 4).
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const OPT_SHB_USERAPPL: u16 = 4;
const OPT_IF_NAME: u16 = 2;
const OPT_IF_DESCRIPTION: u16 = 3;
const OPT_IF_TSRESOL: u16 = 9;

/// Zero bytes that pad `n` bytes to a multiple of 4.
fn pad(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// The classic pcap file header (version 2.4): microsecond timestamps, or
/// nanosecond ones when `nanos`.
pub fn pcap_header(out: &mut Vec<u8>, order: ByteOrder, nanos: bool, snaplen: u32, linktype: u32) {
    let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
    out.extend_from_slice(&order.u32(magic));
    out.extend_from_slice(&order.u16(2));
    out.extend_from_slice(&order.u16(4));
    out.extend_from_slice(&order.u32(0)); // thiszone
    out.extend_from_slice(&order.u32(0)); // sigfigs
    out.extend_from_slice(&order.u32(snaplen));
    out.extend_from_slice(&order.u32(linktype));
}

/// One classic pcap record: the 16-byte header and the captured `data` of
/// a packet `original_len` bytes long, at `ts_sec` and `ts_frac` (micro- or
/// nanoseconds, as the file header says).
pub fn pcap_record(
    out: &mut Vec<u8>,
    order: ByteOrder,
    ts_sec: u32,
    ts_frac: u32,
    data: &[u8],
    original_len: u32,
) {
    out.reserve(16 + data.len());
    out.extend_from_slice(&order.u32(ts_sec));
    out.extend_from_slice(&order.u32(ts_frac));
    out.extend_from_slice(&order.u32(data.len() as u32));
    out.extend_from_slice(&order.u32(original_len));
    out.extend_from_slice(data);
}

/// Appends option `code` holding `value` (padded) to `out`.
fn option(out: &mut Vec<u8>, order: ByteOrder, code: u16, value: &[u8]) {
    out.extend_from_slice(&order.u16(code));
    out.extend_from_slice(&order.u16(value.len() as u16));
    out.extend_from_slice(value);
    out.extend_from_slice(&[0; 3][..pad(value.len())]);
}

/// Appends the end of an options list.
fn end_of_options(out: &mut Vec<u8>, order: ByteOrder) {
    out.extend_from_slice(&order.u16(OPT_END));
    out.extend_from_slice(&order.u16(0));
}

/// Wraps the block body that `body` appends into a whole block of `kind`
/// (type, length, body padded to 32 bits, length again).
fn block(out: &mut Vec<u8>, order: ByteOrder, kind: u32, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&order.u32(kind));
    out.extend_from_slice(&[0; 4]);
    body(out);
    let padding = pad(out.len() - start);
    out.extend_from_slice(&[0; 3][..padding]);
    let total = (out.len() - start + 4) as u32;
    out[start + 4..start + 8].copy_from_slice(&order.u32(total));
    out.extend_from_slice(&order.u32(total));
}

/// A pcapng Section Header Block (version 1.0, section length unknown),
/// naming the application that wrote it when `user_application` is given.
pub fn pcapng_section_header(
    out: &mut Vec<u8>,
    order: ByteOrder,
    user_application: Option<&str>,
    comment: Option<&str>,
) {
    block(out, order, SECTION_HEADER, |b| {
        b.extend_from_slice(&order.u32(0x1a2b_3c4d));
        b.extend_from_slice(&order.u16(1));
        b.extend_from_slice(&order.u16(0));
        b.extend_from_slice(&[0xff; 8]); // section length -1: not given
        if let Some(c) = comment {
            option(b, order, OPT_COMMENT, c.as_bytes());
        }
        if let Some(app) = user_application {
            option(b, order, OPT_SHB_USERAPPL, app.as_bytes());
        }
        if comment.is_some() || user_application.is_some() {
            end_of_options(b, order);
        }
    });
}

/// The `if_name` of the client leg in icaptap's own captures (ICAP client
/// <-> icaptap's listening address).
pub const CLIENT_LEG_IF_NAME: &str = "client-leg";

/// The `if_name` of the sensor leg in icaptap's own captures (icaptap's
/// upstream socket <-> the ICAP server): the client leg's bytes again, so
/// an analysis of such a capture decodes only the client leg.
pub const SENSOR_LEG_IF_NAME: &str = "sensor-leg";

/// What a pcapng Interface Description Block says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interface<'a> {
    /// LINKTYPE_ of its packets.
    pub linktype: u16,
    /// Largest captured length.
    pub snaplen: u32,
    /// `if_name`.
    pub name: Option<&'a str>,
    /// `if_description`.
    pub description: Option<&'a str>,
    /// `if_tsresol`: timestamps count units of 10^-N seconds (6 when absent).
    pub tsresol: Option<u8>,
}

/// A pcapng Interface Description Block.
pub fn pcapng_interface(out: &mut Vec<u8>, order: ByteOrder, iface: &Interface<'_>) {
    block(out, order, INTERFACE_DESCRIPTION, |b| {
        b.extend_from_slice(&order.u16(iface.linktype));
        b.extend_from_slice(&[0; 2]);
        b.extend_from_slice(&order.u32(iface.snaplen));
        let mut any = false;
        if let Some(name) = iface.name {
            option(b, order, OPT_IF_NAME, name.as_bytes());
            any = true;
        }
        if let Some(d) = iface.description {
            option(b, order, OPT_IF_DESCRIPTION, d.as_bytes());
            any = true;
        }
        if let Some(r) = iface.tsresol {
            option(b, order, OPT_IF_TSRESOL, &[r]);
            any = true;
        }
        if any {
            end_of_options(b, order);
        }
    });
}

/// The options of an Enhanced Packet Block.
#[derive(Debug, Clone, Copy)]
pub enum PacketOptions<'a> {
    /// One `opt_comment` per comment (and the end of options when any).
    Comments(&'a [String]),
    /// Options already encoded in the block's byte order, copied as they are.
    Encoded(&'a [u8]),
}

/// A pcapng Enhanced Packet Block: `data` captured of a packet
/// `original_len` bytes long on interface `interface`, at `timestamp`
/// (units of the interface's `if_tsresol`).
pub fn pcapng_enhanced_packet(
    out: &mut Vec<u8>,
    order: ByteOrder,
    interface: u32,
    timestamp: u64,
    data: &[u8],
    original_len: u32,
    options: PacketOptions<'_>,
) {
    let options_len = match options {
        PacketOptions::Comments([]) => 0,
        PacketOptions::Comments(c) => {
            c.iter().map(|c| 4 + c.len() + pad(c.len())).sum::<usize>() + 4
        }
        PacketOptions::Encoded(raw) => raw.len(),
    };
    let total = (32 + data.len() + pad(data.len()) + options_len) as u32;
    out.reserve(total as usize);
    out.extend_from_slice(&order.u32(ENHANCED_PACKET));
    out.extend_from_slice(&order.u32(total));
    out.extend_from_slice(&order.u32(interface));
    out.extend_from_slice(&order.u32((timestamp >> 32) as u32));
    out.extend_from_slice(&order.u32(timestamp as u32));
    out.extend_from_slice(&order.u32(data.len() as u32));
    out.extend_from_slice(&order.u32(original_len));
    out.extend_from_slice(data);
    out.extend_from_slice(&[0; 3][..pad(data.len())]);
    match options {
        PacketOptions::Comments([]) => {}
        PacketOptions::Comments(comments) => {
            for c in comments {
                option(out, order, OPT_COMMENT, c.as_bytes());
            }
            end_of_options(out, order);
        }
        PacketOptions::Encoded(raw) => out.extend_from_slice(raw),
    }
    out.extend_from_slice(&order.u32(total));
}

#[cfg(test)]
mod tests {
    //! pcap-file writes the same blocks: it is the reference.
    use std::borrow::Cow;
    use std::time::Duration;

    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
    use pcap_file::pcapng::blocks::interface_description::{
        InterfaceDescriptionBlock, InterfaceDescriptionOption,
    };
    use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::{DataLink, Endianness, TsResolution};

    use super::*;

    #[test]
    fn pcapng_blocks_equal_pcap_files() {
        for (order, endianness) in [
            (ByteOrder::Big, Endianness::Big),
            (ByteOrder::Little, Endianness::Little),
        ] {
            let section = SectionHeaderBlock {
                endianness,
                options: vec![SectionHeaderOption::UserApplication(Cow::Borrowed(
                    "icaptap x",
                ))],
                ..SectionHeaderBlock::default()
            };
            let mut w = PcapNgWriter::with_section_header(Vec::new(), section).unwrap();
            w.write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: 262_144,
                options: vec![
                    InterfaceDescriptionOption::IfName(Cow::Borrowed("client-leg")),
                    InterfaceDescriptionOption::IfDescription(Cow::Borrowed("a leg")),
                    InterfaceDescriptionOption::IfTsResol(9),
                ],
            })
            .unwrap();
            w.write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::from(276),
                snaplen: 65535,
                options: vec![],
            })
            .unwrap();
            for (data, comments) in [
                (&b"abcde"[..], vec![]),
                (
                    &b"abcdefgh"[..],
                    vec!["one".to_string(), "four".to_string()],
                ),
            ] {
                w.write_pcapng_block(EnhancedPacketBlock {
                    interface_id: 1,
                    timestamp: Duration::from_nanos(1_700_000_000_123_456_789),
                    original_len: 1500,
                    data: Cow::Borrowed(data),
                    options: comments
                        .iter()
                        .map(|c| EnhancedPacketOption::Comment(Cow::Borrowed(c.as_str())))
                        .collect(),
                })
                .unwrap();
            }
            let want = w.into_inner();

            let mut got = Vec::new();
            pcapng_section_header(&mut got, order, Some("icaptap x"), None);
            pcapng_interface(
                &mut got,
                order,
                &Interface {
                    linktype: 1,
                    snaplen: 262_144,
                    name: Some("client-leg"),
                    description: Some("a leg"),
                    tsresol: Some(9),
                },
            );
            pcapng_interface(
                &mut got,
                order,
                &Interface {
                    linktype: 276,
                    snaplen: 65535,
                    name: None,
                    description: None,
                    tsresol: None,
                },
            );
            let ts = 1_700_000_000_123_456_789;
            pcapng_enhanced_packet(
                &mut got,
                order,
                1,
                ts,
                b"abcde",
                1500,
                PacketOptions::Comments(&[]),
            );
            let comments = ["one".to_string(), "four".to_string()];
            pcapng_enhanced_packet(
                &mut got,
                order,
                1,
                ts,
                b"abcdefgh",
                1500,
                PacketOptions::Comments(&comments),
            );
            assert_eq!(got, want, "{order:?}");
        }
    }

    #[test]
    fn pcap_records_equal_pcap_files() {
        for (order, endianness, nanos) in [
            (ByteOrder::Big, Endianness::Big, false),
            (ByteOrder::Little, Endianness::Little, true),
        ] {
            let header = PcapHeader {
                datalink: DataLink::from(113),
                snaplen: 262_144,
                endianness,
                ts_resolution: if nanos {
                    TsResolution::NanoSecond
                } else {
                    TsResolution::MicroSecond
                },
                ..PcapHeader::default()
            };
            let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
            let ts = Duration::from_micros(1_700_000_000_123_456);
            w.write_packet(&PcapPacket::new(ts, 70, b"abc")).unwrap();
            let want = w.into_writer();

            let mut got = Vec::new();
            pcap_header(&mut got, order, nanos, 262_144, 113);
            let frac = if nanos { 123_456_000 } else { 123_456 };
            pcap_record(&mut got, order, 1_700_000_000, frac, b"abc", 70);
            assert_eq!(got, want);
        }
    }

    #[test]
    fn encoded_options_are_copied() {
        let mut a = Vec::new();
        let comments = ["x".to_string()];
        pcapng_enhanced_packet(
            &mut a,
            ByteOrder::Little,
            0,
            7,
            b"ab",
            2,
            PacketOptions::Comments(&comments),
        );
        let options = &a[28 + 4..a.len() - 4];
        let mut b = Vec::new();
        pcapng_enhanced_packet(
            &mut b,
            ByteOrder::Little,
            0,
            7,
            b"ab",
            2,
            PacketOptions::Encoded(options),
        );
        assert_eq!(a, b);
    }
}
