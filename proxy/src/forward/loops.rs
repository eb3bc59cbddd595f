//! Forwarding loops: icaptap's sensor leg arriving back at an icaptap
//! listener (an `--upstream` that names icaptap itself, two routes pointing
//! at each other, a transparent rule that redirects icaptap's own traffic).
//! Left alone, every connection opens another until the open-file limit.
//!
//! Nothing forwarded is changed to find one: every sensor leg this process
//! opened is registered by its TCP pair (icaptap's local `ip:port`, the
//! address it dialled), and every accepted connection by its pair (the
//! client's `ip:port`, the address the client asked for). A connection
//! whose pair is one of icaptap's own sensor legs is a loop. Both sides
//! look at the other's set and enter their own under one lock, so whichever
//! comes second sees the match: the accepting session before it connects
//! onwards, or the connecting session right after its connect and before it
//! forwards a byte. That session is closed as a `forwarding-loop`; when it
//! is the connecting one, the accepted session it found (the loop's next
//! round, already on its way onwards) is told too ([`Registered::looped`])
//! and closes before or right after its own connect, so the loop ends
//! within a round instead of moving on one connection at a time.
//! A leg refused as a loop is remembered for a while ([`REFUSED_KEPT`]):
//! the kernel may hand its accepted end to icaptap only after the
//! refusing session has closed it, and that late round must still be
//! known as a loop rather than connect onwards and start the chain again.
//!
//! The limit: only connections of this process are known. Two icaptap
//! processes forwarding to each other are not seen here (each sees an
//! ordinary client); start-up refuses the plain cases ([`reaches`]) and
//! `--max-connections` bounds the rest.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// One TCP connection: (the connecting side's `ip:port`, the address it
/// connected to).
type Pair = (SocketAddr, SocketAddr);

#[derive(Debug, Default)]
struct Registry {
    /// Sensor legs this process opened.
    outgoing: HashSet<Pair>,
    /// Client connections this process accepted, each with the token that
    /// tells its session it is a round of a loop.
    accepted: HashMap<Pair, CancellationToken>,
    /// Sensor legs refused as a loop, with when: their accepted ends may
    /// still be waiting in the listener's queue.
    refused: HashMap<Pair, Instant>,
}

/// How long a sensor leg refused as a loop is still recognised: far longer
/// than an accept queue holds a connection, far shorter than an ephemeral
/// port takes to come round again.
pub(crate) const REFUSED_KEPT: Duration = Duration::from_secs(10);

