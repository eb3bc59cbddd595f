//! Capture files: pcap and pcapng (the formats tcpdump and Wireshark write),
//! plain or gzip-compressed, recognised by their magic bytes and not by their
//! names. Frames are handed out one at a time as slices of a recycled read
//! block, so memory does not grow with the file and payload bytes are not
//! copied. The record formats themselves are read by [`super::pcap`] and
//! [`super::pcapng`]: they are a few fixed fields, and reading them here
//! keeps exact byte offsets for damaged files and accepts records that
//! strict parsers reject (e.g. an original length above the snapshot
//! length). `-` reads a capture from standard input.
//!
//! Frame numbers count every packet record of the file from 1, as Wireshark
//! shows them. A file that ends inside a record (tcpdump killed while
//! writing) is a warning, not a failure: every complete frame before it is
//! used.

use std::fs::File;
use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::frames::{Deliver, Frame, FrameSink, Stop, StoredRecord};
use super::shared_buffer::{SharedReader, Source};

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
    /// `-` was given more than once: standard input can be read only once.
    #[error(
        "standard input (-) can be read only once: give `-` for one capture, the others as files"
    )]
    StdinTwice,
    /// A classic pcap whose link type has no decoder here.
    #[error("{path} has link type {linktype}, which icaptap does not decode (it reads Ethernet, Linux cooked v1/v2, raw IP, loopback); capture with `tcpdump -i IFACE` on an Ethernet or `any` interface")]
    UnsupportedLinkType {
        /// The file.
        path: PathBuf,
        /// The LINKTYPE_ number.
        linktype: u32,
    },
}

/// Whether `path` names standard input (`-`, as in `tcpdump -w - | icaptap
/// analyze -`). Standard input is read once, as it comes.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
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

