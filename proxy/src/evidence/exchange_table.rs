//! Which request got which verdict: the exchanges a report lists one by
//! one, problems first. Bounded whatever the run's size: every problem
//! exchange up to [`MAX_PROBLEM_ROWS`], exchanges worth a look (a verdict
//! other than clean, or any anomaly) up to [`MAX_NOTABLE_ROWS`], and a
//! sample of the clean ones spread evenly over the run (at most
//! [`SAMPLE_ROWS`]). What is left out is counted, and the report says how
//! to list it from exchanges.jsonl.

use crate::output::records::ExchangeRecord;

use super::facts::is_problem_verdict;

/// Problem exchanges listed at most.
pub const MAX_PROBLEM_ROWS: usize = 1_000;
/// Exchanges worth a look listed at most.
pub const MAX_NOTABLE_ROWS: usize = 200;
/// Clean exchanges sampled at most.
pub const SAMPLE_ROWS: usize = 100;

/// How an exchange ranks in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// It went wrong: `missing`, `malformed`, `error`, or an error-level
    /// anomaly.
    Problem,
    /// Worth a look: `unobserved`, `infected`, `blocked`, `modified`, or
    /// any anomaly.
    Notable,
    /// Clean or OPTIONS, no anomaly.
    Clean,
}

impl Tier {
    /// The tier of one exchange.
    pub fn of(x: &ExchangeRecord) -> Tier {
        if is_problem_verdict(&x.verdict) || x.anomalies.iter().any(|a| a.severity == "error") {
            Tier::Problem
        } else if !matches!(x.verdict.as_str(), "clean" | "options") || !x.anomalies.is_empty() {
            Tier::Notable
        } else {
            Tier::Clean
        }
    }
}

/// One tier's rows and how many exchanges it had.
#[derive(Clone, Debug, Default)]
pub struct TierRows {
    /// The rows kept, in record order.
    pub rows: Vec<ExchangeRecord>,
    /// Exchanges of this tier in the run.
    pub total: u64,
}

impl TierRows {
    /// Exchanges of this tier not listed.
    pub fn omitted(&self) -> u64 {
        self.total - self.rows.len() as u64
    }
}

/// The exchanges a report lists.
#[derive(Clone, Debug)]
pub struct ExchangeTable {
    /// Problem exchanges, the first [`MAX_PROBLEM_ROWS`].
    pub problems: TierRows,
    /// Exchanges worth a look, the first [`MAX_NOTABLE_ROWS`].
    pub notable: TierRows,
    /// Clean exchanges, an evenly spread sample: the clean exchanges whose
    /// index (from 0, in record order) is a multiple of `stride`.
    pub clean: TierRows,
    stride: u64,
}

impl Default for ExchangeTable {
    fn default() -> Self {
        ExchangeTable {
            problems: TierRows::default(),
            notable: TierRows::default(),
            clean: TierRows::default(),
            stride: 1,
        }
    }
}

impl ExchangeTable {
    /// Considers one exchange record.
    pub fn add(&mut self, x: &ExchangeRecord) {
        match Tier::of(x) {
            Tier::Problem => keep_first(&mut self.problems, x, MAX_PROBLEM_ROWS),
            Tier::Notable => keep_first(&mut self.notable, x, MAX_NOTABLE_ROWS),
            Tier::Clean => {
                let index = self.clean.total;
                self.clean.total += 1;
                if index % self.stride != 0 {
                    return;
                }
                self.clean.rows.push(x.clone());
                if self.clean.rows.len() > SAMPLE_ROWS {
                    // Keep every other row: the sample stays spread over
                    // the whole run at half the density.
                    let mut i = 0;
                    self.clean.rows.retain(|_| {
                        i += 1;
                        i % 2 == 1
                    });
                    self.stride *= 2;
                }
            }
        }
    }

    /// Every listed row, problems first, each tier in record order.
    pub fn rows(&self) -> impl Iterator<Item = (Tier, &ExchangeRecord)> {
        let tier = |t: Tier| move |x| (t, x);
        self.problems
            .rows
            .iter()
            .map(tier(Tier::Problem))
            .chain(self.notable.rows.iter().map(tier(Tier::Notable)))
            .chain(self.clean.rows.iter().map(tier(Tier::Clean)))
    }

    /// Exchanges of the run.
    pub fn total(&self) -> u64 {
        self.problems.total + self.notable.total + self.clean.total
    }

    /// Exchanges listed.
    pub fn listed(&self) -> u64 {
        (self.problems.rows.len() + self.notable.rows.len() + self.clean.rows.len()) as u64
    }

