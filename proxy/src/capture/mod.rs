//! The pcap recorder: writes what icaptap forwarded as a capture of both
//! legs (client <-> icaptap, icaptap <-> sensor) that Wireshark reads as if
//! tcpdump had run on each, with synthesized Ethernet/IP/TCP around the
//! forwarded ICAP (RFC 3507) bytes.
//!
//! It runs on its own thread behind the bounded [`TapQueue`](crate::tap::TapQueue):
//! forwarding never waits for it, and nothing the disk does (full, failing,
//! gone) reaches forwarding. See [`recorder`] for how taps become packets,
//! [`writer`] for files, rotation and write errors, [`reserve`] for
//! the disk space kept for records, [`body`] for the body
//! policy, [`annotate`] for packet comments and `placement` for the packet
//! each comment lands on.

pub mod annotate;
pub mod body;
#[cfg(test)]
mod golden;
mod hold;
pub mod packet;
mod placement;
pub mod recorder;
pub mod reserve;
pub mod synth;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use annotate::{annotation_channel, Annotation, AnnotationReceiver, AnnotationSender};
pub use body::BodyCapture;
pub use synth::Leg;
pub use writer::{RingHold, Rotation};

use crate::tap::side_path::{self, Inbox, SidePath, SidePathThread};
use crate::tap::{Tap, TapReceiver, RECORDER_NICENESS};

/// How often the recorder thread wakes without taps to release held packets
/// and flush the file.
const TICK: Duration = Duration::from_millis(200);

/// Capture file format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PcapFormat {
    /// pcapng: one interface per leg, packet comments for annotations.
    #[default]
    Pcapng,
    /// Classic pcap: both legs in one stream of packets, no comments.
    Pcap,
}

/// Which legs to record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LegChoice {
    /// ICAP client <-> icaptap only.
    Client,
    /// icaptap <-> ICAP server only.
    Sensor,
    /// Both (one pcapng interface each).
    #[default]
    Both,
}

impl LegChoice {
    /// Whether `leg` is recorded.
    pub fn includes(self, leg: Leg) -> bool {
        matches!(
            (self, leg),
            (LegChoice::Both, _)
                | (LegChoice::Client, Leg::Client)
                | (LegChoice::Sensor, Leg::Sensor)
        )
    }

    /// The recorded legs, in interface order.
    pub fn legs(self) -> Vec<Leg> {
        [Leg::Client, Leg::Sensor]
            .into_iter()
            .filter(|l| self.includes(*l))
            .collect()
    }
}

/// Recording flags of `icaptap proxy` (and `demo`).
#[derive(Clone, Debug, clap::Args)]
pub struct RecordArgs {
    /// Do not write a capture file.
    #[arg(long, env = "ICAPTAP_NO_PCAP")]
    pub no_pcap: bool,
    /// Capture file format.
    #[arg(long, value_enum, default_value_t = PcapFormat::Pcapng, env = "ICAPTAP_PCAP_FORMAT")]
    pub pcap_format: PcapFormat,
    /// Which legs to record.
    #[arg(long, value_enum, default_value_t = LegChoice::Both, env = "ICAPTAP_LEGS")]
    pub legs: LegChoice,
    /// How much of encapsulated bodies to store; lengths and sequence
    /// numbers stay true either way.
    #[arg(long, value_enum, default_value_t = BodyCapture::Full, env = "ICAPTAP_BODY_CAPTURE")]
    pub body_capture: BodyCapture,
    /// Body bytes kept per message with `--body-capture preview`.
    #[arg(long, default_value_t = 4096, env = "ICAPTAP_BODY_PREVIEW_BYTES")]
    pub body_preview_bytes: u64,
    /// Start a new file before one exceeds this size (like tcpdump -C);
    /// accepts K, M and G suffixes (powers of 1024); at least 1M.
    #[arg(long, value_parser = crate::units::parse_capture_size, env = "ICAPTAP_ROTATE_SIZE",
          value_name = "SIZE")]
    pub rotate_size: Option<u64>,
    /// Start a new file every this long of traffic (like tcpdump -G), in
    /// whole seconds: 10s, 5m, 1h, or a bare number of seconds.
    #[arg(long, env = "ICAPTAP_ROTATE_TIME", value_name = "DURATION",
          value_parser = crate::units::parse_whole_seconds)]
    pub rotate_time: Option<u64>,
    /// Keep only the newest N capture files (like tcpdump -W).
    #[arg(long, env = "ICAPTAP_KEEP", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub keep: Option<u64>,
}

