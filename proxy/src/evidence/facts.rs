//! The facts a report and a ticket state, gathered in one pass over a run's
//! records: verdict counts, anomalies with their first examples, latency
//! histograms per service and method, exchanges over time by verdict, the
//! exchanges listed one by one (problems first),
//! OPTIONS/ISTag history, connections per client; the products each side
//! named come with the summary. Memory is bounded by the
//! number of distinct keys (services, clients, codes, seconds of the run),
//! never by the number of records.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::filter::Filter;
use crate::output::records::{AnomalyRecord, ConnectionRecord, ExchangeRecord, FramesRecord};
use crate::output::summary::{Evidence, Summary, SummaryBuilder};
use crate::output::writer::RecordSink;

use super::exchange_table::ExchangeTable;
use super::load::{self, parse_rfc3339_micros, RunFiles};
use super::timebins::TimeBins;
use super::EvidenceError;

/// Examples kept per anomaly code.
pub const EXAMPLES_PER_CODE: usize = 5;
/// ISTag changes kept per service.
pub const ISTAG_CHANGES_PER_SERVICE: usize = 50;
/// Latency histograms kept (one per `METHOD service`); more are folded.
pub const MAX_LATENCY_KEYS: usize = 32;
/// Clients listed individually; more are folded into the last row.
pub const MAX_CLIENTS: usize = 200;

/// Verdicts in the order the report shows them: problems first.
pub const VERDICT_ORDER: [&str; 9] = [
    "missing",
    "malformed",
    "error",
    "infected",
    "blocked",
    "modified",
    "clean",
    "options",
    "unobserved",
];

/// Severities, worst first.
pub const SEVERITY_ORDER: [&str; 3] = ["error", "warn", "info"];

/// One place an anomaly was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnomalyExample {
    /// When (RFC 3339).
    pub ts: String,
    /// Connection id.
    pub conn: u64,
    /// Exchange index, or `None` for a connection anomaly.
    pub seq: Option<u64>,
    /// The anomaly's detail.
    pub detail: String,
    /// Byte offset in the causing side's stream.
    pub offset: Option<u64>,
    /// Capture frames of the exchange (offline analysis).
    pub frames: Option<FramesRecord>,
}

/// Everything about one anomaly code.
#[derive(Clone, Debug, Default)]
pub struct AnomalyFacts {
    /// The code.
    pub code: String,
    /// Worst severity seen with it.
    pub severity: String,
    /// Sides seen (`client`, `server`).
    pub sides: Vec<String>,
    /// Occurrences.
    pub count: u64,
    /// First and last time seen (RFC 3339).
    pub first: Option<String>,
    /// Last time seen.
    pub last: Option<String>,
    /// The first few occurrences.
    pub examples: Vec<AnomalyExample>,
}

/// Latency of one `METHOD service`.
#[derive(Debug)]
pub struct LatencyFacts {
    /// `METHOD service`.
    pub key: String,
    /// The histogram in microseconds.
    pub histogram: Histogram<u64>,
}

/// One change of a service's ISTag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IstagChange {
    /// First time the tag was seen (RFC 3339).
    pub ts: String,
    /// The tag, quotes included.
    pub istag: String,
    /// Responses that carried it in a row.
    pub responses: u64,
    /// Of which OPTIONS answers.
    pub options: u64,
}

/// The ISTag history of one service of one sensor.
#[derive(Clone, Debug, Default)]
pub struct ServiceHistory {
    /// `server` address.
    pub server: String,
    /// Service path.
    pub service: String,
    /// OPTIONS exchanges.
    pub options_exchanges: u64,
    /// REQMOD/RESPMOD exchanges.
    pub other_exchanges: u64,
    /// Last OPTIONS seen (RFC 3339).
    pub last_options: Option<String>,
    /// Successive tags.
    pub changes: Vec<IstagChange>,
    /// Changes not kept once [`ISTAG_CHANGES_PER_SERVICE`] was reached.
    pub changes_dropped: u64,
}

