//! One condition of a filter, `FIELD OP VALUE`: which fields there are,
//! how each value is read (and refused, with what to write instead), and
//! how a condition is tested against an [`ExchangeRecord`]. Every field is
//! a field of the exchange record itself, so no connection record is ever
//! needed to match.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use regex::Regex;

use super::error::FilterError;
use super::lexer::Op;
use crate::observe::codes::{self, edit_distance};
use crate::observe::verdict::Verdict;
use crate::output::records::ExchangeRecord;

/// A field a condition tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    /// `verdict`.
    Verdict,
    /// `anomaly`: one of the exchange's anomaly codes.
    Anomaly,
    /// `method`: the ICAP method.
    Method,
    /// `service`: the ICAP URI's path, or its last segment.
    Service,
    /// `client`: the ICAP client's address.
    Client,
    /// `url`: the encapsulated HTTP URL.
    Url,
    /// `exchange`: `CONN/SEQ` or `CONN`.
    Exchange,
    /// `after`: the request started at or after a time.
    After,
    /// `before`: the request started before a time.
    Before,
}

/// Every field, by the name written.
pub(crate) const FIELDS: [(&str, Field); 9] = [
    ("verdict", Field::Verdict),
    ("anomaly", Field::Anomaly),
    ("method", Field::Method),
    ("service", Field::Service),
    ("client", Field::Client),
    ("url", Field::Url),
    ("exchange", Field::Exchange),
    ("after", Field::After),
    ("before", Field::Before),
];

/// The `anomaly` value that matches an exchange with any anomaly.
pub const ANY_ANOMALY: &str = "any";

impl Field {
    /// The field named `name` (case-insensitive).
    pub(crate) fn named(name: &str) -> Option<Field> {
        FIELDS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, f)| *f)
    }

    /// What to write after `field=`, for hints.
    pub(crate) fn example(self) -> &'static str {
        match self {
            Field::Verdict => "verdict=blocked",
            Field::Anomaly => "anomaly=verdict-timeout (or anomaly=any)",
            Field::Method => "method=RESPMOD",
            Field::Service => "service=/avscan, service=avscan or service~scan",
            Field::Client => "client=10.0.0.5, client=10.0.0.5:51234 or client=10.0.0.0/24",
            Field::Url => "url~\"\\.exe$\" or url=\"http://example.com/\"",
            Field::Exchange => "exchange=3/0 (connection 3, its first exchange) or exchange=3",
            Field::After => "after=2026-12-03T17:00:00Z or after=+5m (from the run's start)",
            Field::Before => "before=2026-12-03T17:30:00Z or before=+1h (from the run's start)",
        }
    }

    /// Whether `~` and `!~` apply.
    fn takes_regex(self) -> bool {
        matches!(self, Field::Url | Field::Service)
    }
}

/// The name of the field most like `name`, if one is close.
pub(crate) fn closest_field(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    FIELDS
        .iter()
        .map(|(n, _)| (edit_distance(&name, n), *n))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, n)| n)
}

/// A point in time a condition compares with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum When {
    /// Microseconds since the UNIX epoch.
    At(u64),
    /// Microseconds after the run started.
    FromStart(u64),
}

/// What a `client` value names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientMatch {
    /// One address and port.
    Socket(SocketAddr),
    /// One address, any port.
    Ip(IpAddr),
    /// A network: address and prefix length.
    Net(IpAddr, u8),
}

/// How a text field is compared.
#[derive(Clone, Debug)]
pub(crate) enum TextMatch {
    /// Equal to this.
    Exact(String),
    /// The regular expression finds a match.
    Regex(Regex),
}

