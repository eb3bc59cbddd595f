//! The changes to one ICAP or encapsulated HTTP head: the values of
//! sensitive headers (continuation lines included) masked with `*` of the
//! same length and remembered as secrets, and IPv4 text given same-length
//! stand-ins with `--pseudonymise-ips`.

use super::stream_plan::Patch;
use crate::evidence::pseudonym::Pseudonyms;
use crate::evidence::redact::{is_sensitive, Secrets, MASK};

/// The patches that redact `head`, which starts at stream offset `offset`;
/// the sensitive values found are added to `secrets`.
pub(super) fn head_patches(
    offset: u64,
    head: &[u8],
    secrets: &mut Secrets,
    pseudonyms: Option<&mut Pseudonyms>,
) -> Vec<Patch> {
    let mut patches = Vec::new();
    let mut masked = head.to_vec();
    let mut pos = 0usize;
    let mut in_sensitive = false;
    let mut first = true;
    while pos < head.len() {
        let end = memchr::memchr(b'\n', &head[pos..]).map_or(head.len(), |i| pos + i);
        let line_end = if end > pos && head[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        let line = &head[pos..line_end];
        if first {
            first = false;
        } else if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            if in_sensitive {
                let lead = line.iter().take_while(|b| b.is_ascii_whitespace()).count();
                secrets.add(&line[lead..]);
                masked[pos + lead..line_end].fill(MASK);
            }
        } else if let Some(colon) = memchr::memchr(b':', line) {
            in_sensitive = is_sensitive(line[..colon].trim_ascii());
            if in_sensitive {
                let lead = line[colon + 1..]
                    .iter()
                    .take_while(|b| **b == b' ' || **b == b'\t')
                    .count();
                let start = pos + colon + 1 + lead;
                secrets.add_header_value(&head[start..line_end]);
                masked[start..line_end].fill(MASK);
            }
        } else {
            in_sensitive = false;
        }
        pos = end + 1;
    }
    if let Some(p) = pseudonyms {
        p.rewrite_text(&mut masked, true);
    }
    if masked.len() != head.len() {
        return patches;
    }
    let mut i = 0;
    while i < head.len() {
        if head[i] == masked[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < head.len() && head[i] != masked[i] {
            i += 1;
        }
        patches.push(Patch {
            at: offset + start as u64,
            bytes: masked[start..i].to_vec(),
        });
    }
    patches
}