/// Connections and exchanges of one ICAP client (by IP address).
#[derive(Clone, Debug, Default)]
pub struct ClientFacts {
    /// Client IP address (or "other clients" for the folded row).
    pub client: String,
    /// Connections.
    pub connections: u64,
    /// Connections whose sensor leg could not be opened.
    pub connect_failures: u64,
    /// Exchanges.
    pub exchanges: u64,
    /// Exchanges with a problem verdict (missing, malformed, error).
    pub problem_exchanges: u64,
    /// Bytes sent by the client.
    pub bytes_up: u64,
    /// Bytes sent to the client.
    pub bytes_down: u64,
    /// Resets seen on its connections (either side).
    pub resets: u64,
}

/// Everything the report and ticket say, gathered from a run directory.
#[derive(Debug)]
pub struct Facts {
    /// The directory's files.
    pub files: RunFiles,
    /// `summary.json`, or a summary rebuilt from the records when the run
    /// did not write one.
    pub summary: Summary,
    /// Whether `summary.json` was there.
    pub summary_written: bool,
    /// Verdict counts counted from the records.
    pub verdicts: BTreeMap<String, u64>,
    /// Anomalies by code.
    pub anomalies: BTreeMap<String, AnomalyFacts>,
    /// Latency per `METHOD service`, sorted by key.
    pub latency: Vec<LatencyFacts>,
    /// Exchanges per second by verdict: second (since the epoch) ->
    /// verdict -> count.
    pub per_second: BTreeMap<i64, BTreeMap<String, u64>>,
    /// Exchange start times by verdict at a resolution that fits the run
    /// (the timeline chart).
    pub timebins: TimeBins,
    /// ISTag history per (server, service).
    pub services: BTreeMap<(String, String), ServiceHistory>,
    /// Per client IP.
    pub clients: BTreeMap<String, ClientFacts>,
    /// ICAP servers (sensors) seen.
    pub sensors: BTreeMap<String, u64>,
    /// Encapsulated HTTP methods seen (integration type).
    pub http_methods: BTreeMap<String, u64>,
    /// The exchanges listed one by one, problems first (bounded).
    pub table: ExchangeTable,
    /// First and last record time (microseconds since the epoch).
    pub first_us: Option<i64>,
    /// Last record time (including connection close times).
    pub last_us: Option<i64>,
    /// Lines of the JSON Lines files that could not be read.
    pub unreadable_lines: u64,
    /// The `--peer` comparison, when the run made one (peer.json).
    pub peer: Option<crate::analyze::peer_file::PeerFile>,
}

fn new_histogram() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).ok()
}

/// The headline of a run where nothing went wrong but some exchanges are
/// `unobserved`: it must not say that every exchange got a verdict.
pub fn unobserved_headline(facts: &Facts, warns: u64) -> Option<String> {
    let unobserved = facts
        .verdicts
        .get("unobserved")
        .copied()
        .filter(|n| *n > 0)?;
    Some(format!(
        "{unobserved} of {} exchanges were not seen whole and have no verdict (unobserved); {warns} warnings.",
        facts.exchanges()
    ))
}

/// "Evidence is incomplete: ..." when the run's records or capture lack
/// something icaptap forwarded (or the capture held), for the first line
/// of the report and the ticket. Summaries that predate the judgement are
/// judged from their counts.
pub fn evidence_warning(s: &Summary) -> Option<String> {
    let judged = s.evidence.clone().unwrap_or_else(|| Evidence::of(s));
    (!judged.complete).then(|| {
        format!(
            "Evidence is incomplete: {}. Forwarding was not affected; records say what icaptap could not see.",
            judged.gaps.join("; ")
        )
    })
}

/// Whether a verdict means the exchange went wrong.
pub fn is_problem_verdict(verdict: &str) -> bool {
    matches!(verdict, "missing" | "malformed" | "error")
}

