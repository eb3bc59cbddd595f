//! Which packets of a run's capture belong to the selected connections,
//! and copying them. icaptap draws each connection twice: the client leg
//! between the client and the address it connected to (`client` ↔
//! `listen` of the connection record), and the sensor leg between
//! icaptap's own address (`upstream_local`, or the stand-in the recorder
//! used when it never connected) and the sensor (`server`). A packet is
//! selected when its address pair is one of a selected connection's legs
//! and its time lies within that connection's life (with a little slack),
//! so a later connection reusing the same ports is not taken along.
//!
//! Records are copied as the capture reader hands them out, byte for
//! byte: packet comments (icaptap's annotations) and every option stay.
//! A pcapng section's header and interface blocks are written before its
//! first selected packet; interface statistics are left out (they count
//! the whole capture's packets). A classic pcap set gets one file header.

use std::collections::{HashMap, HashSet};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::ExportError;
use crate::analyze::frames::{StoredKind, StoredRecord};
use crate::analyze::reader::CaptureFile;
use crate::analyze::segment::tcp_segment;
use crate::capture::packet::{blocks, link};
use crate::capture::synth::stand_in_local;
use crate::output::directory::create_new_private_file;
use crate::output::records::{ConnectionRecord, ExchangeRecord};

/// Time a leg's packets may lie before its connection record's open time
/// or after its close time, microseconds: the recorder stamps packets with
/// the times of the taps they come from, the records with the observer's,
/// which can differ by the side paths' queueing.
pub const CONNECTION_SLACK_US: u64 = 2_000_000;

/// pcapng Interface Statistics Block.
const INTERFACE_STATISTICS: u32 = 5;
/// pcapng Simple Packet Block.
const SIMPLE_PACKET: u32 = 3;
/// The obsolete pcapng Packet Block.
const OBSOLETE_PACKET: u32 = 2;

/// The life of one selected connection, microseconds since the epoch.
#[derive(Clone, Copy, Debug)]
struct Life {
    from: u64,
    to: u64,
    conn: u64,
}

/// The address pairs and lives of the selected connections.
#[derive(Debug, Default)]
pub struct Selection {
    /// Both legs, by address pair (smaller address first).
    legs: HashMap<(SocketAddr, SocketAddr), Vec<Life>>,
    /// Clients of selected connections that have no connection record:
    /// their client leg is found by the client's address alone.
    clients_only: HashMap<SocketAddr, u64>,
}

fn pair(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

fn time_of(us: u64, text: &str) -> Option<u64> {
    if us > 0 {
        Some(us)
    } else {
        crate::output::parse_rfc3339(text)
    }
}

impl Selection {
    /// The legs of `connections`, and the client legs of the selected
    /// `exchanges` whose connection is not among `recorded`.
    pub fn new(
        connections: &[ConnectionRecord],
        exchanges: &[ExchangeRecord],
        recorded: &HashSet<u64>,
    ) -> Selection {
        let mut s = Selection::default();
        for c in connections {
            let (Ok(client), Ok(listen), Ok(server)) = (
                c.client.parse::<SocketAddr>(),
                c.listen.parse::<SocketAddr>(),
                c.server.parse::<SocketAddr>(),
            ) else {
                continue;
            };
            let local = c
                .upstream_local
                .as_deref()
                .and_then(|l| l.parse().ok())
                .unwrap_or_else(|| stand_in_local(listen, server, c.conn));
            let life = Life {
                from: time_of(c.ts_us, &c.ts)
                    .unwrap_or(0)
                    .saturating_sub(CONNECTION_SLACK_US),
                to: time_of(c.ts_close_us, &c.ts_close)
                    .map_or(u64::MAX, |t| t.saturating_add(CONNECTION_SLACK_US)),
                conn: c.conn,
            };
            s.legs.entry(pair(client, listen)).or_default().push(life);
            s.legs.entry(pair(local, server)).or_default().push(life);
        }
        for x in exchanges {
            if !recorded.contains(&x.conn) {
                if let Ok(client) = x.client.parse() {
                    s.clients_only.insert(client, x.conn);
                }
            }
        }
        s
    }

    /// The selected connection a packet between `src` and `dst` at `at`
    /// belongs to, if any.
    pub fn holds(&self, src: SocketAddr, dst: SocketAddr, at: u64) -> Option<u64> {
        if let Some(conn) = self
            .clients_only
            .get(&src)
            .or_else(|| self.clients_only.get(&dst))
        {
            return Some(*conn);
        }
        self.legs
            .get(&pair(src, dst))?
            .iter()
            .find(|l| l.from <= at && at <= l.to)
            .map(|l| l.conn)
    }

    fn packet(&self, record: &StoredRecord<'_>) -> Option<u64> {
        let p = record.packet.as_ref()?;
        let frame = record.bytes.get(p.data.clone())?;
        let seg = tcp_segment(link::ip_packet(p.linktype, frame)?).ok()?;
        self.holds(seg.src, seg.dst, p.at)
    }
}

/// What copying did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Copied {
    /// Packets read.
    pub read: u64,
    /// Packets written.
    pub written: u64,
}

