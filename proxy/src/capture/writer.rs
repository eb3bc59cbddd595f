//! Capture files: pcapng (one interface per leg, packet comments) or
//! classic pcap, rotated like tcpdump's `-C`/`-G`/`-W`, and never in the way.
//!
//! Every block is built whole in a staging buffer (at least 64 KiB before it
//! goes to disk), so a file only ever ends at a block boundary. Blocks
//! (pcapng big-endian, classic pcap in the machine's order) are laid out by
//! the packet toolkit ([`super::packet::blocks`]) straight into the staging
//! buffer: one copy of each byte. When a write
//! fails (ENOSPC, EIO, a removed directory) the file is truncated back to the
//! last block that was written completely, the staged bytes are counted as
//! lost, a warning is logged at most once a minute, and recording goes on:
//! the recorder keeps draining its queue whatever the disk does.
//!
//! A ring (`keep`) deletes its oldest file at each rotation; a [`RingHold`]
//! (the flight recorder's incident whose window is open) gets a hard link
//! of each file before it is deleted, so the incident keeps every file of
//! its window however often the ring turns.
//!
//! Records come first: before each write the [`DiskGuard`] may find free
//! space at the reserve records need, and a write may fail with ENOSPC;
//! either stops the capture for the rest of the run (once, with a warning
//! and a [`CaptureStop`] in the counters for summary.json). When the output
//! directory was removed and recreated, the current file (in the removed
//! directory) is closed and the next frame starts a new one in the new
//! directory.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::packet::blocks::{self, ByteOrder, Interface, PacketOptions};
use super::packet::link::LINKTYPE_ETHERNET;
use super::reserve::{CaptureStop, DiskGuard, DISK_FULL, DISK_RESERVE};
use super::synth::{Leg, SynthFrame};
use super::{PcapFormat, RecordCounters};

/// Staged bytes that trigger a write to disk (the "BufWriter" size).
pub const WRITE_BUFFER_BYTES: usize = 256 * 1024;
/// Largest frame stored; also the snaplen announced in file headers.
pub const SNAPLEN: u32 = 262_144;
/// Room kept in the staging buffer beyond [`WRITE_BUFFER_BYTES`] for the
/// block that fills it, so it is not reallocated for ordinary packets.
const STAGING_SLACK: usize = 64 * 1024;
/// At most one warning about write failures per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(60);
/// After a file could not be created, wait this long before trying again.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// When to start a new file, and how many to keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Start a new file before one would grow past this many bytes.
    pub size: Option<u64>,
    /// Start a new file when the first packet of the current one is this
    /// many seconds older than the next packet (packet time, not wall time).
    pub seconds: Option<u64>,
    /// Keep only the newest N files (a ring); older ones are deleted.
    pub keep: Option<usize>,
}

impl Rotation {
    fn enabled(&self) -> bool {
        self.size.is_some() || self.seconds.is_some()
    }
}

/// Directories that keep every capture file the ring deletes while they
/// are held: before a file is deleted it is hard-linked into each (same
/// file system: they are below the run directory). Shared between the
/// recorder's writer and the flight recorder; clones share one list, and
/// two holds are equal when they are the same list.
#[derive(Clone, Debug, Default)]
pub struct RingHold(Arc<Mutex<Vec<PathBuf>>>);

impl PartialEq for RingHold {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for RingHold {}

impl RingHold {
    /// From now on, every file the ring deletes is kept in `dir` first.
    pub fn hold(&self, dir: &Path) {
        self.dirs().push(dir.to_path_buf());
    }

    /// `dir` no longer keeps deleted files.
    pub fn release(&self, dir: &Path) {
        self.dirs().retain(|d| d != dir);
    }

