//! The one line an exchange gets on the console while a run goes on:
//!
//! ```text
//! 17:30:01.123 192.0.2.10:50312      RESPMOD infected   200    3.4ms http://files.example.test/eicar.com threat="Eicar-Test-Signature"
//! 17:30:02.004 192.0.2.10:50318      RESPMOD missing      -        - http://www.example.test/file.zip [server-closed-before-response]
//! ```
//!
//! Time of the request's start (UTC, as in the records and the log
//! lines), client, ICAP method, verdict, final ICAP status, latency
//! (request sent to verdict), the URL (the encapsulated HTTP URL; the ICAP
//! URI when there is none, as for OPTIONS), then the threat and the
//! anomaly codes when there are any. The columns of fixed width come
//! first so that they line up; what has no bound on its length comes
//! last. Every field is one word without spaces except the quoted threat,
//! so `awk` and `grep` can take the line apart.
//!
//! Colour (the verdict only) is for a terminal: [`Style::colour`] is
//! decided once, by whoever knows where the lines go. Whatever a peer
//! sent (URL, method, threat) is escaped: a control byte never reaches the
//! terminal as one.

use std::fmt::Write;

use crate::output::records::ExchangeRecord;

/// Longest URL shown, in characters; a longer one is cut and ends in
/// `...` (the whole URL is in exchanges.jsonl).
pub const MAX_URL_CHARS: usize = 200;

/// Longest threat name shown, in characters.
pub const MAX_THREAT_CHARS: usize = 100;

/// Width of the client column: the longest IPv4 `ip:port`.
const CLIENT_WIDTH: usize = 21;
/// Width of the method column: `RESPMOD`, `OPTIONS`.
const METHOD_WIDTH: usize = 7;
/// Width of the verdict column: `unobserved`.
const VERDICT_WIDTH: usize = 10;
/// Width of the latency column: `999.9ms`.
const LATENCY_WIDTH: usize = 8;

/// How lines are drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Style {
    /// Whether the verdict is coloured with ANSI escape codes.
    pub colour: bool,
}

/// SGR escape sequences, as every terminal since the VT100 reads them.
const RESET: &str = "\x1b[0m";

/// The colour of a verdict: green when the sensor let it through, red
/// when it stopped something, bold yellow when the integration itself is
/// at fault (nothing, an error, or garbage came back), none for the rest.
fn verdict_colour(verdict: &str) -> Option<&'static str> {
    match verdict {
        "clean" => Some("\x1b[32m"),
        "modified" => Some("\x1b[36m"),
        "infected" | "blocked" => Some("\x1b[1;31m"),
        "missing" | "malformed" | "error" => Some("\x1b[1;33m"),
        _ => None,
    }
}

/// The line of `record`, without its newline.
pub fn exchange_line(record: &ExchangeRecord, style: Style) -> String {
    let mut line = String::with_capacity(128);
    line.push_str(&clock(record.ts_us, &record.ts));
    let _ = write!(line, " {:<CLIENT_WIDTH$}", escaped(&record.client, 64));
    let method = record
        .method
        .as_deref()
        .map_or("-".into(), |m| escaped(m, 32));
    let _ = write!(line, " {method:<METHOD_WIDTH$}");
    let verdict = format!("{:<VERDICT_WIDTH$}", record.verdict);
    line.push(' ');
    match verdict_colour(&record.verdict).filter(|_| style.colour) {
        Some(colour) => {
            // The padding stays outside the colour so columns line up.
            let name = verdict.trim_end();
            let _ = write!(line, "{colour}{name}{RESET}{}", &verdict[name.len()..]);
        }
        None => line.push_str(&verdict),
    }
    let status = record
        .icap_status
        .map_or_else(|| "-".to_string(), |s| s.to_string());
    let _ = write!(line, " {status:>3}");
    let latency = record.latency_us.map_or_else(|| "-".to_string(), latency);
    let _ = write!(line, " {latency:>LATENCY_WIDTH$}");
    let url = record
        .http_url
        .as_deref()
        .or(record.uri.as_deref())
        .map_or_else(|| "-".to_string(), |u| escaped(u, MAX_URL_CHARS));
    let _ = write!(line, " {url}");
    if let Some(threat) = &record.threat {
        let _ = write!(line, " threat=\"{}\"", quoted(threat, MAX_THREAT_CHARS));
    }
    if !record.anomalies.is_empty() {
        let codes: Vec<String> = record
            .anomalies
            .iter()
            .map(|a| escaped(&a.code, 64))
            .collect();
        let _ = write!(line, " [{}]", codes.join(","));
    }
    line
}

