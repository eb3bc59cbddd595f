//! Table-driven decoder cases: each input is decoded whole, byte by byte and
//! split at every boundary, and must give exactly the listed events.

mod common;

use bytes::Bytes;
use common::{decode_all_ways, decode_pieces, summary};
use icap_codec::{Decoder, Direction, Event, Limits};

use Direction::{Request as Q, Response as R};

const RES_HDR: &str = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"; // 39 bytes

struct Case {
    name: &'static str,
    direction: Direction,
    input: String,
    expected: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    let respmod = |headers: &str, body: &str| {
        format!(
            "RESPMOD icap://s/av ICAP/1.0\r\n{headers}Encapsulated: res-hdr=0, res-body=39\r\n\r\n{RES_HDR}{body}"
        )
    };
    let options = "OPTIONS icap://s/av ICAP/1.0\r\n\r\n".to_string();
    vec![
        Case {
            name: "100 Continue is a whole message, then the final response",
            direction: R,
            input: format!(
                "ICAP/1.0 100 Continue\r\n\r\nICAP/1.0 200 OK\r\nISTag: \"t\"\r\nEncapsulated: res-hdr=0, res-body=39\r\n\r\n{RES_HDR}a\r\n0123456789\r\n0\r\n\r\n"
            ),
            expected: &[
                "RESP 100 @0",
                "END Complete 0 @25",
                "RESP 200 @25",
                "HTTP res-hdr 200 @94+39",
                "BODY 10",
                "END Complete 10 @153",
            ],
        },
        Case {
            name: "206 with use-original-body on the final chunk",
            direction: R,
            input: format!(
                "ICAP/1.0 206 Partial Content\r\nISTag: \"t\"\r\nEncapsulated: res-hdr=0, res-body=39\r\n\r\n{RES_HDR}3\r\nabc\r\n0; use-original-body=3\r\n\r\n"
            ),
            expected: &[
                "RESP 206 @0",
                "HTTP res-hdr 200 @82+39",
                "BODY 3",
                "END Complete 3 uob=3 @155",
            ],
        },
        Case {
            name: "preview without ieof, then the remainder after 100 Continue",
            direction: Q,
            input: respmod("Preview: 4\r\n", "4\r\n0123\r\n0\r\n\r\n6\r\n456789\r\n0\r\n\r\n"),
            expected: &[
                "REQ RESPMOD @0",
                "HTTP res-hdr 200 @82+39",
                "BODY 4",
                "PREVIEW-END @135",
                "BODY 6",
                "END Complete 10 @151",
            ],
        },
        Case {
            name: "preview without ieof and the stream ends: the request ended with its preview",
            direction: Q,
            input: respmod("Preview: 4\r\n", "4\r\n0123\r\n0\r\n\r\n"),
            expected: &[
                "REQ RESPMOD @0",
                "HTTP res-hdr 200 @82+39",
                "BODY 4",
                "PREVIEW-END @135",
                "END PreviewOnly 4 @135",
            ],
        },
        Case {
            name: "Preview: 0 with ieof",
            direction: Q,
            input: respmod("Preview: 0\r\n", "0; ieof\r\n\r\n"),
            expected: &[
                "REQ RESPMOD @0",
                "HTTP res-hdr 200 @82+39",
                "PREVIEW-END ieof @132",
                "! body-length-mismatch @132",
                "END Complete 0 @132",
            ],
        },
        Case {
            name: "chunk trailers are skipped",
            direction: Q,
            input: respmod("", "a\r\n0123456789\r\n0\r\nX-Trailer: yes\r\n\r\n"),
            expected: &[
                "REQ RESPMOD @0",
                "HTTP res-hdr 200 @70+39",
                "BODY 10",
                "END Complete 10 @145",
            ],
        },
        Case {
            name: "header names are case-insensitive",
            direction: R,
            input: "ICAP/1.0 200 OK\r\nistag: \"t\"\r\nENCAPSULATED: null-body=0\r\n\r\n".into(),
            expected: &["RESP 200 @0", "END Complete 0 @58"],
        },
        Case {
            name: "errors need no Encapsulated and no body",
            direction: R,
            input: "ICAP/1.0 503 Service Unavailable\r\nISTag: \"t\"\r\n\r\nICAP/1.0 404 Not Found\r\nISTag: \"t\"\r\n\r\n".into(),
            expected: &["RESP 503 @0", "END Complete 0 @48", "RESP 404 @48", "END Complete 0 @86"],
        },
        Case {
            name: "an OPTIONS request may omit Encapsulated",
            direction: Q,
            input: options.clone(),
            expected: &["REQ OPTIONS @0", "END Complete 0 @32"],
        },
        Case {
            name: "a REQMOD response may carry a request form",
            direction: R,
            input: "ICAP/1.0 200 OK\r\nISTag: \"t\"\r\nEncapsulated: req-hdr=0, req-body=28\r\n\r\nPOST / HTTP/1.1\r\nHost: h\r\n\r\n2\r\nhi\r\n0\r\n\r\n".into(),
            expected: &[
                "RESP 200 @0",
                "HTTP req-hdr POST @69+28",
                "BODY 2",
                "END Complete 2 @109",
            ],
        },
        Case {
            name: "a stray CRLF between messages",
            direction: Q,
            input: format!("{options}\r\n{options}"),
            expected: &[
                "REQ OPTIONS @0",
                "END Complete 0 @32",
                "! stray-bytes @32",
                "REQ OPTIONS @34",
                "END Complete 0 @66",
            ],
        },
        Case {
            name: "an HTTP response on the ICAP port is named, then skipped",
            direction: R,
            input: "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\nICAP/1.0 204 No Content\r\nISTag: \"t\"\r\n\r\n".into(),
            expected: &[
                "! response-not-icap @0",
                "RESP 204 @47",
                "END Complete 0 @86",
            ],
        },
        Case {
            name: "an empty chunked body",
            direction: Q,
            input: respmod("", "0\r\n\r\n"),
            expected: &[
                "REQ RESPMOD @0",
                "HTTP res-hdr 200 @70+39",
                "! body-length-mismatch @114",
                "END Complete 0 @114",
            ],
        },
        Case {
            name: "chunk data without its CRLF, then garbage: reported, then resynchronised",
            direction: Q,
            input: format!("{}{options}", respmod("", "2\r\nhello world\r\n0\r\n\r\n")),
            expected: &[
                "REQ RESPMOD @0",
                "HTTP res-hdr 200 @70+39",
                "BODY 2",
                "! chunk-crlf-missing @114",
                "! chunk-size-invalid @114",
                "REQ OPTIONS @130",
                "END Complete 0 @162",
            ],
        },
    ]
}

