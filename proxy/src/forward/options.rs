//! The forwarding options: what `icaptap proxy` listens on, where it
//! forwards to, and the limits of the hot path. [`ForwardArgs`] is what the
//! user types (flags, `ICAPTAP_*` environment variables, or keys of a
//! `--config` file, see [`crate::config`]); [`ForwardConfig`] is the checked,
//! resolved result the listener runs with.

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::routes::{parse_route, Route};
use super::transparent::TransparentMode;
use crate::units::{parse_duration, parse_size};

/// The ICAP port (RFC 3507 section 4.2), used when `--upstream` names no port.
pub const DEFAULT_ICAP_PORT: u16 = 1344;

/// The most connections one icaptap can be told to hold. Each needs two
/// file descriptors, and the semaphore counts permits in a `u32`.
pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

/// The smallest read buffer accepted: smaller buffers only add system calls.
pub const MIN_BUFFER_SIZE: usize = 512;

/// The largest read buffer accepted: every open direction may hold one.
pub const MAX_BUFFER_SIZE: usize = 16 * 1024 * 1024;

/// Options of the forwarding path, as given on the command line.
#[derive(Clone, Debug, clap::Args)]
pub struct ForwardArgs {
    /// Address to accept ICAP clients on (the web proxy connects here).
    #[arg(
        long,
        env = "ICAPTAP_LISTEN",
        default_value = "0.0.0.0:1344",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,

    /// The ICAP server (sensor) to forward to, as HOST:PORT (port 1344 when omitted).
    #[arg(long, env = "ICAPTAP_UPSTREAM", value_name = "HOST:PORT")]
    pub upstream: String,

    /// How long to wait for the sensor to accept a connection (e.g. 5s, 250ms, 2m).
    #[arg(long, env = "ICAPTAP_CONNECT_TIMEOUT", default_value = "5s", value_name = "DURATION",
          value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Connections held at once; more wait in the listen backlog. Default:
    /// what the open-file limit (`ulimit -n`) allows, two descriptors per
    /// connection after a margin for icaptap's own files.
    #[arg(long, env = "ICAPTAP_MAX_CONNECTIONS", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=MAX_CONNECTIONS_LIMIT as i64))]
    pub max_connections: Option<u32>,

    /// Close a connection on which neither side has sent anything for this
    /// long (e.g. 30s, 5m); off by default. Both legs are closed with a
    /// FIN, as a keep-alive timeout of either peer would.
    #[arg(long, env = "ICAPTAP_IDLE_TIMEOUT", value_name = "DURATION",
          value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Read buffer per direction of each connection (e.g. 65536, 64KiB, 1MiB).
    #[arg(long, env = "ICAPTAP_BUFFER_SIZE", default_value = "64KiB", value_name = "BYTES",
          value_parser = parse_buffer_size)]
    pub buffer_size: usize,

    /// At shutdown, how long open connections may go on before they are cut.
    #[arg(long, env = "ICAPTAP_DRAIN", default_value = "10s", value_name = "DURATION",
          value_parser = parse_duration)]
    pub drain: Duration,

    /// Forward each connection to the address it was sent to before an
    /// nftables/iptables rule redirected it to icaptap (`redirect`, the
    /// default: REDIRECT/DNAT and SO_ORIGINAL_DST) or intercepted it
    /// (`tproxy`: TPROXY, needs CAP_NET_ADMIN). Connections made to icaptap
    /// directly still go to --upstream.
    #[arg(long, env = "ICAPTAP_TRANSPARENT", value_enum, value_name = "HOW", num_args = 0..=1,
          default_missing_value = "redirect")]
    pub transparent: Option<TransparentMode>,
    /// More listeners, each with its own sensor: LISTEN=UPSTREAM, e.g.
    /// 0.0.0.0:1345=sensor-b:1344 (repeat, or a list in the config file).
    #[arg(long = "route", env = "ICAPTAP_ROUTES", value_name = "LISTEN=UPSTREAM",
          value_delimiter = ';', value_parser = parse_route)]
    pub routes: Vec<Route>,
}

/// Checked and resolved forwarding options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardConfig {
    /// Address to accept ICAP clients on.
    pub listen: SocketAddr,
    /// The sensor's address, resolved once at start-up.
    pub upstream: SocketAddr,
    /// The sensor as the user named it (for messages).
    pub upstream_name: String,
    /// Limit on connecting to the sensor.
    pub connect_timeout: Duration,
    /// Connections held at once.
    pub max_connections: usize,
    /// Close connections idle (nothing sent either way) this long.
    pub idle_timeout: Option<Duration>,
    /// Read buffer per direction.
    pub buffer_size: usize,
    /// Grace period for open connections at shutdown.
    pub drain: Duration,
    /// Transparent mode: each connection goes to the address it was
    /// redirected from (see [`super::transparent`]); connections made
    /// to icaptap directly still go to `upstream`.
    pub transparent: Option<TransparentMode>,
    /// ICAP over TLS on either leg (both plain by default).
    pub tls: super::tls::TlsSetup,
}