/// One condition, its value read.
#[derive(Clone, Debug)]
pub(crate) enum Condition {
    /// The verdict is this one.
    Verdict(&'static str),
    /// The exchange has an anomaly with this code (`None`: any anomaly).
    Anomaly(Option<String>),
    /// The ICAP method, upper case.
    Method(String),
    /// The service path.
    Service(TextMatch),
    /// The client address.
    Client(ClientMatch),
    /// The encapsulated HTTP URL.
    Url(TextMatch),
    /// The exchange id: connection, and exchange on it (`None`: all).
    Exchange(u64, Option<u64>),
    /// Started at or after.
    After(When),
    /// Started before.
    Before(When),
}

/// The bad-value error for `field`, over `span`.
fn bad(text: &str, span: Range<usize>, field: Field, what: String) -> FilterError {
    FilterError::at(text, span, what, format!("write {}", field.example()))
}

impl Condition {
    /// Reads `value` (at `span` of `text`) for `field` compared by `op`.
    /// `op_span` is where the operator is, for an operator the field does
    /// not take.
    pub(crate) fn parse(
        text: &str,
        field: Field,
        op: Op,
        op_span: Range<usize>,
        value: &str,
        span: Range<usize>,
    ) -> Result<Condition, FilterError> {
        let regex = matches!(op, Op::Regex | Op::NotRegex);
        if regex && !field.takes_regex() {
            return Err(FilterError::at(
                text,
                op_span,
                format!(
                    "`{}` compares with a regular expression, which only url and service take",
                    op.as_str()
                ),
                format!("write = or != here, e.g. {}", field.example()),
            ));
        }
        if value.is_empty() {
            return Err(bad(text, span, field, "the value is empty".to_string()));
        }
        let text_match = |value: &str| -> Result<TextMatch, FilterError> {
            if regex {
                Regex::new(value).map(TextMatch::Regex).map_err(|e| {
                    let detail = e.to_string();
                    let last = detail.lines().last().unwrap_or("").trim().to_string();
                    bad(
                        text,
                        span.clone(),
                        field,
                        format!("not a regular expression: {last}"),
                    )
                })
            } else {
                Ok(TextMatch::Exact(value.to_string()))
            }
        };
        Ok(match field {
            Field::Verdict => {
                let lower = value.to_ascii_lowercase();
                match Verdict::ALL.iter().find(|v| v.as_str() == lower) {
                    Some(v) => Condition::Verdict(v.as_str()),
                    None => {
                        let names: Vec<&str> = Verdict::ALL.iter().map(|v| v.as_str()).collect();
                        let near = names
                            .iter()
                            .map(|n| (edit_distance(&lower, n), *n))
                            .filter(|(d, _)| *d <= 2)
                            .min()
                            .map(|(_, n)| format!("did you mean `verdict={n}`? "))
                            .unwrap_or_default();
                        return Err(FilterError::at(
                            text,
                            span,
                            format!("`{value}` is not a verdict"),
                            format!("{near}verdicts are {}", names.join(", ")),
                        ));
                    }
                }
            }
            Field::Anomaly => {
                if value.eq_ignore_ascii_case(ANY_ANOMALY) {
                    Condition::Anomaly(None)
                } else if codes::all_codes().any(|c| c == value) {
                    Condition::Anomaly(Some(value.to_string()))
                } else {
                    let near = codes::closest(value)
                        .map(|c| format!("did you mean `anomaly={c}`? "))
                        .unwrap_or_default();
                    return Err(FilterError::at(
                        text,
                        span,
                        format!("`{value}` is not an anomaly code icaptap reports"),
                        format!("{near}write anomaly=any for every anomaly, or a code from docs/anomalies.md"),
                    ));
                }
            }
            Field::Method => {
                if !value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(bad(
                        text,
                        span,
                        field,
                        format!("`{value}` is not a method name"),
                    ));
                }
                Condition::Method(value.to_ascii_uppercase())
            }
            Field::Service => Condition::Service(text_match(value)?),
            Field::Url => Condition::Url(text_match(value)?),
            Field::Client => Condition::Client(parse_client(value).ok_or_else(|| {
                bad(
                    text,
                    span,
                    field,
                    format!("`{value}` is not an IP address, ip:port or network (CIDR)"),
                )
            })?),
            Field::Exchange => {
                let (conn, seq) = match value.split_once('/') {
                    Some((c, s)) => (c, Some(s)),
                    None => (value, None),
                };
                let number = |s: &str| s.parse::<u64>().ok();
                match (number(conn), seq.map(number)) {
                    (Some(c), None) => Condition::Exchange(c, None),
                    (Some(c), Some(Some(s))) => Condition::Exchange(c, Some(s)),
                    _ => {
                        return Err(bad(
                            text,
                            span,
                            field,
                            format!("`{value}` is not an exchange id (the conn/seq of a record)"),
                        ))
                    }
                }
            }
            Field::After | Field::Before => {
                let when = parse_when(value).map_err(|why| bad(text, span, field, why))?;
                if field == Field::After {
                    Condition::After(when)
                } else {
                    Condition::Before(when)
                }
            }
        })
    }

