//! Real ICAP streams captured between c-icap-client and c-icap (see
//! tests/fixtures/capture.sh), each decoded whole, byte by byte and split
//! at every boundary, and compared with the events a reader of the capture
//! expects. Re-capturing changes dates and so offsets: update the table.

mod common;

use bytes::Bytes;
use common::{decode_all_ways, decode_pieces, direction_of, fixture, summary};
use icap_codec::{Direction, Event};

const EXPECTED: &[(&str, &[&str])] = &[
    (
        "keepalive.req",
        &[
            "REQ OPTIONS @0",
            "END Complete 0 @128",
            "REQ OPTIONS @128",
            "END Complete 0 @256",
            "REQ REQMOD @256",
            "HTTP req-hdr GET @408+110",
            "END Complete 0 @518",
            "REQ OPTIONS @518",
            "END Complete 0 @646",
            "REQ RESPMOD @646",
            "HTTP req-hdr GET @811+109",
            "HTTP res-hdr 200 @920+112",
            "BODY 54",
            "END Complete 54 @1097",
            "REQ OPTIONS @1097",
            "END Complete 0 @1225",
        ],
    ),
    (
        "keepalive.resp",
        &[
            "RESP 200 @0",
            "END Complete 0 @311",
            "RESP 200 @311",
            "END Complete 0 @622",
            "RESP 204 @622",
            "END Complete 0 @723",
            "RESP 200 @723",
            "END Complete 0 @1034",
            "RESP 200 @1034",
            "HTTP res-hdr 200 @1166+165",
            "BODY 54",
            "END Complete 54 @1396",
            "RESP 200 @1396",
            "END Complete 0 @1707",
        ],
    ),
    ("options.req", &["REQ OPTIONS @0", "END Complete 0 @128"]),
    ("options.resp", &["RESP 200 @0", "END Complete 0 @311"]),
    (
        "preview_only.req",
        &[
            "REQ RESPMOD @0",
            "HTTP res-hdr 200 @126+64",
            "BODY 5",
            "PREVIEW-END @205",
            "END PreviewOnly 5 @205",
            "REQ OPTIONS @205",
            "END Complete 0 @296",
        ],
    ),
    (
        "reqmod.req",
        &[
            "REQ OPTIONS @0",
            "END Complete 0 @128",
            "REQ REQMOD @128",
            "HTTP req-hdr GET @280+110",
            "END Complete 0 @390",
        ],
    ),
    (
        "reqmod.resp",
        &[
            "RESP 200 @0",
            "END Complete 0 @311",
            "RESP 204 @311",
            "END Complete 0 @412",
        ],
    ),
    (
        "reqmod_preview_ieof.req",
        &[
            "REQ OPTIONS @0",
            "END Complete 0 @128",
            "REQ REQMOD @128",
            "HTTP req-hdr GET @292+155",
            "BODY 54",
            "PREVIEW-END ieof @518",
            "END Complete 54 @518",
        ],
    ),
    (
        "reqmod_preview_ieof.resp",
        &[
            "RESP 200 @0",
            "END Complete 0 @311",
            "RESP 200 @311",
            "HTTP req-hdr GET @443+208",
            "BODY 54",
            "END Complete 54 @716",
        ],
    ),
    (
        "respmod_allow204.req",
        &[
            "REQ OPTIONS @0",
            "END Complete 0 @128",
            "REQ RESPMOD @128",
            "HTTP req-hdr GET @293+109",
            "HTTP res-hdr 200 @402+112",
            "BODY 54",
            "END Complete 54 @579",
        ],
    ),
    (
        "respmod_allow204.resp",
        &[
            "RESP 200 @0",
            "END Complete 0 @311",
            "RESP 200 @311",
            "HTTP res-hdr 200 @443+165",
            "BODY 54",
            "END Complete 54 @673",
        ],
    ),
    (
        "respmod_allow206.req",
        &[
            "REQ OPTIONS @0",
            "END Complete 0 @128",
            "REQ RESPMOD @128",
            "HTTP req-hdr GET @310+109",
            "HTTP res-hdr 200 @419+112",
            "BODY 54",
            "END Complete 54 @596",
        ],
    ),
    (
        "respmod_allow206.resp",
        &[
            "RESP 200 @0",
            "END Complete 0 @311",
            "RESP 200 @311",
            "HTTP res-hdr 200 @443+165",
            "BODY 54",
            "END Complete 54 @673",
        ],
    ),
    (
        "respmod_no204.req",
        &[
            "REQ OPTIONS @0",
            "END Complete 0 @128",
            "REQ RESPMOD @128",
            "HTTP req-hdr GET @281+109",
            "HTTP res-hdr 200 @390+112",
            "BODY 54",
            "END Complete 54 @567",
        ],
    ),
    (
        "respmod_no204.resp",
        &[
            "RESP 200 @0",
            "END Complete 0 @311",
            "RESP 200 @311",
            "HTTP res-hdr 200 @443+165",
            "BODY 54",
            "END Complete 54 @673",
        ],
    ),
    (
        "respmod_nopreview.req",
        &[
            "REQ OPTIONS @0",
            "END Complete 0 @128",
            "REQ RESPMOD @128",
            "HTTP req-hdr GET @293+109",
            "HTTP res-hdr 200 @402+112",
            "BODY 54",
            "END Complete 54 @579",
        ],
    ),
    (
        "respmod_nopreview.resp",
        &[
            "RESP 200 @0",
            "END Complete 0 @311",
            "RESP 200 @311",
            "HTTP res-hdr 200 @443+165",
            "BODY 54",
            "END Complete 54 @673",
        ],
    ),
    (
        "respmod_preview_continue.req",
        &[
            "REQ OPTIONS @0",
            "END Complete 0 @128",
            "REQ RESPMOD @128",
            "HTTP req-hdr GET @308+107",
            "HTTP res-hdr 200 @415+116",
            "BODY 1024",
            "PREVIEW-END @1567",
            "BODY 101376",
            "END Complete 102400 @103123",
        ],
    ),
    (
        "respmod_preview_continue.resp",
        &[
            "RESP 200 @0",
            "END Complete 0 @311",
            "RESP 100 @311",
            "END Complete 0 @336",
            "RESP 200 @336",
            "HTTP res-hdr 200 @468+169",
            "BODY 102400",
            "END Complete 102400 @103290",
        ],
    ),
    (
        "respmod_preview_ieof.req",
        &[
            "REQ OPTIONS @0",
            "END Complete 0 @128",
            "REQ RESPMOD @128",
            "HTTP req-hdr GET @306+109",
            "HTTP res-hdr 200 @415+112",
            "BODY 54",
            "PREVIEW-END ieof @598",
            "END Complete 54 @598",
        ],
    ),
    (
        "respmod_preview_ieof.resp",
        &[
            "RESP 200 @0",
            "END Complete 0 @311",
            "RESP 204 @311",
            "END Complete 0 @412",
        ],
    ),
];

