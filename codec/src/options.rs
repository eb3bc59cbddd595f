//! OPTIONS responses (RFC 3507 section 4.10): the service's capabilities,
//! parsed into a typed struct, and the checks RFC 3507 section 4.10.2 asks
//! of its headers.

use bytes::Bytes;

use crate::anomaly::{Anomaly, AnomalyCode, Side};
use crate::event::Headers;
use crate::head::parse_decimal;

/// What an OPTIONS response says about a service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OptionsInfo {
    /// `Methods`: the methods the service supports.
    pub methods: Vec<String>,
    /// `Service`: a description of the server software.
    pub service: Option<String>,
    /// `ISTag`, quotes included.
    pub istag: Option<Bytes>,
    /// `Max-Connections`.
    pub max_connections: Option<u64>,
    /// `Options-TTL` in seconds.
    pub options_ttl: Option<u64>,
    /// `Allow: 204`.
    pub allow_204: bool,
    /// `Allow: 206`.
    pub allow_206: bool,
    /// `Preview`: bytes the server wants to see first.
    pub preview: Option<u64>,
    /// `Transfer-Preview` file extensions.
    pub transfer_preview: Vec<String>,
    /// `Transfer-Ignore` file extensions.
    pub transfer_ignore: Vec<String>,
    /// `Transfer-Complete` file extensions.
    pub transfer_complete: Vec<String>,
    /// `Service-ID`.
    pub service_id: Option<String>,
    /// `X-Include`: headers the server wants in every request.
    pub x_include: Vec<String>,
}

/// The headers that say which file extensions get a preview, are ignored, or
/// are sent whole (RFC 3507 section 4.10.2).
const TRANSFER_HEADERS: [&str; 3] = ["Transfer-Preview", "Transfer-Ignore", "Transfer-Complete"];

