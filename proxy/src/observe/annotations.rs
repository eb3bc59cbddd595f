//! Packet comments: what the observer asks the recorder to attach to the
//! capture (pcapng packet comments, README.md), one per finding and one for
//! each verdict a reader should look at, placed at the byte that caused it.

use icap_codec::{Direction, Exchange};

use super::finding::Finding;
use super::verdict::Verdict;
use crate::tap::ConnMeta;

/// Where annotations go (the recorder, when recording).
pub type AnnotationSink = Box<dyn FnMut(Annotation) + Send>;

/// A packet comment for the capture: the recorder attaches it to the packet
/// carrying byte `offset` of `dir` on `conn`.
pub use crate::capture::Annotation;

/// Packet comments for an exchange: one per finding, and one for a verdict
/// a reader should look at.
pub fn annotations_for(
    meta: &ConnMeta,
    x: &Exchange,
    verdict: Verdict,
    findings: &[Finding],
) -> Vec<Annotation> {
    let response_at = x.response.as_ref().map(|r| r.offset);
    let request_at = x.request.as_ref().map_or(0, |r| r.offset);
    let mut out: Vec<Annotation> = findings
        .iter()
        .map(|f| {
            let dir = match f.side {
                icap_codec::Side::Client => Direction::Request,
                icap_codec::Side::Server => Direction::Response,
            };
            let fallback = if dir == Direction::Response {
                response_at.unwrap_or(0)
            } else {
                request_at
            };
            Annotation {
                conn: meta.id,
                dir,
                offset: f.offset.unwrap_or(fallback),
                comment: format!(
                    "icaptap {} ({}): exchange {}/{} verdict {}: {}",
                    f.code,
                    f.severity.as_str(),
                    meta.id,
                    x.seq,
                    verdict.as_str(),
                    f.detail
                ),
            }
        })
        .collect();
    if !matches!(verdict, Verdict::Clean | Verdict::Options) {
        let (dir, offset) = match response_at {
            Some(o) => (Direction::Response, o),
            None => (Direction::Request, request_at),
        };
        out.push(Annotation {
            conn: meta.id,
            dir,
            offset,
            comment: format!(
                "icaptap verdict {}: exchange {}/{}",
                verdict.as_str(),
                meta.id,
                x.seq
            ),
        });
    }
    out
}
