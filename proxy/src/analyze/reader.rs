//! Capture files: pcap and pcapng (the formats tcpdump and Wireshark write),
//! plain or gzip-compressed, recognised by their magic bytes and not by their
//! names. Frames are handed out one at a time from the parser's fixed buffer,
//! so memory does not grow with the file.
//!
//! Frame numbers count every packet record of the file from 1, as Wireshark
//! shows them. A file that ends inside a record (tcpdump killed while
//! writing) is a warning, not a failure: every complete frame before it is
//! used.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::blocks::{
    ENHANCED_PACKET_BLOCK, INTERFACE_DESCRIPTION_BLOCK, SECTION_HEADER_BLOCK, SIMPLE_PACKET_BLOCK,
};
use pcap_file::pcapng::PcapNgReader;
use pcap_file::{Endianness, PcapError, TsResolution};

use crate::tap::Micros;

/// Why captures could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// The file does not exist.
    #[error("capture file {path} not found: check the path (files are read in the order given)")]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// The file exists but could not be opened or read.
    #[error("cannot read capture file {path} at byte {offset}: {source}; check permissions and that the disk is readable")]
    Read {
        /// The file.
        path: PathBuf,
        /// Offset (in the decompressed stream) of the record being read.
        offset: u64,
        /// What the OS said.
        source: io::Error,
    },
    /// Neither pcap nor pcapng magic bytes.
    #[error("{path} is not a capture: it starts with bytes {magic}, not a pcap or pcapng header; write captures with `tcpdump -w FILE` (gzip'd files are fine)")]
    NotACapture {
        /// The file.
        path: PathBuf,
        /// The first bytes, in hex.
        magic: String,
    },
    /// The file is shorter than its own header.
    #[error("{path} is truncated at byte {offset}: the file ends inside its header, so it holds no packets; copy it again")]
    TruncatedHeader {
        /// The file.
        path: PathBuf,
        /// Where the data ends.
        offset: u64,
    },
    /// A record that cannot be a valid one: the file is damaged.
    #[error("{path} is damaged at byte {offset}: {what}; frames before it can be saved with `editcap -r FILE OUT 1-N`")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Offset (in the decompressed stream) of the bad record.
        offset: u64,
        /// What is wrong with it.
        what: String,
    },
    /// A classic pcap whose link type has no decoder here.
    #[error("{path} has link type {linktype}, which icaptap does not decode (it reads Ethernet, Linux cooked v1/v2, raw IP, loopback); capture with `tcpdump -i IFACE` on an Ethernet or `any` interface")]
    UnsupportedLinkType {
        /// The file.
        path: PathBuf,
        /// The LINKTYPE_ number.
        linktype: u32,
    },
}

/// What reading one file found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileStats {
    /// The file.
    pub path: PathBuf,
    /// Its size on disk (compressed size for gzip'd files).
    pub file_len: u64,
    /// Whether it was gzip-compressed.
    pub gzip: bool,
    /// `pcap` or `pcapng`.
    pub format: &'static str,
    /// Packet records read (the last frame number).
    pub frames: u64,
    /// Capture bytes read, after decompression.
    pub bytes: u64,
    /// Frames skipped because their interface's link type is not decoded.
    pub skipped_link_frames: u64,
    /// A warning when the file ended inside a record.
    pub truncated: Option<String>,
}

/// One packet record of a capture.
#[derive(Debug)]
pub struct Frame<'a> {
    /// Frame number in its file, from 1.
    pub number: u64,
    /// Packet timestamp, microseconds since the UNIX epoch.
    pub at: Micros,
    /// LINKTYPE_ of the interface it was captured on.
    pub linktype: u32,
    /// The captured bytes (may be shorter than on the wire: snaplen).
    pub data: &'a [u8],
    /// Bytes of the file read so far (compressed bytes for gzip'd files),
    /// for progress.
    pub file_bytes_read: u64,
}

/// The pcap-file parser buffer: a record larger than this cannot be read,
/// so a file with more than this left after a short read is damaged, not
/// truncated.
const PARSER_BUFFER: u64 = 8_000_000;

/// A link type and clock of one pcapng interface.
#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: u32,
    /// Timestamp units per second (if_tsresol; 10^6 by default).
    units_per_sec: u64,
    /// Seconds added to every timestamp (if_tsoffset).
    offset_secs: u64,
}