impl OptionsInfo {
    /// Reads the capabilities out of an OPTIONS response's headers, and
    /// reports what is wrong with them (side Server, at `offset`, the
    /// response's stream offset): Methods missing or empty; Max-Connections,
    /// Options-TTL or Preview not numeric; the `*` wildcard not in exactly
    /// one Transfer-* header (checked when any Transfer-* header is sent).
    pub fn from_headers(headers: &Headers, offset: u64) -> (OptionsInfo, Vec<Anomaly>) {
        let mut anomalies = Vec::new();
        let mut invalid = |code: AnomalyCode, detail: String| {
            anomalies.push(Anomaly::new(code, Side::Server, offset, detail));
        };
        let text = |name: &str| {
            headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let list = |name: &str| -> Vec<String> {
            headers
                .get_all(name)
                .flat_map(|v| v.split(|&b| b == b','))
                .map(|item| String::from_utf8_lossy(item.trim_ascii()).into_owned())
                .filter(|item| !item.is_empty())
                .collect()
        };
        let mut number = |name: &str| -> Option<u64> {
            let value = headers.get(name)?;
            let parsed = parse_decimal(value);
            if parsed.is_none() {
                invalid(
                    AnomalyCode::OptionsHeaderInvalid,
                    format!(
                        "{name}: {:?} is not a non-negative integer",
                        String::from_utf8_lossy(value)
                    ),
                );
            }
            parsed
        };
        let max_connections = number("Max-Connections");
        let options_ttl = number("Options-TTL");
        let preview = number("Preview");
        let allow = list("Allow");
        let info = OptionsInfo {
            methods: list("Methods"),
            service: text("Service"),
            istag: headers.get("ISTag").cloned(),
            max_connections,
            options_ttl,
            allow_204: allow.iter().any(|a| a == "204"),
            allow_206: allow.iter().any(|a| a == "206"),
            preview,
            transfer_preview: list("Transfer-Preview"),
            transfer_ignore: list("Transfer-Ignore"),
            transfer_complete: list("Transfer-Complete"),
            service_id: text("Service-ID"),
            x_include: list("X-Include"),
        };
        if info.methods.is_empty() {
            anomalies.push(Anomaly::new(
                AnomalyCode::OptionsHeaderInvalid,
                Side::Server,
                offset,
                "the OPTIONS response lists no Methods".to_string(),
            ));
        }
        let lists = [
            &info.transfer_preview,
            &info.transfer_ignore,
            &info.transfer_complete,
        ];
        let sent = TRANSFER_HEADERS.iter().any(|name| headers.contains(name));
        let wildcards = lists
            .iter()
            .filter(|l| l.iter().any(|item| item == "*"))
            .count();
        if sent && wildcards != 1 {
            anomalies.push(Anomaly::new(
                AnomalyCode::OptionsTransferInvalid,
                Side::Server,
                offset,
                format!(
                    "`*` appears in {wildcards} of Transfer-Preview, Transfer-Ignore and \
                     Transfer-Complete; exactly one must hold it"
                ),
            ));
        }
        (info, anomalies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Header;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers(
            pairs
                .iter()
                .map(|(n, v)| Header {
                    name: Bytes::copy_from_slice(n.as_bytes()),
                    value: Bytes::copy_from_slice(v.as_bytes()),
                })
                .collect(),
        )
    }

    fn codes(pairs: &[(&str, &str)]) -> Vec<AnomalyCode> {
        OptionsInfo::from_headers(&headers(pairs), 7)
            .1
            .iter()
            .map(|a| a.code)
            .collect()
    }

    #[test]
    fn c_icap_echo_options() {
        let (info, anomalies) = OptionsInfo::from_headers(
            &headers(&[
                ("Methods", "RESPMOD, REQMOD"),
                ("Service", "C-ICAP/0.5.10 server - Echo demo service"),
                ("ISTag", "\"CI0001-XXXXXXXXX\""),
                ("Transfer-Preview", "*"),
                ("Options-TTL", "3600"),
                ("Preview", "1024"),
                ("Allow", "204"),
                ("X-Include", "X-Authenticated-User, X-Authenticated-Groups"),
                ("Max-Connections", "100"),
            ]),
            0,
        );
        assert!(anomalies.is_empty(), "{anomalies:?}");
        assert_eq!(info.methods, ["RESPMOD", "REQMOD"]);
        assert_eq!(info.preview, Some(1024));
        assert_eq!(info.options_ttl, Some(3600));
        assert_eq!(info.max_connections, Some(100));
        assert!(info.allow_204 && !info.allow_206);
        assert_eq!(info.transfer_preview, ["*"]);
        assert_eq!(
            info.x_include,
            ["X-Authenticated-User", "X-Authenticated-Groups"]
        );
    }

    #[test]
    fn violations() {
        use AnomalyCode::*;
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [AnomalyCode]);
        let table: &[Case<'_>] = &[
            (&[("Methods", "REQMOD")], &[]),
            (&[], &[OptionsHeaderInvalid]),
            (&[("Methods", "")], &[OptionsHeaderInvalid]),
            (
                &[("Methods", "REQMOD"), ("Max-Connections", "many")],
                &[OptionsHeaderInvalid],
            ),
            (
                &[("Methods", "REQMOD"), ("Options-TTL", "-1")],
                &[OptionsHeaderInvalid],
            ),
            (
                &[("Methods", "REQMOD"), ("Preview", "1k")],
                &[OptionsHeaderInvalid],
            ),
            (
                &[("Methods", "REQMOD"), ("Transfer-Preview", "exe")],
                &[OptionsTransferInvalid],
            ),
            (
                &[
                    ("Methods", "REQMOD"),
                    ("Transfer-Preview", "*"),
                    ("Transfer-Complete", "*"),
                ],
                &[OptionsTransferInvalid],
            ),
            (
                &[
                    ("Methods", "REQMOD"),
                    ("Transfer-Ignore", "jpg"),
                    ("Transfer-Complete", "*"),
                ],
                &[],
            ),
        ];
        for (pairs, expected) in table {
            assert_eq!(&codes(pairs), expected, "{pairs:?}");
        }
        assert_eq!(OptionsInfo::from_headers(&headers(&[]), 7).1[0].offset, 7);
    }
}
