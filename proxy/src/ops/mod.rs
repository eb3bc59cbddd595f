//! Operations: what makes `icaptap proxy` easy to put into a production
//! path, watch while it is there, and take out again.
//!
//! - [`metrics`] and [`endpoint`]: the HTTP endpoint (`/metrics` in Prometheus text format,
//!   `/healthz`, `/status` JSON), fed by the live counters of the side paths
//!   and by [`metrics::RecordMetrics`], a record sink; [`process`]: the
//!   standard `process_*` figures; `exposition`: the text format;
//! - [`stop`]: `--max-exchanges` and `--stop-on CODE`, so a temporary
//!   deployment ends by itself (`--duration` lives in [`crate::jobs::proxy`]);
//! - [`flight`]: the flight recorder, `--ring SIZE` and `--trigger CODE`;
//! - the record logs' `--log-ring SIZE` (and `--log-rotate-size`,
//!   `--log-keep`), which [`crate::output::log_rotation`] implements;
//!
//! Nothing here forwards: transparent mode and `--route` are options of
//! [`crate::forward`].

pub mod endpoint;
mod exposition;
pub mod flight;
pub mod metrics;
pub mod process;
pub mod stop;

use std::net::SocketAddr;
use std::time::Duration;

use crate::units::parse_duration;

/// Where `--metrics` listens when given without an address: loopback only,
/// because the endpoint shows traffic facts (URLs of problem exchanges).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9344";

/// Operational options of `icaptap proxy`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct OpsArgs {
    /// Serve /metrics (Prometheus), /healthz and /status (JSON) over HTTP on
    /// this address (127.0.0.1:9344 when given without a value).
    #[arg(long, env = "ICAPTAP_METRICS", value_name = "ADDR", num_args = 0..=1,
          default_missing_value = DEFAULT_METRICS_ADDR)]
    pub metrics: Option<SocketAddr>,
    /// Stop by itself after this many ICAP exchanges.
    #[arg(long, env = "ICAPTAP_MAX_EXCHANGES", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_exchanges: Option<u64>,
    /// Stop by itself when one of these anomaly codes is seen
    /// (comma-separated, e.g. verdict-timeout,istag-changed; the codes are
    /// those of docs/anomalies.md, an unknown one is refused).
    #[arg(
        long,
        env = "ICAPTAP_STOP_ON",
        value_name = "CODE[,CODE]",
        value_delimiter = ',',
        value_parser = crate::observe::codes::parse_code
    )]
    pub stop_on: Vec<String>,
    /// Flight recorder: keep only the newest SIZE of capture on disk (K, M,
    /// G suffixes; at least 1M), in a ring of files.
    #[arg(long, env = "ICAPTAP_RING", value_name = "SIZE",
          value_parser = crate::units::parse_capture_size,
          conflicts_with_all = ["rotate_size", "keep"])]
    pub ring: Option<u64>,
    /// Flight recorder: when one of these anomaly codes is seen, keep the
    /// capture and records around it and write a report and a bundle
    /// (comma-separated, or `any` for every error-severity anomaly; an
    /// unknown code is refused).
    #[arg(
        long,
        env = "ICAPTAP_TRIGGER",
        value_name = "CODE[,CODE]",
        value_delimiter = ',',
        value_parser = crate::observe::codes::parse_trigger
    )]
    pub trigger: Vec<String>,
    /// Flight recorder: how much of the records before a trigger to keep.
    #[arg(long, env = "ICAPTAP_TRIGGER_BEFORE", default_value = "60s", value_name = "DURATION",
          value_parser = parse_duration)]
    pub trigger_before: Duration,
    /// Flight recorder: how long to go on recording after a trigger before
    /// the incident is written.
    #[arg(long, env = "ICAPTAP_TRIGGER_AFTER", default_value = "10s", value_name = "DURATION",
          value_parser = parse_duration)]
    pub trigger_after: Duration,
    /// Flight recorder: most incidents written in one run (later triggers
    /// are counted, not written).
    #[arg(
        long,
        env = "ICAPTAP_MAX_INCIDENTS",
        default_value_t = 5,
        value_name = "N"
    )]
    pub max_incidents: u32,
    /// Rotation and bound of the record logs (`--log-rotate-size`,
    /// `--log-rotate-time`, `--log-keep`, `--log-ring`).
    #[command(flatten)]
    pub logs: crate::output::log_rotation::LogArgs,
}

impl OpsArgs {
    /// The options as a plan.
    pub fn plan(&self) -> OpsPlan {
        OpsPlan {
            metrics: self.metrics,
            stop: stop::StopConditions {
                max_exchanges: self.max_exchanges,
                codes: self.stop_on.iter().map(|c| c.trim().to_string()).collect(),
            },
            flight: (!self.trigger.is_empty()).then(|| flight::FlightOptions {
                triggers: self.trigger.iter().map(|c| c.trim().to_string()).collect(),
                before: self.trigger_before,
                after: self.trigger_after,
                max_incidents: self.max_incidents,
            }),
            ring: self.ring,
            logs: self.logs.rotation(),
        }
    }
}

/// The checked operational options a proxy run uses.
#[derive(Clone, Debug, Default)]
pub struct OpsPlan {
    /// The metrics endpoint's address, if any.
    pub metrics: Option<SocketAddr>,
    /// When to stop by itself.
    pub stop: stop::StopConditions,
    /// The flight recorder's triggers, if any.
    pub flight: Option<flight::FlightOptions>,
    /// `--ring`: the capture's size on disk.
    pub ring: Option<u64>,
    /// How the record logs rotate and what they keep.
    pub logs: crate::output::log_rotation::LogRotation,
}
