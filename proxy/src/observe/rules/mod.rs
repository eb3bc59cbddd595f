//! The observer's rules: what needs more than the bytes of one message
//! (FIELD-GUIDE.md "Failure modes"). Each returns [`Finding`]s with a
//! [`RuleCode`](crate::observe::RuleCode); docs/anomalies.md says what each
//! means and what to do. The observer decides when to ask; a rule only
//! looks at what it is given.
//!
//! - [`exchange`]: one exchange against its service and its verdict;
//! - [`connection`]: the connection (reachability, Max-Connections, missed
//!   bytes, how it ended);
//! - [`clock`]: stalls, deadlocks, verdict timeouts.
//!
//! [`Finding`]: crate::observe::Finding

pub mod clock;
pub mod connection;
pub mod exchange;

pub use clock::{awaits_verdict, stuck, verdict_late, verdict_timeout, StreamOffsets};
pub use connection::{
    capture_ended, client_closed_during_response, client_gone_before_connect,
    client_waited_for_eof, forwarding_loop, icaptap_fd_limit, max_connections_exceeded,
    missing_cause, observer_dropped, sensor_unreachable, tls_failed, ClientStream, FirstClose,
};
pub use exchange::{decode_identity, exchange_rules, EICAR_MARKER};