    /// Whether the condition holds for `r`; times relative to the run's
    /// start count from `run_start` (a relative time never holds without
    /// one).
    pub(crate) fn matches(&self, r: &ExchangeRecord, run_start: Option<u64>) -> bool {
        match self {
            Condition::Verdict(v) => r.verdict == *v,
            Condition::Anomaly(None) => !r.anomalies.is_empty(),
            Condition::Anomaly(Some(code)) => r.anomalies.iter().any(|a| a.code == *code),
            Condition::Method(m) => r
                .method
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(m)),
            Condition::Service(m) => r.service.as_deref().is_some_and(|s| service_matches(m, s)),
            Condition::Url(TextMatch::Exact(u)) => r.http_url.as_deref() == Some(u.as_str()),
            Condition::Url(TextMatch::Regex(re)) => {
                r.http_url.as_deref().is_some_and(|u| re.is_match(u))
            }
            Condition::Client(c) => client_matches(*c, &r.client),
            Condition::Exchange(conn, seq) => r.conn == *conn && seq.is_none_or(|s| r.seq == s),
            Condition::After(w) => match (record_time(r), resolve(*w, run_start)) {
                (Some(t), Some(at)) => t >= at,
                _ => false,
            },
            Condition::Before(w) => match (record_time(r), resolve(*w, run_start)) {
                (Some(t), Some(at)) => t < at,
                _ => false,
            },
        }
    }

    /// Whether the condition counts from the run's start.
    pub(crate) fn uses_run_start(&self) -> bool {
        matches!(
            self,
            Condition::After(When::FromStart(_)) | Condition::Before(When::FromStart(_))
        )
    }
}

fn resolve(w: When, run_start: Option<u64>) -> Option<u64> {
    match w {
        When::At(t) => Some(t),
        When::FromStart(d) => run_start.map(|s| s.saturating_add(d)),
    }
}

/// When the exchange's request started, microseconds since the epoch
/// (from `ts` in records older than `ts_us`).
fn record_time(r: &ExchangeRecord) -> Option<u64> {
    if r.ts_us > 0 {
        Some(r.ts_us)
    } else {
        crate::output::parse_rfc3339(&r.ts)
    }
}

fn service_matches(m: &TextMatch, path: &str) -> bool {
    match m {
        TextMatch::Regex(re) => re.is_match(path),
        TextMatch::Exact(want) if want.starts_with('/') => path == want,
        TextMatch::Exact(want) => {
            path.trim_start_matches('/') == want
                || path.rsplit('/').find(|s| !s.is_empty()) == Some(want.as_str())
        }
    }
}

/// Reads `10.0.0.5`, `10.0.0.5:51234`, `[::1]:1344`, `::1` or `10.0.0.0/24`.
fn parse_client(value: &str) -> Option<ClientMatch> {
    if let Ok(s) = value.parse::<SocketAddr>() {
        return Some(ClientMatch::Socket(s));
    }
    let unbracketed = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Some(ClientMatch::Ip(ip));
    }
    let (ip, len) = value.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some(ClientMatch::Net(ip, len))
}

