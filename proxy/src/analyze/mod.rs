//! Offline analysis: `icaptap analyze CAPTURE...` turns tcpdump captures into
//! the same [`Tap`] stream the live proxy produces, so one observer serves
//! both. Captures are read as a stream (pcap or pcapng, optionally gzip'd,
//! several files in order), TCP on the ICAP ports (RFC 3507 section 4.2:
//! 1344 by default, and any port whose flows open with ICAP) is reassembled
//! per flow and direction, and each flow
//! becomes Open / Data / Closed / Finished taps with packet timestamps and
//! the frame numbers Wireshark shows.
//!
//! - [`reader`]: capture files (format and compression by magic bytes),
//!   read by `pcap` and `pcapng` from `shared_buffer`'s recycled blocks;
//! - [`frames`]: the frames those readers hand out, and why they stop;
//! - link-layer headers down to the IP packet are read with the packet
//!   toolkit ([`crate::capture::packet::link`]);
//! - [`segment`]: IP and TCP headers down to a [`segment::TcpSegment`];
//! - [`reassembly`]: one direction of one TCP connection, bytes in order;
//! - [`flows`]: the flow table, flow -> taps, memory bounds and expiry;
//! - [`discovery`]: ICAP found on any port by a flow's first payload;
//! - [`synthetic`]: captures built in code, for tests and benchmarks;
//! - [`peer`]: matching the exchanges of a client-side and a sensor-side
//!   capture of the same traffic, compared over the time both cover;
//! - [`peer_file`]: peer.json, the comparison as the report reads it.
//!
//! Memory stays bounded whatever the file size: packets are read in place
//! from a fixed buffer, only out-of-order bytes are held (bounded per
//! direction and in total), and the flow table is bounded and expires idle
//! flows.

pub mod discovery;
pub mod flows;
pub mod frames;
mod pcap;
mod pcapng;
pub mod peer;
pub mod peer_file;
pub mod reader;
pub mod reassembly;
pub mod segment;
mod shared_buffer;
pub mod synthetic;

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::output::ecs::LogSchema;
use crate::progress::Progress;
use crate::tap::Tap;

/// Frames between two progress updates: drawing is throttled by the
/// display anyway, and this keeps the per-frame cost to a modulo.
const FRAMES_PER_UPDATE: u64 = 4096;

pub use flows::{FlowLimits, FlowStats};
pub use reader::{AnalyzeError, FileStats};

/// The ICAP port every analysis watches (RFC 3507 section 4.2).
pub const DEFAULT_ICAP_PORT: u16 = 1344;

/// The tshark options that decode ICAP on `ports` (Wireshark decodes it on
/// 1344 only): `-d tcp.port==N,icap` for each other port, in order and
/// once each; `None` when there is none.
pub fn tshark_decode_as(ports: &[u16]) -> Option<String> {
    let mut ports: Vec<u16> = ports
        .iter()
        .copied()
        .filter(|&p| p != DEFAULT_ICAP_PORT)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let options: Vec<String> = ports
        .iter()
        .map(|p| format!("-d tcp.port=={p},icap"))
        .collect();
    (!options.is_empty()).then(|| options.join(" "))
}

/// Options of `icaptap analyze`.
#[derive(Debug, Clone, clap::Args)]
pub struct AnalyzeArgs {
    /// Capture files (pcap or pcapng, gzip'd or not), read in this order as
    /// one capture (e.g. the rotated files of one `tcpdump -w`); `-` reads
    /// one from standard input (`tcpdump -w - ... | icaptap analyze -`).
    #[arg(required = true, value_name = "CAPTURE")]
    pub files: Vec<PathBuf>,
    /// Another TCP port that carries ICAP (repeatable); 1344 is always
    /// included. Flows on other ports are ICAP too when their first bytes
    /// are (a flow whose capture starts mid-connection is found only on a
    /// port given here). ICAP over TLS is commonly on 11344.
    #[arg(long = "port", value_name = "N")]
    pub ports: Vec<u16>,
    /// Decode only flows on 1344 and the `--port` ports, not flows found
    /// to be ICAP by their first bytes on other ports (e.g. to read one leg
    /// of a capture holding both legs of an inline deployment).
    #[arg(long)]
    pub only_given_ports: bool,
    /// Output directory, new or empty: one holding an earlier run is refused,
    /// never written over (default: ./icaptap-YYYYMMDD-HHMMSS).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// A capture of the same traffic taken on the other side (ICAP client
    /// side vs sensor side): exchanges are matched by content to show
    /// where traffic is lost, verdicts that differ and the clock offset.
    #[arg(long, value_name = "FILE")]
    pub peer: Option<PathBuf>,
    /// Do not show the progress bar (it is hidden anyway when stderr is
    /// not a terminal, and when the lines per exchange go to the same
    /// terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// Record shapes to write: `icaptap` (the native records) or `ecs`
    /// (the native records, and the same as Elastic Common Schema events
    /// in exchanges.ecs.jsonl and connections.ecs.jsonl).
    #[arg(long, env = "ICAPTAP_LOG_SCHEMA", value_enum, default_value_t = LogSchema::Icaptap)]
    pub log_schema: LogSchema,
    /// Write only the exchanges this filter expression selects (and their
    /// connections), e.g. `verdict=blocked or anomaly=any`; the summary
    /// says which filter was applied (docs/evidence.md). The lines per
    /// exchange show the same exchanges.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<crate::filter::Filter>,
    /// The line per exchange on standard output (-q, -v).
    #[command(flatten)]
    pub live: crate::live::LiveArgs,
}