/// What copying did, and which connections had packets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyOutcome {
    /// Packet counts.
    pub copied: Copied,
    /// The selected connections of which a packet was found.
    pub found: HashSet<u64>,
}

/// Format of the output, fixed by the first capture file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Pcap,
    Pcapng,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Pcap => "pcap",
            Format::Pcapng => "pcapng",
        }
    }
}

/// One capture file's records on their way to the output.
struct FileCopy<'a, W: Write> {
    selection: &'a Selection,
    out: &'a mut W,
    format: &'a mut Option<Format>,
    /// Whether the output has its classic pcap file header.
    pcap_header_written: &'a mut bool,
    /// This section's header blocks, held until its first selected packet.
    pending: Vec<u8>,
    /// Whether this section's header blocks are written.
    started: bool,
    copied: Copied,
    found: &'a mut HashSet<u64>,
    /// The first failure: the other format, or a write error.
    failed: Option<Failure>,
}

enum Failure {
    Mixed(Format),
    Write(std::io::Error),
}

impl<W: Write> FileCopy<'_, W> {
    fn write(&mut self, bytes: &[u8]) {
        if let Err(e) = self.out.write_all(bytes) {
            self.failed = Some(Failure::Write(e));
        }
    }

    fn format(&mut self, f: Format) -> bool {
        match *self.format {
            None => *self.format = Some(f),
            Some(have) if have != f => {
                self.failed = Some(Failure::Mixed(f));
                return false;
            }
            Some(_) => {}
        }
        true
    }

    fn record(&mut self, record: StoredRecord<'_>) {
        if self.failed.is_some() {
            return;
        }
        match record.kind {
            StoredKind::PcapHeader => {
                if self.format(Format::Pcap) {
                    self.pending = record.bytes.to_vec();
                    self.started = *self.pcap_header_written;
                }
            }
            StoredKind::PcapngBlock(blocks::SECTION_HEADER) => {
                if self.format(Format::Pcapng) {
                    self.pending = record.bytes.to_vec();
                    self.started = false;
                }
            }
            StoredKind::PcapRecord
            | StoredKind::PcapngBlock(blocks::ENHANCED_PACKET | SIMPLE_PACKET | OBSOLETE_PACKET) => {
                self.copied.read += 1;
                if let Some(conn) = self.selection.packet(&record) {
                    self.found.insert(conn);
                    if !self.started {
                        let pending = std::mem::take(&mut self.pending);
                        self.write(&pending);
                        self.started = true;
                        *self.pcap_header_written = true;
                    }
                    self.write(record.bytes);
                    self.copied.written += 1;
                }
            }
            StoredKind::PcapngBlock(INTERFACE_STATISTICS) => {}
            StoredKind::PcapngBlock(_) => {
                if self.started {
                    self.write(record.bytes);
                } else {
                    self.pending.extend_from_slice(record.bytes);
                }
            }
        }
    }
}