/// `HH:MM:SS.mmm` (UTC) of `micros`; the record's own text when the
/// microseconds are missing (records written before `ts_us` existed).
fn clock(micros: u64, ts: &str) -> String {
    let at = (micros > 0)
        .then(|| time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).ok())
        .flatten();
    match at {
        Some(t) => format!(
            "{:02}:{:02}:{:02}.{:03}",
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        None => escaped(ts, 40),
    }
}

/// A latency in one word: `412us`, `3.4ms`, `1.52s`.
pub fn latency(us: u64) -> String {
    if us < 1_000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// `text` safe for a terminal and as one word of a line: control
/// characters, spaces and quotes as `\xNN` (a tab as `\t`), backslashes
/// doubled, cut to `max` characters with `...`.
pub fn escaped(text: &str, max: usize) -> String {
    escape(text, max, Keep::Nothing)
}

/// `text` safe for a terminal between double quotes: as [`escaped`], but
/// spaces stay spaces.
pub fn quoted(text: &str, max: usize) -> String {
    escape(text, max, Keep::Spaces)
}

/// What [`escape`] leaves as it is besides printable characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// One word: spaces and quotes are escaped too.
    Nothing,
    /// Between quotes: quotes are escaped, spaces kept.
    Spaces,
    /// A whole line of its own (a head line): both kept, and backslashes
    /// as sent (`DOMAIN\user`).
    SpacesAndQuotes,
}