    fn dirs(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Links `file` into every held directory that lacks it; returns the
    /// failures (directory, error) for the writer to report.
    fn keep(&self, file: &Path) -> Vec<(PathBuf, std::io::Error)> {
        let Some(name) = file.file_name() else {
            return Vec::new();
        };
        let mut failed = Vec::new();
        for dir in self.dirs().iter() {
            let target = dir.join(name);
            match std::fs::hard_link(file, &target) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                // The file or the incident removed by an operator already:
                // nothing left to keep.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => failed.push((target, e)),
            }
        }
        failed
    }
}

#[derive(Debug)]
struct OpenFile {
    file: File,
    path: PathBuf,
    /// Bytes known to be on disk, each ending at a block boundary.
    good_len: u64,
    /// Timestamp of the first packet written to it.
    first_packet: Option<u64>,
    packets: u64,
}

/// Writes frames into rotating capture files in one directory.
#[derive(Debug)]
pub struct CaptureWriter {
    dir: PathBuf,
    format: PcapFormat,
    legs: Vec<Leg>,
    rotation: Rotation,
    counters: Arc<RecordCounters>,
    /// Whole blocks not written yet.
    staging: Vec<u8>,
    /// Where each whole block staged so far ends, so a partly failed write
    /// can keep the blocks that made it to disk.
    boundaries: Vec<usize>,
    file: Option<OpenFile>,
    /// Number of the newest file (for capture-NNNN names).
    index: u32,
    kept: VecDeque<PathBuf>,
    /// Where files the ring deletes are kept first.
    hold: Option<RingHold>,
    last_warning: Option<Instant>,
    last_open_attempt: Option<Instant>,
    /// Keeps the space records need.
    guard: DiskGuard,
    /// The capture stopped for good (disk at the reserve, or full).
    stopped: bool,
    /// Bumped each time the output directory is recreated, and the value
    /// the open file belongs to.
    dir_epoch: Option<Arc<AtomicU64>>,
    seen_epoch: u64,
    /// The section header's comment of every file (pcapng), if any.
    section_comment: Option<String>,
}

impl CaptureWriter {
    /// A writer into `dir` for the given `legs` (one pcapng interface each,
    /// in this order). The first file is created on the first frame.
    pub fn new(
        dir: &Path,
        format: PcapFormat,
        legs: Vec<Leg>,
        rotation: Rotation,
        counters: Arc<RecordCounters>,
    ) -> CaptureWriter {
        CaptureWriter {
            dir: dir.to_path_buf(),
            format,
            legs,
            rotation,
            counters,
            staging: Vec::new(),
            boundaries: Vec::new(),
            file: None,
            index: 0,
            kept: VecDeque::new(),
            hold: None,
            last_warning: None,
            last_open_attempt: None,
            guard: DiskGuard::new(),
            stopped: false,
            dir_epoch: None,
            seen_epoch: 0,
            section_comment: None,
        }
    }

    /// This writer, opening every pcapng file with `comment` in its
    /// section header (what Wireshark shows as the capture comment).
    pub fn with_section_comment(mut self, comment: Option<String>) -> CaptureWriter {
        self.section_comment = comment;
        self
    }

    /// Follows the output directory: when `epoch` changes (the directory
    /// was removed and recreated), the open file is closed and the next
    /// frame starts a new file in the new directory.
    pub fn follow_directory(&mut self, epoch: Arc<AtomicU64>) {
        self.seen_epoch = epoch.load(Ordering::Relaxed);
        self.dir_epoch = Some(epoch);
    }

    /// Stops the capture for the rest of the run, once, and says so.
    fn stop(&mut self, reason: &'static str, free: Option<u64>, reserve: Option<u64>) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let capture_bytes = self.counters.bytes_written.load(Ordering::Relaxed);
        let _ = self.counters.stopped.set(CaptureStop {
            reason,
            at: crate::tap::now_micros(),
            capture_bytes,
            free_bytes: free,
            reserve_bytes: reserve,
        });
        let why = match (reason, free, reserve) {
            (DISK_RESERVE, Some(free), Some(reserve)) => format!(
                "{free} bytes are free on the file system of {}, near the {reserve} bytes kept for records",
                self.dir.display()
            ),
            _ => format!("the file system of {} is full", self.dir.display()),
        };
        tracing::warn!(
            "recorder: the capture stopped ({reason}) after {capture_bytes} bytes: {why}; records \
             go on, packets from now on are not captured (counted as unwritten); free space or \
             give --out more room, or capture less (--body-capture preview, --rotate-size with --keep)"
        );
    }

