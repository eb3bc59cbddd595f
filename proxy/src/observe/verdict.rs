//! Verdicts: what an ICAP response means for the user's object, read the
//! way docs/log-schema.md "Verdicts" describes (RFC 3507 sections 4.6 to 4.9
//! plus the vendor headers sensors use to name threats).
//!
//! Malware and policy are told apart by the header that speaks, the same
//! way for every vendor: `X-Infection-Found`, `X-Virus-ID` and
//! `X-Violations-Found` name malware (`infected`, with the names);
//! `X-Response-Info: Blocked` (any case, also `block`) and
//! `X-Blocked-Reason` say the sensor blocked the object, which is a policy
//! block (`blocked`, with the sensor's words as the block reason) unless a
//! malware header names a threat too. docs/log-schema.md has the table.

use icap_codec::{EntityKind, Exchange, Method, Side};

use super::finding::breaks_response;

/// The verdict of one exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// 204, or a 200 that returns the original unchanged. A 204 means "not
    /// modified", not "scanned": the record keeps the facts (size, preview)
    /// that show whether scanning could have happened.
    Clean,
    /// A 200 or 206 that changed the encapsulated message.
    Modified,
    /// A 200 carrying an HTTP error or block page, a REQMOD answered with
    /// a response, or a 200 whose vendor headers say the sensor blocked the
    /// object without naming malware (a policy block: URL category,
    /// content filter, file type).
    Blocked,
    /// The sensor named malware (X-Infection-Found, X-Virus-ID,
    /// X-Violations-Found).
    Infected,
    /// An ICAP 4xx or 5xx.
    Error,
    /// The request was sent and no final response came.
    Missing,
    /// A response that cannot be decoded, or breaks the protocol.
    Malformed,
    /// An answered OPTIONS request.
    Options,
    /// icaptap did not see enough of this exchange to claim a verdict: the
    /// answer it holds may be another request's (bytes of the connection
    /// were lost, or it was one request too many in a deep pipeline), no
    /// answer was seen, or the verdict would rest on body bytes it missed.
    /// The record's anomalies say what was not seen and where.
    Unobserved,
}

impl Verdict {
    /// Every verdict, in declaration order.
    pub const ALL: [Verdict; 9] = [
        Verdict::Clean,
        Verdict::Modified,
        Verdict::Blocked,
        Verdict::Infected,
        Verdict::Error,
        Verdict::Missing,
        Verdict::Malformed,
        Verdict::Options,
        Verdict::Unobserved,
    ];

    /// The name written in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Clean => "clean",
            Verdict::Modified => "modified",
            Verdict::Blocked => "blocked",
            Verdict::Infected => "infected",
            Verdict::Error => "error",
            Verdict::Missing => "missing",
            Verdict::Malformed => "malformed",
            Verdict::Options => "options",
            Verdict::Unobserved => "unobserved",
        }
    }

    /// Whether the verdict deserves a reader's attention.
    pub fn is_problem(self) -> bool {
        matches!(self, Verdict::Error | Verdict::Missing | Verdict::Malformed)
    }
}

/// The verdict of `x` and the threat names the sensor gave, if any.
pub fn classify(x: &Exchange) -> (Verdict, Option<String>) {
    if x.pairing_uncertain {
        // Its answer may be another request's: nothing it says is claimed.
        return (Verdict::Unobserved, None);
    }
    if x.answered_not_icap() {
        // Something answered, in another protocol: not a missing answer.
        return (Verdict::Malformed, None);
    }
    if x.incomplete {
        return classify_partly_seen(x);
    }
    let threat = x.response.as_ref().and_then(|r| threat_names(&r.headers));
    let Some(response) = x.response.as_ref() else {
        return (Verdict::Missing, None);
    };
    if x.request.is_none() {
        return (Verdict::Malformed, threat);
    }
    if (400..=599).contains(&response.status) && x.response_ended {
        // The sensor refused the object, whatever else its answer got
        // wrong (an error without ISTag): the anomalies say the rest.
        return (Verdict::Error, threat);
    }
    let broken = x
        .anomalies
        .iter()
        .any(|a| a.side == Side::Server && breaks_response(a.code));
    if broken || !x.response_ended {
        return (Verdict::Malformed, threat);
    }
    if threat.is_some() {
        return (Verdict::Infected, threat);
    }
    let verdict = match response.status {
        400..=599 => Verdict::Error,
        _ if x.method() == Some(&Method::Options) => Verdict::Options,
        204 => Verdict::Clean,
        206 => Verdict::Modified,
        200 if policy_block(&response.headers) => Verdict::Blocked,
        200 => classify_200(x),
        _ => Verdict::Malformed,
    };
    (verdict, None)
}

