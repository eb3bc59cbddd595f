//! One test per anomaly code the decoder emits: each hand-made stream in
//! tests/fixtures/malformed/<code>.req|.resp must raise its code (however
//! the stream is split), with the right side, and decoding must go on to the
//! valid message that follows.

mod common;

use bytes::Bytes;
use common::{codes, decode_all_ways, direction_of, fixture, summary};
use icap_codec::{AnomalyCode, Decoder, Direction, Event, Side};

/// Every code the decoder itself can emit (the OPTIONS checks are tested in
/// options.rs; the correlator's codes by the correlator's tests).
const DECODER_CODES: &[AnomalyCode] = &[
    AnomalyCode::StartLineInvalid,
    AnomalyCode::MethodUnknown,
    AnomalyCode::VersionUnsupported,
    AnomalyCode::UriInvalid,
    AnomalyCode::StatusUnknown,
    AnomalyCode::HeaderLineInvalid,
    AnomalyCode::HeaderDuplicate,
    AnomalyCode::LimitExceeded,
    AnomalyCode::EncapsulatedMissing,
    AnomalyCode::EncapsulatedSyntax,
    AnomalyCode::EncapsulatedOrder,
    AnomalyCode::EncapsulatedOffsetOrder,
    AnomalyCode::EncapsulatedForm,
    AnomalyCode::EncapsulatedOffsetMismatch,
    AnomalyCode::EncapsulatedEntityAbsent,
    AnomalyCode::HttpHeadInvalid,
    AnomalyCode::NullBodyWithContent,
    AnomalyCode::ChunkSizeInvalid,
    AnomalyCode::ChunkCrlfMissing,
    AnomalyCode::ChunkExtensionUnknown,
    AnomalyCode::ChunkFinalMissing,
    AnomalyCode::BodyLengthMismatch,
    AnomalyCode::PreviewInvalid,
    AnomalyCode::PreviewOverrun,
    AnomalyCode::PreviewShortWithoutIeof,
    AnomalyCode::IeofOutsidePreview,
    AnomalyCode::IstagMissing,
    AnomalyCode::IstagInvalid,
    AnomalyCode::MessageTruncated,
    AnomalyCode::StrayBytes,
    AnomalyCode::TlsOnPlainPort,
    AnomalyCode::ResponseNotIcap,
    AnomalyCode::StreamGap,
];

fn malformed(code: AnomalyCode) -> Option<(String, Vec<u8>)> {
    ["req", "resp"].iter().find_map(|ext| {
        let name = format!("malformed/{}.{ext}", code.as_str());
        common::fixtures_dir()
            .join(&name)
            .exists()
            .then(|| (name.clone(), fixture(&name)))
    })
}

/// Streams that end inside their broken message: nothing valid follows.
const NOTHING_FOLLOWS: &[AnomalyCode] = &[
    AnomalyCode::ChunkFinalMissing,
    AnomalyCode::MessageTruncated,
    AnomalyCode::TlsOnPlainPort,
];

#[test]
fn each_decoder_code_is_raised_by_its_malformed_fixture() {
    for &code in DECODER_CODES {
        if code == AnomalyCode::StreamGap {
            continue;
        }
        let (name, input) = malformed(code)
            .unwrap_or_else(|| panic!("no fixture malformed/{}.req|resp", code.as_str()));
        let direction = direction_of(&name);
        let events = decode_all_ways(direction, &input);
        let found: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::Anomaly(a) if a.code == code => Some(a),
                _ => None,
            })
            .collect();
        assert!(!found.is_empty(), "{name}: {:#?}", summary(&events));
        for a in &found {
            assert_eq!(a.side, Side::of(direction), "{name}: side");
            assert!(
                a.offset <= input.len() as u64,
                "{name}: offset past the end"
            );
            assert!(!a.detail.is_empty(), "{name}: detail");
        }
        if !NOTHING_FOLLOWS.contains(&code) {
            let tail = summary(&events[events.len() - 2..]);
            assert!(
                tail[0].starts_with("REQ OPTIONS") || tail[0].starts_with("RESP 204"),
                "{name}: decoding did not go on to the valid message: {:#?}",
                summary(&events)
            );
            assert!(tail[1].starts_with("END Complete"), "{name}: {tail:?}");
        }
    }
}