fn client_matches(m: ClientMatch, client: &str) -> bool {
    let Some(addr) = client
        .parse::<SocketAddr>()
        .ok()
        .map(|s| (s.ip().to_canonical(), Some(s.port())))
        .or_else(|| {
            client
                .parse::<IpAddr>()
                .ok()
                .map(|ip| (ip.to_canonical(), None))
        })
    else {
        return false;
    };
    match m {
        ClientMatch::Socket(s) => addr == (s.ip().to_canonical(), Some(s.port())),
        ClientMatch::Ip(ip) => addr.0 == ip.to_canonical(),
        ClientMatch::Net(net, len) => in_network(addr.0, net.to_canonical(), len),
    }
}

fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    let bits = |ip: IpAddr| -> (u128, u32) {
        match ip {
            IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
            IpAddr::V6(v) => (u128::from(v), 128),
        }
    };
    let (a, width_a) = bits(ip);
    let (b, width_b) = bits(net);
    if width_a != width_b {
        return false;
    }
    let len = u32::from(len);
    if len == 0 {
        return true;
    }
    let shift = width_a - len;
    (a >> shift) == (b >> shift)
}

/// Reads an RFC 3339 time or `+DURATION` (after the run's start).
fn parse_when(value: &str) -> Result<When, String> {
    if let Some(rest) = value.strip_prefix('+') {
        let d = crate::units::parse_duration(rest)?;
        return Ok(When::FromStart(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
        ));
    }
    crate::output::parse_rfc3339(value)
        .map(When::At)
        .ok_or_else(|| {
            format!("`{value}` is neither an RFC 3339 time nor +DURATION from the run's start")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses_and_no_others() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_network(ip("10.1.2.3"), ip("10.0.0.0"), 8));
        assert!(!in_network(ip("11.1.2.3"), ip("10.0.0.0"), 8));
        assert!(in_network(ip("192.168.7.200"), ip("192.168.7.0"), 24));
        assert!(in_network(ip("1.2.3.4"), ip("0.0.0.0"), 0));
        assert!(in_network(ip("::1"), ip("::1"), 128));
        assert!(!in_network(ip("::1"), ip("127.0.0.1"), 8));
    }

    #[test]
    fn client_values() {
        assert_eq!(
            parse_client("10.0.0.5:51234"),
            Some(ClientMatch::Socket("10.0.0.5:51234".parse().unwrap()))
        );
        assert_eq!(
            parse_client("[::1]"),
            Some(ClientMatch::Ip("::1".parse().unwrap()))
        );
        assert_eq!(parse_client("10.0.0.0/33"), None);
        assert_eq!(parse_client("host.example"), None);
        assert!(client_matches(
            parse_client("127.0.0.1").unwrap(),
            "[::ffff:127.0.0.1]:4000"
        ));
    }

    #[test]
    fn services_by_path_or_name() {
        let exact = |s: &str| TextMatch::Exact(s.to_string());
        assert!(service_matches(&exact("/av/respmod"), "/av/respmod"));
        assert!(!service_matches(&exact("/av"), "/av/respmod"));
        assert!(service_matches(&exact("respmod"), "/av/respmod"));
        assert!(service_matches(&exact("av/respmod"), "/av/respmod"));
        assert!(!service_matches(&exact("av"), "/av/respmod"));
    }

    #[test]
    fn times() {
        assert_eq!(parse_when("+90s"), Ok(When::FromStart(90_000_000)));
        assert_eq!(parse_when("+1m30s"), Ok(When::FromStart(90_000_000)));
        assert_eq!(parse_when("1970-01-01T00:00:01Z"), Ok(When::At(1_000_000)));
        assert!(parse_when("yesterday").is_err());
        assert!(parse_when("+soon").is_err());
    }
}