impl ForwardConfig {
    /// A configuration with the documented defaults, forwarding to `upstream`
    /// and listening on `listen` (handy for tests and the demo).
    pub fn new(listen: SocketAddr, upstream: SocketAddr) -> ForwardConfig {
        ForwardConfig {
            listen,
            upstream,
            upstream_name: upstream.to_string(),
            connect_timeout: Duration::from_secs(5),
            max_connections: 10_000,
            idle_timeout: None,
            buffer_size: 64 * 1024,
            drain: Duration::from_secs(10),
            transparent: None,
            tls: super::tls::TlsSetup::default(),
        }
    }
}

/// A forwarding option that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The upstream name did not resolve.
    #[error("cannot resolve --upstream `{upstream}`: {source}; check the host name and DNS, or give the sensor's IP address")]
    UpstreamUnresolvable {
        /// As given.
        upstream: String,
        /// The resolver's answer.
        source: std::io::Error,
    },
    /// The upstream name resolved to nothing.
    #[error("--upstream `{upstream}` resolved to no address; give the sensor's IP address")]
    UpstreamNoAddress {
        /// As given.
        upstream: String,
    },
    /// The upstream is icaptap's own listening address: every connection
    /// would loop back into icaptap.
    #[error("--upstream {upstream} is icaptap's own --listen address {listen} (a forwarding loop); point it at the sensor")]
    UpstreamIsListen {
        /// The resolved address.
        upstream: SocketAddr,
        /// The listening address it reaches.
        listen: SocketAddr,
    },
    /// Port 0 names no sensor: nothing can be connected to it.
    #[error("--upstream `{upstream}` has port 0, which no sensor listens on; give the sensor's ICAP port (usually {DEFAULT_ICAP_PORT}), or leave the port out for {DEFAULT_ICAP_PORT}")]
    UpstreamPortZero {
        /// As given.
        upstream: String,
    },
}

impl ForwardArgs {
    /// Checks the options and resolves the upstream name (once, now: a
    /// name that stops resolving later does not break a running proxy).
    pub fn into_config(self) -> Result<ForwardConfig, ConfigError> {
        if has_port(&self.upstream)
            && self
                .upstream
                .rsplit_once(':')
                .map(|(_, p)| p.parse::<u16>())
                == Some(Ok(0))
        {
            return Err(ConfigError::UpstreamPortZero {
                upstream: self.upstream,
            });
        }
        let upstream = resolve_upstream(&self.upstream)?;
        if super::loops::reaches(self.listen, upstream) {
            return Err(ConfigError::UpstreamIsListen {
                upstream,
                listen: self.listen,
            });
        }
        Ok(ForwardConfig {
            listen: self.listen,
            upstream,
            upstream_name: self.upstream,
            connect_timeout: self.connect_timeout,
            max_connections: self
                .max_connections
                .map_or_else(default_max_connections, |n| n as usize),
            idle_timeout: self.idle_timeout.filter(|d| !d.is_zero()),
            buffer_size: self.buffer_size,
            drain: self.drain,
            transparent: self.transparent,
            tls: super::tls::TlsSetup::default(),
        })
    }
}

/// Descriptors kept aside from connections for icaptap's own files: the
/// listeners, capture and record files, the metrics endpoint, the
/// runtime's and the threads' own descriptors.
pub const FD_MARGIN: u64 = 64;

/// The default `--max-connections`: what the soft open-file limit allows at
/// two descriptors per connection (client leg and sensor leg) after
/// [`FD_MARGIN`], at least 1 and at most [`MAX_CONNECTIONS_LIMIT`]. With
/// this default the open-file limit is never what stops icaptap accepting:
/// connections beyond it wait in the kernel's backlog instead.
pub fn default_max_connections() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _hard)| soft)
        .unwrap_or(1024);
    max_connections_for(soft)
}

/// The connections `nofile` descriptors hold (see [`default_max_connections`]).
pub fn max_connections_for(nofile: u64) -> usize {
    let per_connection = nofile.saturating_sub(FD_MARGIN) / 2;
    (per_connection as usize).clamp(1, MAX_CONNECTIONS_LIMIT)
}

/// Resolves `HOST:PORT`, or `HOST` with the ICAP port.
fn resolve_upstream(upstream: &str) -> Result<SocketAddr, ConfigError> {
    let with_port = if upstream.parse::<SocketAddr>().is_ok() || has_port(upstream) {
        upstream.to_string()
    } else if upstream.contains(':') && !upstream.starts_with('[') {
        // A bare IPv6 address: bracket it before adding the port.
        format!("[{upstream}]:{DEFAULT_ICAP_PORT}")
    } else {
        format!("{upstream}:{DEFAULT_ICAP_PORT}")
    };
    let mut addrs =
        with_port
            .to_socket_addrs()
            .map_err(|source| ConfigError::UpstreamUnresolvable {
                upstream: upstream.to_string(),
                source,
            })?;
    addrs.next().ok_or_else(|| ConfigError::UpstreamNoAddress {
        upstream: upstream.to_string(),
    })
}

