//! The progress display of icaptap's long jobs (`analyze`, `report`,
//! `bundle`, `replay`, `clean`): one line on stderr, drawn only when stderr
//! is a terminal (indicatif hides it otherwise, so pipes, files and logs
//! never get control characters) and not turned off with `-q` ([`set_quiet`])
//! or a job's own `--no-progress`. Each phase of a job is one [`Progress`]:
//! a bar over bytes or items when the total is known, a counter when not;
//! it clears its line when done so what the job prints after stays clean.

use std::borrow::Cow;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Set by `-q`: no progress display for the rest of the process.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Turns every progress display off (`-q`), or on again.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether `-q` was given (no progress line, no line per exchange).
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// One phase's progress line, or nothing.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// No display at all.
    pub fn hidden() -> Progress {
        Progress { bar: None }
    }

    /// A bar over `total` bytes, named `label` (e.g. `bundle`), shown when
    /// `enabled`, stderr is a terminal and `-q` was not given.
    pub fn bytes(enabled: bool, label: &str, total: u64) -> Progress {
        Progress::with_template(
            enabled,
            Some(total),
            label,
            "{spinner} {prefix} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta}) {msg}",
        )
    }

    /// A bar over `total` items called `unit` (requests, files).
    pub fn items(enabled: bool, label: &str, total: u64, unit: &str) -> Progress {
        let template = format!(
            "{{spinner}} {{prefix}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} ({{eta}}) {{msg}}"
        );
        Progress::with_template(enabled, Some(total), label, &template)
    }

    /// A counter of `unit` with no known total.
    pub fn counter(enabled: bool, label: &str, unit: &str) -> Progress {
        let template =
            format!("{{spinner}} {{prefix}} [{{elapsed_precise}}] {{pos}} {unit} {{msg}}");
        Progress::with_template(enabled, None, label, &template)
    }

    fn with_template(enabled: bool, total: Option<u64>, label: &str, template: &str) -> Progress {
        if !enabled || QUIET.load(Ordering::Relaxed) {
            return Progress::hidden();
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        if bar.is_hidden() {
            return Progress::hidden();
        }
        let style =
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        // Drawn at once, so even a phase that ends quickly was seen.
        bar.tick();
        Progress { bar: Some(bar) }
    }

    /// Whether anything is drawn.
    pub fn is_shown(&self) -> bool {
        self.bar.is_some()
    }

    /// This far now.
    pub fn set(&self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
        }
    }

    /// `n` more done.
    pub fn advance(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// What is being done (after the numbers).
    pub fn message(&self, message: impl Into<Cow<'static, str>>) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    /// The phase is over: its line goes away.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// `inner`, advancing this progress by every byte read from it.
    pub fn reader<R: Read>(&self, inner: R) -> ProgressReader<R> {
        ProgressReader {
            inner,
            progress: self.clone(),
        }
    }
}

/// A reader that advances a [`Progress`] by the bytes read.
#[derive(Debug)]
pub struct ProgressReader<R> {
    inner: R,
    progress: Progress,
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_counts_what_is_read_through_it_and_quiet_hides_it() {
        let p = Progress::bytes(true, "bundle", 10);
        let mut out = Vec::new();
        std::io::copy(&mut p.reader(&b"0123456789"[..]), &mut out).unwrap();
        assert_eq!(out, b"0123456789");
        p.finish();
        set_quiet(true);
        assert!(!Progress::counter(true, "clean", "files").is_shown());
        set_quiet(false);
        assert!(!Progress::items(false, "replay", 5, "requests").is_shown());
    }
}