    /// This writer, linking every file its ring deletes into the
    /// directories `hold` holds at that moment.
    pub fn with_ring_hold(mut self, hold: Option<RingHold>) -> CaptureWriter {
        self.hold = hold;
        self
    }

    /// The path of file number `index`.
    pub fn file_name(&self, index: u32) -> PathBuf {
        let ext = match self.format {
            PcapFormat::Pcapng => "pcapng",
            PcapFormat::Pcap => "pcap",
        };
        if self.rotation.enabled() {
            self.dir.join(format!("capture-{index:04}.{ext}"))
        } else {
            self.dir.join(format!("capture.{ext}"))
        }
    }

    /// Stages one frame whose stored bytes are `data`, rotating first when
    /// it is time, and writes the staging buffer out when it is full.
    pub fn write(&mut self, frame: &SynthFrame, data: &[u8]) {
        let Some(interface) = self.legs.iter().position(|l| *l == frame.leg) else {
            return;
        };
        if self.stopped {
            self.lost(data.len() as u64);
            return;
        }
        if let Some(epoch) = &self.dir_epoch {
            let now = epoch.load(Ordering::Relaxed);
            if now != self.seen_epoch {
                self.seen_epoch = now;
                // The open file is in the removed directory: end it there.
                self.finish();
                self.last_open_attempt = None;
            }
        }
        let block_len = data.len() as u64 + 64;
        if self.rotation_due(frame.at, block_len) {
            self.rotate();
        }
        if self.file.is_none() && !self.open_next() {
            self.lost(data.len() as u64);
            return;
        }
        if self.staging.is_empty() && self.file.as_ref().is_some_and(|f| f.good_len == 0) {
            self.stage_header();
        }
        let captured = &data[..data.len().min(SNAPLEN as usize)];
        match self.format {
            // Timestamps in nanoseconds (the interfaces say if_tsresol 9).
            PcapFormat::Pcapng => blocks::pcapng_enhanced_packet(
                &mut self.staging,
                ByteOrder::Big,
                interface as u32,
                (u128::from(frame.at) * 1000) as u64,
                captured,
                frame.len as u32,
                PacketOptions::Comments(&frame.comments),
            ),
            PcapFormat::Pcap => blocks::pcap_record(
                &mut self.staging,
                ByteOrder::NATIVE,
                (frame.at / 1_000_000) as u32,
                (frame.at % 1_000_000) as u32,
                captured,
                frame.len as u32,
            ),
        }
        let end = self.staging.len();
        self.boundaries.push(end);
        self.counters.packets.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = self.file.as_mut() {
            f.packets += 1;
            f.first_packet.get_or_insert(frame.at);
        }
        if self.staging.len() >= WRITE_BUFFER_BYTES {
            self.flush();
        }
    }