/// An exchange with its own answer but bytes of it unseen: what the
/// answer's head says for itself (a threat, an error, 204, an OPTIONS
/// reply, a block page's status) is claimed; what would rest on the
/// missed bytes (echoed or changed, the answer's end) is not.
fn classify_partly_seen(x: &Exchange) -> (Verdict, Option<String>) {
    let Some(response) = x.response.as_ref() else {
        // The request's end went unseen: whether it was ever complete,
        // and so whether an answer was due, cannot be told.
        return (Verdict::Unobserved, None);
    };
    if let Some(threat) = threat_names(&response.headers) {
        return (Verdict::Infected, Some(threat));
    }
    let verdict = match response.status {
        400..=599 => Verdict::Error,
        _ if x.method() == Some(&Method::Options) => Verdict::Options,
        204 => Verdict::Clean,
        200 if policy_block(&response.headers) || block_page(x) => Verdict::Blocked,
        // Echoed or changed rests on the bytes that were missed.
        _ => Verdict::Unobserved,
    };
    (verdict, None)
}

/// Whether a 200's heads make it a block page: a REQMOD answered with an
/// HTTP response, or an HTTP 4xx/5xx returned where the original was not.
fn block_page(x: &Exchange) -> bool {
    if x.method() == Some(&Method::Reqmod) && x.response_http(EntityKind::ResHdr).is_some() {
        return true;
    }
    let returned = x.response_http(EntityKind::ResHdr).and_then(|h| h.status);
    let original = x
        .request_http(EntityKind::ResHdr)
        .and_then(|h| h.status)
        .unwrap_or(200);
    returned.is_some_and(|status| status >= 400 && original < 400)
}

/// A 200: a block page, a changed message, or the original echoed back.
fn classify_200(x: &Exchange) -> Verdict {
    if block_page(x) {
        return Verdict::Blocked;
    }
    let method = x.method();
    let returned = x.response_http(EntityKind::ResHdr);
    let original = x.request_http(EntityKind::ResHdr);
    if let Some(status) = returned.and_then(|h| h.status) {
        let original_status = original.and_then(|h| h.status).unwrap_or(200);
        if status != original_status {
            return Verdict::Modified;
        }
    }
    if method == Some(&Method::Reqmod) {
        let sent = x.request_http(EntityKind::ReqHdr);
        let back = x.response_http(EntityKind::ReqHdr);
        if let (Some(sent), Some(back)) = (sent, back) {
            if sent.method != back.method || sent.target != back.target {
                return Verdict::Modified;
            }
        }
    }
    if same_body(x) {
        Verdict::Clean
    } else {
        Verdict::Modified
    }
}

/// Whether the returned body is the original one: the fingerprints decide
/// when both bodies were seen whole, otherwise the lengths and first bytes.
fn same_body(x: &Exchange) -> bool {
    match (x.request_body.fingerprint, x.response_body.fingerprint) {
        (Some(a), Some(b)) => a == b,
        _ => {
            x.request_body.bytes == x.response_body.bytes
                && x.request_body.sample == x.response_body.sample
        }
    }
}