impl RecordArgs {
    /// The recorder's options, or `None` with `--no-pcap`.
    pub fn options(&self) -> Option<RecordOptions> {
        if self.no_pcap {
            return None;
        }
        Some(RecordOptions {
            format: self.pcap_format,
            legs: self.legs,
            body: self.body_capture,
            body_preview_bytes: self.body_preview_bytes,
            rotation: Rotation {
                size: self.rotate_size,
                seconds: self.rotate_time,
                keep: self.keep.map(|n| n as usize),
            },
            ..RecordOptions::default()
        })
    }
}

/// Everything the recorder needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordOptions {
    /// File format.
    pub format: PcapFormat,
    /// Legs recorded.
    pub legs: LegChoice,
    /// Body policy.
    pub body: BodyCapture,
    /// Body bytes kept per message with [`BodyCapture::Preview`].
    pub body_preview_bytes: u64,
    /// File rotation and ring.
    pub rotation: Rotation,
    /// Link MTU of the synthesized legs: segments carry at most MTU - IP -
    /// TCP headers (1460 bytes over IPv4 with the default 1500).
    pub mtu: usize,
    /// How long packets wait before being written, so annotations that
    /// arrive late still land on them (pcapng only).
    pub hold: Duration,
    /// Most bytes of packets waiting; beyond it the oldest are written early.
    pub hold_bytes: usize,
    /// Directories that keep the files the ring deletes (the flight
    /// recorder's open incidents), if any.
    pub ring_hold: Option<writer::RingHold>,
    /// The capture comment of every pcapng file (e.g. how to make
    /// Wireshark decode ICAP on the run's ports), if any.
    pub section_comment: Option<String>,
}

impl Default for RecordOptions {
    fn default() -> Self {
        RecordOptions {
            format: PcapFormat::Pcapng,
            legs: LegChoice::Both,
            body: BodyCapture::Full,
            body_preview_bytes: 4096,
            rotation: Rotation::default(),
            mtu: 1500,
            hold: Duration::from_secs(1),
            hold_bytes: 4 << 20,
            ring_hold: None,
            section_comment: None,
        }
    }
}

/// Live counters of the recorder, for metrics; shared with its thread.
#[derive(Debug, Default)]
pub struct RecordCounters {
    /// Packets (EPBs or pcap records) handed to capture files, including
    /// any later lost to a write error (those bytes are in `unwritten_bytes`).
    pub packets: AtomicU64,
    /// Bytes written to capture files.
    pub bytes_written: AtomicU64,
    /// Stream bytes the recorder never received (taps dropped by its queue).
    pub dropped_bytes: AtomicU64,
    /// Capture bytes lost to write errors or a missing file.
    pub unwritten_bytes: AtomicU64,
    /// Capture files created.
    pub files: AtomicU64,
    /// Failed writes or file creations.
    pub write_errors: AtomicU64,
    /// Annotations written as packet comments.
    pub annotations: AtomicU64,
    /// Annotations that found no packet (connection long gone).
    pub annotations_dropped: AtomicU64,
    /// Set once when the capture stopped to keep the records' disk space.
    pub stopped: std::sync::OnceLock<reserve::CaptureStop>,
}

impl RecordCounters {
    /// A snapshot of the counters.
    pub fn snapshot(&self) -> RecordStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RecordStats {
            packets: get(&self.packets),
            bytes_written: get(&self.bytes_written),
            dropped_bytes: get(&self.dropped_bytes),
            unwritten_bytes: get(&self.unwritten_bytes),
            files: get(&self.files),
            write_errors: get(&self.write_errors),
            annotations: get(&self.annotations),
            annotations_dropped: get(&self.annotations_dropped),
            capture_stopped: self.stopped.get().map(|s| s.reason),
        }
    }
}

/// What the recorder did, for summary.json.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecordStats {
    /// Packets handed to capture files (see [`RecordCounters::packets`]).
    pub packets: u64,
    /// Bytes written to capture files.
    pub bytes_written: u64,
    /// Stream bytes never received (queue overflow).
    pub dropped_bytes: u64,
    /// Capture bytes lost to write errors.
    pub unwritten_bytes: u64,
    /// Files created.
    pub files: u64,
    /// Write or create failures.
    pub write_errors: u64,
    /// Packet comments written.
    pub annotations: u64,
    /// Annotations that could not be placed (plus those the channel dropped).
    pub annotations_dropped: u64,
    /// Why the capture stopped early to keep the records' disk space
    /// (`disk-reserve`, `disk-full`), if it did.
    pub capture_stopped: Option<&'static str>,
}

