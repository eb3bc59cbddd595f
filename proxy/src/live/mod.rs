//! One line per exchange while a run goes on, as tcpdump and mitmdump
//! print one per packet or flow: `icaptap proxy`, `icaptap analyze` and
//! `icaptap demo` print, on standard output, the line of every exchange
//! once its record is written (time, client, method, verdict, ICAP status,
//! latency, URL, threat, anomaly codes). `-q` prints none, `-v` adds the
//! ICAP and HTTP heads of each exchange, `--filter EXPR` (the filter
//! language of [`crate::filter`]) picks which exchanges get one.
//!
//! Where things go: lines on standard output, everything else icaptap
//! says (log lines, the status line, start and stop messages) on standard
//! error, as tcpdump does; each is written whole, so on one terminal they
//! interleave by line, never inside one. `icaptap proxy | grep infected`
//! sees only lines.
//!
//! The lines come from the record side, never the forwarding path: a
//! [`RecordSink`](crate::output::writer::RecordSink) in the observer's
//! fan-out formats them, and a printer thread of its own writes them; when
//! the console cannot keep up in a live run, lines are dropped and counted
//! (`printer.rs`), the records never.
//!
//! - [`format`]: the line, its columns and its colours;
//! - [`heads`]: the heads under a line (`-v`);
//! - [`printer`]: the sink, its bounded queue and the printer thread.
//!
//! This room sits beside `output/` rather than in it because it uses the
//! filter language, which itself reads `output/`'s records.

pub mod format;
pub mod heads;
pub mod printer;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

pub use format::Style;
pub use printer::{LinePrinter, LiveLines, Overflow};

use crate::filter::Filter;

/// Options of the lines, for every job that prints them.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct LiveArgs {
    /// No line per exchange: set by the global `-q` (`ICAPTAP_QUIET`),
    /// or by a caller in code.
    #[arg(skip)]
    pub quiet: bool,
    /// Print the ICAP and HTTP heads of each exchange under its line.
    #[arg(short, long)]
    pub verbose: bool,
}

/// `--filter` for the lines of a live run (`icaptap analyze --filter`
/// selects what is written, and its lines follow).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct LiveFilterArg {
    /// Print the lines of the exchanges this expression selects only,
    /// e.g. `verdict!=clean` (the filter language of docs/evidence.md);
    /// every exchange is recorded all the same.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<Filter>,
}

impl LiveArgs {
    /// What these options ask for, lines picked by `filter` and written as
    /// `overflow` says; `None` for `-q`. Colour when standard output is a
    /// terminal and `NO_COLOR` is not set. `run_start` is when a live run
    /// started (what `after=+5m` counts from); an analysis leaves it
    /// `None` and gives [`LivePlan::run_start_from`].
    pub fn plan(
        &self,
        filter: Option<&Filter>,
        overflow: Overflow,
        run_start: Option<u64>,
    ) -> Option<LivePlan> {
        if self.quiet || crate::progress::quiet() {
            return None;
        }
        let mut filter = filter.cloned();
        if let (Some(filter), Some(start)) = (filter.as_mut(), run_start) {
            filter.set_run_start(start);
        }
        Some(LivePlan {
            style: Style {
                colour: colour_wanted(
                    std::io::stdout().is_terminal(),
                    std::env::var_os("NO_COLOR"),
                    std::env::var_os("TERM"),
                ),
            },
            heads: self.verbose,
            filter,
            overflow,
            run_start: None,
        })
    }
}

/// How a run's lines are drawn, picked and written.
#[derive(Clone, Debug)]
pub struct LivePlan {
    /// Colour or not.
    pub style: Style,
    /// Whether each line has the exchange's heads under it (`-v`).
    pub heads: bool,
    /// Which exchanges get a line; every one when `None`.
    pub filter: Option<Filter>,
    /// What a full queue does.
    pub overflow: Overflow,
    /// Where the run's start appears once known (0 until then), for a
    /// filter with relative times (`after=+5m`) whose start is not known
    /// when the plan is made; without it the first exchange's time is
    /// taken.
    pub run_start: Option<Arc<AtomicU64>>,
}

impl LivePlan {
    /// Takes the run's start from `start` (microseconds since the epoch, 0
    /// while unknown), as the analysis learns it from its first packet.
    pub fn run_start_from(mut self, start: Arc<AtomicU64>) -> LivePlan {
        self.run_start = Some(start);
        self
    }

