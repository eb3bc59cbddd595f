//! The observer: one for the live proxy and for offline analysis. It takes
//! [`Tap`]s, runs a request decoder, a response decoder and a correlator per
//! connection, classifies each exchange, applies the rules, and hands every
//! record to a [`RecordSink`]. It knows nothing of sockets or files.
//!
//! This file is the order of things: when a tap, a tick or the end of a
//! connection asks which rule. A connection's state is in `conn.rs`, the
//! rules in `rules/`, record building in `describe.rs`, packet comments in
//! `annotations.rs`.
//!
//! Every exchange that started gets exactly one record: when it is over, when
//! its connection ends, or, for a verdict that never comes, when the verdict
//! timeout passes (the connection itself is left alone).

use std::collections::HashMap;

use icap_codec::{Direction, Event, Exchange, Stamp};

use super::annotations::{annotations_for, AnnotationSink};
use super::config::{ObserverConfig, ObserverMode};
use super::conn::{Arrival, Conn};
use super::describe::{connection_record, exchange_record};
use super::finding::Finding;
use super::rules::{
    awaits_verdict, capture_ended, client_closed_during_response, client_gone_before_connect,
    client_waited_for_eof, exchange_rules, forwarding_loop, icaptap_fd_limit,
    max_connections_exceeded, missing_cause, observer_dropped, sensor_unreachable, stuck,
    tls_failed, verdict_late, verdict_timeout, ClientStream, StreamOffsets,
};
use super::services::{service_path, ServiceBook, ServiceKey};
use super::shedding::Shedding;
use super::verdict::{classify, Verdict};
use crate::output::writer::RecordSink;
use crate::tap::{Backlog, CloseKind, ConnId, ConnectFailure, Micros, Tap, TapEvent};

/// Decodes taps into records.
pub struct Observer {
    mode: ObserverMode,
    config: ObserverConfig,
    conns: HashMap<ConnId, Conn>,
    services: ServiceBook,
    sink: Box<dyn RecordSink>,
    annotations: Option<AnnotationSink>,
    scratch: Vec<Event>,
    last_tick: Micros,
    shedding: Shedding,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("mode", &self.mode)
            .field("config", &self.config)
            .field("connections", &self.conns.len())
            .finish()
    }
}

impl Observer {
    /// An observer of taps from `mode`, writing to `sink`.
    pub fn new(mode: ObserverMode, config: ObserverConfig, sink: Box<dyn RecordSink>) -> Observer {
        Observer {
            mode,
            config,
            conns: HashMap::new(),
            services: ServiceBook::default(),
            sink,
            annotations: None,
            scratch: Vec::new(),
            last_tick: 0,
            shedding: Shedding::default(),
        }
    }

    /// Sends a packet comment for every anomaly and non-clean verdict.
    pub fn with_annotations(mut self, annotations: AnnotationSink) -> Observer {
        self.annotations = Some(annotations);
        self
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }

    /// How full the live queue feeding this observer is: past a mark the
    /// SHA-256 of request bodies is shed, on every connection and for
    /// connections that open, until the queue has drained (see
    /// `shedding.rs`).
    pub fn backlog(&mut self, backlog: Backlog) {
        let Some(on) = self.shedding.update(backlog) else {
            return;
        };
        if on {
            tracing::warn!(
                "the observer is behind on its input: request bodies are not hashed (SHA-256) until it catches up; their records say so"
            );
        } else {
            tracing::info!("the observer caught up: request bodies are hashed again");
        }
        for conn in self.conns.values_mut() {
            conn.correlator.set_file_hashing(!on);
        }
    }

    /// Times the observer started shedding work because it was behind.
    pub fn shedding_episodes(&self) -> u64 {
        self.shedding.episodes
    }

