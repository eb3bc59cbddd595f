//! The correlator: pairs the requests and responses of one ICAP connection
//! into exchanges (RFC 3507 sections 4.5 and 4.6: preview and `100
//! Continue`, 204 inside and outside a preview, 206, pipelined requests).
//!
//! It consumes the events of both decoders of a connection, each with the
//! time it was seen, and yields each [`Exchange`] once both its request and
//! its final response are over, or when the connection closes. Rules that
//! need only the two messages of one exchange live here; rules that need
//! clocks or other connections live in the proxy.
//!
//! - `exchange`: the values handed out ([`Exchange`], [`BodyStats`],
//!   [`Timings`], [`Stamp`]) and the digests of bodies.
//! - `pairing`: the [`Correlator`] that matches responses to requests.
//! - `checks`: the RFC rules checked on each exchange.

mod checks;
mod exchange;
mod pairing;

pub use exchange::{BodyStats, Exchange, PreviewFacts, Stamp, Timings, BODY_SAMPLE_LEN};
pub use pairing::{Correlator, MAX_OPEN_EXCHANGES};