/// Copies the selected packets of `captures` (oldest first) into the new
/// file `dst` (0600).
pub fn copy(
    captures: &[PathBuf],
    selection: &Selection,
    dst: &Path,
) -> Result<CopyOutcome, ExportError> {
    let write_err = |source| ExportError::Write {
        path: dst.to_path_buf(),
        source,
    };
    let file = create_new_private_file(dst).map_err(write_err)?;
    let mut out = BufWriter::new(file);
    let mut format = None;
    let mut pcap_header_written = false;
    let mut total = Copied::default();
    let mut found = HashSet::new();
    for path in captures {
        let capture_err = |detail: String| ExportError::Capture {
            path: path.clone(),
            detail,
        };
        let mut file = CaptureFile::open(path).map_err(|e| capture_err(e.to_string()))?;
        let mut copy = FileCopy {
            selection,
            out: &mut out,
            format: &mut format,
            pcap_header_written: &mut pcap_header_written,
            pending: Vec::new(),
            started: false,
            copied: Copied::default(),
            found: &mut found,
            failed: None,
        };
        let stats = file
            .for_each_stored(&mut |record| copy.record(record))
            .map_err(|e| capture_err(e.to_string()))?;
        match copy.failed.take() {
            Some(Failure::Write(e)) => return Err(write_err(e)),
            Some(Failure::Mixed(other)) => {
                return Err(ExportError::MixedFormats {
                    first: format.map_or("?", |f| f.name()),
                    other: other.name(),
                    path: path.clone(),
                })
            }
            None => {}
        }
        if let Some(w) = stats.truncated {
            eprintln!("icaptap export: warning: {w}");
        }
        total.read += copy.copied.read;
        total.written += copy.copied.written;
    }
    out.flush().map_err(write_err)?;
    Ok(CopyOutcome {
        copied: total,
        found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(id: u64, client: &str, open: u64, close: u64) -> ConnectionRecord {
        ConnectionRecord {
            schema: 1,
            ts: String::new(),
            ts_us: open,
            ts_close: String::new(),
            ts_close_us: close,
            conn: id,
            client: client.into(),
            server: "10.0.0.9:1344".into(),
            listen: "10.0.0.2:1344".into(),
            upstream_local: Some("10.0.0.2:50000".into()),
            connect_error: None,
            bytes_client_to_server: 0,
            bytes_server_to_client: 0,
            exchanges: 1,
            close: Default::default(),
            duration_us: 0,
            unobserved_bytes: 0,
            undelivered_client_to_server: 0,
            undelivered_server_to_client: 0,
            anomalies: Vec::new(),
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn both_legs_in_both_directions_within_the_connections_life() {
        let t = 1_000_000_000;
        let s = Selection::new(
            &[conn(1, "10.0.0.1:40000", t, t + 5_000_000)],
            &[],
            &HashSet::new(),
        );
        let (client, listen) = (addr("10.0.0.1:40000"), addr("10.0.0.2:1344"));
        let (local, server) = (addr("10.0.0.2:50000"), addr("10.0.0.9:1344"));
        assert_eq!(s.holds(client, listen, t), Some(1));
        assert_eq!(s.holds(listen, client, t + 1), Some(1));
        assert_eq!(s.holds(local, server, t + 5_000_000), Some(1));
        assert_eq!(s.holds(server, local, t - CONNECTION_SLACK_US), Some(1));
        let late = t + 5_000_000 + CONNECTION_SLACK_US + 1;
        assert_eq!(s.holds(client, listen, late), None);
        assert_eq!(s.holds(addr("10.0.0.1:40001"), listen, t), None);
        assert_eq!(s.holds(client, server, t), None);
    }

    #[test]
    fn a_connection_without_its_record_is_found_by_its_client() {
        let mut x = crate::filter::tests::record(4, 0);
        x.client = "10.0.0.7:41000".into();
        let s = Selection::new(&[], &[x], &HashSet::new());
        assert_eq!(
            s.holds(addr("10.0.0.7:41000"), addr("10.0.0.2:1344"), 5),
            Some(4)
        );
        assert_eq!(
            s.holds(addr("10.0.0.8:41000"), addr("10.0.0.2:1344"), 5),
            None
        );
    }
}
