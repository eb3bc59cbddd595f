//! The pcapng format (what Wireshark and dumpcap write): blocks of a type,
//! a length, a body and the length again. Sections (SHB) fix the byte order
//! and reset the interface list; interfaces (IDB) give each packet's link
//! type and timestamp resolution (`if_tsresol`, `if_tsoffset`); packets come
//! in enhanced (EPB), simple (SPB) and obsolete (PB) packet blocks.

use super::frames::{need, FrameSink, Stop, StoredKind, MAX_RECORD};
use super::shared_buffer::SharedReader;
use crate::capture::packet::blocks::{ByteOrder, SENSOR_LEG_IF_NAME};
use crate::capture::packet::link;
use crate::tap::Micros;

const SECTION_HEADER: u32 = 0x0a0d_0d0a;
const INTERFACE_DESCRIPTION: u32 = 0x0000_0001;
const OBSOLETE_PACKET: u32 = 0x0000_0002;
const SIMPLE_PACKET: u32 = 0x0000_0003;
const ENHANCED_PACKET: u32 = 0x0000_0006;

const OPT_END: u16 = 0;
const OPT_IF_NAME: u16 = 2;
const OPT_IF_TSRESOL: u16 = 9;
const OPT_IF_TSOFFSET: u16 = 14;

/// The link type and clock of one interface.
#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: u32,
    /// Timestamp units per second (`if_tsresol`; 10^6 by default).
    units_per_sec: u64,
    /// Seconds added to every timestamp (`if_tsoffset`).
    offset_secs: i64,
    /// Named as icaptap names its sensor leg (`if_name`).
    sensor_leg: bool,
}

impl Interface {
    fn micros(&self, units: u64) -> Micros {
        let us = if self.units_per_sec == 1_000_000 {
            units
        } else {
            (u128::from(units) * 1_000_000 / u128::from(self.units_per_sec.max(1))) as u64
        };
        us.saturating_add_signed(self.offset_secs.saturating_mul(1_000_000))
    }
}

/// Fixed-width fields in the section's byte order.
#[derive(Debug, Clone, Copy)]
struct Order {
    little: bool,
}

impl Order {
    fn u16(self, b: &[u8], at: usize) -> Option<u16> {
        let w = [*b.get(at)?, *b.get(at + 1)?];
        Some(if self.little {
            u16::from_le_bytes(w)
        } else {
            u16::from_be_bytes(w)
        })
    }

    fn u32(self, b: &[u8], at: usize) -> Option<u32> {
        let w: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(if self.little {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        })
    }

    fn u64(self, b: &[u8], at: usize) -> Option<u64> {
        let w: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
        Some(if self.little {
            u64::from_le_bytes(w)
        } else {
            u64::from_be_bytes(w)
        })
    }
}

