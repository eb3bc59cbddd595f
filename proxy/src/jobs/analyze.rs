//! `icaptap analyze`: the offline job. Reads tcpdump captures into taps
//! (`analyze/`), runs the same observer as the live proxy over them (times
//! from packet timestamps, frame numbers in every record), writes the same
//! output directory, and with `--peer` matches a client-side capture with a
//! sensor-side capture of the same traffic to show where exchanges are lost.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::analyze::peer::{
    correlate, restrict_to_overlap, ExchangeFingerprint, FingerprintSink, PeerReport,
};
use crate::analyze::peer_file::{PeerCapture, PeerFile, PEER_FILE};
use crate::analyze::reader::{is_stdin, CaptureFile};
use crate::analyze::{read_captures, AnalyzeArgs, AnalyzeError, AnalyzeOptions, CaptureStats};
use crate::filter::{Filter, FilterSink};
use crate::live::{LivePlan, Overflow};
use crate::observe::{Observer, ObserverConfig, ObserverMode};
use crate::output::console::summary_table;
use crate::output::directory::{create_private_file, out_dir};
use crate::output::run::{OutputError, RunOutput};
use crate::output::summary::{Drops, Summary};
use crate::output::terminal::{json_notices, notice, say};
use crate::output::writer::{RecordSink, Tee};
use crate::tap::side_path::{self, Inbox, NotStarted, SidePath};
use crate::tap::{Micros, Tap, TapBatches};

/// Where the records of the `--peer` capture go, inside the output directory.
pub const PEER_DIR: &str = "peer-side";