/// Why the recorder could not start.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The output directory is missing or not a directory.
    #[error("recorder: output directory {path} is not usable: {reason}; create it (mode 0700) or pass another --out")]
    OutputDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The thread or its timer could not be started.
    #[error("recorder: cannot start the recorder thread: {0}; the system is out of threads or memory, try again or run with --no-pcap")]
    Spawn(#[source] std::io::Error),
}

/// The running recorder.
#[derive(Debug)]
pub struct RecorderHandle {
    thread: SidePathThread<Recording>,
    counters: Arc<RecordCounters>,
    annotations_dropped_in_channel: Arc<AtomicU64>,
}

impl RecorderHandle {
    /// Live counters (shared; read them for metrics at any time).
    pub fn counters(&self) -> Arc<RecordCounters> {
        Arc::clone(&self.counters)
    }

    /// A snapshot of the counters now.
    pub fn stats(&self) -> RecordStats {
        self.with_channel_drops(self.counters.snapshot())
    }

    /// Waits until every tap sender is gone and everything is written, then
    /// returns the totals.
    pub fn join(self) -> RecordStats {
        let RecorderHandle {
            thread,
            counters,
            annotations_dropped_in_channel,
        } = self;
        if thread.join().is_err() {
            tracing::warn!("recorder: the recorder thread failed; the capture may end early");
        }
        let mut s = counters.snapshot();
        s.annotations_dropped += annotations_dropped_in_channel.load(Ordering::Relaxed);
        s
    }

    fn with_channel_drops(&self, mut s: RecordStats) -> RecordStats {
        s.annotations_dropped += self.annotations_dropped_in_channel.load(Ordering::Relaxed);
        s
    }
}

/// The recorder as a side path: the observer's packet comments are taken
/// in before every tap, tick and the finish, so each lands on its packet
/// while that packet is still held.
struct Recording {
    recorder: recorder::Recorder,
    notes: std::sync::mpsc::Receiver<Annotation>,
}

impl Recording {
    /// Hands the recorder every comment queued so far.
    fn take_notes(&mut self) {
        while let Ok(note) = self.notes.try_recv() {
            self.recorder.annotate(note);
        }
    }
}

impl SidePath for Recording {
    fn on_tap(&mut self, tap: Tap) {
        self.take_notes();
        self.recorder.on_tap(tap);
    }

    fn tick(&mut self) {
        self.take_notes();
        self.recorder.tick();
    }

    fn finish(&mut self) {
        self.take_notes();
        self.recorder.finish();
    }
}

/// Starts the recorder on its own thread, writing into `out_dir` (which
/// must exist). It stops when every sender of `taps` is dropped.
pub fn spawn(
    out_dir: &Path,
    opts: RecordOptions,
    taps: TapReceiver,
    annotations: AnnotationReceiver,
    dir_epoch: Option<Arc<AtomicU64>>,
) -> Result<RecorderHandle, RecordError> {
    match std::fs::metadata(out_dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(RecordError::OutputDir {
                path: out_dir.to_path_buf(),
                reason: "it is not a directory".into(),
            })
        }
        Err(e) => {
            return Err(RecordError::OutputDir {
                path: out_dir.to_path_buf(),
                reason: e.to_string(),
            })
        }
    }
    let counters = Arc::new(RecordCounters::default());
    let mut writer = writer::CaptureWriter::new(
        out_dir,
        opts.format,
        opts.legs.legs(),
        opts.rotation,
        Arc::clone(&counters),
    )
    .with_ring_hold(opts.ring_hold.clone())
    .with_section_comment(opts.section_comment.clone());
    if let Some(epoch) = dir_epoch {
        writer.follow_directory(epoch);
    }
    let recorder = recorder::Recorder::new(opts, writer, Arc::clone(&counters));
    let AnnotationReceiver { rx, dropped } = annotations;
    let thread = side_path::spawn(
        "icaptap-recorder",
        Some(RECORDER_NICENESS),
        Some(TICK),
        Inbox::Live(taps),
        Recording {
            recorder,
            notes: rx,
        },
    )
    .map_err(|not_started| RecordError::Spawn(not_started.error))?;
    Ok(RecorderHandle {
        thread,
        counters,
        annotations_dropped_in_channel: dropped,
    })
}