/// Threat names from the vendor headers, joined by `, `.
pub fn threat_names(headers: &icap_codec::Headers) -> Option<String> {
    let mut names: Vec<String> = Vec::new();
    for value in headers.get_all("X-Infection-Found") {
        let text = String::from_utf8_lossy(value);
        // Several threats may be comma-separated, each `Type=..; Resolution=..; Threat=..;`.
        for part in text.split(',') {
            if let Some(name) = param(part, "Threat").and_then(|n| bare_name(&n)) {
                names.push(name);
            }
        }
    }
    for value in headers.get_all("X-Virus-ID") {
        if let Some(name) = bare_name(&String::from_utf8_lossy(value)) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    if let Some(value) = headers.get_str("X-Violations-Found") {
        names.extend(violations(value));
    }
    names.dedup();
    (!names.is_empty()).then(|| names.join(", "))
}

/// Whether the vendor headers say the sensor blocked the object:
/// `X-Response-Info: Blocked` (c-icap url_check `BLOCKED`, its content
/// filter `block`, MetaDefender and Kaspersky `Blocked`) or an
/// `X-Blocked-Reason`. Malware is told by [`threat_names`], not here.
pub fn policy_block(headers: &icap_codec::Headers) -> bool {
    let info = headers.get_str("X-Response-Info").map(str::trim);
    let says_blocked =
        info.is_some_and(|v| v.eq_ignore_ascii_case("blocked") || v.eq_ignore_ascii_case("block"));
    says_blocked || headers.get_str("X-Blocked-Reason").is_some()
}

/// The sensor's own words for why it blocked the object, when its headers
/// say it did ([`policy_block`]): `X-Blocked-Reason`, else
/// `X-Response-Desc`, at most 200 characters.
pub fn block_reason(headers: &icap_codec::Headers) -> Option<String> {
    if !policy_block(headers) {
        return None;
    }
    ["X-Blocked-Reason", "X-Response-Desc"]
        .iter()
        .filter_map(|name| headers.get_str(name))
        .map(|v| v.trim().chars().take(200).collect::<String>())
        .find(|v| !v.is_empty())
}

/// A threat name without the prose some sensors wrap it in:
/// `Threat Trojan.X detected`, `Virus Trojan.X found`, clamd's
/// `stream: Trojan.X FOUND` all name `Trojan.X` (`Threat A B detected`
/// names `A B`). A name of several words with only one of those words
/// beside it is kept as the sensor wrote it.
fn bare_name(text: &str) -> Option<String> {
    let mut name = text.trim().trim_end_matches(['.', ';']).trim();
    if let Some((before, after)) = name.split_once(": ") {
        if !before.contains(' ') {
            name = after.trim();
        }
    }
    let words: Vec<&str> = name.split_whitespace().collect();
    const LEAD: [&str; 4] = ["threat", "virus", "malware", "infection"];
    const TRAIL: [&str; 3] = ["detected", "found", "infected"];
    let lead = words
        .first()
        .is_some_and(|w| LEAD.iter().any(|l| w.eq_ignore_ascii_case(l)));
    let trail = words
        .last()
        .is_some_and(|w| TRAIL.iter().any(|t| w.eq_ignore_ascii_case(t)));
    let core = &words[usize::from(lead)..words.len() - usize::from(trail && words.len() > 1)];
    let bare = match core {
        [one] if lead || trail => (*one).to_string(),
        [_, ..] if lead && trail => core.join(" "),
        _ => name.to_string(),
    };
    (!bare.is_empty()).then_some(bare)
}

/// `key=value` inside a `;`-separated parameter list.
fn param(text: &str, key: &str) -> Option<String> {
    text.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(key)).then(|| v.trim().to_string())
    })
}