    /// Handles one tap. Clock rules run at most once a second of tap time.
    pub fn handle(&mut self, tap: Tap) {
        let now = tap.at;
        let id = tap.conn.id;
        let max_pipeline = self.config.max_pipeline;
        let hashing = !self.shedding.on();
        let conn = self.conns.entry(id).or_insert_with(|| {
            let mut conn = Conn::new(tap.conn.clone(), max_pipeline);
            conn.correlator.set_file_hashing(hashing);
            conn
        });
        if !conn.counted_open {
            conn.counted_open = true;
            let server = conn.meta.server;
            let open = self.services.connection_opened(server);
            let max = self.services.max_connections(server);
            conn.findings
                .extend(max_connections_exceeded(server, open, max));
        }
        let stamp = Stamp {
            at: now,
            frame: tap.frame,
        };
        match tap.event {
            TapEvent::Open => {}
            TapEvent::Tls(facts) => conn.tls = Some(*facts),
            TapEvent::ConnectFailed { error, cause } => {
                conn.findings.push(match cause {
                    ConnectFailure::LocalLimit => icaptap_fd_limit(&error),
                    ConnectFailure::ClientGone => client_gone_before_connect(&error),
                    ConnectFailure::Loop => forwarding_loop(&error),
                    ConnectFailure::Sensor => sensor_unreachable(conn.meta.server, &error),
                    ConnectFailure::Tls(side, failure) => tls_failed(side, failure, &error),
                });
                conn.connect_error = Some(error);
            }
            TapEvent::Data { dir, offset, bytes } => {
                match conn.data(dir, offset, bytes, stamp, &mut self.scratch) {
                    Arrival::Seen => return,
                    Arrival::New(Some(hole)) => {
                        let dropped =
                            observer_dropped(self.mode, hole.at, hole.len, &conn.findings);
                        conn.findings.extend(dropped);
                    }
                    Arrival::New(None) => {}
                }
                if dir == Direction::Request && conn.service.is_none() {
                    let first = conn.correlator.open().find_map(|x| x.request.as_ref());
                    if let Some(head) = first {
                        let path = service_path(&String::from_utf8_lossy(&head.uri));
                        conn.service = Some(path);
                        self.pass_over_idle(id);
                    }
                }
            }
            // How far a slow write got matters to the capture only.
            TapEvent::Pending { .. } | TapEvent::Sent { .. } => return,
            TapEvent::Undelivered { dir, len, .. } => {
                let n = &mut conn.undelivered[dir.index()];
                *n = n.saturating_add(len);
                return;
            }
            TapEvent::Lost { dir, offset } => conn.lost(dir, offset),
            TapEvent::Closed { dir, how } => {
                if dir == Direction::Request {
                    conn.findings.extend(client_waited_for_eof(
                        how,
                        conn.response.closed.is_none(),
                        conn.answered_at.filter(|_| conn.passed_over),
                        now,
                        self.config.eof_wait,
                    ));
                }
                if dir == Direction::Response && how == CloseKind::IcaptapReset {
                    let client = conn.request.closed;
                    let undelivered = conn.undelivered[Direction::Response.index()];
                    let cut: Vec<(u64, Finding)> = conn
                        .correlator
                        .open()
                        .filter_map(|x| {
                            let f = client_closed_during_response(x, client, undelivered)?;
                            Some((x.seq, f))
                        })
                        .collect();
                    for (seq, f) in cut {
                        conn.pending.entry(seq).or_default().push(f);
                    }
                }
                conn.close(dir, how, stamp, &mut self.scratch);
            }
            TapEvent::Finished => {
                self.drain(id);
                self.finish_connection(id, now);
                return;
            }
        }
        self.drain(id);
        if now >= self.last_tick + 1_000_000 {
            self.tick(now);
        }
    }

