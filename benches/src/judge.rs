//! Judges exchange records (icaptap's live `exchanges.jsonl`, or `icaptap
//! analyze`'s on a capture) against what the open-loop client saw: each
//! request carries its own URL ([`crate::openloop::request_url`]), so each
//! record names the request it is about.
//!
//! For an echo answered intact, a true record is `clean` with
//! `decode_complete: true`, ICAP status 200 and both body sizes right
//! (docs/log-schema.md: a 200 returning the original message unchanged is
//! `clean`). `unobserved` says icaptap did not see enough, which is true
//! but not a verdict: counted apart. Any other record of an answered
//! request, a second record of one request, or a record of a request that
//! was never sent contradicts what happened: false. Records of requests
//! the client got no answer to are counted, not judged.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::openloop::{url_prefix, Fate};

/// How many false records a judgement quotes.
pub const EXAMPLES: usize = 5;

/// The judgement of one set of records (one file, or one leg of a capture).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Judged {
    /// Records about this step's requests (by URL) plus records that name
    /// no URL.
    pub records: u64,
    /// Answered requests with exactly one record, `clean` and complete.
    pub clean_true: u64,
    /// `unobserved` records (of answered requests, or naming no URL).
    pub unobserved: u64,
    /// Records that contradict what happened.
    pub false_records: u64,
    /// Answered requests no record speaks for (an `unobserved` record that
    /// names no URL speaks for one of them).
    pub answered_without_record: u64,
    /// Records of requests the client got no intact answer to.
    pub records_of_unanswered: u64,
    /// Records by verdict.
    pub by_verdict: BTreeMap<String, u64>,
    /// Up to [`EXAMPLES`] false records, summarised.
    pub false_examples: Vec<String>,
}

impl Judged {
    /// One record per answered request and none false.
    pub fn complete_and_true(&self) -> bool {
        self.answered_without_record == 0 && self.false_records == 0
    }

    /// Every answered request has a true `clean` record.
    pub fn all_clean(&self, answered: u64) -> bool {
        self.clean_true == answered && self.false_records == 0
    }

    fn falsely(&mut self, what: String) {
        self.false_records += 1;
        if self.false_examples.len() < EXAMPLES {
            self.false_examples.push(what);
        }
    }
}

/// Reads a JSONL file of records (a missing file has none).
pub fn read_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn text<'a>(record: &'a Value, field: &str) -> Option<&'a str> {
    record.get(field).and_then(Value::as_str)
}

fn number(record: &Value, field: &str) -> Option<u64> {
    record.get(field).and_then(Value::as_u64)
}

fn summary(record: &Value) -> String {
    let codes: Vec<&str> = record
        .get("anomalies")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| text(x, "code")).collect())
        .unwrap_or_default();
    format!(
        "{} verdict={} icap_status={} decode_complete={} anomalies={codes:?}",
        text(record, "http_url").unwrap_or("(no url)"),
        text(record, "verdict").unwrap_or("?"),
        record.get("icap_status").unwrap_or(&Value::Null),
        record.get("decode_complete").unwrap_or(&Value::Null),
    )
}

