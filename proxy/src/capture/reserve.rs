//! Records first: the capture stops before it takes the disk space the
//! records (`exchanges.jsonl`, `connections.jsonl`, `summary.json`) need.
//!
//! The capture writer asks [`DiskGuard::check`] before each write to disk;
//! the guard calls statvfs(2) at most once per [`CHECK_EVERY_BYTES`] written
//! or once per [`CHECK_EVERY`], whichever comes first, so the check costs
//! nothing next to the writes. When the space left to unprivileged users
//! would fall below the reserve ([`reserve_for`]) before the next check, the
//! capture stops for the rest of the run with the reason `disk-reserve`; a
//! write that fails with ENOSPC stops it with `disk-full`. Records go on
//! into the reserved space either way.

use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes the capture may write between two free-space checks. The stop
/// condition keeps this much beyond the reserve, so the reserve holds even
/// if the whole allowance is written just before the next check.
pub const CHECK_EVERY_BYTES: u64 = 1 << 20;
/// Longest time between two free-space checks (records and other programs
/// use space too).
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// The reserve on an ordinary file system.
pub const RESERVE_MIN_BYTES: u64 = 64 << 20;

/// The most kept for records: over 500,000 exchange records.
pub const RESERVE_MAX_BYTES: u64 = 1 << 30;

/// The space kept for records on a file system of `total` bytes: the larger
/// of 64 MiB and 5% of it, at most 1 GiB (records are small: 5% of a large,
/// fairly full disk must not stop every capture), and never more than a
/// quarter of it (so that on a small file system, e.g. a 20 MiB tmpfs, the
/// capture still gets three quarters: 5 MiB are kept there, room for
/// thousands of records).
pub fn reserve_for(total: u64) -> u64 {
    RESERVE_MIN_BYTES
        .max(total / 20)
        .min(RESERVE_MAX_BYTES)
        .min(total / 4)
}

/// Why and when the capture stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureStop {
    /// `disk-reserve` (free space reached the reserve) or `disk-full` (a
    /// write failed with ENOSPC).
    pub reason: &'static str,
    /// When (microseconds since the epoch).
    pub at: u64,
    /// Bytes of capture on disk when it stopped.
    pub capture_bytes: u64,
    /// Bytes free (to unprivileged users) when it stopped, if known.
    pub free_bytes: Option<u64>,
    /// The reserve kept for records, if the file system could be asked.
    pub reserve_bytes: Option<u64>,
}

/// The stop reason for free space at the reserve.
pub const DISK_RESERVE: &str = "disk-reserve";
/// The stop reason for a write that found the disk full.
pub const DISK_FULL: &str = "disk-full";

/// Space on the file system holding a directory: (available to
/// unprivileged users, total), in bytes.
pub fn space(dir: &Path) -> Option<(u64, u64)> {
    let st = rustix::fs::statvfs(dir).ok()?;
    let unit = if st.f_frsize > 0 {
        st.f_frsize
    } else {
        st.f_bsize
    };
    Some((
        st.f_bavail.saturating_mul(unit),
        st.f_blocks.saturating_mul(unit),
    ))
}

/// Decides, cheaply, when the capture must stop to leave the reserve.
#[derive(Debug)]
pub struct DiskGuard {
    since_check: u64,
    last_check: Option<Instant>,
    /// Overrides [`reserve_for`] (tests, and a future flag).
    reserve: Option<u64>,
}

impl DiskGuard {
    /// A guard using [`reserve_for`].
    pub fn new() -> DiskGuard {
        DiskGuard {
            since_check: 0,
            last_check: None,
            reserve: None,
        }
    }

    /// Counts `bytes` about to be written to a file in `dir`; returns
    /// `Some((free, reserve))` when writing them (plus the allowance until
    /// the next check) would eat into the reserve.
    pub fn check(&mut self, dir: &Path, bytes: u64) -> Option<(u64, u64)> {
        self.since_check += bytes;
        let due = self.since_check >= CHECK_EVERY_BYTES
            || self.last_check.is_none_or(|t| t.elapsed() >= CHECK_EVERY);
        if !due {
            return None;
        }
        self.since_check = 0;
        self.last_check = Some(Instant::now());
        let (free, total) = space(dir)?;
        let reserve = self.reserve.unwrap_or_else(|| reserve_for(total));
        (free < reserve + CHECK_EVERY_BYTES + bytes).then_some((free, reserve))
    }
}

impl Default for DiskGuard {
    fn default() -> Self {
        DiskGuard::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_a_quarter_on_small_file_systems_and_64_mib_or_5_percent_otherwise() {
        assert_eq!(reserve_for(20 << 20), 5 << 20);
        assert_eq!(reserve_for(1 << 30), 64 << 20);
        assert_eq!(reserve_for(10 << 30), 512 << 20);
        assert_eq!(reserve_for(250 << 30), 1 << 30);
    }

    #[test]
    fn a_guard_stops_when_free_space_is_below_its_reserve() {
        let tmp = tempfile::tempdir().unwrap();
        let (free, _) = space(tmp.path()).unwrap();
        let mut guard = DiskGuard {
            reserve: Some(free + 1),
            ..DiskGuard::new()
        };
        assert!(guard.check(tmp.path(), 10).is_some());
        // Checked just now: the next small write does not ask again.
        assert!(guard.check(tmp.path(), 10).is_none());
        let mut roomy = DiskGuard {
            reserve: Some(0),
            ..DiskGuard::new()
        };
        if free > 4 * CHECK_EVERY_BYTES {
            assert!(roomy.check(tmp.path(), 10).is_none());
        }
    }
}