#[test]
fn table() {
    for case in cases() {
        let events = decode_all_ways(case.direction, case.input.as_bytes());
        assert_eq!(summary(&events), case.expected, "{}", case.name);
    }
}

#[test]
fn folded_header_lines_are_joined_with_one_space() {
    let input = "ICAP/1.0 200 OK\r\nISTag: \"t\"\r\nX-Violations-Found: 1\r\n\tEICAR.COM\r\n  Eicar-Test-Signature\r\n\t0\r\n\t0\r\nEncapsulated: null-body=0\r\n\r\n";
    let events = decode_all_ways(R, input.as_bytes());
    let Event::ResponseHead(head) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(
        head.headers.get_str("x-violations-found"),
        Some("1 EICAR.COM Eicar-Test-Signature 0 0")
    );
    assert_eq!(head.headers.len(), 3);
}

#[test]
fn http_heads_note_content_length_and_chunked() {
    let input = "RESPMOD icap://s/av ICAP/1.0\r\nEncapsulated: res-hdr=0, res-body=53\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
    let events = decode_all_ways(Q, input.as_bytes());
    let head = events
        .iter()
        .find_map(|e| match e {
            Event::HttpHead(h) => Some(h),
            _ => None,
        })
        .unwrap();
    assert!(head.chunked);
    assert_eq!(head.content_length, None);
    assert_eq!(head.reason.as_deref(), Some(&b"OK"[..]));
    assert_eq!(common::codes(&events), Vec::<&str>::new());
}

#[test]
fn request_head_fields() {
    let input = "REQMOD icap://s/av?mode=1 ICAP/1.0\r\nAllow: 204, 206\r\nPreview: 0\r\nEncapsulated: req-hdr=0, null-body=18\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    let events = decode_all_ways(Q, input.as_bytes());
    let Event::RequestHead(head) = &events[0] else {
        panic!("{events:?}")
    };
    assert!(head.allow_204 && head.allow_206);
    assert_eq!(head.preview, Some(0));
    assert_eq!(&head.uri[..], b"icap://s/av?mode=1");
    assert_eq!(head.head_len, 106);
    assert_eq!(summary(&events).last().unwrap(), "END Complete 0 @124");
}

#[test]
fn small_limits_are_enforced_and_decoding_goes_on() {
    let limits = Limits {
        max_headers: 2,
        max_head_len: 200,
        ..Limits::DEFAULT
    };
    let many = "ICAP/1.0 204 No Content\r\nISTag: \"t\"\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    let long = format!(
        "ICAP/1.0 204 No Content\r\nISTag: \"t\"\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(300)
    );
    let input = Bytes::from(format!("{many}{long}{many}"));
    let mut decoder = Decoder::with_limits(R, limits);
    let mut out = Vec::new();
    decoder.decode(input, &mut out);
    decoder.finish(&mut out);
    let s = summary(&out);
    assert_eq!(
        s.iter()
            .filter(|l| l.starts_with("! limit-exceeded"))
            .count(),
        3,
        "{s:#?}"
    );
    assert_eq!(
        s.iter().filter(|l| l.starts_with("END Complete")).count(),
        3,
        "{s:#?}"
    );
}

#[test]
fn a_large_body_in_small_pieces_streams_out_piecewise() {
    let body = vec![b'x'; 1 << 20];
    let mut input = format!(
        "RESPMOD icap://s/av ICAP/1.0\r\nEncapsulated: res-hdr=0, res-body=39\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .replace("res-body=39", &format!("res-body={}", 37 + body.len().to_string().len()))
    .into_bytes();
    for chunk in body.chunks(10_000) {
        input.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        input.extend_from_slice(chunk);
        input.extend_from_slice(b"\r\n");
    }
    input.extend_from_slice(b"0\r\n\r\n");
    let input = Bytes::from(input);
    let pieces: Vec<Bytes> = (0..input.len())
        .step_by(4096)
        .map(|i| input.slice(i..(i + 4096).min(input.len())))
        .collect();
    let events = decode_pieces(Q, pieces);
    let bodies = events
        .iter()
        .filter(|e| matches!(e, Event::Body(_)))
        .count();
    assert!(bodies > 256, "the body came out in {bodies} pieces");
    assert_eq!(
        summary(&events).last().unwrap(),
        &format!("END Complete {} @{}", body.len(), input.len())
    );
    assert!(common::codes(&events).is_empty());
}