#[test]
fn every_fixture_decodes_as_expected_however_split() {
    for (name, expected) in EXPECTED {
        let events = decode_all_ways(direction_of(name), &fixture(name));
        assert_eq!(summary(&events), *expected, "fixture {name}");
    }
}

#[test]
fn every_fixture_file_is_in_the_table() {
    for entry in std::fs::read_dir(common::fixtures_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".req") || name.ends_with(".resp") {
            assert!(
                EXPECTED.iter().any(|(n, _)| *n == name),
                "fixture {name} has no expectation"
            );
        }
    }
}

#[test]
fn real_c_icap_traffic_has_no_anomalies() {
    for (name, _) in EXPECTED {
        let events = decode_pieces(direction_of(name), [Bytes::from(fixture(name))]);
        assert!(
            common::codes(&events).is_empty(),
            "{name}: {:?}",
            common::codes(&events)
        );
    }
}

#[test]
fn options_response_fields() {
    let events = decode_pieces(Direction::Response, [Bytes::from(fixture("options.resp"))]);
    let Event::ResponseHead(head) = &events[0] else {
        panic!("expected a response head, got {:?}", events[0]);
    };
    assert_eq!(head.istag.as_deref(), Some(&b"\"CI0001-XXXXXXXXX\""[..]));
    let (info, anomalies) = icap_codec::OptionsInfo::from_headers(&head.headers, head.offset);
    assert!(anomalies.is_empty());
    assert_eq!(info.methods, ["RESPMOD", "REQMOD"]);
    assert_eq!(info.preview, Some(1024));
    assert!(info.allow_204);
}

#[test]
fn body_data_is_sliced_from_the_input_not_copied() {
    let input = Bytes::from(fixture("respmod_nopreview.req"));
    let range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
    let events = decode_pieces(Direction::Request, [input.clone()]);
    let bodies: Vec<&Bytes> = events
        .iter()
        .filter_map(|e| match e {
            Event::Body(b) => Some(b),
            _ => None,
        })
        .collect();
    assert!(!bodies.is_empty());
    for body in bodies {
        assert!(range.contains(&(body.as_ptr() as usize)), "body was copied");
    }
}

#[test]
fn encapsulated_heads_carry_http_fields() {
    let events = decode_pieces(
        Direction::Request,
        [Bytes::from(fixture("respmod_nopreview.req"))],
    );
    let heads: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::HttpHead(h) => Some(h),
            _ => None,
        })
        .collect();
    assert_eq!(heads.len(), 2);
    assert_eq!(heads[0].method.as_deref(), Some(&b"GET"[..]));
    assert_eq!(
        heads[0].target.as_deref(),
        Some(&b"http://example.com/page.html"[..])
    );
    assert_eq!(heads[1].status, Some(200));
    assert_eq!(heads[1].content_length, Some(54));
    assert!(!heads[1].chunked);
}