/// Reads every block of a pcapng into `sink`.
pub(crate) fn read(r: &mut SharedReader, sink: &mut FrameSink<'_, '_>) -> Result<(), Stop> {
    let mut order = Order { little: true };
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut last_at: Micros = 0;
    loop {
        let start = r.offset();
        if !need(r, 12)? {
            if r.ahead().is_empty() {
                return Ok(());
            }
            return Err(Stop::Truncated { offset: start });
        }
        let head = r.ahead();
        let corrupt = |what: String| Stop::Corrupt {
            offset: start,
            what,
        };
        let kind = order.u32(head, 0).unwrap_or(0);
        if kind == SECTION_HEADER {
            order = match head[8..12] {
                [0x1a, 0x2b, 0x3c, 0x4d] => Order { little: false },
                [0x4d, 0x3c, 0x2b, 0x1a] => Order { little: true },
                _ => return Err(corrupt("a section header without a byte-order mark".into())),
            };
        }
        let len = order.u32(head, 4).unwrap_or(0) as usize;
        if len < 12 || len % 4 != 0 || len > MAX_RECORD {
            return Err(corrupt(format!(
                "a block of type {kind:#x} claims length {len}"
            )));
        }
        if !need(r, len)? {
            return Err(Stop::Truncated { offset: start });
        }
        let block = r.take(len);
        let body = block.slice(8..len - 4);
        let stored = StoredKind::PcapngBlock(kind);
        let byte_order = if order.little {
            ByteOrder::Little
        } else {
            ByteOrder::Big
        };
        match kind {
            SECTION_HEADER => {
                interfaces.clear();
                sink.other(r.offset(), &block, byte_order, stored);
            }
            INTERFACE_DESCRIPTION => {
                interfaces.push(interface(order, &body).ok_or_else(|| {
                    corrupt("an interface description shorter than its fields".into())
                })?);
                sink.other(r.offset(), &block, byte_order, stored);
            }
            ENHANCED_PACKET | SIMPLE_PACKET | OBSOLETE_PACKET => {
                let Some((iface, units, data)) = packet(order, kind, &body) else {
                    return Err(corrupt(format!(
                        "packet block of type {kind} is shorter than its own fields"
                    )));
                };
                let frame = interfaces.get(iface).and_then(|i| {
                    if !link::is_supported(i.linktype) {
                        return None;
                    }
                    let at = units.map_or(last_at, |u| i.micros(u));
                    last_at = at;
                    Some((at, i.linktype, body.slice_ref(data), i.sensor_leg))
                });
                sink.record(r.offset(), &block, byte_order, stored, frame);
            }
            _ => sink.other(r.offset(), &block, byte_order, stored),
        }
    }
}

/// An interface description: link type, then options.
fn interface(order: Order, body: &[u8]) -> Option<Interface> {
    let mut iface = Interface {
        linktype: u32::from(order.u16(body, 0)?),
        units_per_sec: 1_000_000,
        offset_secs: 0,
        sensor_leg: false,
    };
    let mut at = 8;
    while let (Some(code), Some(len)) = (order.u16(body, at), order.u16(body, at + 2)) {
        let value = body.get(at + 4..at + 4 + usize::from(len))?;
        match code {
            OPT_END => break,
            OPT_IF_TSRESOL => {
                let r = *value.first()?;
                let exp = u32::from(r & 0x7f);
                let base: u64 = if r & 0x80 == 0 { 10 } else { 2 };
                iface.units_per_sec = base.checked_pow(exp).unwrap_or(u64::MAX);
            }
            OPT_IF_TSOFFSET => iface.offset_secs = order.u64(value, 0)? as i64,
            OPT_IF_NAME => iface.sensor_leg = value == SENSOR_LEG_IF_NAME.as_bytes(),
            _ => {}
        }
        at += 4 + usize::from(len).div_ceil(4) * 4;
    }
    Some(iface)
}

/// Interface, timestamp units (none for simple packets) and captured bytes
/// of a packet block.
fn packet(order: Order, kind: u32, body: &[u8]) -> Option<(usize, Option<u64>, &[u8])> {
    let units = |at: usize| -> Option<u64> {
        Some((u64::from(order.u32(body, at)?) << 32) | u64::from(order.u32(body, at + 4)?))
    };
    match kind {
        ENHANCED_PACKET | OBSOLETE_PACKET => {
            let iface = if kind == ENHANCED_PACKET {
                order.u32(body, 0)? as usize
            } else {
                usize::from(order.u16(body, 0)?)
            };
            let captured = order.u32(body, 12)? as usize;
            Some((
                iface,
                Some(units(4)?),
                body.get(20..20usize.checked_add(captured)?)?,
            ))
        }
        _ => {
            // Simple packet: the original length, then the data padded to
            // 32 bits; the captured length is the smaller of the two.
            let original = order.u32(body, 0)? as usize;
            let rest = body.get(4..)?;
            Some((0, None, &rest[..original.min(rest.len())]))
        }
    }
}
