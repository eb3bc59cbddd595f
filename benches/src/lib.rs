//! Shared code of the benchmarks, and the side-by-side harness
//! (`src/bin/sidebyside.rs`) that compares icaptap with the direct path,
//! HAProxy and socat: its bench client, its ICAP echo server, the processes
//! it starts, what it measures and how it reports; and the overload bench
//! (`src/bin/overload.rs`): open-loop load, tcpdump as the reference
//! capture, records judged against what the client saw. The harness's TLS
//! section (`--tls`) adds the certificates and rustls configurations of
//! `tls`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod client;
pub mod echo;
pub mod host;
pub mod judge;
pub mod measure;
pub mod openloop;
pub mod peers;
pub mod procstat;
pub mod report;
pub mod tcpdump;
pub mod tls;