/// Judges `records` (RESPMOD records and records that name no method; an
/// OPTIONS record is not the bench's) against `fates`, for bodies of
/// `body` bytes and URLs of the step tagged `tag`.
pub fn judge(records: &[Value], fates: &[Fate], tag: &str, body: u64) -> Judged {
    let prefix = url_prefix(tag);
    let mut j = Judged::default();
    let mut seen = vec![0u32; fates.len()];
    let mut loose_unobserved = 0u64;
    for record in records {
        let method = text(record, "method");
        if method.is_some_and(|m| m != "RESPMOD") {
            continue;
        }
        let url = text(record, "http_url");
        // Another step's request is not this one's business.
        if url.is_some_and(|u| !u.starts_with(&prefix)) {
            continue;
        }
        let verdict = text(record, "verdict").unwrap_or("?").to_owned();
        j.records += 1;
        *j.by_verdict.entry(verdict.clone()).or_default() += 1;
        let id = url.and_then(|u| u[prefix.len()..].parse::<usize>().ok());
        let Some(id) = id else {
            if verdict == "unobserved" {
                j.unobserved += 1;
                loose_unobserved += 1;
            } else {
                j.falsely(format!("names no request: {}", summary(record)));
            }
            continue;
        };
        let Some(fate) = fates.get(id) else {
            j.falsely(format!("names a request never sent: {}", summary(record)));
            continue;
        };
        seen[id] += 1;
        if seen[id] > 1 {
            j.falsely(format!(
                "a second record of one request: {}",
                summary(record)
            ));
            continue;
        }
        if *fate != Fate::Intact {
            j.records_of_unanswered += 1;
            continue;
        }
        let complete = record.get("decode_complete").and_then(Value::as_bool) == Some(true);
        let sizes = number(record, "request_body_bytes") == Some(body)
            && number(record, "response_body_bytes") == Some(body);
        match verdict.as_str() {
            "clean" if complete && sizes && number(record, "icap_status") == Some(200) => {
                j.clean_true += 1;
            }
            "unobserved" => j.unobserved += 1,
            _ => j.falsely(summary(record)),
        }
    }
    let unanswered_in_records = fates
        .iter()
        .zip(&seen)
        .filter(|(f, n)| **f == Fate::Intact && **n == 0)
        .count() as u64;
    j.answered_without_record = unanswered_in_records.saturating_sub(loose_unobserved);
    j
}

/// The records of `records` grouped by their `server` field: the legs of
/// icaptap's own capture (client to icaptap, icaptap to the sensor) are
/// told apart by whom the client side spoke to.
pub fn by_server(records: Vec<Value>) -> BTreeMap<String, Vec<Value>> {
    let mut legs: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in records {
        let server = text(&r, "server").unwrap_or("?").to_owned();
        legs.entry(server).or_default().push(r);
    }
    legs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(id: Option<u64>, verdict: &str, complete: bool) -> Value {
        json!({
            "method": "RESPMOD",
            "http_url": id.map(|i| format!("http://origin.test/overload/t/{i}")),
            "verdict": verdict,
            "icap_status": 200,
            "decode_complete": complete,
            "request_body_bytes": 10,
            "response_body_bytes": 10,
        })
    }

    #[test]
    fn clean_unobserved_false_and_missing_records_are_told_apart() {
        let fates = [
            Fate::Intact,
            Fate::Intact,
            Fate::Intact,
            Fate::Intact,
            Fate::Failed,
        ];
        let records = vec![
            rec(Some(0), "clean", true),
            rec(Some(1), "unobserved", false),
            rec(Some(2), "modified", true),
            rec(Some(2), "clean", true),
            rec(Some(4), "missing", false),
            rec(None, "unobserved", false),
            json!({"method": "OPTIONS", "verdict": "options"}),
        ];
        let j = judge(&records, &fates, "t", 10);
        assert_eq!(j.records, 6);
        assert_eq!(j.clean_true, 1);
        assert_eq!(j.unobserved, 2);
        // `modified` of an echo, and the second record of request 2.
        assert_eq!(j.false_records, 2, "{:?}", j.false_examples);
        assert_eq!(j.records_of_unanswered, 1);
        // Request 3 has none, but the loose unobserved record speaks for it.
        assert_eq!(j.answered_without_record, 0);
        assert!(!j.complete_and_true());
        assert!(!j.all_clean(4));
    }

    #[test]
    fn a_clean_record_that_did_not_see_everything_is_false() {
        let j = judge(&[rec(Some(0), "clean", false)], &[Fate::Intact], "t", 10);
        assert_eq!(j.false_records, 1);
        let j = judge(&[rec(Some(0), "clean", true)], &[Fate::Intact], "t", 10);
        assert!(j.complete_and_true() && j.all_clean(1));
        let j = judge(&[], &[Fate::Intact], "t", 10);
        assert_eq!(j.answered_without_record, 1);
    }
}