    /// Writes what is staged to the current file.
    pub fn flush(&mut self) {
        let buf = std::mem::take(&mut self.staging);
        let boundaries = std::mem::take(&mut self.boundaries);
        if buf.is_empty() {
            return;
        }
        if self.file.is_none() || self.stopped {
            self.lost(buf.len() as u64);
            return;
        }
        let (mut buf, mut boundaries) = (buf, boundaries);
        if let Some((free, reserve)) = self.guard.check(&self.dir, buf.len() as u64) {
            self.stop(DISK_RESERVE, Some(free), Some(reserve));
            // A file not begun still gets its header, so it stays a
            // capture tshark reads (holding no packets).
            let header = match self.file.as_ref() {
                Some(f) if f.good_len == 0 => boundaries.first().copied().unwrap_or(0),
                _ => 0,
            };
            self.lost((buf.len() - header) as u64);
            buf.truncate(header);
            boundaries.truncate(usize::from(header > 0));
            if buf.is_empty() {
                self.staging = buf;
                return;
            }
        }
        let Some(f) = self.file.as_mut() else {
            return;
        };
        let mut written = 0;
        let failure = loop {
            if written == buf.len() {
                break None;
            }
            match f.file.write(&buf[written..]) {
                Ok(0) => break Some(std::io::Error::from(std::io::ErrorKind::WriteZero)),
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e),
            }
        };
        // Keep the whole blocks that reached the disk; cut off a partial one
        // so the file still ends at a block boundary.
        let kept = match failure {
            None => buf.len(),
            Some(_) => boundaries
                .iter()
                .rev()
                .find(|b| **b <= written)
                .copied()
                .unwrap_or(0),
        };
        f.good_len += kept as u64;
        self.counters
            .bytes_written
            .fetch_add(kept as u64, Ordering::Relaxed);
        if let Some(e) = failure {
            let full = e.kind() == std::io::ErrorKind::StorageFull;
            let truncated = f.file.set_len(f.good_len).is_ok()
                && f.file.seek(SeekFrom::Start(f.good_len)).is_ok();
            let what = format!(
                "recorder: write of {} bytes to {} at byte offset {} failed: {e}; {}",
                buf.len() - kept,
                f.path.display(),
                f.good_len,
                if truncated {
                    "the file ends at its last whole block; packets are dropped (and counted) until writes succeed again"
                } else {
                    "the file could not be cut back and may end in a partial block"
                }
            );
            self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
            self.lost((buf.len() - kept) as u64);
            if full {
                self.stop(DISK_FULL, None, None);
            } else {
                self.warn(&what);
            }
        }
        // Reuse the allocation for the next round of blocks.
        buf.clear();
        self.staging = buf;
    }

    /// Flushes and closes the current file.
    pub fn finish(&mut self) {
        self.flush();
        if let Some(f) = self.file.take() {
            if let Err(e) = f.file.sync_data() {
                self.warn(&format!(
                    "recorder: syncing {} failed: {e}; the end of the capture may be missing",
                    f.path.display()
                ));
            }
        }
    }

    fn rotation_due(&self, at: u64, block_len: u64) -> bool {
        let Some(f) = &self.file else { return false };
        if f.packets == 0 {
            return false;
        }
        let size = f.good_len + self.staged_len() + block_len;
        let by_size = self.rotation.size.is_some_and(|max| size > max);
        let by_time = match (self.rotation.seconds, f.first_packet) {
            (Some(secs), Some(first)) => at.saturating_sub(first) >= secs * 1_000_000,
            _ => false,
        };
        by_size || by_time
    }

    fn staged_len(&self) -> u64 {
        self.staging.len() as u64
    }

    fn rotate(&mut self) {
        self.finish();
    }

