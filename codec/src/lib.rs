//! # icap-codec
//!
//! A sans-I/O, incremental decoder for one direction of an ICAP connection
//! (RFC 3507), and a correlator that pairs requests with responses into
//! exchanges. The crate takes bytes and returns values: it never reads a
//! socket or a file, and it knows nothing of an async runtime.
//!
//! - [`Decoder`] turns a byte stream (requests from the ICAP client, or
//!   responses from the ICAP server) into [`Event`]s. "Need more bytes" is a
//!   normal state, and every protocol violation is an [`Anomaly`] event with a
//!   stable code and the byte offset; the decoder keeps going.
//! - [`Correlator`] consumes the events of both directions of one connection
//!   and yields [`Exchange`]s: a request, its interim `100 Continue`, and its
//!   final response.
#![deny(missing_docs)]

pub mod anomaly;
pub mod body_plan;
pub mod chunked;
pub mod correlator;
pub mod decoder;
pub mod encapsulated;
pub mod event;
mod framing;
pub mod head;
mod icap_head;
pub mod limits;
pub mod options;
pub mod vocabulary;

pub use anomaly::{Anomaly, AnomalyCode, Severity, Side};
pub use correlator::{
    BodyStats, Correlator, Exchange, PreviewFacts, Stamp, Timings, MAX_OPEN_EXCHANGES,
};
pub use decoder::Decoder;
pub use encapsulated::{Encapsulated, EntityKind};
pub use event::{Event, Header, Headers, HttpHead, RequestHead, ResponseHead};
pub use limits::Limits;
pub use options::OptionsInfo;
pub use vocabulary::{Direction, Method};