/// The address part of `ip:port` (`[v6]:port` too).
pub fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => addr,
    }
}

fn severity_rank(s: &str) -> usize {
    SEVERITY_ORDER
        .iter()
        .position(|x| *x == s)
        .unwrap_or(SEVERITY_ORDER.len())
}

impl Facts {
    /// Reads `dir` and gathers the facts from its records and summary.
    pub fn gather(dir: &std::path::Path) -> Result<Facts, EvidenceError> {
        Facts::gather_filtered(dir, None)
    }

    /// [`Facts::gather`] over only the exchanges `filter` selects and the
    /// connections they were on; the run's own facts (mode, times, drops,
    /// evidence) stay those of the whole run.
    pub fn gather_filtered(
        dir: &std::path::Path,
        filter: Option<&Filter>,
    ) -> Result<Facts, EvidenceError> {
        let files = RunFiles::scan(dir)?;
        let summary_json = files.read_summary()?;
        let filter = match filter {
            Some(f) => Some(load::with_run_start(
                &files,
                summary_json.as_ref(),
                f.clone(),
            )?),
            None => None,
        };
        let mut selected = std::collections::HashSet::new();
        let mut facts = Facts {
            summary: Summary::default(),
            summary_written: summary_json.is_some(),
            verdicts: BTreeMap::new(),
            anomalies: BTreeMap::new(),
            latency: Vec::new(),
            per_second: BTreeMap::new(),
            timebins: TimeBins::default(),
            services: BTreeMap::new(),
            clients: BTreeMap::new(),
            sensors: BTreeMap::new(),
            http_methods: BTreeMap::new(),
            table: ExchangeTable::default(),
            first_us: None,
            last_us: None,
            unreadable_lines: 0,
            peer: super::peer_section::load(dir),
            files,
        };
        let mut rebuilt = SummaryBuilder::new();
        let mut latency: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
        let files = facts.files.clone();
        let mut bad = load::for_each_exchange(&files, &mut |x| {
            if filter.as_ref().is_some_and(|f| !f.matches(&x)) {
                return;
            }
            selected.insert(x.conn);
            rebuilt.exchange(&x);
            facts.exchange(x, &mut latency);
        })?;
        bad += load::for_each_connection(&files, &mut |c| {
            if filter.is_some() && !selected.contains(&c.conn) {
                return;
            }
            rebuilt.connection(&c);
            facts.connection(&c);
        })?;
        facts.unreadable_lines = bad;
        facts.latency = latency
            .into_iter()
            .map(|(key, histogram)| LatencyFacts { key, histogram })
            .collect();
        facts.summary = match &filter {
            None => summary_json.unwrap_or_else(|| rebuilt.snapshot()),
            Some(f) => {
                rebuilt.filtered(f.text());
                super::filtered::restricted(summary_json, rebuilt.snapshot())
            }
        };
        Ok(facts)
    }

    fn seen_at(&mut self, ts: &str) -> Option<i64> {
        let t = parse_rfc3339_micros(ts)?;
        self.first_us = Some(self.first_us.map_or(t, |f| f.min(t)));
        self.last_us = Some(self.last_us.map_or(t, |l| l.max(t)));
        Some(t)
    }

    fn anomaly(&mut self, a: &AnomalyRecord, example: AnomalyExample) {
        let entry = self
            .anomalies
            .entry(a.code.clone())
            .or_insert_with(|| AnomalyFacts {
                code: a.code.clone(),
                severity: a.severity.clone(),
                ..AnomalyFacts::default()
            });
        entry.count += 1;
        if severity_rank(&a.severity) < severity_rank(&entry.severity) {
            entry.severity = a.severity.clone();
        }
        if !entry.sides.contains(&a.side) {
            entry.sides.push(a.side.clone());
        }
        if entry
            .first
            .as_deref()
            .is_none_or(|f| example.ts.as_str() < f)
        {
            entry.first = Some(example.ts.clone());
        }
        if entry
            .last
            .as_deref()
            .is_none_or(|l| example.ts.as_str() > l)
        {
            entry.last = Some(example.ts.clone());
        }
        if entry.examples.len() < EXAMPLES_PER_CODE {
            entry.examples.push(example);
        }
    }