impl AnalyzeArgs {
    /// The reading options these arguments ask for.
    pub fn options(&self) -> AnalyzeOptions {
        let mut options = AnalyzeOptions::with_ports(&self.ports)
            .progress(!self.no_progress)
            .discover(!self.only_given_ports);
        options.log_schema = self.log_schema;
        options
    }
}

/// How captures are read and reassembled.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    /// TCP ports that carry ICAP; always contains 1344.
    pub ports: BTreeSet<u16>,
    /// Memory and time bounds of the flow table and of reassembly.
    pub limits: FlowLimits,
    /// Whether to draw a progress bar on a terminal (stderr).
    pub progress: bool,
    /// Whether flows on other ports are ICAP when their first bytes are.
    pub discover: bool,
    /// Whether the sensor leg of icaptap's own captures is read too: off
    /// for analysis (the client leg's bytes again, each exchange would
    /// count twice), on for what must see every byte (redaction).
    pub both_icaptap_legs: bool,
    /// The record shapes written (`--log-schema`).
    pub log_schema: LogSchema,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions::with_ports(&[])
    }
}

impl AnalyzeOptions {
    /// Port 1344 plus `extra`, default limits, no progress bar.
    pub fn with_ports(extra: &[u16]) -> Self {
        let mut ports: BTreeSet<u16> = extra.iter().copied().collect();
        ports.insert(DEFAULT_ICAP_PORT);
        AnalyzeOptions {
            ports,
            limits: FlowLimits::default(),
            progress: false,
            discover: true,
            both_icaptap_legs: false,
            log_schema: LogSchema::Icaptap,
        }
    }

    /// The same options reading both legs of icaptap's own captures.
    pub fn both_icaptap_legs(mut self) -> Self {
        self.both_icaptap_legs = true;
        self
    }

    /// The same options with ICAP found on other ports by its first bytes,
    /// or only on the ports given.
    pub fn discover(mut self, on: bool) -> Self {
        self.discover = on;
        self
    }

    /// The same options with the progress bar on or off.
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }
}

/// What reading the captures found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// One entry per file, in reading order.
    pub files: Vec<FileStats>,
    /// Packet-level and flow-level counts over all files.
    pub flows: FlowStats,
    /// Things the user should know that did not stop the analysis
    /// (a truncated last packet, an unsupported link type in a pcapng...).
    pub warnings: Vec<String>,
    /// Ports found to carry ICAP by their first bytes that were not among
    /// the ICAP ports given (tshark needs `-d tcp.port==N,icap` for them).
    pub found_ports: Vec<u16>,
    /// The busiest TCP ports of flows that are not ICAP, with their flow
    /// counts, most first: where to look when nothing was ICAP.
    pub other_ports: Vec<(u16, u64)>,
    /// Timestamp of the earliest and the latest packet read (any packet,
    /// ICAP or not): the time the capture covers.
    pub span: Option<(crate::tap::Micros, crate::tap::Micros)>,
}

impl CaptureStats {
    /// Frames read over all files.
    pub fn frames(&self) -> u64 {
        self.files.iter().map(|f| f.frames).sum()
    }

    /// Bytes of capture data read (after decompression) over all files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// Reads `paths` in order as one capture and hands every [`Tap`] of every
/// TCP flow on an ICAP port to `sink`, in capture order.
///
/// Frame numbers ([`Tap::frame`]) restart at 1 in each file, as Wireshark
/// numbers them; connection ids count flows in order of their first packet
/// over all files. Flows still open at the end of the input get no
/// `Closed`, only `Finished` (the capture stopped, the connection did not
/// necessarily close); bytes still waiting behind a hole are delivered
/// first, after an offset jump.
pub fn read_captures(
    paths: &[PathBuf],
    opts: &AnalyzeOptions,
    sink: &mut dyn FnMut(Tap),
) -> Result<CaptureStats, AnalyzeError> {
    let mut table = flows::FlowTable::new(opts.ports.clone(), opts.limits);
    table.discover(opts.discover);
    table.skip_icaptap_sensor_leg(!opts.both_icaptap_legs);
    let mut stats = CaptureStats::default();
    let total: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = Progress::bytes(opts.progress, "reading", total);
    let mut done_before = 0u64;
    for path in paths {
        let mut file = reader::CaptureFile::open(path)?;
        let span = &mut stats.span;
        let file_stats = file.for_each_frame(&mut |frame| {
            *span = Some(span.map_or((frame.at, frame.at), |(a, b)| {
                (a.min(frame.at), b.max(frame.at))
            }));
            table.packet(&frame, sink);
            if frame.number % FRAMES_PER_UPDATE == 0 {
                bar.set(done_before + frame.file_bytes_read);
                bar.message(format!("{} ICAP connections", table.stats().flows));
            }
        })?;
        done_before += file_stats.file_len;
        if let Some(w) = &file_stats.truncated {
            stats.warnings.push(w.clone());
        }
        if file_stats.skipped_link_frames > 0 {
            stats.warnings.push(format!(
                "{}: {} frames on interfaces with a link type icaptap does not decode were skipped",
                path.display(),
                file_stats.skipped_link_frames
            ));
        }
        stats.files.push(file_stats);
    }
    table.finish(sink);
    stats.flows = *table.stats();
    stats.found_ports = table.discovery().found().iter().copied().collect();
    stats.other_ports = table.discovery().busiest_ports(10);
    bar.finish();
    Ok(stats)
}
