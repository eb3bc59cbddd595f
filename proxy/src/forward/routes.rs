//! Several listeners, each forwarding to its own sensor: `--route
//! LISTEN=UPSTREAM`, repeated, or a list in the config file:
//!
//! ```toml
//! listen = "0.0.0.0:1344"            # REQMOD sensor
//! upstream = "sensor-a:1344"
//! route = ["0.0.0.0:1345=sensor-b:1344"]   # RESPMOD sensor
//! ```
//!
//! Every listener shares the run's connection ids, counters, observer and
//! recorder, so one output directory and one `/metrics` cover all sensors.
//! Each route inherits the main listener's timeouts and limits
//! ([`ForwardArgs::route_configs`](super::ForwardArgs::route_configs)).
//! This file only says what a route is; it knows nothing of the options.

use std::net::SocketAddr;

/// One extra listener and the sensor it forwards to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Where ICAP clients connect.
    pub listen: SocketAddr,
    /// The sensor, `HOST:PORT` (port 1344 when omitted).
    pub upstream: String,
}

/// Parses `LISTEN=UPSTREAM`.
pub fn parse_route(text: &str) -> Result<Route, String> {
    let expected = "expected LISTEN=UPSTREAM, e.g. 0.0.0.0:1345=sensor-b:1344";
    let (listen, upstream) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: {expected}"))?;
    let listen = listen.trim().parse::<SocketAddr>().map_err(|e| {
        format!("`{text}`: the listen address {listen:?} is not IP:PORT ({e}); {expected}")
    })?;
    let upstream = upstream.trim();
    if upstream.is_empty() {
        return Err(format!("`{text}`: no upstream after `=`; {expected}"));
    }
    Ok(Route {
        listen,
        upstream: upstream.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_and_say_what_is_wrong() {
        let r = parse_route("127.0.0.1:1345=sensor-b:1344").unwrap();
        assert_eq!(r.listen, "127.0.0.1:1345".parse().unwrap());
        assert_eq!(r.upstream, "sensor-b:1344");
        assert!(parse_route("127.0.0.1:1345")
            .unwrap_err()
            .contains("LISTEN=UPSTREAM"));
        assert!(parse_route("host:1=sensor")
            .unwrap_err()
            .contains("not IP:PORT"));
        assert!(parse_route("127.0.0.1:1=")
            .unwrap_err()
            .contains("no upstream"));
    }
}