impl Interface {
    fn micros(&self, units: u64) -> Micros {
        let us = if self.units_per_sec == 1_000_000 {
            units
        } else {
            (u128::from(units) * 1_000_000 / u128::from(self.units_per_sec.max(1))) as u64
        };
        us.saturating_add(self.offset_secs.saturating_mul(1_000_000))
    }
}

/// Counts bytes read from the file, before decompression, for progress.
#[derive(Debug)]
struct CountingRead<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for CountingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

type Source = Box<dyn Read>;

/// An opened capture file, format detected, ready to hand out frames.
pub struct CaptureFile {
    path: PathBuf,
    source: Option<Source>,
    magic: [u8; 4],
    section_len: u64,
    read_count: Rc<Cell<u64>>,
    stats: FileStats,
}

impl std::fmt::Debug for CaptureFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureFile")
            .field("path", &self.path)
            .field("stats", &self.stats)
            .finish()
    }
}

/// Reads up to `buf.len()` bytes, fewer only at end of input.
fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
    [0x4d, 0x3c, 0xb2, 0xa1],
];

impl CaptureFile {
    /// Opens `path` and recognises its format (and gzip) by magic bytes.
    pub fn open(path: &Path) -> Result<CaptureFile, AnalyzeError> {
        let read_err = |offset: u64, source: io::Error| AnalyzeError::Read {
            path: path.to_path_buf(),
            offset,
            source,
        };
        let file = File::open(path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                AnalyzeError::NotFound {
                    path: path.to_path_buf(),
                }
            } else {
                read_err(0, e)
            }
        })?;
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let read_count = Rc::new(Cell::new(0));
        let mut raw: Source = Box::new(CountingRead {
            inner: file,
            count: read_count.clone(),
        });
        let mut head = [0u8; 2];
        let got = read_up_to(&mut raw, &mut head).map_err(|e| read_err(0, e))?;
        let gzip = got == 2 && head == GZIP_MAGIC;
        let replayed: Source = Box::new(Cursor::new(head[..got].to_vec()).chain(raw));
        let mut source: Source = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(
                io::BufReader::with_capacity(256 * 1024, replayed),
            ))
        } else {
            replayed
        };
        let mut magic = [0u8; 4];
        let got = read_up_to(&mut source, &mut magic).map_err(|e| read_err(0, e))?;
        let hex: String = magic[..got].iter().map(|b| format!("{b:02x}")).collect();
        let format = if magic == PCAPNG_MAGIC {
            "pcapng"
        } else if PCAP_MAGICS.contains(&magic) {
            "pcap"
        } else if got < 4
            && got > 0
            && (PCAPNG_MAGIC.starts_with(&magic[..got])
                || PCAP_MAGICS.iter().any(|m| m.starts_with(&magic[..got])))
        {
            return Err(AnalyzeError::TruncatedHeader {
                path: path.to_path_buf(),
                offset: got as u64,
            });
        } else {
            return Err(AnalyzeError::NotACapture {
                path: path.to_path_buf(),
                magic: if hex.is_empty() {
                    "(none: the file is empty)".to_string()
                } else {
                    hex
                },
            });
        };
        let mut replay = magic.to_vec();
        let mut section_len = 0;
        if format == "pcapng" {
            // The reader consumes the section header on opening; its length
            // (and byte order mark) is read here to keep byte offsets exact.
            let mut rest = [0u8; 8];
            let got = read_up_to(&mut source, &mut rest).map_err(|e| read_err(4, e))?;
            replay.extend_from_slice(&rest[..got]);
            if got == 8 {
                let len = [rest[0], rest[1], rest[2], rest[3]];
                section_len = if rest[4..8] == [0x4d, 0x3c, 0x2b, 0x1a] {
                    u64::from(u32::from_le_bytes(len))
                } else {
                    u64::from(u32::from_be_bytes(len))
                };
            }
        }
        let source: Source = Box::new(Cursor::new(replay).chain(source));
        Ok(CaptureFile {
            path: path.to_path_buf(),
            source: Some(source),
            magic,
            section_len,
            read_count,
            stats: FileStats {
                path: path.to_path_buf(),
                file_len,
                gzip,
                format,
                ..FileStats::default()
            },
        })
    }

    /// Hands every frame of the file to `each`, in file order, and says what
    /// was read. Stops with an error only when the file cannot be read or
    /// is damaged; a file ending inside its last record is a warning in the
    /// returned stats.
    pub fn for_each_frame(
        &mut self,
        each: &mut dyn FnMut(Frame<'_>),
    ) -> Result<FileStats, AnalyzeError> {
        let Some(source) = self.source.take() else {
            return Ok(self.stats.clone());
        };
        if self.magic == PCAPNG_MAGIC {
            self.read_pcapng(source, each)?;
        } else {
            self.read_pcap(source, each)?;
        }
        Ok(self.stats.clone())
    }

    /// Turns a parser error at `offset` into the user's answer: a warning
    /// for a file cut short, an error for anything else.
    fn ended_at(&mut self, offset: u64, err: PcapError) -> Result<(), AnalyzeError> {
        match err {
            PcapError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                let left = if self.stats.gzip {
                    0
                } else {
                    self.stats.file_len.saturating_sub(offset)
                };
                if left > PARSER_BUFFER {
                    return Err(AnalyzeError::Corrupt {
                        path: self.path.clone(),
                        offset,
                        what: format!("a record claims more than {PARSER_BUFFER} bytes"),
                    });
                }
                if offset == 0 || (self.stats.frames == 0 && offset < 24) {
                    return Err(AnalyzeError::TruncatedHeader {
                        path: self.path.clone(),
                        offset,
                    });
                }
                self.stats.truncated = Some(format!(
                    "{} is truncated at byte {offset}{}: the last record (after frame {}) is incomplete and was skipped",
                    self.path.display(),
                    if self.stats.gzip { " of the decompressed data" } else { "" },
                    self.stats.frames
                ));
                Ok(())
            }
            PcapError::IoError(source) => Err(AnalyzeError::Read {
                path: self.path.clone(),
                offset,
                source,
            }),
            other => Err(AnalyzeError::Corrupt {
                path: self.path.clone(),
                offset,
                what: other.to_string(),
            }),
        }
    }

    fn read_pcap(
        &mut self,
        source: Source,
        each: &mut dyn FnMut(Frame<'_>),
    ) -> Result<(), AnalyzeError> {
        let mut reader = match PcapReader::new(source) {
            Ok(r) => r,
            Err(e) => return self.ended_at(0, e),
        };
        let header = reader.header();
        let linktype = u32::from(header.datalink);
        if !super::link::is_supported(linktype) {
            return Err(AnalyzeError::UnsupportedLinkType {
                path: self.path.clone(),
                linktype,
            });
        }
        let nanos = header.ts_resolution == TsResolution::NanoSecond;
        let mut offset = 24u64;
        while let Some(next) = reader.next_raw_packet() {
            let packet = match next {
                Ok(p) => p,
                Err(e) => return self.ended_at(offset, e),
            };
            offset += 16 + u64::from(packet.incl_len);
            let frac = u64::from(packet.ts_frac);
            let at = u64::from(packet.ts_sec) * 1_000_000 + if nanos { frac / 1000 } else { frac };
            self.stats.frames += 1;
            self.stats.bytes = offset;
            each(Frame {
                number: self.stats.frames,
                at,
                linktype,
                data: &packet.data,
                file_bytes_read: self.read_count.get(),
            });
        }
        Ok(())
    }

    fn read_pcapng(
        &mut self,
        source: Source,
        each: &mut dyn FnMut(Frame<'_>),
    ) -> Result<(), AnalyzeError> {
        let mut reader = match PcapNgReader::new(source) {
            Ok(r) => r,
            Err(e) => return self.ended_at(0, e),
        };
        let mut offset = self.section_len;
        let mut interfaces: Vec<Interface> = Vec::new();
        let mut last_at: Micros = 0;
        loop {
            let endianness = reader.section().endianness;
            let Some(next) = reader.next_raw_block() else {
                break;
            };
            let raw = match next {
                Ok(r) => r,
                Err(e) => return self.ended_at(offset, e),
            };
            let block_offset = offset;
            offset += u64::from(raw.initial_len);
            self.stats.bytes = offset;
            let kind = raw.type_;
            match kind {
                SECTION_HEADER_BLOCK | INTERFACE_DESCRIPTION_BLOCK => {
                    // The reader keeps the section's interface list; the
                    // clock and link type of each are cached here.
                    refresh_interfaces(&reader, &mut interfaces);
                    continue;
                }
                ENHANCED_PACKET_BLOCK | SIMPLE_PACKET_BLOCK | OBSOLETE_PACKET_BLOCK => {}
                _ => continue,
            }
            let little = endianness == Endianness::Little;
            let Some(packet) = PacketRecord::parse(kind, &raw.body, little) else {
                return Err(AnalyzeError::Corrupt {
                    path: self.path.clone(),
                    offset: block_offset,
                    what: format!("packet block of type {kind} is shorter than its own fields"),
                });
            };
            let (iface_id, units, data) = (packet.interface, packet.units, packet.data);
            self.stats.frames += 1;
            let Some(&iface) = interfaces.get(iface_id) else {
                self.stats.skipped_link_frames += 1;
                continue;
            };
            if !super::link::is_supported(iface.linktype) {
                self.stats.skipped_link_frames += 1;
                continue;
            }
            let at = units.map_or(last_at, |u| iface.micros(u));
            last_at = at;
            each(Frame {
                number: self.stats.frames,
                at,
                linktype: iface.linktype,
                data,
                file_bytes_read: self.read_count.get(),
            });
        }
        Ok(())
    }
}

/// The obsolete pcapng Packet Block (type 2), still found in old files.
const OBSOLETE_PACKET_BLOCK: u32 = 0x0000_0002;

/// The fields of a pcapng packet block (enhanced, simple or obsolete),
/// read straight from the block body: cheaper than the generic parser,
/// which also collects every option.
struct PacketRecord<'a> {
    interface: usize,
    /// Timestamp in interface units; `None` for simple packet blocks.
    units: Option<u64>,
    data: &'a [u8],
}

