//! The plan of a redaction: per stream, the patches (masked header values,
//! pseudonymised addresses) and the cuts (body bytes) to make, found by
//! pass 1 ([`super::scan`]) and applied to each payload by pass 2
//! ([`super::rewrite`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;

/// A change to a stream: bytes to write at an offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Patch {
    pub(super) at: u64,
    pub(super) bytes: Vec<u8>,
}

/// What to change in one direction of one connection.
#[derive(Clone, Debug, Default)]
pub(super) struct StreamPlan {
    pub(super) patches: Vec<Patch>,
    pub(super) cuts: Vec<Range<u64>>,
}

/// The plan for a whole capture: per (sender, receiver), the plans of the
/// connections on that address pair in order.
#[derive(Debug, Default)]
pub struct CapturePlan {
    pub(super) streams: HashMap<(SocketAddr, SocketAddr), Vec<StreamPlan>>,
}

/// Applies a stream plan to the payload at stream `offset`: patches and
/// mid-payload cuts are written (cut bytes become zero); returns whether
/// anything changed and where a cut that runs to the end of the payload
/// starts.
pub(super) fn apply(plan: &StreamPlan, offset: u64, payload: &mut [u8]) -> (bool, Option<usize>) {
    let end = offset + payload.len() as u64;
    let mut changed = false;
    for p in &plan.patches {
        let p_end = p.at + p.bytes.len() as u64;
        if p_end <= offset || p.at >= end {
            continue;
        }
        let from = p.at.max(offset);
        let to = p_end.min(end);
        let src = &p.bytes[(from - p.at) as usize..(to - p.at) as usize];
        payload[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
        changed = true;
    }
    let mut tail_cut = None;
    for c in &plan.cuts {
        if c.end <= offset || c.start >= end {
            continue;
        }
        let from = (c.start.max(offset) - offset) as usize;
        let to = (c.end.min(end) - offset) as usize;
        payload[from..to].fill(0);
        changed = true;
        if to == payload.len() {
            tail_cut = Some(tail_cut.map_or(from, |t: usize| t.min(from)));
        }
    }
    (changed, tail_cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_masks_and_cuts_tails() {
        let plan = StreamPlan {
            patches: vec![Patch {
                at: 5,
                bytes: b"***".to_vec(),
            }],
            cuts: vec![Range {
                start: 12,
                end: 100,
            }],
        };
        let mut payload = b"0123456789abcdefgh".to_vec();
        let (changed, cut) = apply(&plan, 2, &mut payload);
        assert!(changed);
        assert_eq!(&payload[3..6], b"***");
        assert_eq!(cut, Some(10));
    }
}