/// `X-Violations-Found: N` followed (on folded lines, here joined by
/// spaces) by N groups of filename, threat, problem id, resolution.
fn violations(value: &str) -> Vec<String> {
    let tokens: Vec<&str> = value.split_whitespace().collect();
    let count: usize = tokens.first().and_then(|n| n.parse().ok()).unwrap_or(0);
    let mut out = Vec::new();
    for i in 0..count {
        if let Some(name) = tokens.get(2 + i * 4).and_then(|n| bare_name(n)) {
            out.push(name);
        }
    }
    if out.is_empty() && count > 0 {
        out.push(format!("{count} violation(s)"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use icap_codec::{Header, Headers};

    fn headers(list: &[(&str, &str)]) -> Headers {
        Headers(
            list.iter()
                .map(|(n, v)| Header {
                    name: Bytes::copy_from_slice(n.as_bytes()),
                    value: Bytes::copy_from_slice(v.as_bytes()),
                })
                .collect(),
        )
    }

    #[test]
    fn threat_names_from_every_vendor_style() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: &[Case] = &[
            (
                &[(
                    "X-Infection-Found",
                    "Type=0; Resolution=2; Threat=EICAR-Test-File;",
                )],
                Some("EICAR-Test-File"),
            ),
            (
                &[(
                    "X-Infection-Found",
                    "Type=0; Resolution=2; Threat=A;, Type=0; Resolution=2; Threat=B;",
                )],
                Some("A, B"),
            ),
            (
                &[("X-Virus-ID", "Eicar-Signature")],
                Some("Eicar-Signature"),
            ),
            (
                &[("X-Violations-Found", "1 eicar.com Eicar-Test-Signature 0 0")],
                Some("Eicar-Test-Signature"),
            ),
            // A block says nothing of malware: a policy block names none.
            (
                &[
                    ("X-Response-Info", "BLOCKED"),
                    ("X-Response-Desc", "URL category denyhosts is BLOCKED"),
                ],
                None,
            ),
            (
                &[
                    ("X-Response-Info", "Blocked"),
                    ("X-Blocked-Reason", "Infected"),
                    ("X-Virus-ID", "EICAR Test String"),
                ],
                Some("EICAR Test String"),
            ),
            (&[("X-Response-Info", "Passed")], None),
            // Names come without the sensor's prose around them.
            (
                &[("X-Virus-ID", "Threat Trojan.Test.D detected")],
                Some("Trojan.Test.D"),
            ),
            (
                &[(
                    "X-Infection-Found",
                    "Type=0; Resolution=2; Threat=Virus Trojan.Test.E found;",
                )],
                Some("Trojan.Test.E"),
            ),
            (
                &[("X-Virus-ID", "stream: Win.Test.EICAR_HDB-1 FOUND")],
                Some("Win.Test.EICAR_HDB-1"),
            ),
            (
                &[("X-Virus-ID", "Threat EICAR Test String detected")],
                Some("EICAR Test String"),
            ),
            // A name of several words is the sensor's own: kept whole.
            (
                &[("X-Virus-ID", "EICAR Test String")],
                Some("EICAR Test String"),
            ),
            (&[("ISTag", "\"x\"")], None),
        ];
        for (list, want) in cases {
            assert_eq!(threat_names(&headers(list)).as_deref(), *want, "{list:?}");
        }
    }

    #[test]
    fn policy_blocks_in_every_vendor_style() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: &[Case] = &[
            (
                &[
                    ("X-Response-Info", "BLOCKED"),
                    ("X-Response-Desc", "URL category denyhosts is BLOCKED"),
                ],
                Some("URL category denyhosts is BLOCKED"),
            ),
            (
                &[
                    ("X-Response-Info", "block"),
                    ("X-Response-Desc", "BadWords score=10>5"),
                ],
                Some("BadWords score=10>5"),
            ),
            (
                &[
                    ("X-Response-Info", "Blocked"),
                    ("X-Response-Desc", "Encrypted Archive"),
                    ("X-Blocked-Reason", "Encrypted Archive"),
                ],
                Some("Encrypted Archive"),
            ),
            (
                &[
                    ("X-Response-Info", "ALLOWED"),
                    ("X-Response-Desc", "URL category ALL is ALLOWED"),
                ],
                None,
            ),
            (
                &[("X-Infection-Found", "Type=0; Resolution=2; Threat=A;")],
                None,
            ),
        ];
        for (list, want) in cases {
            let h = headers(list);
            assert_eq!(block_reason(&h).as_deref(), *want, "{list:?}");
            assert_eq!(policy_block(&h), want.is_some(), "{list:?}");
        }
    }
}
