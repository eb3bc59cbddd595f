//! What Squid's icap_log would say of an exchange: its transaction
//! outcome (`%icap::to`: `ICAP_OPT`, `ICAP_ECHO`, `ICAP_PART_ECHO`,
//! `ICAP_MOD`, `ICAP_SAT`, `ICAP_ERR_*`), so a record can be laid beside
//! the ICAP client's own log line by line (docs/log-schema.md, "Squid's
//! icap_log outcome").
//!
//! Only outcomes icaptap can tell for certain are given: they follow from
//! the final status line (RFC 3507 section 4.3.3) and, for a REQMOD 200,
//! whether the adapted message is an HTTP response (section 4.8.1, request
//! satisfaction). A response that was missing, malformed or not seen whole
//! gets none: Squid's outcome then depends on its own state (a persistent
//! connection it found closed is `ICAP_ERR_RACE` and retried, an HTTP
//! client that left first is `ICAP_ERR_GONE`, anything else
//! `ICAP_ERR_OTHER`), which the wire does not show.

use super::Verdict;

/// Squid's outcome of an OPTIONS transaction.
pub const ICAP_OPT: &str = "ICAP_OPT";
/// 204: the virgin message was kept.
pub const ICAP_ECHO: &str = "ICAP_ECHO";
/// 206: part of the virgin message was kept.
pub const ICAP_PART_ECHO: &str = "ICAP_PART_ECHO";
/// 200: the virgin message was replaced with the adapted one.
pub const ICAP_MOD: &str = "ICAP_MOD";
/// 200 to a REQMOD carrying an HTTP response: request satisfaction.
pub const ICAP_SAT: &str = "ICAP_SAT";
/// Any failed transaction, an ICAP error status among them.
pub const ICAP_ERR_OTHER: &str = "ICAP_ERR_OTHER";

/// Squid's `%icap::to` for an exchange of `method` answered `status`
/// with `verdict`; `returned_response` says whether the answer carried an
/// HTTP response head (`res-hdr`). `None` when the outcome cannot be told
/// exactly (see the module header).
pub fn squid_outcome(
    verdict: Verdict,
    method: Option<&str>,
    status: Option<u16>,
    returned_response: bool,
) -> Option<&'static str> {
    let status = status?;
    match verdict {
        Verdict::Missing | Verdict::Malformed | Verdict::Unobserved => None,
        Verdict::Error => (400..600).contains(&status).then_some(ICAP_ERR_OTHER),
        Verdict::Options => (status == 200).then_some(ICAP_OPT),
        Verdict::Clean | Verdict::Modified | Verdict::Blocked | Verdict::Infected => match status {
            204 => Some(ICAP_ECHO),
            206 => Some(ICAP_PART_ECHO),
            200 if method == Some("REQMOD") && returned_response => Some(ICAP_SAT),
            200 => Some(ICAP_MOD),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Verdict, method, final status, whether an HTTP response came back,
    /// and the outcome Squid logs.
    type Case = (
        Verdict,
        &'static str,
        Option<u16>,
        bool,
        Option<&'static str>,
    );

    #[test]
    fn outcomes_follow_the_final_status_and_the_adapted_message() {
        let cases: &[Case] = &[
            (
                Verdict::Options,
                "OPTIONS",
                Some(200),
                false,
                Some(ICAP_OPT),
            ),
            (Verdict::Clean, "RESPMOD", Some(204), false, Some(ICAP_ECHO)),
            (Verdict::Clean, "REQMOD", Some(204), false, Some(ICAP_ECHO)),
            // An unchanged 200 is still a replacement to Squid.
            (Verdict::Clean, "RESPMOD", Some(200), true, Some(ICAP_MOD)),
            (
                Verdict::Modified,
                "RESPMOD",
                Some(206),
                true,
                Some(ICAP_PART_ECHO),
            ),
            (
                Verdict::Infected,
                "RESPMOD",
                Some(200),
                true,
                Some(ICAP_MOD),
            ),
            (Verdict::Blocked, "REQMOD", Some(200), true, Some(ICAP_SAT)),
            (
                Verdict::Modified,
                "REQMOD",
                Some(200),
                false,
                Some(ICAP_MOD),
            ),
            (
                Verdict::Error,
                "RESPMOD",
                Some(500),
                false,
                Some(ICAP_ERR_OTHER),
            ),
            (
                Verdict::Error,
                "OPTIONS",
                Some(404),
                false,
                Some(ICAP_ERR_OTHER),
            ),
            // What Squid logs here depends on Squid's own state.
            (Verdict::Missing, "RESPMOD", None, false, None),
            (Verdict::Malformed, "RESPMOD", Some(200), true, None),
            (Verdict::Malformed, "RESPMOD", Some(204), false, None),
            (Verdict::Unobserved, "REQMOD", Some(204), false, None),
        ];
        for (verdict, method, status, returned, want) in cases {
            assert_eq!(
                squid_outcome(*verdict, Some(method), *status, *returned),
                *want,
                "{verdict:?} {method} {status:?} returned={returned}"
            );
        }
    }
}