    fn client_mut(&mut self, addr: &str) -> &mut ClientFacts {
        let mut host = host_of(addr).to_string();
        if !self.clients.contains_key(&host) && self.clients.len() >= MAX_CLIENTS {
            host = "other clients".to_string();
        }
        self.clients
            .entry(host.clone())
            .or_insert_with(|| ClientFacts {
                client: host,
                ..ClientFacts::default()
            })
    }

    fn exchange(&mut self, x: ExchangeRecord, latency: &mut BTreeMap<String, Histogram<u64>>) {
        let at = self.seen_at(&x.ts);
        *self.verdicts.entry(x.verdict.clone()).or_default() += 1;
        *self.sensors.entry(x.server.clone()).or_default() += 1;
        if let Some(m) = &x.http_method {
            *self.http_methods.entry(m.clone()).or_default() += 1;
        }
        if let Some(t) = at {
            self.timebins.add(t, &x.verdict);
            *self
                .per_second
                .entry(t.div_euclid(1_000_000))
                .or_default()
                .entry(x.verdict.clone())
                .or_default() += 1;
        }
        for a in &x.anomalies {
            let example = AnomalyExample {
                ts: x.ts.clone(),
                conn: x.conn,
                seq: Some(x.seq),
                detail: a.detail.clone(),
                offset: a.offset,
                frames: x.frames.clone(),
            };
            self.anomaly(a, example);
        }
        if let Some(us) = x.latency_us {
            let method = x.method.as_deref().unwrap_or("-");
            let mut key = format!("{method} {}", x.service.as_deref().unwrap_or("-"));
            if !latency.contains_key(&key) && latency.len() >= MAX_LATENCY_KEYS {
                key = "(other services)".to_string();
            }
            if !latency.contains_key(&key) {
                if let Some(h) = new_histogram() {
                    latency.insert(key.clone(), h);
                }
            }
            if let Some(h) = latency.get_mut(&key) {
                let _ = h.record(us.max(1));
            }
        }
        self.history(&x);
        let problem = is_problem_verdict(&x.verdict);
        let client = self.client_mut(&x.client);
        client.exchanges += 1;
        if problem {
            client.problem_exchanges += 1;
        }
        self.table.add(&x);
    }

    fn history(&mut self, x: &ExchangeRecord) {
        let key = (
            x.server.clone(),
            x.service.clone().unwrap_or_else(|| "-".to_string()),
        );
        let h = self
            .services
            .entry(key.clone())
            .or_insert_with(|| ServiceHistory {
                server: key.0.clone(),
                service: key.1.clone(),
                ..ServiceHistory::default()
            });
        let is_options = x.method.as_deref() == Some("OPTIONS");
        if is_options {
            h.options_exchanges += 1;
            h.last_options = Some(x.ts.clone());
        } else {
            h.other_exchanges += 1;
        }
        let Some(tag) = &x.istag else {
            return;
        };
        let full = h.changes.len() >= ISTAG_CHANGES_PER_SERVICE;
        match h.changes.last_mut() {
            Some(last) if &last.istag == tag => {
                last.responses += 1;
                last.options += u64::from(is_options);
            }
            _ if full => h.changes_dropped += 1,
            _ => h.changes.push(IstagChange {
                ts: x.ts.clone(),
                istag: tag.clone(),
                responses: 1,
                options: u64::from(is_options),
            }),
        }
    }