/// The exact events of a few classic cases from the field guide.
#[test]
fn classic_cases_in_detail() {
    let table: &[(&str, &[&str])] = &[
        (
            "malformed/stray-bytes.req",
            &[
                "REQ OPTIONS @0",
                "END Complete 0 @91",
                "! stray-bytes @91",
                "REQ OPTIONS @96",
                "END Complete 0 @187",
            ],
        ),
        (
            "malformed/encapsulated-offset-mismatch.req",
            &[
                "REQ REQMOD @0",
                "HTTP req-hdr GET @102+59",
                "! encapsulated-offset-mismatch @161",
                "END Complete 0 @161",
                "REQ OPTIONS @161",
                "END Complete 0 @252",
            ],
        ),
        (
            "malformed/encapsulated-entity-absent.resp",
            &[
                "RESP 200 @0",
                "! encapsulated-entity-absent @73",
                "RESP 204 @73",
                "END Complete 0 @116",
            ],
        ),
        (
            "malformed/chunk-size-invalid.resp",
            &[
                "RESP 200 @0",
                "HTTP res-hdr 200 @73+64",
                "! chunk-size-invalid @137",
                "RESP 204 @153",
                "END Complete 0 @196",
            ],
        ),
        (
            "malformed/limit-exceeded.req",
            &[
                "REQ REQMOD @0",
                "! limit-exceeded @61",
                "HTTP req-hdr GET @20112+59",
                "END Complete 0 @20171",
                "REQ OPTIONS @20171",
                "END Complete 0 @20262",
            ],
        ),
        (
            "malformed/preview-short-without-ieof.req",
            &[
                "REQ RESPMOD @0",
                "HTTP res-hdr 200 @115+64",
                "BODY 5",
                "! preview-short-without-ieof @194",
                "PREVIEW-END @194",
                "END PreviewOnly 5 @194",
                "REQ OPTIONS @194",
                "END Complete 0 @285",
            ],
        ),
        (
            "malformed/tls-on-plain-port.req",
            &["! tls-on-plain-port @0"],
        ),
        (
            // An HTTP server answered: said once, its head and body are
            // skipped quietly, and decoding goes on at the next ICAP answer.
            "malformed/response-not-icap.resp",
            &[
                "! response-not-icap @0",
                "RESP 204 @70",
                "END Complete 0 @113",
            ],
        ),
    ];
    for (name, expected) in table {
        let events = decode_all_ways(direction_of(name), &fixture(name));
        assert_eq!(summary(&events), *expected, "{name}");
    }
}

#[test]
fn stream_gap_reports_truncation_and_resynchronises() {
    let options = fixture("options.req");
    let mut decoder = Decoder::new(Direction::Request);
    let mut out = Vec::new();
    decoder.decode(Bytes::copy_from_slice(&options[..40]), &mut out);
    decoder.gap(1000, &mut out);
    assert_eq!(decoder.offset(), 1040);
    // The gap ended mid-line: the rest of some other message, then a request.
    decoder.decode(Bytes::from_static(b"tail of a lost body\r\n"), &mut out);
    decoder.decode(Bytes::from(options.clone()), &mut out);
    decoder.finish(&mut out);
    assert_eq!(
        summary(&out),
        [
            "REQ OPTIONS @0".to_string(),
            "END Complete 0 @128".into(),
            "! message-truncated @40".into(),
            "! stream-gap @40".into(),
            "REQ OPTIONS @1061".into(),
            "END Complete 0 @1189".into(),
        ][2..]
    );
    let gap_codes = codes(&out);
    assert_eq!(gap_codes, ["message-truncated", "stream-gap"]);
}

#[test]
fn gap_between_messages_is_not_a_truncation() {
    let mut decoder = Decoder::new(Direction::Response);
    let mut out = Vec::new();
    decoder.decode(Bytes::from(fixture("options.resp")), &mut out);
    assert!(decoder.is_idle());
    decoder.gap(10, &mut out);
    assert_eq!(codes(&out), ["stream-gap"]);
}

#[test]
fn severities_match_the_catalogue() {
    use icap_codec::Severity;
    for &code in DECODER_CODES {
        assert!(matches!(
            code.severity(),
            Severity::Info | Severity::Warn | Severity::Error
        ));
    }
    assert_eq!(
        AnomalyCode::ChunkExtensionUnknown.severity(),
        Severity::Info
    );
    assert_eq!(AnomalyCode::StrayBytes.severity(), Severity::Warn);
}

#[test]
fn catalogue_documents_every_decoder_code() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/anomalies.md"),
    )
    .unwrap();
    for code in DECODER_CODES.iter().chain(&[
        AnomalyCode::OptionsTransferInvalid,
        AnomalyCode::OptionsHeaderInvalid,
    ]) {
        assert!(
            doc.contains(&format!("### `{}`", code.as_str())),
            "docs/anomalies.md has no section for {}",
            code.as_str()
        );
    }
}

#[test]
fn a_non_icap_answer_says_what_it_looked_like() {
    let cases: &[(&[u8], &str)] = &[
        (
            b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n",
            "\"HTTP/1.1 200 OK\": an HTTP server",
        ),
        (
            b"SSH-2.0-OpenSSH_9.2\r\n",
            "\"SSH-2.0-OpenSSH_9.2\": an SSH server",
        ),
        (
            b"220 mail.example ESMTP\r\n",
            "\"220 mail.example ESMTP\": a text-protocol server",
        ),
        // Cut before any line end: the first bytes still tell.
        (b"HTTP/1.0 400 Bad", "\"HTTP/1.0 400 Bad\": an HTTP server"),
    ];
    for (input, want) in cases {
        let events = decode_all_ways(Direction::Response, input);
        let found: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::Anomaly(a) => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(found.len(), 1, "{want}: {:#?}", summary(&events));
        assert_eq!(found[0].code, AnomalyCode::ResponseNotIcap, "{want}");
        assert_eq!(found[0].offset, 0);
        assert!(found[0].detail.starts_with(want), "{}", found[0].detail);
    }
    // Between ICAP answers a greeting-like line is only stray bytes.
    let events = decode_all_ways(
        Direction::Response,
        b"ICAP/1.0 204 No Content\r\nISTag: \"t\"\r\n\r\n220 odd\r\n",
    );
    assert_eq!(codes(&events), ["stray-bytes"]);
}