    /// Creates the next file (mode 0600) and stages its header. Returns
    /// whether a file is open.
    fn open_next(&mut self) -> bool {
        if let Some(t) = self.last_open_attempt {
            if t.elapsed() < REOPEN_INTERVAL {
                return false;
            }
        }
        self.last_open_attempt = Some(Instant::now());
        let index = self.index + 1;
        let path = self.file_name(index);
        let opened = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path);
        let file = match opened {
            Ok(file) => file,
            Err(e) => {
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                self.warn(&format!(
                    "recorder: cannot create capture file {}: {e}; packets are dropped (and counted) until it can be; check the output directory exists and has space",
                    path.display()
                ));
                return false;
            }
        };
        self.last_open_attempt = None;
        self.index = index;
        self.counters.files.fetch_add(1, Ordering::Relaxed);
        self.kept.push_back(path.clone());
        if let Some(keep) = self.rotation.keep {
            while self.kept.len() > keep.max(1) {
                if let Some(old) = self.kept.pop_front() {
                    let failed = self.hold.as_ref().map(|h| h.keep(&old));
                    for (target, e) in failed.into_iter().flatten() {
                        self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                        self.warn(&format!(
                            "recorder: cannot keep {} for an incident as {}: {e}; the incident lacks that file",
                            old.display(),
                            target.display()
                        ));
                    }
                    // Already gone (removed by an operator) is as good as deleted.
                    let _ = std::fs::remove_file(old);
                }
            }
        }
        self.file = Some(OpenFile {
            file,
            path,
            good_len: 0,
            first_packet: None,
            packets: 0,
        });
        self.stage_header();
        true
    }

    fn stage_header(&mut self) {
        self.staging = self.header();
        self.boundaries.clear();
        let end = self.staging.len();
        self.boundaries.push(end);
    }

    /// A staging buffer holding a file header: SHB and one IDB per leg in
    /// pcapng, the global header in classic pcap.
    fn header(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(WRITE_BUFFER_BYTES + 2 * STAGING_SLACK);
        match self.format {
            PcapFormat::Pcapng => {
                // Big-endian, as every pcapng icaptap has written.
                let order = ByteOrder::Big;
                let app = concat!("icaptap ", env!("CARGO_PKG_VERSION"));
                blocks::pcapng_section_header(
                    &mut v,
                    order,
                    Some(app),
                    self.section_comment.as_deref(),
                );
                for leg in &self.legs {
                    let iface = Interface {
                        linktype: LINKTYPE_ETHERNET as u16,
                        snaplen: SNAPLEN,
                        name: Some(leg.if_name()),
                        description: Some(match leg {
                            Leg::Client => "icaptap: ICAP client <-> icaptap (synthesized from forwarded bytes)",
                            Leg::Sensor => "icaptap: icaptap <-> ICAP server (synthesized from forwarded bytes)",
                        }),
                        // Packet timestamps are in nanoseconds.
                        tsresol: Some(9),
                    };
                    blocks::pcapng_interface(&mut v, order, &iface);
                }
            }
            PcapFormat::Pcap => {
                blocks::pcap_header(&mut v, ByteOrder::NATIVE, false, SNAPLEN, LINKTYPE_ETHERNET)
            }
        }
        v
    }

    fn lost(&self, bytes: u64) {
        self.counters
            .unwritten_bytes
            .fetch_add(bytes, Ordering::Relaxed);
    }

    fn warn(&mut self, what: &str) {
        if self
            .last_warning
            .is_some_and(|t| t.elapsed() < WARN_INTERVAL)
        {
            return;
        }
        self.last_warning = Some(Instant::now());
        tracing::warn!(
            "{what} (forwarding is not affected; further warnings are held back for a minute)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(at: u64) -> SynthFrame {
        SynthFrame {
            leg: Leg::Client,
            at,
            len: 1000,
            captured: 1000,
            comments: Vec::new(),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("capture-"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_held_directory_keeps_every_file_the_ring_deletes_until_released() {
        let tmp = tempfile::tempdir().unwrap();
        let incident = tmp.path().join("incident");
        std::fs::create_dir(&incident).unwrap();
        let hold = RingHold::default();
        let rotation = Rotation {
            size: Some(4096),
            seconds: None,
            keep: Some(2),
        };
        let counters = Arc::new(RecordCounters::default());
        let mut w = CaptureWriter::new(
            tmp.path(),
            PcapFormat::Pcapng,
            vec![Leg::Client],
            rotation,
            counters.clone(),
        )
        .with_ring_hold(Some(hold.clone()));
        let data = vec![0u8; 1000];
        let mut at = 1_000_000;
        let mut write = |w: &mut CaptureWriter, n: usize| {
            for _ in 0..n {
                w.write(&frame(at), &data);
                at += 1000;
            }
        };
        // Three packets a file: files 1..=4 written, 1 and 2 deleted unheld.
        write(&mut w, 12);
        hold.hold(&incident);
        // Files 5..=10: the ring deletes 3..=8, each kept in the incident.
        write(&mut w, 18);
        hold.release(&incident);
        write(&mut w, 9);
        w.finish();
        let kept = names(&incident);
        let want: Vec<String> = (3..=8).map(|i| format!("capture-{i:04}.pcapng")).collect();
        assert_eq!(kept, want);
        assert_eq!(
            names(tmp.path()).len(),
            2,
            "the ring itself stays at 2 files"
        );
        // The kept files are whole captures, not empty names.
        for name in &kept {
            assert!(std::fs::metadata(incident.join(name)).unwrap().len() > 3000);
        }
        assert_eq!(counters.write_errors.load(Ordering::Relaxed), 0);
    }
}
