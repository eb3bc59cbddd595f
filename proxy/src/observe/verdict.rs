//! Verdicts: what an ICAP response means for the user's object, read the
//! way FIELD-GUIDE.md "Verdicts" describes (RFC 3507 sections 4.6 to 4.9
//! plus the vendor headers sensors use to name threats).

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
    /// A 200 carrying an HTTP error or block page, or a REQMOD answered with
    /// a response.
    Blocked,
    /// The sensor named a threat (X-Infection-Found, X-Virus-ID,
    /// X-Violations-Found, X-Response-Info: Blocked).
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
        200 if x.method() == Some(&Method::Reqmod)
            && x.response_http(EntityKind::ResHdr).is_some() =>
        {
            Verdict::Blocked
        }
        200 => match x.response_http(EntityKind::ResHdr).and_then(|h| h.status) {
            Some(status)
                if status >= 400
                    && x.request_http(EntityKind::ResHdr)
                        .and_then(|h| h.status)
                        .unwrap_or(200)
                        < 400 =>
            {
                Verdict::Blocked
            }
            _ => Verdict::Unobserved,
        },
        _ => Verdict::Unobserved,
    };
    (verdict, None)
}

/// A 200: a block page, a changed message, or the original echoed back.
fn classify_200(x: &Exchange) -> Verdict {
    let method = x.method();
    if method == Some(&Method::Reqmod) && x.response_http(EntityKind::ResHdr).is_some() {
        return Verdict::Blocked;
    }
    let returned = x.response_http(EntityKind::ResHdr);
    let original = x.request_http(EntityKind::ResHdr);
    if let Some(status) = returned.and_then(|h| h.status) {
        let original_status = original.and_then(|h| h.status).unwrap_or(200);
        if status >= 400 && original_status < 400 {
            return Verdict::Blocked;
        }
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
            if let Some(name) = param(part, "Threat") {
                names.push(name);
            }
        }
    }
    for value in headers.get_all("X-Virus-ID") {
        let name = String::from_utf8_lossy(value).trim().to_string();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    if let Some(value) = headers.get_str("X-Violations-Found") {
        names.extend(violations(value));
    }
    let blocked = headers
        .get_str("X-Response-Info")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("blocked"));
    if blocked {
        let desc = headers
            .get_str("X-Response-Desc")
            .map(|d| d.trim().to_string())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "blocked".to_string());
        names.push(desc);
    }
    names.dedup();
    (!names.is_empty()).then(|| names.join(", "))
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
        if let Some(name) = tokens.get(2 + i * 4) {
            out.push((*name).to_string());
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
            (
                &[
                    ("X-Response-Info", "Blocked"),
                    ("X-Response-Desc", "Trojan.Win32"),
                ],
                Some("Trojan.Win32"),
            ),
            (&[("X-Response-Info", "Passed")], None),
            (&[("ISTag", "\"x\"")], None),
        ];
        for (list, want) in cases {
            assert_eq!(threat_names(&headers(list)).as_deref(), *want, "{list:?}");
        }
    }
}
