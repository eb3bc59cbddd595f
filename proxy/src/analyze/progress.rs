//! The progress bar of `icaptap analyze`: bytes of the capture files read
//! and flows found, drawn on stderr only when it is a terminal (indicatif
//! hides it otherwise) and not turned off with `--no-progress`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Frames between two updates: drawing is throttled by indicatif anyway,
/// and this keeps the per-frame cost to a modulo.
pub const FRAMES_PER_UPDATE: u64 = 4096;

/// A progress bar, or nothing.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar over `total` bytes when `enabled` (and stderr is a terminal).
    pub fn new(enabled: bool, total: u64) -> Self {
        if !enabled {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if bar.is_hidden() {
            return Progress { bar: None };
        }
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        Progress { bar: Some(bar) }
    }

    /// `bytes` of all files read so far, `flows` ICAP connections found.
    pub fn update(&self, bytes: u64, flows: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
            bar.set_message(format!("{flows} ICAP connections"));
        }
    }

    /// Reading is over.
    pub fn finish(&self, bytes: u64, flows: u64) {
        if let Some(bar) = &self.bar {
            self.update(bytes, flows);
            bar.finish_and_clear();
        }
    }
}