    /// Starts the printer on standard output, and the sink that feeds it.
    pub fn start(self) -> std::io::Result<(LiveLines, LinePrinter)> {
        printer::start(self, Box::new(std::io::stdout()))
    }
}

/// Whether lines are coloured: on a terminal only, unless `NO_COLOR` is
/// set to anything but the empty string (no-color.org) or the terminal is
/// `dumb`.
pub fn colour_wanted(terminal: bool, no_color: Option<OsString>, term: Option<OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty()) && term.is_none_or(|t| t != "dumb")
}

#[cfg(test)]
pub(crate) mod testing {
    use crate::output::records::{ExchangeRecord, IdentityRecord, ProductsRecord, TimingsRecord};

    /// 2026-11-28T10:15:42.123456Z.
    pub const T: u64 = 1_795_860_942_123_456;

    /// A RESPMOD exchange of `verdict` from 192.0.2.10, answered 204 in
    /// 3.4 ms.
    pub fn record(verdict: &str) -> ExchangeRecord {
        ExchangeRecord {
            schema: 1,
            ts: crate::output::rfc3339(T),
            ts_us: T,
            conn: 3,
            seq: 0,
            client: "192.0.2.10:50312".into(),
            server: "127.0.0.1:1344".into(),
            method: Some("RESPMOD".into()),
            uri: Some("icap://127.0.0.1:1344/av/respmod".into()),
            service: Some("/av/respmod".into()),
            icap_status: Some(204),
            verdict: verdict.into(),
            threat: None,
            block_reason: None,
            anomalies: Vec::new(),
            latency_us: Some(3_412),
            istag: None,
            http_method: Some("GET".into()),
            http_url: Some("http://www.example.test/clean/index.html".into()),
            http_status: Some(200),
            http_status_returned: None,
            request_body_bytes: 0,
            response_body_bytes: 0,
            request_body_sha256: None,
            request_body_sha256_skipped: None,
            preview: None,
            identity: IdentityRecord::default(),
            products: ProductsRecord::default(),
            timings: TimingsRecord::default(),
            frames: None,
            decode_complete: true,
            squid_outcome: None,
            tls: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn colour_only_on_a_terminal_that_wants_it() {
        let set = |s: &str| Some(OsString::from(s));
        assert!(colour_wanted(true, None, set("xterm-256color")));
        assert!(colour_wanted(true, None, None));
        assert!(colour_wanted(true, set(""), None));
        assert!(!colour_wanted(false, None, set("xterm")));
        assert!(!colour_wanted(true, set("1"), set("xterm")));
        assert!(!colour_wanted(true, None, set("dumb")));
    }

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        live: LiveArgs,
        #[command(flatten)]
        filter: LiveFilterArg,
    }

    #[test]
    fn quiet_prints_nothing_and_verbose_adds_heads() {
        // `-q` is the global flag of icaptap's command line; in code it is
        // the field.
        let quiet = LiveArgs {
            quiet: true,
            ..LiveArgs::default()
        };
        assert!(quiet.plan(None, Overflow::Drop, None).is_none());
        let verbose = Cli::try_parse_from(["t", "-v"]).unwrap().live;
        assert!(verbose.plan(None, Overflow::Drop, None).unwrap().heads);
        let plain = Cli::try_parse_from(["t"]).unwrap().live;
        assert!(!plain.plan(None, Overflow::Drop, None).unwrap().heads);
    }

    #[test]
    fn a_bad_filter_is_refused_on_the_command_line() {
        let e = Cli::try_parse_from(["t", "--filter", "verdict=cleen"]).unwrap_err();
        assert!(e.to_string().contains("cleen"), "{e}");
        let ok = Cli::try_parse_from(["t", "--filter", "verdict=blocked"]).unwrap();
        assert!(ok.filter.filter.is_some());
    }

    #[test]
    fn a_live_run_counts_relative_times_from_its_start() {
        let cli = Cli::try_parse_from(["t", "--filter", "after=+1s"]).unwrap();
        let plan = cli
            .live
            .plan(cli.filter.filter.as_ref(), Overflow::Drop, Some(testing::T))
            .unwrap();
        let filter = plan.filter.unwrap();
        assert_eq!(filter.run_start(), Some(testing::T));
        let mut r = testing::record("clean");
        assert!(!filter.matches(&r));
        r.ts_us += 2_000_000;
        r.ts = crate::output::rfc3339(r.ts_us);
        assert!(filter.matches(&r));
    }
}
