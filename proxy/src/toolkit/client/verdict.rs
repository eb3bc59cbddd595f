//! Reading a sensor's answer as a person would (the field guide's "how to
//! read a response"): 204 is clean (not modified), a 200 carrying a vendor
//! infection header is infected, a 200 with a different HTTP status is a
//! block, 4xx/5xx is an error (RFC 3507 section 4.3.3).

use std::fmt;

use icap_codec::{EntityKind, Severity, Side};

use super::exchange::Answer;
use super::request::IcapMethod;

/// What the answer means for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// OPTIONS answered 200.
    Options,
    /// 204, or a 200 echo identical to what was sent.
    Clean(&'static str),
    /// A 200 whose HTTP message differs from the original without a block.
    Modified,
    /// A block page (HTTP status of the page).
    Blocked(u16),
    /// A vendor infection report with the threat name.
    Infected(String),
    /// An ICAP error status.
    Error(u16, String),
    /// A status the client does not understand as a verdict.
    Unexpected(u16),
}

impl Verdict {
    /// Whether the answer is an ICAP-level error (exit status non-zero).
    pub fn is_error(&self) -> bool {
        matches!(self, Verdict::Error(..) | Verdict::Unexpected(_))
    }

    /// The one-word kind: clean, modified, blocked, infected, error, options.
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Options => "options",
            Verdict::Clean(_) => "clean",
            Verdict::Modified => "modified",
            Verdict::Blocked(_) => "blocked",
            Verdict::Infected(_) => "infected",
            Verdict::Error(..) | Verdict::Unexpected(_) => "error",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Options => write!(f, "options (service answered OPTIONS)"),
            Verdict::Clean(how) => write!(f, "clean ({how})"),
            Verdict::Modified => write!(f, "modified (the sensor changed the message)"),
            Verdict::Blocked(status) => write!(f, "blocked (HTTP {status} page)"),
            Verdict::Infected(threat) => write!(f, "infected ({threat})"),
            Verdict::Error(status, reason) => write!(f, "error (ICAP {status} {reason})"),
            Verdict::Unexpected(status) => write!(f, "error (unexpected ICAP status {status})"),
        }
    }
}

/// The threat named by vendor headers, if any.
pub fn threat_of(answer: &Answer) -> Option<String> {
    let h = &answer.head.headers;
    if let Some(v) = h.get_str("X-Infection-Found") {
        let threat = v
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("Threat="))
            .next()
            .unwrap_or(v);
        return Some(threat.trim().to_owned());
    }
    if let Some(v) = h.get_str("X-Virus-ID") {
        return Some(v.trim().to_owned());
    }
    if let Some(v) = h.get_str("X-Violations-Found") {
        // Folded lines arrive joined: "N file threat resolution type".
        let parts: Vec<&str> = v.split_whitespace().collect();
        return Some(parts.get(2).copied().unwrap_or(v).to_owned());
    }
    if h.get_str("X-Response-Info")
        .is_some_and(|v| v.eq_ignore_ascii_case("blocked"))
    {
        return Some(h.get_str("X-Response-Desc").unwrap_or("blocked").to_owned());
    }
    None
}

/// Classifies `answer` to a `method` request that carried `sent_body`.
pub fn classify(method: IcapMethod, sent_body: Option<&[u8]>, answer: &Answer) -> Verdict {
    let status = answer.head.status;
    match status {
        204 => Verdict::Clean("204 No Content: not modified"),
        200 if method == IcapMethod::Options => Verdict::Options,
        200 | 206 => {
            if let Some(threat) = threat_of(answer) {
                return Verdict::Infected(threat);
            }
            let res = answer.http.iter().find(|h| h.entity == EntityKind::ResHdr);
            match (method, res) {
                (IcapMethod::Reqmod, Some(r)) => Verdict::Blocked(r.status.unwrap_or(0)),
                (_, Some(r)) if r.status.is_some_and(|s| s >= 400) => {
                    Verdict::Blocked(r.status.unwrap_or(0))
                }
                _ => {
                    let same_body = sent_body.unwrap_or_default() == &answer.body[..];
                    if same_body && answer.complete {
                        Verdict::Clean("200 echo: body unchanged")
                    } else {
                        Verdict::Modified
                    }
                }
            }
        }
        400..=599 => Verdict::Error(
            status,
            String::from_utf8_lossy(&answer.head.reason).into_owned(),
        ),
        _ => Verdict::Unexpected(status),
    }
}

/// Server-side protocol violations worth flagging next to the verdict.
pub fn violations(answer: &Answer) -> Vec<String> {
    let mut out: Vec<String> = answer
        .anomalies
        .iter()
        .filter(|a| a.side == Side::Server && a.severity() >= Severity::Warn)
        .map(|a| format!("{} at byte {}", a.code.as_str(), a.offset))
        .collect();
    if !answer.complete {
        out.push("response cut short by connection close".to_owned());
    }
    out
}