    /// What the exchange table lists and what it leaves out, in words.
    pub fn scope(&self) -> String {
        let t = self;
        let part = |rows: &TierRows, what: &str| -> Option<String> {
            (rows.total > 0).then(|| {
                if rows.omitted() == 0 {
                    format!("all {} {what}", rows.total)
                } else {
                    format!("the first {} of {} {what}", rows.rows.len(), rows.total)
                }
            })
        };
        let mut parts: Vec<String> = [
            part(&t.problems, "that went wrong"),
            part(&t.notable, "worth a look (another verdict or an anomaly)"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if t.clean.total > 0 {
            parts.push(if t.clean.omitted() == 0 {
                format!("all {} clean", t.clean.total)
            } else {
                format!(
                    "a sample of {} of {} clean, spread over the run",
                    t.clean.rows.len(),
                    t.clean.total
                )
            });
        }
        let omitted = t.total() - t.listed();
        format!(
            "{} of {} exchanges listed, problems first: {}.{}",
            t.listed(),
            t.total(),
            parts.join("; "),
            if omitted > 0 {
                format!(" {omitted} are not listed here; the exchanges log has every one.")
            } else {
                String::new()
            }
        )
    }

    /// Whether `(conn, seq)` has a row (so a link to it resolves).
    pub fn has(&self, conn: u64, seq: u64) -> bool {
        self.rows().any(|(_, x)| x.conn == conn && x.seq == seq)
    }

    /// The first listed row of connection `conn`.
    pub fn first_of_connection(&self, conn: u64) -> Option<&ExchangeRecord> {
        self.rows().map(|(_, x)| x).find(|x| x.conn == conn)
    }

    /// The first listed row with `verdict`.
    pub fn first_with_verdict(&self, verdict: &str) -> Option<&ExchangeRecord> {
        self.rows().map(|(_, x)| x).find(|x| x.verdict == verdict)
    }
}

fn keep_first(tier: &mut TierRows, x: &ExchangeRecord, max: usize) {
    tier.total += 1;
    if tier.rows.len() < max {
        tier.rows.push(x.clone());
    }
}

/// The anchor of an exchange's row in report.html.
pub fn anchor(conn: u64, seq: u64) -> String {
    format!("x-{conn}-{seq}")
}

/// What to give `jq` to list the exchanges the table leaves out: problems
/// (`Tier::Problem`), the others worth a look, or every one. The glob
/// takes `exchanges.jsonl` or a rotated set (`exchanges-0001.jsonl`...),
/// which the shell lists in order.
pub const JQ_PROBLEMS: &str = r#"jq -c 'select(.verdict=="missing" or .verdict=="malformed" or .verdict=="error" or any(.anomalies[]; .severity=="error")) | {conn,seq,ts,client,http_url,verdict,icap_status,anomalies:[.anomalies[].code]}' exchanges*.jsonl"#;
/// `jq` listing every exchange with its URL and verdict.
pub const JQ_ALL: &str = r#"jq -r '[.conn,.seq,.ts,.client,(.http_url // .uri),.verdict,(.threat // "")] | @tsv' exchanges*.jsonl"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, verdict: &str) -> ExchangeRecord {
        let mut x: ExchangeRecord = serde_json::from_value(serde_json::json!({
            "schema": 1, "ts": "1970-01-01T00:00:00Z", "ts_us": 0, "conn": 1, "seq": seq,
            "client": "127.0.0.1:1", "server": "127.0.0.1:1344", "verdict": verdict,
            "anomalies": [], "request_body_bytes": 0, "response_body_bytes": 0,
            "identity": {}, "products": {}, "timings": {}, "decode_complete": true
        }))
        .unwrap();
        x.verdict = verdict.to_string();
        x
    }

    #[test]
    fn problems_first_and_the_clean_sample_spreads_over_the_run() {
        let mut t = ExchangeTable::default();
        for i in 0..100_000 {
            let v = if i % 1000 == 7 { "missing" } else { "clean" };
            t.add(&record(i, v));
        }
        t.add(&record(100_000, "unobserved"));
        assert_eq!(t.problems.total, 100);
        assert_eq!(t.problems.rows.len(), 100);
        assert_eq!(t.notable.rows.len(), 1);
        assert!(t.clean.rows.len() <= SAMPLE_ROWS && t.clean.rows.len() >= SAMPLE_ROWS / 2);
        assert_eq!(t.total(), 100_001);
        let first: Vec<Tier> = t.rows().map(|(tier, _)| tier).take(101).collect();
        assert!(first[..100].iter().all(|x| *x == Tier::Problem));
        assert_eq!(first[100], Tier::Notable);
        // Spread: the sample reaches the last third of the run.
        let last = t.clean.rows.last().unwrap().seq;
        assert!(last > 66_000, "sample ends at {last}");
        assert!(t.has(1, 7));
    }
}
