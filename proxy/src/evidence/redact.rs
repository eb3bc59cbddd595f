//! What `--redact` removes from logs, and the list of secrets it removes.
//! The secrets are the values of the headers that carry a person's
//! identity or credentials (RFC 3507 section 4.3 leaves identity headers to
//! practice: X-Client-Username, X-Authenticated-User/-Groups; HTTP carries
//! Cookie, Set-Cookie, Authorization, Proxy-Authorization), found in the
//! capture and in the records; each is masked with `*` of the same length
//! wherever it appears, so offsets and line layouts stay as they were.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use base64::Engine;

use crate::output::directory::create_private_file;
use crate::output::records::ExchangeRecord;

use super::pseudonym::Pseudonyms;
use super::EvidenceError;

/// Header names whose values are masked (compared without case).
pub const SENSITIVE_HEADERS: [&str; 8] = [
    "Cookie",
    "Set-Cookie",
    "Authorization",
    "Proxy-Authorization",
    "X-Client-Username",
    "X-Authenticated-User",
    "X-Authenticated-Groups",
    "X-Username",
];

/// Secrets shorter than this are not searched for in free text (one or two
/// characters would mask half a file); they are still masked where their
/// header is.
pub const MIN_SECRET_LEN: usize = 3;

/// The byte that replaces every masked byte.
pub const MASK: u8 = b'*';

/// Whether header `name` carries a secret.
pub fn is_sensitive(name: &[u8]) -> bool {
    SENSITIVE_HEADERS
        .iter()
        .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
}

/// Every secret value found so far.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    values: BTreeSet<Vec<u8>>,
}

impl Secrets {
    /// An empty list.
    pub fn new() -> Self {
        Secrets::default()
    }

    /// Adds one literal secret, and its JSON-escaped spelling.
    pub fn add(&mut self, value: &[u8]) {
        let value = value.trim_ascii();
        if value.len() < MIN_SECRET_LEN {
            return;
        }
        if let Ok(text) = std::str::from_utf8(value) {
            if let Ok(json) = serde_json::to_string(text) {
                let inner = json.trim_matches('"');
                if inner.len() != text.len() {
                    self.values.insert(inner.as_bytes().to_vec());
                }
            }
        }
        self.values.insert(value.to_vec());
    }

    /// Adds the value of a sensitive header and the pieces it is made of:
    /// the credentials of `Basic`/`Bearer` (and the decoded user and
    /// password), each cookie's value, base64-decoded identity values and
    /// the user part of `WinNT://DOMAIN/user`.
    pub fn add_header_value(&mut self, value: &[u8]) {
        self.add(value);
        let text = String::from_utf8_lossy(value).into_owned();
        if let Some((_scheme, token)) = text.trim().split_once(' ') {
            self.add(token.as_bytes());
            self.add_decoded(token.trim());
        }
        for cookie in text.split(';') {
            if let Some((_name, v)) = cookie.split_once('=') {
                self.add(v.as_bytes());
            }
        }
        self.add_decoded(text.trim());
    }

    fn add_decoded(&mut self, maybe_base64: &str) {
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(maybe_base64) else {
            return;
        };
        let Ok(decoded) = String::from_utf8(bytes) else {
            return;
        };
        self.add_identity(&decoded);
        if let Some((user, password)) = decoded.split_once(':') {
            self.add(user.as_bytes());
            self.add(password.as_bytes());
        }
    }

    /// Adds a decoded identity (`WinNT://DOMAIN/user`, `user@realm`, a
    /// group list) and its user part.
    pub fn add_identity(&mut self, identity: &str) {
        self.add(identity.as_bytes());
        for part in identity.split([',', '/', '\\']) {
            let part = part.trim();
            if !part.is_empty() && !part.ends_with(':') && !part.eq_ignore_ascii_case("WinNT") {
                self.add(part.as_bytes());
            }
        }
    }

    /// Adds the identity values of an exchange record.
    pub fn add_record(&mut self, x: &ExchangeRecord) {
        for v in [
            &x.identity.client_username,
            &x.identity.authenticated_user,
            &x.identity.authenticated_groups,
        ]
        .into_iter()
        .flatten()
        {
            self.add_identity(v);
        }
    }

    /// How many distinct secret spellings are known.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether none is known.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Masks every occurrence of every secret in `text` (same length);
    /// returns how many were masked.
    pub fn mask(&self, text: &mut [u8]) -> u64 {
        let mut n = 0;
        // Longest first, so a secret inside a longer one does not leave
        // the rest of the longer one visible.
        let mut by_len: Vec<&Vec<u8>> = self.values.iter().collect();
        by_len.sort_by_key(|v| std::cmp::Reverse(v.len()));
        for secret in by_len {
            let finder = memchr::memmem::Finder::new(secret);
            let mut from = 0;
            while let Some(at) = finder.find(&text[from..]) {
                let start = from + at;
                text[start..start + secret.len()].fill(MASK);
                n += 1;
                from = start + secret.len();
            }
        }
        n
    }
}

/// What redacting one log file did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogRedaction {
    /// Lines written.
    pub lines: u64,
    /// Secret occurrences masked.
    pub masked: u64,
}

/// Copies the text file `src` to `dst` (0600) line by line, masking every
/// secret and, with `pseudonyms`, rewriting IP addresses.
pub fn redact_text_file(
    src: &Path,
    dst: &Path,
    secrets: &Secrets,
    mut pseudonyms: Option<&mut Pseudonyms>,
) -> Result<LogRedaction, EvidenceError> {
    let read_err = |source| EvidenceError::Read {
        path: src.to_path_buf(),
        source,
    };
    let write_err = |source| EvidenceError::Write {
        path: dst.to_path_buf(),
        source,
    };
    let input = BufReader::new(File::open(src).map_err(read_err)?);
    let mut out = BufWriter::new(create_private_file(dst).map_err(write_err)?);
    let mut stats = LogRedaction::default();
    for line in input.split(b'\n') {
        let mut line = line.map_err(read_err)?;
        stats.masked += secrets.mask(&mut line);
        if let Some(p) = pseudonyms.as_deref_mut() {
            p.rewrite_text(&mut line, false);
        }
        line.push(b'\n');
        out.write_all(&line).map_err(write_err)?;
        stats.lines += 1;
    }
    out.flush().map_err(write_err)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_and_their_pieces_are_secrets() {
        let mut s = Secrets::new();
        s.add_header_value(b"Basic YWxpY2U6czNjcjN0");
        s.add_header_value(b"session=abcdef123; theme=dark");
        s.add_header_value(b"V2luTlQ6Ly9DT1JQL2JvYg==");
        let mut text =
            b"alice s3cr3t abcdef123 WinNT://CORP/bob bob YWxpY2U6czNjcjN0 dark".to_vec();
        s.mask(&mut text);
        let t = String::from_utf8(text).unwrap();
        for secret in [
            "alice",
            "s3cr3t",
            "abcdef123",
            "CORP/bob",
            "bob",
            "YWxpY2U6",
        ] {
            assert!(!t.contains(secret), "{secret} left in {t}");
        }
        assert_eq!(t.len(), 65);
    }

    #[test]
    fn short_values_are_not_searched() {
        let mut s = Secrets::new();
        s.add(b"ab");
        let mut text = b"abc".to_vec();
        assert_eq!(s.mask(&mut text), 0);
    }
}