    /// Runs the clock rules at time `now`: verdict timeouts, stalls and
    /// deadlocks. The live proxy calls it periodically; taps call it as
    /// their time advances.
    pub fn tick(&mut self, now: Micros) {
        self.last_tick = now;
        let verdict_us = self.config.verdict_timeout.as_micros() as u64;
        let stall_us = self.config.stall_timeout.as_micros() as u64;
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let mut late: Vec<Exchange> = Vec::new();
            if let Some(conn) = self.conns.get_mut(&id) {
                let idle = conn.idle(now);
                let offsets = StreamOffsets {
                    request: conn.request.expected,
                    response: conn.response.expected,
                    request_at: conn.request.last_data,
                };
                // An exchange icaptap did not see whole is `unobserved`: the
                // clock rules, which blame a peer, leave it alone.
                for x in conn.correlator.open().filter(|x| !x.incomplete) {
                    let flagged = conn.pending.get(&x.seq).is_some_and(|f| !f.is_empty());
                    if !flagged {
                        if let Some(f) = stuck(x, idle, stall_us, offsets) {
                            conn.pending.entry(x.seq).or_default().push(f);
                        }
                    }
                    if awaits_verdict(x, now, verdict_us) && !conn.timed_out.contains(&x.seq) {
                        late.push(x.clone());
                    }
                }
            }
            for x in late {
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.timed_out.insert(x.seq);
                    conn.pending
                        .entry(x.seq)
                        .or_default()
                        .push(verdict_timeout(self.config.verdict_timeout));
                }
                self.write_exchange(id, &x);
            }
        }
        self.sink.flush();
    }

    /// Ends the run: every connection still open is finished as it is.
    pub fn finish(&mut self, now: Micros) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.finish_streams(now, &mut self.scratch);
            }
            self.drain(id);
            self.finish_connection(id, now);
        }
        self.sink.flush();
    }

    /// The record sink, to flush or read at the end.
    pub fn sink_mut(&mut self) -> &mut dyn RecordSink {
        self.sink.as_mut()
    }

    /// Connection `id` sent its first request: every other connection of
    /// the same client to the same service that sits answered and idle
    /// was passed over (a client with a free keep-alive connection to a
    /// service uses it; clients pool connections per service, as Squid
    /// does per ICAP URL).
    fn pass_over_idle(&mut self, id: ConnId) {
        let Some(new) = self.conns.get(&id) else {
            return;
        };
        let (client, server) = (new.meta.client.ip(), new.meta.server);
        let service = new.service.clone();
        for (other, conn) in &mut self.conns {
            if *other != id
                && conn.answered_at.is_some()
                && conn.request.closed.is_none()
                && conn.meta.client.ip() == client
                && conn.meta.server == server
                && conn.service == service
            {
                conn.passed_over = true;
            }
        }
    }

    /// Writes every exchange of `id` that is over.
    fn drain(&mut self, id: ConnId) {
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            let Some(x) = conn.correlator.pop() else {
                return;
            };
            if x.response_ended {
                conn.answered_at = Some(x.timings.response_complete.map_or(0, |s| s.at));
            }
            if conn.timed_out.remove(&x.seq) {
                conn.findings.extend(verdict_late(&x));
                conn.pending.remove(&x.seq);
                continue;
            }
            self.write_exchange(id, &x);
        }
    }

    fn write_exchange(&mut self, id: ConnId, x: &Exchange) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let (verdict, threat) = classify(x);
        let uri = x
            .request
            .as_ref()
            .map(|r| String::from_utf8_lossy(&r.uri).into_owned());
        let key: ServiceKey = (
            conn.meta.server,
            uri.as_deref().map(service_path).unwrap_or_default(),
        );
        let mut findings: Vec<Finding> = x.anomalies.iter().map(Finding::from).collect();
        findings.extend(exchange_rules(x, verdict, &key, &mut self.services));
        findings.extend(conn.pending.remove(&x.seq).unwrap_or_default());
        if verdict == Verdict::Missing && !conn.timed_out.contains(&x.seq) && x.request.is_some() {
            let client = ClientStream {
                offset: conn.request.expected,
                last_at: conn.request.last_data,
            };
            let stall_us = self.config.stall_timeout.as_micros() as u64;
            let cause = missing_cause(x, conn.first_close, client, stall_us, &findings);
            findings.extend(cause);
        }
        conn.exchanges += 1;
        let mut record = exchange_record(&conn.meta, x, verdict, threat, &findings);
        record.tls = conn.tls.clone();
        if let Some(annotate) = self.annotations.as_mut() {
            for annotation in annotations_for(&conn.meta, x, verdict, &findings) {
                annotate(annotation);
            }
        }
        self.sink.exchange_seen(&record, x);
    }

    fn finish_connection(&mut self, id: ConnId, now: Micros) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if self.mode == ObserverMode::Capture {
            let ends = StreamOffsets {
                request: conn.request.expected,
                response: conn.response.expected,
                request_at: conn.request.last_data,
            };
            let answers_ended = conn.response.closed.is_some();
            let cut = capture_ended(answers_ended, &mut conn.correlator, ends);
            for (seq, finding) in cut {
                conn.pending.entry(seq).or_default().push(finding);
            }
        }
        let leftovers = conn.correlator.close();
        conn.findings.extend(leftovers.iter().map(Finding::from));
        self.drain(id);
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        self.services.connection_closed(conn.meta.server);
        let record = connection_record(&conn, now);
        self.sink.connection(&record);
    }
}
