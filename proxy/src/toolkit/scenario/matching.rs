//! Matching a request against a scenario's rules (first match wins), with
//! three-valued criteria: a criterion about the body may be not yet known
//! while only a preview has arrived (RFC 3507 section 4.5), and then the
//! sensor asks for the rest with `100 Continue`.

use icap_codec::Method;

use super::{ContentPattern, Rule, RuleMatch, Scenario, Sha256Hex, UrlPattern};

/// What the sensor knows of a request when it decides.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// The ICAP method.
    pub method: &'a Method,
    /// The service path from the ICAP URI.
    pub service: &'a str,
    /// The encapsulated HTTP request target, when there is one.
    pub url: Option<&'a str>,
    /// The body bytes kept so far (a prefix when over the limit).
    pub body: &'a [u8],
    /// Body bytes received so far.
    pub body_len: u64,
    /// Whether the body is complete (message end, or preview with `ieof`).
    pub body_complete: bool,
    /// SHA-256 of the whole body, once complete.
    pub sha256: Option<&'a [u8; 32]>,
}

/// The outcome of matching a request against the rules.
#[derive(Clone, Copy, Debug)]
pub enum Decision<'a> {
    /// This rule (index, rule) matched.
    Matched(usize, &'a Rule),
    /// A rule could match once the whole body is known: continue the preview.
    NeedBody,
    /// No rule matched: the request is clean.
    NoRule,
}

/// Whether a criterion holds, fails, or cannot be known yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Truth {
    Holds,
    Fails,
    NotYetKnown,
}

impl Truth {
    fn from_bool(b: bool) -> Truth {
        if b {
            Truth::Holds
        } else {
            Truth::Fails
        }
    }
}

impl RuleMatch {
    fn evaluate(&self, facts: &RequestFacts<'_>) -> Truth {
        let mut truths = Vec::with_capacity(7);
        if let Some(service) = &self.service {
            truths.push(Truth::from_bool(service == facts.service));
        }
        if let Some(method) = &self.method {
            truths.push(Truth::from_bool(
                method.eq_ignore_ascii_case(facts.method.as_str()),
            ));
        }
        if let Some(UrlPattern(re)) = &self.url {
            truths.push(Truth::from_bool(facts.url.is_some_and(|u| re.is_match(u))));
        }
        if let Some(ContentPattern(re)) = &self.body_contains {
            truths.push(match (re.is_match(facts.body), facts.body_complete) {
                (true, _) => Truth::Holds,
                (false, true) => Truth::Fails,
                (false, false) => Truth::NotYetKnown,
            });
        }
        if let Some(Sha256Hex(want)) = &self.body_sha256 {
            truths.push(match facts.sha256 {
                Some(got) => Truth::from_bool(got == want),
                None => Truth::NotYetKnown,
            });
        }
        if let Some(min) = self.size_min {
            truths.push(match (facts.body_len >= min, facts.body_complete) {
                (true, _) => Truth::Holds,
                (false, true) => Truth::Fails,
                (false, false) => Truth::NotYetKnown,
            });
        }
        if let Some(max) = self.size_max {
            truths.push(match (facts.body_len <= max, facts.body_complete) {
                (false, _) => Truth::Fails,
                (true, true) => Truth::Holds,
                (true, false) => Truth::NotYetKnown,
            });
        }
        if truths.contains(&Truth::Fails) {
            Truth::Fails
        } else if truths.contains(&Truth::NotYetKnown) {
            Truth::NotYetKnown
        } else {
            Truth::Holds
        }
    }
}

impl Scenario {
    /// Matches a request against the rules; the first rule that holds wins,
    /// and a rule that cannot be decided yet asks for the whole body.
    pub fn decide(&self, facts: &RequestFacts<'_>) -> Decision<'_> {
        for (index, rule) in self.rules.iter().enumerate() {
            match rule.when.evaluate(facts) {
                Truth::Holds => return Decision::Matched(index, rule),
                Truth::Fails => continue,
                Truth::NotYetKnown => return Decision::NeedBody,
            }
        }
        Decision::NoRule
    }
}
