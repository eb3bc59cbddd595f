//! What the live observer gives up first when it falls behind, so that it
//! never has to drop input it decodes: the SHA-256 of request bodies, the
//! costliest work that no verdict needs (about 0.5 ns a byte even with the
//! CPU's SHA instructions, several times all the decoding). Heads,
//! framing, the fingerprint that tells an echo from a change and every
//! record go on; each record whose hash was shed says so
//! (`request_body_sha256_skipped: "shed-under-load"`).
//!
//! Shedding starts when the observer's queue is half full and stops once
//! it is below a tenth, so that a queue near the mark does not flap. The
//! capture sheds before the observer does by running at a lower CPU
//! priority (tap/priority.rs).

use crate::tap::Backlog;

/// Queue fill at which hashing is shed.
pub const SHED_AT: f64 = 0.5;

/// Queue fill below which hashing resumes.
pub const RESUME_AT: f64 = 0.1;

/// Whether the observer is shedding, with hysteresis.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shedding {
    on: bool,
    /// Times shedding started.
    pub episodes: u64,
}

impl Shedding {
    /// Whether hashing is being shed now.
    pub fn on(&self) -> bool {
        self.on
    }

    /// Looks at the queue: `Some(now_on)` when shedding starts or stops.
    pub fn update(&mut self, backlog: Backlog) -> Option<bool> {
        let next = if self.on {
            backlog.filled >= RESUME_AT
        } else {
            backlog.filled >= SHED_AT
        };
        if next == self.on {
            return None;
        }
        self.on = next;
        if next {
            self.episodes += 1;
        }
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::observe::{spawn_live, Observer, ObserverConfig, ObserverMode};
    use crate::output::records::SHA256_SHED;
    use crate::output::summary::{Evidence, SummaryBuilder};
    use crate::output::writer::{RecordSink, SharedMemorySink};
    use crate::tap::{ConnMeta, Direction, Tap, TapEvent, TapQueue};

    fn at(filled: f64) -> Backlog {
        Backlog { filled }
    }

    #[test]
    fn shedding_starts_at_half_full_and_stops_below_a_tenth() {
        let mut s = Shedding::default();
        assert_eq!(s.update(at(0.3)), None);
        assert_eq!(s.update(at(0.5)), Some(true));
        assert!(s.on());
        // Between the marks nothing changes either way.
        assert_eq!(s.update(at(0.2)), None);
        assert_eq!(s.update(at(0.6)), None);
        assert_eq!(s.update(at(0.05)), Some(false));
        assert_eq!(s.update(at(0.3)), None);
        assert_eq!(s.update(at(0.9)), Some(true));
        assert_eq!(s.episodes, 2);
    }

    const BODY: &[u8] = b"a file the sensor scans";

    fn respmod(n: usize) -> Vec<u8> {
        let http = "HTTP/1.1 200 OK\r\n\r\n";
        format!(
            "RESPMOD icap://s/av/{n} ICAP/1.0\r\nHost: s\r\nAllow: 204\r\nEncapsulated: res-hdr=0, res-body={}\r\n\r\n{http}{:x}\r\n{}\r\n0\r\n\r\n",
            http.len(),
            BODY.len(),
            String::from_utf8_lossy(BODY)
        )
        .into_bytes()
    }

    fn answer_204() -> &'static [u8] {
        b"ICAP/1.0 204 No Content\r\nISTag: \"t\"\r\nEncapsulated: null-body=0\r\n\r\n"
    }

    /// Feeds `count` whole exchanges of one connection, request and answer
    /// one tap each, from stream offsets `at`.
    fn exchanges(
        queue: &TapQueue,
        meta: &Arc<ConnMeta>,
        from: usize,
        count: usize,
        at: &mut [u64; 2],
    ) {
        for n in from..from + count {
            for (dir, bytes) in [
                (Direction::Request, respmod(n)),
                (Direction::Response, answer_204().to_vec()),
            ] {
                let i = dir.index();
                let len = bytes.len() as u64;
                assert!(queue.deliver_blocking(Tap {
                    conn: meta.clone(),
                    at: 1_000_000,
                    frame: None,
                    event: TapEvent::Data {
                        dir,
                        offset: at[i],
                        bytes: Bytes::from(bytes),
                    },
                }));
                at[i] += len;
            }
        }
    }

    #[test]
    fn an_observer_behind_sheds_the_hashes_says_so_and_hashes_again_once_caught_up() {
        let meta = Arc::new(ConnMeta {
            id: 1,
            client: SocketAddr::from(([127, 0, 0, 1], 40000)),
            listen: SocketAddr::from(([127, 0, 0, 1], 1344)),
            upstream_local: None,
            server: SocketAddr::from(([127, 0, 0, 1], 1345)),
            opened: 1_000_000,
        });
        // 40 exchanges (80 data taps) wait in a queue of 100 before the
        // observer starts: it begins 80% behind.
        let (queue, taps) = TapQueue::with_budget(100, 64 << 20);
        let control = |event| Tap {
            conn: meta.clone(),
            at: 1_000_000,
            frame: None,
            event,
        };
        assert!(queue.offer(control(TapEvent::Open)));
        let mut at = [0u64; 2];
        exchanges(&queue, &meta, 0, 40, &mut at);
        let records = SharedMemorySink::default();
        let observer = Observer::new(
            ObserverMode::Live,
            ObserverConfig::default(),
            Box::new(records.clone()),
        );
        let thread = spawn_live(observer, taps).unwrap();
        // Caught up: the queue empties; the next exchanges come one at a
        // time into an empty queue.
        while records.lock().exchanges.len() < 40 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for n in 40..45 {
            exchanges(&queue, &meta, n, 1, &mut at);
            while records.lock().exchanges.len() <= n {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        assert!(queue.offer(control(TapEvent::Finished)));
        drop(queue);
        let observer = thread.join().unwrap();
        assert_eq!(observer.0.shedding_episodes(), 1);

        let sink = records.lock();
        assert_eq!(sink.exchanges.len(), 45);
        let mut summary = SummaryBuilder::new();
        for (n, r) in sink.exchanges.iter().enumerate() {
            summary.exchange(r);
            // Every record whole and true: decoding was never shed.
            assert_eq!(r.verdict, "clean", "exchange {n}: {:?}", r.anomalies);
            assert!(r.decode_complete, "exchange {n}");
            assert_eq!(r.request_body_bytes, BODY.len() as u64);
            if n < 40 {
                assert_eq!(r.request_body_sha256, None, "exchange {n}");
                assert_eq!(r.request_body_sha256_skipped.as_deref(), Some(SHA256_SHED));
            } else {
                assert_eq!(
                    r.request_body_sha256.as_deref(),
                    Some(crate::toolkit::scenario::sha256_hex(BODY).as_str()),
                    "exchange {n} is hashed again"
                );
                assert_eq!(r.request_body_sha256_skipped, None);
            }
        }
        let summary = summary.snapshot();
        assert_eq!(summary.hashes_shed, 40);
        let evidence = Evidence::of(&summary);
        assert!(!evidence.complete);
        assert!(
            evidence
                .gaps
                .iter()
                .any(|g| g.starts_with("40 request bodies have no SHA-256")),
            "{:?}",
            evidence.gaps
        );
    }
}