/// Why an analysis could not run.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// A capture could not be read.
    #[error(transparent)]
    Capture(#[from] AnalyzeError),
    /// The output directory could not be written.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// peer.json could not be written.
    #[error("cannot write {path}: {source}")]
    PeerReport {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// What one side's analysis produced.
#[derive(Debug)]
pub struct SideResult {
    /// The run summary.
    pub summary: Summary,
    /// What reading the captures found.
    pub capture: CaptureStats,
    /// One fingerprint per exchange, in record order.
    pub fingerprints: Vec<ExchangeFingerprint>,
}

/// Analyses `files` into the output directory `out`.
pub fn analyze_into(
    files: &[PathBuf],
    opts: &AnalyzeOptions,
    config: ObserverConfig,
    out: &Path,
) -> Result<SideResult, OfflineError> {
    analyze_filtered_into(files, opts, config, out, None)
}

/// [`analyze_into`], writing only the exchanges `filter` selects and their
/// connections (the fingerprints, for `--peer`, stay those of every
/// exchange). Times relative to the run's start count from the first ICAP
/// packet.
pub fn analyze_filtered_into(
    files: &[PathBuf],
    opts: &AnalyzeOptions,
    config: ObserverConfig,
    out: &Path,
    filter: Option<&Filter>,
) -> Result<SideResult, OfflineError> {
    analyze_showing(files, opts, config, out, filter, None)
}

/// [`analyze_filtered_into`], printing the line of every exchange written
/// as `live` says.
fn analyze_showing(
    files: &[PathBuf],
    opts: &AnalyzeOptions,
    config: ObserverConfig,
    out: &Path,
    filter: Option<&Filter>,
    live: Option<LivePlan>,
) -> Result<SideResult, OfflineError> {
    let mut output = RunOutput::create_with(out, Default::default(), opts.log_schema)?;
    let fingerprints = FingerprintSink::default();
    let first_tap = Arc::new(AtomicU64::new(0));
    let records: Box<dyn RecordSink> = match filter {
        Some(f) => {
            output
                .summary()
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .filtered(f.text());
            Box::new(
                FilterSink::new(f.clone(), output.take_sink()).run_start_from(first_tap.clone()),
            )
        }
        None => output.take_sink(),
    };
    // The lines show what is written: the same filter, the same start.
    let live = live.map(|plan| LivePlan {
        filter: filter.cloned(),
        ..plan
    });
    let (lines, printer) = match live.map(|p| p.run_start_from(first_tap.clone()).start()) {
        Some(Ok((lines, printer))) => (Some(lines), Some(printer)),
        None => (None, None),
        // No thread for the lines: the analysis goes on without them.
        Some(Err(e)) => {
            eprintln!("icaptap analyze: warning: no lines per exchange ({e})");
            (None, None)
        }
    };
    let records = Tee(records, fingerprints.clone());
    let sink: Box<dyn RecordSink> = match lines {
        Some(lines) => Box::new(Tee(records, lines)),
        None => Box::new(records),
    };
    let observer = Observer::new(ObserverMode::Capture, config, sink);
    let (capture, last_tap) = observe_on_own_thread(observer, |sink| {
        read_captures(files, opts, &mut |tap: Tap| {
            // Before the tap is handed on: the observer sees it after.
            if first_tap.load(Ordering::Relaxed) == 0 {
                first_tap.store(tap.at.max(1), Ordering::Release);
            }
            sink(tap)
        })
    });
    // Every line is out before anything else is said on stdout.
    if let Some(printer) = printer {
        printer.finish();
    }
    let capture = match capture {
        Ok(capture) => capture,
        Err(e) => {
            // No summary can be written: leave no half-made run behind.
            output.discard();
            return Err(e.into());
        }
    };
    // The run ends when the capture does, not when it was analysed.
    let ended = (last_tap > 0).then_some(last_tap);
    let summary = output.finish_at("analyze", Drops::default(), None, ended)?;
    let fingerprints = fingerprints.take();
    Ok(SideResult {
        summary,
        capture,
        fingerprints,
    })
}

/// The observer as an offline side path: its clock is the capture's, so
/// it finishes at the time of the last tap.
struct CaptureObserver {
    observer: Observer,
    last: Micros,
}

impl SidePath for CaptureObserver {
    fn on_tap(&mut self, tap: Tap) {
        self.last = self.last.max(tap.at);
        self.observer.handle(tap);
    }

    fn tick(&mut self) {}

    fn finish(&mut self) {
        self.observer.finish(self.last);
    }
}

/// Runs `read` (which hands every tap of the capture to its sink) on this
/// thread and `observer` on a thread of its own, so that reading and
/// reassembly overlap with decoding, hashing and record writing on a
/// second core. Taps keep their capture order; the observer is finished at
/// the time of the last tap, which is returned beside `read`'s result (0
/// when there was none).
fn observe_on_own_thread<T>(
    observer: Observer,
    read: impl FnOnce(&mut dyn FnMut(Tap)) -> T,
) -> (T, Micros) {
    let observer = CaptureObserver { observer, last: 0 };
    let (mut batches, received) = TapBatches::channel();
    let thread = side_path::spawn(
        "icaptap-observer",
        None,
        None,
        Inbox::Batches(received),
        observer,
    );
    let thread = match thread {
        Ok(thread) => thread,
        Err(NotStarted { error, mut path }) => {
            tracing::debug!("observer thread not started ({error}); observing inline");
            let result = read(&mut |tap| path.on_tap(tap));
            path.finish();
            return (result, path.last);
        }
    };
    let result = read(&mut |tap| batches.push(tap));
    batches.close();
    match thread.join() {
        Ok(path) => (result, path.last),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs `icaptap analyze`.
pub fn run(args: AnalyzeArgs) -> Result<Summary, OfflineError> {
    let out = out_dir(args.out.as_deref());
    // Every input opens as a capture and the output directory holds no
    // earlier run, before anything is created. Standard input (`-`) can be
    // read only once: it is checked when it is read.
    let from_stdin = args.files.iter().chain(args.peer.as_ref());
    if from_stdin.filter(|f| is_stdin(f)).count() > 1 {
        return Err(AnalyzeError::StdinTwice.into());
    }
    for file in args.files.iter().chain(args.peer.as_ref()) {
        if !is_stdin(file) {
            CaptureFile::open(file)?;
        }
    }
    RunOutput::check(&out)?;
    // Every line is shown: an analysis goes at the console's pace.
    let live = args.live.plan(None, Overflow::Wait, None);
    // A progress bar redrawn among lines on the same terminal would be
    // torn apart by them; the lines show the progress then.
    let lines_on_terminal = live.is_some() && std::io::stdout().is_terminal();
    let opts = args.options().progress(
        !args.no_progress
            && !lines_on_terminal
            && std::io::stderr().is_terminal()
            && !json_notices(),
    );
    let filter = args.filter.as_ref();
    let main = analyze_showing(
        &args.files,
        &opts,
        ObserverConfig::default(),
        &out,
        filter,
        live,
    )?;
    for w in &main.capture.warnings {
        notice!(Warn, "icaptap analyze: warning: {w}");
    }
    notice!(
        "icaptap analyze: {} frames, {} MB read from {} file(s)",
        main.capture.frames(),
        main.capture.bytes() / 1_000_000,
        main.capture.files.len()
    );
    for line in capture_notes(&main, &opts) {
        notice!("icaptap analyze: {line}");
    }
    if let Some(f) = filter {
        notice!(
            "icaptap analyze: filter `{}`: {} exchanges written, of {} in the capture",
            f.text(),
            main.summary.exchanges,
            main.fingerprints.len()
        );
    }
    if let Some(peer) = &args.peer {
        let side = analyze_filtered_into(
            std::slice::from_ref(peer),
            &opts,
            ObserverConfig::default(),
            &out.join(PEER_DIR),
            filter,
        )?;
        let mut report = correlate(&main.fingerprints, &side.fingerprints);
        restrict_to_overlap(
            &mut report,
            &main.fingerprints,
            &side.fingerprints,
            main.capture.span,
            side.capture.span,
        );
        let file = PeerFile::of(
            &report,
            &main.fingerprints,
            &side.fingerprints,
            PeerCapture::of(
                &args.files,
                main.capture.span,
                main.fingerprints.len(),
                &main.capture.warnings,
            ),
            PeerCapture::of(
                std::slice::from_ref(peer),
                side.capture.span,
                side.fingerprints.len(),
                &side.capture.warnings,
            ),
        );
        write_peer_report(&out, &file)?;
        for w in &file.warnings {
            notice!(Warn, "icaptap analyze: warning: {w}");
        }
        say!(
            "{}",
            peer_summary(&report, &main.fingerprints, &side.fingerprints)
        );
    }
    if let Err(e) = crate::evidence::write_report(&out) {
        notice!(
            Warn,
            "icaptap analyze: the report could not be written: {e}"
        );
    }
    say!("{}", summary_table(&main.summary, &out));
    Ok(main.summary)
}

/// What the console says about where ICAP was found: a capture icaptap
/// wrote (decoded once, from its client leg), ICAP found on a port that
/// was not given (with the tshark option that decodes it), or, when no
/// flow was ICAP at all, the busiest TCP ports seen and what to do.
pub fn capture_notes(side: &SideResult, opts: &AnalyzeOptions) -> Vec<String> {
    let mut lines = Vec::new();
    let sensor_leg = side.capture.flows.icaptap_sensor_leg_packets;
    if sensor_leg > 0 {
        lines.push(format!(
            "a capture icaptap wrote: its client leg was decoded; its sensor leg ({sensor_leg} packets) carries the same bytes as icaptap forwarded them and was not counted again"
        ));
    }
    let found = &side.capture.found_ports;
    if let Some(decode) = crate::analyze::tshark_decode_as(found) {
        let list: Vec<String> = found.iter().map(u16::to_string).collect();
        lines.push(format!(
            "ICAP found by its first bytes on TCP port {} (not a given ICAP port); to decode it in tshark: tshark {decode} -r CAPTURE",
            list.join(", ")
        ));
    }
    // Under a filter that kept nothing the capture still held ICAP.
    if side.summary.connections == 0 && side.fingerprints.is_empty() {
        let given: Vec<String> = opts.ports.iter().map(u16::to_string).collect();
        let seen: Vec<String> = side
            .capture
            .other_ports
            .iter()
            .map(|(port, flows)| format!("{port} ({flows} flows)"))
            .collect();
        lines.push(format!(
            "no ICAP found: no TCP flow on port {} and no flow on another port that opens with ICAP",
            given.join(", ")
        ));
        if seen.is_empty() {
            lines.push("the capture holds no TCP flows at all: was the capture filter right (tcpdump ... 'tcp port N')?".to_string());
        } else {
            lines.push(format!(
                "TCP ports seen: {}; if ICAP runs on one of them and the capture started mid-connection, run again with --port N",
                seen.join(", ")
            ));
        }
    }
    lines
}

/// Writes `peer.json` (docs/log-schema.md): what matched, what one side
/// never saw inside the time both captures cover, what was outside it,
/// verdicts that differ, the clock offset and network delay, warnings.
fn write_peer_report(out: &Path, file: &PeerFile) -> Result<(), OfflineError> {
    let path = out.join(PEER_FILE);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = create_private_file(&path)?;
        f.write_all(&serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?)?;
        f.write_all(b"\n")
    };
    write().map_err(|source| OfflineError::PeerReport {
        path: path.clone(),
        source,
    })
}

/// The two-sided result in words.
fn peer_summary(
    report: &PeerReport,
    client: &[ExchangeFingerprint],
    sensor: &[ExchangeFingerprint],
) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "both sides: {} exchanges matched, {} seen only in the first capture, {} only in the peer capture, {} verdicts differ; {} of the first capture and {} of the peer capture were outside the time both cover and not compared",
        report.matched.len(),
        report.client_only.len(),
        report.sensor_only.len(),
        report.verdict_differences.len(),
        report.client_outside.len(),
        report.sensor_outside.len()
    );
    for i in report.client_only.iter().take(10) {
        if let Some(f) = client.get(*i) {
            let _ = writeln!(
                s,
                "  lost on the way: {} {} ({})",
                f.method,
                f.http_url.as_deref().unwrap_or("-"),
                f.locator
            );
        }
    }
    for i in report.sensor_only.iter().take(10) {
        if let Some(f) = sensor.get(*i) {
            let _ = writeln!(
                s,
                "  only at the peer: {} {} ({})",
                f.method,
                f.http_url.as_deref().unwrap_or("-"),
                f.locator
            );
        }
    }
    if let (Some(offset), Some(delay)) = (report.clock_offset_us, report.network_delay_us) {
        let _ = writeln!(s, "  clock offset of the peer capture: {offset} us; network delay between the capture points: {delay} us");
    }
    s
}