impl Registry {
    fn is_own_leg(&mut self, pair: &Pair) -> bool {
        if self.outgoing.contains(pair) {
            return true;
        }
        let now = Instant::now();
        self.refused
            .retain(|_, at| now.duration_since(*at) < REFUSED_KEPT);
        self.refused.contains_key(pair)
    }
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

/// An address as a connection's two ends both see it: IPv4-mapped IPv6
/// (a dual-stack listener's view of an IPv4 client) as IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// A registered connection; dropping it forgets the connection.
#[derive(Debug)]
pub(crate) struct Registered {
    pair: Pair,
    outgoing: bool,
    looped: CancellationToken,
}

impl Registered {
    /// Cancelled when an accepted connection was found to be a round of a
    /// loop after it was registered.
    pub(crate) fn looped(&self) -> &CancellationToken {
        &self.looped
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut r = registry().lock().unwrap_or_else(PoisonError::into_inner);
        if self.outgoing {
            r.outgoing.remove(&self.pair);
        } else {
            r.accepted.remove(&self.pair);
        }
    }
}

/// A connection found to be one of icaptap's own sensor legs.
#[derive(Debug)]
pub(crate) struct Loop {
    /// The sensor leg's local address (the looping connection's client).
    pub(crate) local: SocketAddr,
    /// The icaptap address it reached.
    pub(crate) listen: SocketAddr,
}

/// An accepted connection from `client` that asked for `asked` (the
/// listening address, or the original destination in transparent mode).
pub(crate) fn accepted(client: SocketAddr, asked: SocketAddr) -> Result<Registered, Loop> {
    let pair = (canonical(client), canonical(asked));
    let mut r = registry().lock().unwrap_or_else(PoisonError::into_inner);
    if r.is_own_leg(&pair) {
        return Err(Loop {
            local: pair.0,
            listen: pair.1,
        });
    }
    let looped = CancellationToken::new();
    r.accepted.insert(pair, looped.clone());
    Ok(Registered {
        pair,
        outgoing: false,
        looped,
    })
}

/// A sensor leg from `local` to `dialled`, connected, for the client
/// connection registered as `client` (when it was).
pub(crate) fn connected(
    local: SocketAddr,
    dialled: SocketAddr,
    client: Option<&Registered>,
) -> Result<Registered, Loop> {
    let pair = (canonical(local), canonical(dialled));
    let mut r = registry().lock().unwrap_or_else(PoisonError::into_inner);
    let next_round = r.accepted.get(&pair).cloned();
    let this_round = client.filter(|c| c.looped.is_cancelled());
    if next_round.is_some() || this_round.is_some() {
        // Whoever accepted this leg must not connect onwards either.
        if let Some(next) = &next_round {
            next.cancel();
        }
        // Not yet accepted at the other end: it must be found when it is.
        r.refused.insert(pair, Instant::now());
        let (local, listen) = match (next_round, this_round) {
            (Some(_), _) | (None, None) => pair,
            (None, Some(c)) => c.pair,
        };
        return Err(Loop { local, listen });
    }
    r.outgoing.insert(pair);
    Ok(Registered {
        pair,
        outgoing: true,
        looped: CancellationToken::new(),
    })
}

/// Whether connecting to `upstream` reaches a listener bound to `listen`:
/// the same address, or the same port on an address of this host when
/// `listen` is a wildcard (`0.0.0.0`, `[::]`).
pub fn reaches(listen: SocketAddr, upstream: SocketAddr) -> bool {
    let (listen, upstream) = (canonical(listen), canonical(upstream));
    if listen == upstream {
        return true;
    }
    listen.ip().is_unspecified() && listen.port() == upstream.port() && is_local(upstream.ip())
}

/// Whether `ip` is one of this host's addresses (binding to it works).
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_sensor_leg_accepted_again_is_a_loop_whichever_side_comes_first() {
        // Connect side first, then the accept of the same pair.
        let out = connected(addr("127.0.0.5:40001"), addr("127.0.0.5:1344"), None).unwrap();
        let looped = accepted(addr("127.0.0.5:40001"), addr("127.0.0.5:1344")).unwrap_err();
        assert_eq!(looped.local, addr("127.0.0.5:40001"));
        assert_eq!(looped.listen, addr("127.0.0.5:1344"));
        drop(out);
        // Accept side first: the connect sees it. IPv4-mapped is the same.
        let inn = accepted(
            addr("[::ffff:127.0.0.5]:40002"),
            addr("[::ffff:127.0.0.5]:1344"),
        )
        .unwrap();
        assert!(connected(addr("127.0.0.5:40002"), addr("127.0.0.5:1344"), None).is_err());
        // ... and tells the accepted one, which then refuses its own leg.
        assert!(inn.looped().is_cancelled());
        let onwards = connected(addr("127.0.0.5:40010"), addr("127.0.0.6:1344"), Some(&inn));
        assert_eq!(onwards.unwrap_err().listen, addr("127.0.0.5:1344"));
        drop(inn);
        // Forgotten once dropped (a leg refused as a loop, 40002, is kept
        // for a while); other pairs never match.
        let a = accepted(addr("127.0.0.5:40001"), addr("127.0.0.5:1344")).unwrap();
        let b = connected(addr("127.0.0.5:40003"), addr("127.0.0.5:1344"), Some(&a)).unwrap();
        let c = connected(addr("127.0.0.5:40004"), addr("127.0.0.6:1344"), None).unwrap();
        assert!(accepted(addr("127.0.0.5:40004"), addr("127.0.0.5:1344")).is_ok());
        drop((a, b, c));
    }

    #[test]
    fn a_leg_refused_as_a_loop_is_still_a_loop_when_accepted_later() {
        // This round was told it loops; its own leg is refused before the
        // listener has accepted the leg's other end.
        let inn = accepted(addr("127.0.0.7:40001"), addr("127.0.0.7:1344")).unwrap();
        inn.looped().cancel();
        let refused = connected(addr("127.0.0.7:40002"), addr("127.0.0.7:1344"), Some(&inn));
        assert!(refused.is_err());
        drop(inn);
        // The late accept of that leg is the next round: a loop, not a
        // client to connect onwards for.
        let late = accepted(addr("127.0.0.7:40002"), addr("127.0.0.7:1344")).unwrap_err();
        assert_eq!(late.local, addr("127.0.0.7:40002"));
        // Other pairs are untouched.
        assert!(accepted(addr("127.0.0.7:40003"), addr("127.0.0.7:1344")).is_ok());
    }

    #[test]
    fn an_upstream_reaching_the_listener_is_recognised() {
        assert!(reaches(addr("127.0.0.1:1344"), addr("127.0.0.1:1344")));
        assert!(reaches(addr("0.0.0.0:1344"), addr("127.0.0.1:1344")));
        assert!(reaches(addr("[::]:1344"), addr("127.0.0.1:1344")));
        assert!(reaches(addr("[::]:1344"), addr("[::1]:1344")));
        assert!(!reaches(addr("0.0.0.0:1344"), addr("127.0.0.1:1345")));
        assert!(!reaches(addr("127.0.0.1:1344"), addr("127.0.0.2:1344")));
        // TEST-NET-1 is nobody's address here.
        assert!(!reaches(addr("0.0.0.0:1344"), addr("192.0.2.1:1344")));
    }
}