/// Whether `s` ends in `:PORT` after a host name or a bracketed IPv6 address.
fn has_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    }
}

/// Parses a read-buffer size (see [`crate::units::parse_size`]) within the
/// accepted buffer range.
pub fn parse_buffer_size(text: &str) -> Result<usize, String> {
    let bytes = usize::try_from(parse_size(text)?).unwrap_or(usize::MAX);
    if !(MIN_BUFFER_SIZE..=MAX_BUFFER_SIZE).contains(&bytes) {
        return Err(format!(
            "`{}`: buffer size must be between {MIN_BUFFER_SIZE} bytes and {} MiB",
            text.trim(),
            MAX_BUFFER_SIZE / (1024 * 1024)
        ));
    }
    Ok(bytes)
}

/// A route that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The route's sensor is unusable.
    #[error("--route {listen}: its sensor cannot be used; fix the part after `=`")]
    Upstream {
        /// The route's listen address.
        listen: SocketAddr,
        /// Why.
        source: ConfigError,
    },
    /// Two listeners on one address.
    #[error("--route {listen}: this address is already a listener (--listen or another --route); give each route its own port")]
    Duplicate {
        /// The address.
        listen: SocketAddr,
    },
    /// A sensor address that is another listener of the same run.
    #[error("the sensor {upstream} of the listener {from} is icaptap's own listener {to} (a forwarding loop); point each --upstream and --route at a sensor")]
    Loop {
        /// The listener whose sensor address loops.
        from: SocketAddr,
        /// Its sensor address.
        upstream: SocketAddr,
        /// The listener that address reaches.
        to: SocketAddr,
    },
}

impl ForwardArgs {
    /// The forwarding configuration of each `--route`: these options with
    /// the route's listen address and sensor.
    pub fn route_configs(&self) -> Result<Vec<ForwardConfig>, RouteError> {
        let base = self;
        let mut seen = BTreeSet::from([base.listen]);
        base.routes
            .iter()
            .map(|route| {
                if !seen.insert(route.listen) {
                    return Err(RouteError::Duplicate {
                        listen: route.listen,
                    });
                }
                let args = ForwardArgs {
                    listen: route.listen,
                    upstream: route.upstream.clone(),
                    ..base.clone()
                };
                args.into_config().map_err(|source| RouteError::Upstream {
                    listen: route.listen,
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .and_then(|routes| {
                // One listener's sensor may not be another listener: the
                // main one's (resolved again; its own errors come from
                // `into_config`) and each route's.
                let main = resolve_upstream(&base.upstream)
                    .ok()
                    .map(|upstream| (base.listen, upstream));
                let pairs: Vec<(SocketAddr, SocketAddr)> = main
                    .into_iter()
                    .chain(routes.iter().map(|r| (r.listen, r.upstream)))
                    .collect();
                // (A listener's sensor being itself is `into_config`'s.)
                for &(from, upstream) in &pairs {
                    for &(to, _) in &pairs {
                        if from != to && super::loops::reaches(to, upstream) {
                            return Err(RouteError::Loop { from, upstream, to });
                        }
                    }
                }
                Ok(routes)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_sizes_accept_binary_units_and_refuse_silly_ones() {
        assert_eq!(parse_buffer_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_buffer_size("65536").unwrap(), 65536);
        assert_eq!(parse_buffer_size("1MiB").unwrap(), 1 << 20);
        assert!(parse_buffer_size("1").is_err());
        assert!(parse_buffer_size("1GiB").is_err());
        assert!(parse_buffer_size("lots").is_err());
    }

    #[test]
    fn default_connection_limit_leaves_two_descriptors_each_and_a_margin() {
        assert_eq!(max_connections_for(20_000), (20_000 - 64) / 2);
        assert_eq!(max_connections_for(1024), 480);
        assert_eq!(max_connections_for(10), 1);
        assert_eq!(max_connections_for(u64::MAX), MAX_CONNECTIONS_LIMIT);
        // Whatever the limit, the default takes at most what it allows.
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .unwrap()
            .0;
        assert!(default_max_connections() as u64 * 2 + FD_MARGIN <= soft.max(FD_MARGIN + 2));
    }

    #[test]
    fn upstream_without_port_gets_the_icap_port() {
        assert_eq!(
            resolve_upstream("127.0.0.1").unwrap(),
            "127.0.0.1:1344".parse().unwrap()
        );
        assert_eq!(
            resolve_upstream("127.0.0.1:11344").unwrap(),
            "127.0.0.1:11344".parse().unwrap()
        );
        assert_eq!(
            resolve_upstream("::1").unwrap(),
            "[::1]:1344".parse().unwrap()
        );
        assert_eq!(resolve_upstream("localhost:9").unwrap().port(), 9);
    }

    #[test]
    fn unresolvable_upstream_says_what_to_do() {
        // An empty host fails inside the resolver without asking DNS: tests
        // send nothing off loopback.
        let err = resolve_upstream(":1344").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`:1344`"), "{text}");
        assert!(text.contains("IP address"), "{text}");
    }
}
