//! How an observer is set up: where its taps come from ([`ObserverMode`])
//! and the timers of its clock rules ([`ObserverConfig`]).

use std::time::Duration;

/// Where an observer's taps come from. A hole in a connection's offsets
/// means something different in each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObserverMode {
    /// The live proxy's tap queue: a hole is bytes the queue dropped
    /// because the observer fell behind (`observer-dropped`); forwarding
    /// had them all.
    Live,
    /// A reassembled capture (offline analysis, a replayed recording): a
    /// hole is bytes the capture does not hold; they are counted as
    /// unobserved and not blamed on the observer.
    Capture,
}

/// Timers of the clock rules, and how deep a connection's pipeline is
/// followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObserverConfig {
    /// A request complete without a response head for this long is recorded
    /// as `missing` (the connection is left alone).
    pub verdict_timeout: Duration,
    /// Both sides silent mid-message for this long is a stall or deadlock.
    pub stall_timeout: Duration,
    /// A client that closes this long after its last answer, with nothing
    /// else sent, looks like it waited for EOF.
    pub eof_wait: Duration,
    /// Most requests of one connection followed while they wait for
    /// answers; past it the oldest is given up (`pipeline-too-deep`).
    pub max_pipeline: usize,
}

impl Default for ObserverConfig {
    fn default() -> Self {
        ObserverConfig {
            verdict_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(10),
            eof_wait: Duration::from_secs(5),
            max_pipeline: icap_codec::MAX_OPEN_EXCHANGES,
        }
    }
}
