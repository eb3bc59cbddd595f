//! Observation: decoding every exchange on a side path, classifying its
//! verdict and applying the anomaly rules. One observer serves the live
//! proxy (fed from the forwarding path's tap queue on its own thread) and
//! offline analysis (fed from reassembled captures).
//!
//! - [`observer`]: the [`Observer`], taking taps in order;
//! - [`config`]: its mode (live or capture) and timers;
//! - `conn`: one connection's state, a leg per direction;
//! - [`rules`]: the observer's rules; [`finding`]: their codes;
//! - [`verdict`]: what a response means; [`services`]: what each service
//!   advertised;
//! - [`describe`]: records; [`annotations`]: packet comments;
//! - [`shedding`]: what the live observer gives up first when behind;
//! - [`squid_outcome`]: the outcome code Squid's icap_log gives an exchange.

pub mod annotations;
pub mod codes;
pub mod config;
mod conn;
pub mod describe;
pub mod finding;
#[cfg(test)]
mod legal_table;
#[cfg(test)]
mod loss_table;
pub mod observer;
#[cfg(test)]
mod rule_table;
pub mod rules;
pub mod services;
pub mod shedding;
pub mod squid_outcome;
pub mod verdict;

use std::time::Duration;

pub use annotations::{Annotation, AnnotationSink};
pub use config::{ObserverConfig, ObserverMode};
pub use finding::{Finding, RuleCode};
pub use observer::Observer;
pub use verdict::Verdict;

use crate::tap::side_path::{self, Inbox, SidePath, SidePathThread};
use crate::tap::{now_micros, Backlog, Tap, TapReceiver, OBSERVER_NICENESS};

/// Options of the observer's clock rules.
#[derive(Clone, Debug, clap::Args)]
pub struct ObserveArgs {
    /// Record a request as `missing` when no response head came this long
    /// after it was sent (the connection is left alone).
    #[arg(long, env = "ICAPTAP_VERDICT_TIMEOUT", default_value = "30s", value_parser = crate::units::parse_duration)]
    pub verdict_timeout: Duration,
    /// Report a stall or deadlock when both sides are silent mid-message
    /// this long.
    #[arg(long, env = "ICAPTAP_STALL_TIMEOUT", default_value = "10s", value_parser = crate::units::parse_duration)]
    pub stall_timeout: Duration,
    /// Report a client that closes this long after its last answer as one
    /// that waited for EOF.
    #[arg(long, env = "ICAPTAP_EOF_WAIT", default_value = "5s", value_parser = crate::units::parse_duration)]
    pub eof_wait: Duration,
    /// Most requests of one connection followed while they wait for
    /// answers (pipelining); past it the oldest is recorded `unobserved`
    /// with `pipeline-too-deep` and every later pair stays true.
    #[arg(long, env = "ICAPTAP_MAX_PIPELINE", default_value_t = icap_codec::MAX_OPEN_EXCHANGES as u64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_pipeline: u64,
}

impl ObserveArgs {
    /// The observer configuration these options describe.
    pub fn config(&self) -> ObserverConfig {
        ObserverConfig {
            verdict_timeout: self.verdict_timeout,
            stall_timeout: self.stall_timeout,
            eof_wait: self.eof_wait,
            max_pipeline: self.max_pipeline as usize,
        }
    }
}

/// How often the live observer runs its clock rules when no tap arrives.
const LIVE_TICK: Duration = Duration::from_millis(250);

/// The observer as a live side path: its clock is the wall clock.
#[derive(Debug)]
pub struct LiveObserver(pub Observer);

impl SidePath for LiveObserver {
    fn on_tap(&mut self, tap: Tap) {
        self.0.handle(tap);
    }

    fn tick(&mut self) {
        self.0.tick(now_micros());
    }

    fn finish(&mut self) {
        self.0.finish(now_micros());
    }

    fn backlog(&mut self, backlog: Backlog) {
        self.0.backlog(backlog);
    }
}

/// Runs `observer` on its own thread, fed by `taps`, until every sender of
/// the queue is gone; then finishes every connection and hands the
/// observer back. Decoding never runs on the forwarding runtime's workers.
pub fn spawn_live(
    observer: Observer,
    taps: TapReceiver,
) -> std::io::Result<SidePathThread<LiveObserver>> {
    side_path::spawn(
        "icaptap-observer",
        Some(OBSERVER_NICENESS),
        Some(LIVE_TICK),
        Inbox::Live(taps),
        LiveObserver(observer),
    )
    .map_err(|not_started| not_started.error)
}
