//! What the observer knows about each ICAP service across connections: the
//! last OPTIONS answer (Methods, Max-Connections, X-Include, ISTag...) and
//! the current ISTag, plus open connections per sensor (RFC 3507 section
//! 4.10). Rules that compare a request with what the service advertised read
//! it from here.

use std::collections::HashMap;
use std::net::SocketAddr;

use icap_codec::OptionsInfo;

/// A service: the sensor's address and the URI path.
pub type ServiceKey = (SocketAddr, String);

/// The service path of an ICAP URI (`icap://host:port/av/respmod?x` ->
/// `/av/respmod`).
pub fn service_path(uri: &str) -> String {
    let rest = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    let path = path.split(['?', '#']).next().unwrap_or(path);
    path.to_string()
}

/// An ISTag without its surrounding quotes and blanks.
fn unquoted(tag: &str) -> &str {
    let tag = tag.trim();
    tag.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(tag)
}

/// One service's state.
#[derive(Clone, Debug, Default)]
pub struct ServiceState {
    /// The last OPTIONS answer.
    pub options: Option<OptionsInfo>,
    /// The last ISTag seen in any response of this service.
    pub istag: Option<String>,
    /// Whether `identity-header-missing` was already raised for this
    /// service: it names a client setting, said once.
    pub identity_missing_said: bool,
}

/// Every service and sensor seen in this run.
#[derive(Debug, Default)]
pub struct ServiceBook {
    services: HashMap<ServiceKey, ServiceState>,
    open_per_server: HashMap<SocketAddr, u64>,
}

impl ServiceBook {
    /// The state of `key`, if seen.
    pub fn get(&self, key: &ServiceKey) -> Option<&ServiceState> {
        self.services.get(key)
    }

    /// Stores an OPTIONS answer for `key`.
    pub fn set_options(&mut self, key: ServiceKey, options: OptionsInfo) {
        self.services.entry(key).or_default().options = Some(options);
    }

    /// Records the ISTag of a response; returns the previous one when it
    /// changed. Tags are compared without their quotes: a sensor that
    /// quotes the tag in one answer and not in the next kept its state
    /// (the unquoted one is the codec's `istag-invalid`).
    pub fn observe_istag(&mut self, key: ServiceKey, istag: &str) -> Option<String> {
        let state = self.services.entry(key).or_default();
        let previous = state.istag.replace(istag.to_string());
        previous.filter(|p| unquoted(p) != unquoted(istag))
    }

    /// Marks `identity-header-missing` as said for `key`; true the first
    /// time only.
    pub fn first_identity_missing(&mut self, key: &ServiceKey) -> bool {
        let state = self.services.entry(key.clone()).or_default();
        !std::mem::replace(&mut state.identity_missing_said, true)
    }

    /// A connection to `server` opened; returns how many are open now.
    pub fn connection_opened(&mut self, server: SocketAddr) -> u64 {
        let n = self.open_per_server.entry(server).or_default();
        *n += 1;
        *n
    }

    /// A connection to `server` closed.
    pub fn connection_closed(&mut self, server: SocketAddr) {
        if let Some(n) = self.open_per_server.get_mut(&server) {
            *n = n.saturating_sub(1);
        }
    }

    /// The smallest `Max-Connections` any service of `server` advertised.
    pub fn max_connections(&self, server: SocketAddr) -> Option<u64> {
        self.services
            .iter()
            .filter(|((addr, _), _)| *addr == server)
            .filter_map(|(_, s)| s.options.as_ref()?.max_connections)
            .min()
    }

    /// Every service, for the summary and the report.
    pub fn iter(&self) -> impl Iterator<Item = (&ServiceKey, &ServiceState)> {
        self.services.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::service_path;

    #[test]
    fn service_paths() {
        for (uri, want) in [
            ("icap://sensor.example:1344/av/respmod", "/av/respmod"),
            ("icap://sensor/reqmod?profile=1", "/reqmod"),
            ("icaps://sensor:11344", "/"),
            ("/echo", "/echo"),
        ] {
            assert_eq!(service_path(uri), want);
        }
    }
}
