//! What a connection reports about itself, and how those reports reach the
//! side paths (observer, recorder) without ever slowing forwarding.
//!
//! - [`event`]: the vocabulary, [`Tap`], [`TapEvent`], [`ConnMeta`],
//!   [`CloseKind`];
//! - [`queue`]: the bounded, lossy inbox of a side path, [`TapQueue`] and
//!   [`TapReceiver`], and [`TapSinks`], every inbox a session reports to;
//! - [`batches`]: the lossless, batched inbox of offline analysis;
//! - [`priority`]: how much nicer than forwarding each side-path thread is;
//! - [`side_path`]: the one engine that runs a side path on its own thread
//!   from either inbox;
//! - [`tls`]: the facts of a connection's TLS legs and why one failed.

pub mod batches;
pub mod event;
pub mod priority;
pub mod queue;
pub mod side_path;
pub mod tls;

pub use batches::{BatchReceiver, TapBatches};
pub use event::{
    now_micros, CloseKind, ConnId, ConnMeta, ConnectFailure, Direction, Micros, Tap, TapEvent,
};
pub use priority::{lower_thread_priority, OBSERVER_NICENESS, RECORDER_NICENESS};
pub use queue::{
    Backlog, Busy, DropCounters, TapQueue, TapReceiver, TapSinks, BUSY_POLL, DEFAULT_QUEUE_BYTES,
};
pub use side_path::{Inbox, NotStarted, SidePath, SidePathThread};
pub use tls::{TlsFacts, TlsFailure, TlsLeg, TlsSide};