    fn connection(&mut self, c: &ConnectionRecord) {
        self.seen_at(&c.ts);
        self.seen_at(&c.ts_close);
        for a in &c.anomalies {
            let example = AnomalyExample {
                ts: c.ts.clone(),
                conn: c.conn,
                seq: None,
                detail: a.detail.clone(),
                offset: a.offset,
                frames: None,
            };
            self.anomaly(a, example);
        }
        let resets = [&c.close.client, &c.close.server]
            .iter()
            .filter(|s| s.as_deref() == Some("reset"))
            .count() as u64;
        let client = self.client_mut(&c.client);
        client.connections += 1;
        client.connect_failures += u64::from(c.connect_error.is_some());
        client.bytes_up += c.bytes_client_to_server;
        client.bytes_down += c.bytes_server_to_client;
        client.resets += resets;
    }

    /// Run duration in seconds from the first to the last record time.
    pub fn duration_s(&self) -> f64 {
        let from_summary = self
            .summary
            .started
            .as_deref()
            .and_then(parse_rfc3339_micros)
            .zip(self.summary.ended.as_deref().and_then(parse_rfc3339_micros))
            .map(|(a, b)| b - a);
        let from_records = self.first_us.zip(self.last_us).map(|(a, b)| b - a);
        let us = from_summary.or(from_records).unwrap_or(0).max(0);
        us as f64 / 1e6
    }

    /// Exchanges counted from the records.
    pub fn exchanges(&self) -> u64 {
        self.verdicts.values().sum()
    }

    /// Mean exchanges per second over the run.
    pub fn exchanges_per_s(&self) -> f64 {
        rate(self.exchanges() as f64, self.duration_s())
    }

    /// Busiest second of the run.
    pub fn peak_per_s(&self) -> u64 {
        self.per_second
            .values()
            .map(|m| m.values().sum::<u64>())
            .max()
            .unwrap_or(0)
    }

    /// Mean bytes per second (both directions) over the run.
    pub fn bytes_per_s(&self) -> f64 {
        let bytes = self.summary.bytes_client_to_server + self.summary.bytes_server_to_client;
        rate(bytes as f64, self.duration_s())
    }

    /// Anomalies of `severity`, most frequent first.
    pub fn anomalies_of(&self, severity: &str) -> Vec<&AnomalyFacts> {
        let mut v: Vec<&AnomalyFacts> = self
            .anomalies
            .values()
            .filter(|a| a.severity == severity)
            .collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.code.cmp(&b.code)));
        v
    }

    /// Anomaly occurrences of `severity`.
    pub fn severity_count(&self, severity: &str) -> u64 {
        self.anomalies_of(severity).iter().map(|a| a.count).sum()
    }

    /// Where the run listened and forwarded to (proxy) or what it read
    /// (analyze), from the command line and the records.
    pub fn setting(&self) -> Setting {
        let args = &self.summary.command;
        let flag = |name: &str| -> Option<String> {
            let with_eq = format!("{name}=");
            args.iter().enumerate().find_map(|(i, a)| {
                if a == name {
                    args.get(i + 1).cloned()
                } else {
                    a.strip_prefix(&with_eq).map(str::to_string)
                }
            })
        };
        let inputs = if self.summary.mode == "analyze" {
            let mut skip_next = false;
            args.iter()
                .skip(2)
                .filter(|a| {
                    let skip = skip_next;
                    skip_next = matches!(a.as_str(), "--out" | "--port" | "--peer");
                    !skip && !a.starts_with('-')
                })
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        Setting {
            listen: flag("--listen"),
            upstream: flag("--upstream"),
            inputs,
        }
    }
}

/// Where the run sat.
#[derive(Clone, Debug, Default)]
pub struct Setting {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--upstream`.
    pub upstream: Option<String>,
    /// Capture files analysed.
    pub inputs: Vec<String>,
}

fn rate(n: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n / seconds
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("127.0.0.1:1344"), "127.0.0.1");
        assert_eq!(host_of("[::1]:1344"), "::1");
        assert_eq!(host_of("sensor"), "sensor");
    }
}
