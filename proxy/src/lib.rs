//! # icaptap
//!
//! A transparent ICAP diagnostic proxy. It sits between an ICAP client (a web
//! proxy) and an ICAP server (an anti-malware sensor), forwards every byte
//! unchanged, decodes every exchange on a side path, records a mirrored pcap
//! of both legs and structured session logs, and flags missing or malformed
//! verdicts. The same observer analyses tcpdump captures offline, and the
//! toolkit simulates a sensor and a client for regression tests.
//!
//! Layout, one folder per concern:
//! - [`forward`]: the hot path, bytes in and the same bytes out, with
//!   transparent mode and several listeners (`--route`);
//! - [`tap`]: what a connection reports to the side paths, and the one
//!   engine that runs each side path on its own thread;
//! - [`observe`]: decoding, verdicts and anomaly rules, live and offline;
//! - [`capture`]: pcapng/pcap writing with synthesized TCP/IP;
//! - [`output`]: JSONL records and the run summary;
//! - [`analyze`]: capture reading and TCP reassembly into taps;
//! - [`evidence`]: the report and the support-ticket bundle;
//! - [`filter`]: the filter expression language that selects exchanges;
//! - [`live`]: one line per exchange on the console while a run goes on;
//! - [`toolkit`]: mock sensor, client, replay, vendor checks and the demo;
//! - [`ops`]: watching a run: metrics endpoint, stop conditions, flight
//!   recorder;
//! - [`jobs`]: `icaptap proxy` and `icaptap analyze`, wiring the rooms
//!   together;
//! - [`cli`]: the command line, its completions and man pages;
//! - [`progress`]: the terminal progress line every long job shares.

pub mod analyze;
pub mod capture;
pub mod cli;
pub mod config;
pub mod evidence;
pub mod filter;
pub mod forward;
pub mod jobs;
pub mod live;
pub mod observe;
pub mod ops;
pub mod output;
pub mod progress;
pub mod tap;
pub mod toolkit;
pub mod units;