/// `text` with every character a terminal would act on escaped (`\xNN`,
/// `\t`, `\u{NNNN}` for a bidirectional override), backslashes doubled
/// (unless [`Keep::SpacesAndQuotes`]), cut to `max` characters with `...`.
pub fn escape(text: &str, max: usize, keep: Keep) -> String {
    let mut out = String::with_capacity(text.len().min(max + 3));
    for (n, c) in text.chars().enumerate() {
        if n == max {
            out.push_str("...");
            break;
        }
        match c {
            '\\' if keep == Keep::SpacesAndQuotes => out.push('\\'),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            ' ' if keep != Keep::Nothing => out.push(' '),
            '"' if keep == Keep::SpacesAndQuotes => out.push('"'),
            '"' | ' ' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            // Bidirectional overrides would reorder what follows on the
            // screen.
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::testing::record;
    use crate::output::records::AnomalyRecord;

    fn anomaly(code: &str) -> AnomalyRecord {
        AnomalyRecord {
            code: code.into(),
            side: "server".into(),
            severity: "error".into(),
            detail: "what was seen".into(),
            offset: None,
        }
    }

    #[test]
    fn a_clean_exchange_is_one_line_of_columns() {
        assert_eq!(
            exchange_line(&record("clean"), Style::default()),
            "10:15:42.123 192.0.2.10:50312      RESPMOD clean      204    3.4ms \
             http://www.example.test/clean/index.html"
        );
    }

    #[test]
    fn threat_and_anomalies_come_last() {
        let mut r = record("infected");
        r.icap_status = Some(200);
        r.threat = Some("Eicar-Test-Signature".into());
        r.anomalies = vec![anomaly("verdict-late"), anomaly("istag-missing")];
        assert_eq!(
            exchange_line(&r, Style::default()),
            "10:15:42.123 192.0.2.10:50312      RESPMOD infected   200    3.4ms \
             http://www.example.test/clean/index.html threat=\"Eicar-Test-Signature\" \
             [verdict-late,istag-missing]"
        );
    }

    #[test]
    fn what_is_unknown_is_a_dash() {
        let mut r = record("missing");
        r.method = None;
        r.icap_status = None;
        r.latency_us = None;
        r.http_url = None;
        r.uri = None;
        assert_eq!(
            exchange_line(&r, Style::default()),
            "10:15:42.123 192.0.2.10:50312      -       missing      -        - -"
        );
    }

    #[test]
    fn options_shows_the_icap_uri() {
        let mut r = record("options");
        r.method = Some("OPTIONS".into());
        r.icap_status = Some(200);
        r.latency_us = Some(412);
        r.http_url = None;
        assert_eq!(
            exchange_line(&r, Style { colour: true }),
            "10:15:42.123 192.0.2.10:50312      OPTIONS options    200    412us \
             icap://127.0.0.1:1344/av/respmod"
        );
    }

    #[test]
    fn colour_marks_the_verdict_only_and_keeps_the_columns() {
        let cases = [
            ("clean", "\x1b[32mclean\x1b[0m     "),
            ("modified", "\x1b[36mmodified\x1b[0m  "),
            ("infected", "\x1b[1;31minfected\x1b[0m  "),
            ("blocked", "\x1b[1;31mblocked\x1b[0m   "),
            ("missing", "\x1b[1;33mmissing\x1b[0m   "),
            ("malformed", "\x1b[1;33mmalformed\x1b[0m "),
            ("error", "\x1b[1;33merror\x1b[0m     "),
            ("unobserved", "unobserved"),
        ];
        for (verdict, shown) in cases {
            let line = exchange_line(&record(verdict), Style { colour: true });
            assert_eq!(
                line,
                format!(
                    "10:15:42.123 192.0.2.10:50312      RESPMOD {shown} 204    3.4ms \
                     http://www.example.test/clean/index.html"
                ),
                "{verdict}"
            );
            let plain = exchange_line(&record(verdict), Style::default());
            assert!(!plain.contains('\x1b'), "{plain:?}");
        }
    }

    #[test]
    fn nothing_a_peer_sent_reaches_the_terminal_as_a_control_byte() {
        let mut r = record("clean");
        r.http_url = Some("http://x.test/\x1b[2J\u{9b}31m a\"b\\c\td\r\n".into());
        r.threat = Some("Bad \"one\"\x07".into());
        r.method = Some("RESP\x1bMOD".into());
        r.client = "192.0.2.10:50312\u{202e}".into();
        let line = exchange_line(&r, Style { colour: true });
        assert!(!line.contains(['\r', '\n', '\x07', '\u{9b}']), "{line:?}");
        assert_eq!(line.matches('\x1b').count(), 2, "{line:?}");
        assert!(
            line.contains("http://x.test/\\x1b[2J\\x9b31m\\x20a\\x22b\\\\c\\td\\x0d\\x0a"),
            "{line:?}"
        );
        assert!(
            line.contains("threat=\"Bad \\x22one\\x22\\x07\""),
            "{line:?}"
        );
        assert!(line.contains(" RESP\\x1bMOD "), "{line:?}");
        assert!(line.contains(" 192.0.2.10:50312\\u{202e} "), "{line:?}");
    }

    #[test]
    fn a_long_url_is_cut() {
        let mut r = record("clean");
        r.http_url = Some(format!("http://x.test/{}", "a".repeat(500)));
        let line = exchange_line(&r, Style::default());
        let url = line.split(' ').rfind(|w| w.starts_with("http")).unwrap();
        assert_eq!(url.chars().count(), MAX_URL_CHARS + 3);
        assert!(url.ends_with("aaa..."), "{url}");
    }

    #[test]
    fn latency_reads_in_one_word() {
        assert_eq!(latency(0), "0us");
        assert_eq!(latency(999), "999us");
        assert_eq!(latency(1_000), "1.0ms");
        assert_eq!(latency(999_949), "999.9ms");
        assert_eq!(latency(1_520_000), "1.52s");
    }

    #[test]
    fn a_record_without_microseconds_shows_its_text_time() {
        let mut r = record("clean");
        r.ts_us = 0;
        let line = exchange_line(&r, Style::default());
        assert!(line.starts_with("2026-11-28T10:15:42.123456Z "), "{line}");
    }
}