/// Counts bytes read from the file, before decompression, for progress.
#[derive(Debug)]
struct CountingRead<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// An opened capture file, format detected, ready to hand out frames.
pub struct CaptureFile {
    path: PathBuf,
    source: Option<Source>,
    magic: [u8; 4],
    read_count: Arc<AtomicU64>,
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
    /// Opens `path` (standard input for `-`, see [`is_stdin`]) and
    /// recognises its format (and gzip) by magic bytes.
    pub fn open(path: &Path) -> Result<CaptureFile, AnalyzeError> {
        let read_err = |offset: u64, source: io::Error| AnalyzeError::Read {
            path: path.to_path_buf(),
            offset,
            source,
        };
        let (input, file_len): (Source, u64) = if is_stdin(path) {
            (Box::new(io::stdin()), 0)
        } else {
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
            (Box::new(file), file_len)
        };
        let read_count = Arc::new(AtomicU64::new(0));
        let mut raw: Source = Box::new(CountingRead {
            inner: input,
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
        let hex = crate::output::hex(&magic[..got]);
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
        let replay = magic.to_vec();
        let source: Source = Box::new(Cursor::new(replay).chain(source));
        Ok(CaptureFile {
            path: path.to_path_buf(),
            source: Some(source),
            magic,
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
        self.read(Deliver::Frames(each))
    }

    /// Hands every record of the file to `each` exactly as it is stored
    /// (file header, packet records, every pcapng block), in file order,
    /// with the frame of each packet whose link type is decoded: for tools
    /// that copy a capture record by record. Unlike [`Self::for_each_frame`],
    /// a classic pcap of a link type with no decoder is read too (its
    /// packets come without frames). Stops as [`Self::for_each_frame`] does.
    pub fn for_each_stored(
        &mut self,
        each: &mut dyn FnMut(StoredRecord<'_>),
    ) -> Result<FileStats, AnalyzeError> {
        self.read(Deliver::Stored(each))
    }

    fn read(&mut self, deliver: Deliver<'_>) -> Result<FileStats, AnalyzeError> {
        let Some(source) = self.source.take() else {
            return Ok(self.stats.clone());
        };
        let mut reader = SharedReader::new(source);
        let counter = self.read_count.clone();
        let file_bytes = || counter.load(Ordering::Relaxed);
        let mut frames = FrameSink::new(&file_bytes, deliver);
        let ended = if self.magic == PCAPNG_MAGIC {
            super::pcapng::read(&mut reader, &mut frames)
        } else {
            super::pcap::read(&mut reader, &mut frames)
        };
        self.stats.frames = frames.frames;
        self.stats.bytes = frames.bytes;
        self.stats.skipped_link_frames = frames.skipped_link_frames;
        match ended {
            Ok(()) => {}
            Err(stop) => self.stopped(stop)?,
        }
        Ok(self.stats.clone())
    }

    /// Turns an early stop into the user's answer: a warning for a file cut
    /// short, an error for anything else.
    fn stopped(&mut self, stop: Stop) -> Result<(), AnalyzeError> {
        let path = self.path.clone();
        match stop {
            Stop::Truncated { offset } if self.stats.frames == 0 && offset < 24 => {
                Err(AnalyzeError::TruncatedHeader { path, offset })
            }
            // A gzip stream cut short (tcpdump piped into gzip and stopped)
            // is a truncated capture too.
            Stop::Io { offset, source } if source.kind() == io::ErrorKind::UnexpectedEof => {
                self.stopped(Stop::Truncated { offset })
            }
            Stop::Truncated { offset } => {
                self.stats.truncated = Some(format!(
                    "{} is truncated at byte {offset}{}: the last block was cut at byte {offset} (icaptap or the capturing tool was killed?); read up to it, {} whole frames",
                    path.display(),
                    if self.stats.gzip { " of the decompressed data" } else { "" },
                    self.stats.frames
                ));
                Ok(())
            }
            Stop::Corrupt { offset, what } => Err(AnalyzeError::Corrupt { path, offset, what }),
            Stop::Io { offset, source } => Err(AnalyzeError::Read {
                path,
                offset,
                source,
            }),
            Stop::UnsupportedLinkType(linktype) => {
                Err(AnalyzeError::UnsupportedLinkType { path, linktype })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::synthetic::{
        Conversation, SyntheticFormat, SyntheticLink, SyntheticWriter,
    };
    use crate::tap::Direction;

    /// A small capture of `format` with an unusual link type.
    fn capture(format: SyntheticFormat, link: SyntheticLink) -> Vec<u8> {
        let mut c = Conversation::new(
            "10.0.0.1:40000".parse().unwrap(),
            "10.0.0.2:1344".parse().unwrap(),
            1,
            2,
        );
        let mut segs = c.handshake();
        segs.extend(c.data(Direction::Request, &[7u8; 3000], 1000));
        let mut w = SyntheticWriter::new(Vec::new(), format, link.linktype()).unwrap();
        for (i, s) in segs.iter().enumerate() {
            w.frame(1_000_000 + i as u64, &link.frame(&c.ip_packet(s)))
                .unwrap();
        }
        w.into_inner()
    }

    #[test]
    fn stored_records_are_the_whole_file_and_frames_are_inside_them() {
        for format in [SyntheticFormat::Pcap, SyntheticFormat::PcapNg] {
            let bytes = capture(format, SyntheticLink::Sll2);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c");
            std::fs::write(&path, &bytes).unwrap();
            let mut frames = Vec::new();
            CaptureFile::open(&path)
                .unwrap()
                .for_each_frame(&mut |f| frames.push(f.data.to_vec()))
                .unwrap();
            let mut copy = Vec::new();
            let mut stored_frames = Vec::new();
            let stats = CaptureFile::open(&path)
                .unwrap()
                .for_each_stored(&mut |r| {
                    copy.extend_from_slice(r.bytes);
                    if let Some(p) = r.packet {
                        stored_frames.push(r.bytes[p.data].to_vec());
                    }
                })
                .unwrap();
            assert_eq!(copy, bytes, "{format:?}");
            assert_eq!(stored_frames, frames);
            assert_eq!(stats.frames, 6);
        }
    }

    #[test]
    fn a_pcap_of_an_undecoded_link_type_is_still_stored() {
        let mut bytes = capture(SyntheticFormat::Pcap, SyntheticLink::Raw);
        bytes[20..24].copy_from_slice(&105u32.to_be_bytes());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            CaptureFile::open(&path)
                .unwrap()
                .for_each_frame(&mut |_| {}),
            Err(AnalyzeError::UnsupportedLinkType { linktype: 105, .. })
        ));
        let mut copy = Vec::new();
        let mut with_frames = 0;
        CaptureFile::open(&path)
            .unwrap()
            .for_each_stored(&mut |r| {
                copy.extend_from_slice(r.bytes);
                with_frames += usize::from(r.packet.is_some());
            })
            .unwrap();
        assert_eq!((copy, with_frames), (bytes, 0));
    }
}
