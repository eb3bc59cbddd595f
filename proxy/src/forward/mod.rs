//! The forwarding hot path: bytes in, the same bytes out.
//!
//! icaptap sits between an ICAP client and an ICAP server (RFC 3507
//! section 4) as a plain TCP relay: it never parses, buffers for parsing,
//! or alters what it forwards, whatever the bytes are (valid ICAP, broken
//! ICAP, TLS, garbage). Each chunk it reads is written on unchanged and, as a
//! refcounted `Bytes`, offered to the side paths without waiting (see
//! [`crate::tap`]); a side path that falls behind loses taps, never slows
//! traffic.
//!
//! Use: [`ForwardArgs::into_config`] -> [`bind`] (start-up errors happen
//! here, before serving) -> [`Listener::counters`] for live figures ->
//! [`serve`] until the shutdown token is cancelled.
//!
//! - `options`: flags, environment variables, defaults, resolution;
//! - `listener`: accepting, the connection limit, shutdown and drain;
//! - `session`: one connection's two copy loops and mirrored close/reset;
//! - `loops`: forwarding loops, found by matching sensor legs against
//!   accepted connections, and the start-up check of `--upstream`;
//! - `counters`: live counters for the status line and metrics, and the
//!   open-file limit alarm;
//! - [`transparent`]: `--transparent`, forwarding each connection to the
//!   address it was redirected from (nftables/iptables REDIRECT with
//!   `SO_ORIGINAL_DST`, or TPROXY with `IP_TRANSPARENT`);
//! - [`routes`]: `--route LISTEN=UPSTREAM`, more listeners, each with its
//!   own sensor;
//! - [`tls`]: ICAP over TLS on either leg (`--tls`, `--upstream-tls`):
//!   icaptap terminates and originates TLS and forwards the decrypted
//!   bytes unchanged.

mod counters;
mod listener;
pub mod loops;
mod options;
pub mod routes;
mod session;
pub mod tls;
pub mod transparent;

pub use counters::{ForwardCounters, ForwardStats, FD_LIMIT_WARN_EVERY};
pub use listener::{
    bind, serve, ForwardError, Listener, ACCEPT_ERROR_BACKOFF, FD_LIMIT_BACKOFF, LISTEN_BACKLOG,
};
pub use options::{
    default_max_connections, max_connections_for, parse_buffer_size, ConfigError, ForwardArgs,
    ForwardConfig, RouteError, DEFAULT_ICAP_PORT, FD_MARGIN, MAX_BUFFER_SIZE,
    MAX_CONNECTIONS_LIMIT, MIN_BUFFER_SIZE,
};
pub use routes::Route;
pub use session::END_TAP_WAIT;
/// The shutdown signal [`serve`] takes, re-exported so callers need no
/// direct dependency on tokio-util.
pub use tokio_util::sync::CancellationToken;
pub use transparent::TransparentMode;