impl<'a> PacketRecord<'a> {
    fn parse(kind: u32, body: &'a [u8], little: bool) -> Option<PacketRecord<'a>> {
        let u32_at = |at: usize| -> Option<u32> {
            let b: [u8; 4] = body.get(at..at + 4)?.try_into().ok()?;
            Some(if little {
                u32::from_le_bytes(b)
            } else {
                u32::from_be_bytes(b)
            })
        };
        let units = |at: usize| -> Option<u64> {
            Some((u64::from(u32_at(at)?) << 32) | u64::from(u32_at(at + 4)?))
        };
        match kind {
            ENHANCED_PACKET_BLOCK => {
                let caplen = u32_at(12)? as usize;
                Some(PacketRecord {
                    interface: u32_at(0)? as usize,
                    units: Some(units(4)?),
                    data: body.get(20..20usize.checked_add(caplen)?)?,
                })
            }
            OBSOLETE_PACKET_BLOCK => {
                let b: [u8; 2] = body.get(0..2)?.try_into().ok()?;
                let interface = if little {
                    u16::from_le_bytes(b)
                } else {
                    u16::from_be_bytes(b)
                };
                let caplen = u32_at(12)? as usize;
                Some(PacketRecord {
                    interface: usize::from(interface),
                    units: Some(units(4)?),
                    data: body.get(20..20usize.checked_add(caplen)?)?,
                })
            }
            _ => {
                // Simple packet block: the original length, then data padded
                // to 32 bits; the captured length is the smaller of the two.
                let orig = u32_at(0)? as usize;
                let rest = body.get(4..)?;
                Some(PacketRecord {
                    interface: 0,
                    units: None,
                    data: &rest[..orig.min(rest.len())],
                })
            }
        }
    }
}

/// The link type and clock of every interface of the current section.
fn refresh_interfaces<R: Read>(reader: &PcapNgReader<R>, cache: &mut Vec<Interface>) {
    let described = reader.interfaces();
    {
        cache.clear();
        for idb in described {
            let mut units_per_sec = 1_000_000u64;
            let mut offset_secs = 0u64;
            for opt in &idb.options {
                match opt {
                    InterfaceDescriptionOption::IfTsResol(r) => {
                        let exp = u32::from(r & 0x7f);
                        units_per_sec = if r & 0x80 == 0 {
                            10u64.checked_pow(exp).unwrap_or(u64::MAX)
                        } else {
                            2u64.checked_pow(exp).unwrap_or(u64::MAX)
                        };
                    }
                    InterfaceDescriptionOption::IfTsOffset(o) => offset_secs = *o,
                    _ => {}
                }
            }
            cache.push(Interface {
                linktype: u32::from(idb.linktype),
                units_per_sec,
                offset_secs,
            });
        }
    }
}
