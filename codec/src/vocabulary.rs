//! The words every other codec module speaks: which way a stream travels
//! ([`Direction`]) and which ICAP method a request uses ([`Method`],
//! RFC 3507 section 4.3.2). This module imports nothing from the crate, so
//! anomalies, events and the `Encapsulated` checks can all use it without
//! importing each other.

use bytes::Bytes;

/// Which way the bytes of a stream travel on an ICAP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the ICAP client (the web proxy) to the ICAP server: requests.
    Request,
    /// From the ICAP server (the sensor) to the ICAP client: responses.
    Response,
}

impl Direction {
    /// Both directions, requests first: the order of [`Direction::index`].
    pub const BOTH: [Direction; 2] = [Direction::Request, Direction::Response];

    /// Index into per-direction arrays: 0 for requests, 1 for responses.
    pub const fn index(self) -> usize {
        match self {
            Direction::Request => 0,
            Direction::Response => 1,
        }
    }

    /// The other direction of the same connection.
    pub const fn opposite(self) -> Direction {
        match self {
            Direction::Request => Direction::Response,
            Direction::Response => Direction::Request,
        }
    }
}

/// An ICAP request method (RFC 3507 section 4.3.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `OPTIONS`: the client asks the service for its capabilities.
    Options,
    /// `REQMOD`: request modification.
    Reqmod,
    /// `RESPMOD`: response modification.
    Respmod,
    /// Any other token; reported as an anomaly, decoded as far as possible.
    Other(Bytes),
}

impl Method {
    /// The method as it is written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Options => "OPTIONS",
            Method::Reqmod => "REQMOD",
            Method::Respmod => "RESPMOD",
            Method::Other(b) => std::str::from_utf8(b).unwrap_or("?"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_index_and_opposite_agree_with_both() {
        for (i, dir) in Direction::BOTH.into_iter().enumerate() {
            assert_eq!(dir.index(), i);
            assert_eq!(dir.opposite().opposite(), dir);
            assert_ne!(dir.opposite(), dir);
        }
    }
}
