//! Deliberately broken answers, for testing how ICAP clients (and icaptap's
//! own observer) cope with servers that violate RFC 3507: a wrong
//! `Encapsulated` offset (section 4.4.1), `100 Continue` after `ieof`
//! (section 4.5), 204 without `Allow: 204` (section 4.6), no `ISTag`
//! (section 4.7), and a broken chunked body.

use bytes::{BufMut, BytesMut};
use icap_codec::EntityKind;

use super::answers::{self, Original};
use crate::toolkit::scenario::Defect;
use crate::toolkit::wire::{encapsulated_value, push_last_chunk, HeadBuilder};

/// How far past the real end of the HTTP head the bad offset points.
const OFFSET_ERROR: usize = 10;

/// The bytes of an answer with `defect`. `allow_204` says whether the
/// request allowed 204, so `missing-istag` breaks only the ISTag.
pub fn answer(
    defect: Defect,
    original: &Original<'_>,
    istag: &str,
    allow_204: bool,
) -> Vec<BytesMut> {
    match defect {
        Defect::BadEncapsulatedOffsets => vec![bad_encapsulated_offsets(original, istag)],
        Defect::ContinueAfterIeof => {
            vec![answers::continue_100(), answers::no_content(Some(istag))]
        }
        Defect::NoContentWithoutAllow => vec![answers::no_content(Some(istag))],
        Defect::MissingIstag if allow_204 => vec![answers::no_content(None)],
        Defect::MissingIstag => vec![answers::echo(original, None)],
        Defect::BrokenChunking => vec![broken_chunking(original, istag)],
    }
}

/// Whether the answer for `defect` leaves the client unable to find the
/// end of the message, so the sensor closes the connection after it.
pub fn breaks_framing(defect: Defect) -> bool {
    matches!(
        defect,
        Defect::BadEncapsulatedOffsets | Defect::BrokenChunking
    )
}

/// A 200 echo whose body offset lies `OFFSET_ERROR` bytes past the end of
/// the HTTP head, so it does not fall on the head's CRLFCRLF.
fn bad_encapsulated_offsets(original: &Original<'_>, istag: &str) -> BytesMut {
    let parts = answers::echo_parts(original);
    let heads: Vec<(EntityKind, &[u8])> = parts.heads.iter().map(|(k, b)| (*k, &b[..])).collect();
    let true_value = encapsulated_value(&heads, parts.body_kind);
    let head_total: usize = heads.iter().map(|(_, b)| b.len()).sum();
    let wrong = format!("{}={}", parts.body_kind.as_str(), head_total + OFFSET_ERROR);
    let value = match true_value.rsplit_once(", ") {
        Some((before, _)) => format!("{before}, {wrong}"),
        None => wrong,
    };
    let mut out = HeadBuilder::new("ICAP/1.0 200 OK")
        .header("Server", answers::SERVER_NAME)
        .header("ISTag", istag)
        .header("Encapsulated", value)
        .finish();
    for (_, bytes) in &heads {
        out.put_slice(bytes);
    }
    if parts.body_kind != EntityKind::NullBody {
        crate::toolkit::wire::push_chunked_body(&mut out, original.body);
    }
    out
}

/// A 200 echo whose first chunk-size line is not hexadecimal.
fn broken_chunking(original: &Original<'_>, istag: &str) -> BytesMut {
    let mut parts = answers::echo_parts(original);
    if parts.body_kind == EntityKind::NullBody {
        // Without a body there is nothing to break: send one anyway, as a
        // broken server would.
        parts.body_kind = match original.method {
            icap_codec::Method::Reqmod => EntityKind::ReqBody,
            _ => EntityKind::ResBody,
        };
    }
    let mut out = answers::two_hundred(Some(istag), &[], &[], &parts, b"");
    // two_hundred wrote `0\r\n\r\n` for the empty body: replace it.
    out.truncate(out.len() - b"0\r\n\r\n".len());
    out.put_slice(format!("z{:x}\r\n", original.body.len().max(1)).as_bytes());
    out.put_slice(if original.body.is_empty() {
        b"x"
    } else {
        original.body
    });
    out.put_slice(b"\r\n");
    push_last_chunk(&mut out, false);
    out
}
