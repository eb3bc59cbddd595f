//! The heads of an exchange under its line (`-v`): the ICAP request head
//! and the HTTP heads it encapsulates, then the final ICAP response head
//! and its HTTP heads, as the decoder parsed them (RFC 3507 section 4.4:
//! ICAP head, then `req-hdr`, `res-hdr` in their `Encapsulated` order).
//!
//! ```text
//!     > RESPMOD icap://127.0.0.1:1344/av/respmod ICAP/1.0
//!     > Host: 127.0.0.1:1344
//!     > Encapsulated: req-hdr=0, res-hdr=54, res-body=101
//!     >
//!     > GET http://www.example.test/clean/index.html
//!     > Host: www.example.test
//!     >
//!     > 200 OK
//!     > Content-Type: text/html
//!     < ICAP/1.0 204 No Content
//!     < ISTag: "demo-1"
//! ```
//!
//! `>` marks what the client sent, `<` what the sensor answered; an empty
//! marked line separates the heads of one message. The decoder keeps no
//! HTTP version, so an HTTP start line shows method and target, or status
//! and reason. Bodies are never shown. Names and values are escaped as in
//! the line itself: a peer's control byte never reaches the terminal.

use icap_codec::{Exchange, Headers, HttpHead};

use super::format::{escape, Keep};

/// Indentation of a head line under its exchange's line.
const INDENT: &str = "    ";

/// Longest start line or field shown, in characters.
const MAX_HEAD_LINE_CHARS: usize = 400;

/// The heads of `x`, each line indented, marked and ended by a newline;
/// empty when nothing of the exchange was decoded.
pub fn exchange_heads(x: &Exchange) -> String {
    let mut out = String::new();
    if let Some(request) = &x.request {
        let start = format!(
            "{} {} {}",
            request.method.as_str(),
            String::from_utf8_lossy(&request.uri),
            String::from_utf8_lossy(&request.version)
        );
        message(&mut out, '>', &start, &request.headers, &x.request_http);
    }
    if let Some(response) = &x.response {
        let start = format!(
            "{} {} {}",
            String::from_utf8_lossy(&response.version),
            response.status,
            String::from_utf8_lossy(&response.reason)
        );
        message(&mut out, '<', &start, &response.headers, &x.response_http);
    }
    out
}

/// One message: its ICAP head, then each encapsulated HTTP head after an
/// empty line.
fn message(out: &mut String, mark: char, start: &str, headers: &Headers, http: &[HttpHead]) {
    line(out, mark, start);
    fields(out, mark, headers);
    for head in http {
        line(out, mark, "");
        let start = match (&head.method, &head.target, head.status) {
            (Some(method), target, _) => format!(
                "{} {}",
                String::from_utf8_lossy(method),
                target
                    .as_ref()
                    .map(|t| String::from_utf8_lossy(t))
                    .unwrap_or_default()
            ),
            (None, _, Some(status)) => format!(
                "{status} {}",
                head.reason
                    .as_ref()
                    .map(|r| String::from_utf8_lossy(r))
                    .unwrap_or_default()
            ),
            (None, _, None) => String::new(),
        };
        line(out, mark, start.trim_end());
        fields(out, mark, &head.headers);
    }
}

fn fields(out: &mut String, mark: char, headers: &Headers) {
    for h in headers.iter() {
        let field = format!(
            "{}: {}",
            String::from_utf8_lossy(&h.name),
            String::from_utf8_lossy(&h.value)
        );
        line(out, mark, &field);
    }
}

fn line(out: &mut String, mark: char, text: &str) {
    out.push_str(INDENT);
    out.push(mark);
    if !text.is_empty() {
        out.push(' ');
        out.push_str(&escape(text, MAX_HEAD_LINE_CHARS, Keep::SpacesAndQuotes));
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use icap_codec::{Decoder, Direction, Event, Stamp};

    /// The exchange the codec makes of `request` and `response`.
    fn decoded(request: &'static [u8], response: &'static [u8]) -> Exchange {
        let mut correlator = icap_codec::Correlator::new();
        for (dir, bytes) in [
            (Direction::Request, request),
            (Direction::Response, response),
        ] {
            let mut decoder = Decoder::new(dir);
            let mut events: Vec<Event> = Vec::new();
            decoder.decode(bytes::Bytes::from_static(bytes), &mut events);
            for event in events {
                match dir {
                    Direction::Request => correlator.on_request(event, Stamp::default()),
                    Direction::Response => correlator.on_response(event, Stamp::default()),
                }
            }
        }
        correlator.pop().expect("one exchange")
    }

    #[test]
    fn request_and_response_heads_in_wire_order() {
        let request = b"RESPMOD icap://127.0.0.1:1344/av/respmod ICAP/1.0\r\n\
            Host: 127.0.0.1:1344\r\n\
            Encapsulated: req-hdr=0, res-hdr=55, res-body=94\r\n\r\n\
            GET http://www.example.test/index.html HTTP/1.1\r\n\
            Host: www.example.test\r\n\r\n\
            HTTP/1.1 200 OK\r\n\
            Content-Type: text/html\r\n\r\n\
            5\r\nhello\r\n0\r\n\r\n";
        let response = b"ICAP/1.0 204 No Content\r\nISTag: \"demo-1\"\r\n\r\n";
        let x = decoded(request, response);
        assert_eq!(
            exchange_heads(&x),
            "    > RESPMOD icap://127.0.0.1:1344/av/respmod ICAP/1.0\n\
             \x20   > Host: 127.0.0.1:1344\n\
             \x20   > Encapsulated: req-hdr=0, res-hdr=55, res-body=94\n\
             \x20   >\n\
             \x20   > GET http://www.example.test/index.html\n\
             \x20   > Host: www.example.test\n\
             \x20   >\n\
             \x20   > 200 OK\n\
             \x20   > Content-Type: text/html\n\
             \x20   < ICAP/1.0 204 No Content\n\
             \x20   < ISTag: \"demo-1\"\n"
        );
    }

    #[test]
    fn a_peer_control_byte_in_a_head_is_escaped() {
        let request = b"OPTIONS icap://127.0.0.1/av ICAP/1.0\r\n\
            X-Note: a\x1b[2Jb\r\nEncapsulated: null-body=0\r\n\r\n";
        let response = b"ICAP/1.0 200 OK\r\nEncapsulated: null-body=0\r\n\r\n";
        let heads = exchange_heads(&decoded(request, response));
        assert!(heads.contains("    > X-Note: a\\x1b[2Jb\n"), "{heads}");
        assert_eq!(heads.matches('\x1b').count(), 0, "{heads:?}");
    }

    #[test]
    fn nothing_decoded_shows_nothing() {
        assert_eq!(exchange_heads(&Exchange::default()), "");
    }
}
