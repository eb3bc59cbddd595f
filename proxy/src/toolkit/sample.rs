//! Built-in request bodies for the client and the load generator: a clean
//! HTML page, the EICAR anti-malware test file, and a large clean file that
//! exercises preview and `100 Continue` (RFC 3507 section 4.5).

use bytes::Bytes;

/// The EICAR anti-malware test file: 68 bytes every scanner reports as
/// infected, harmless by design (https://www.eicar.org/download-anti-malware-testfile/).
pub const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// The threat name vendors give the EICAR test file.
pub const EICAR_THREAT: &str = "EICAR-Test-File";

/// Size of the `large` sample: well past the usual preview sizes and past
/// 65,536 bytes, where buffer deadlocks classically show up.
pub const LARGE_SAMPLE_LEN: usize = 1024 * 1024;

/// A built-in body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sample {
    /// A small clean HTML page.
    Clean,
    /// The EICAR test file.
    Eicar,
    /// A 1 MiB clean file.
    Large,
}

impl Sample {
    /// The body bytes.
    pub fn body(self) -> Bytes {
        match self {
            Sample::Clean => Bytes::from_static(CLEAN_PAGE),
            Sample::Eicar => Bytes::from_static(EICAR),
            Sample::Large => large_body(LARGE_SAMPLE_LEN),
        }
    }

    /// The HTTP `Content-Type` a web server would send with it.
    pub fn content_type(self) -> &'static str {
        match self {
            Sample::Clean => "text/html; charset=utf-8",
            Sample::Eicar => "application/octet-stream",
            Sample::Large => "application/octet-stream",
        }
    }

    /// The file name used in the encapsulated URL.
    pub fn file_name(self) -> &'static str {
        match self {
            Sample::Clean => "index.html",
            Sample::Eicar => "eicar.com",
            Sample::Large => "large.bin",
        }
    }
}

const CLEAN_PAGE: &[u8] = b"<!doctype html>\n<html><head><title>icaptap clean sample</title></head>\n<body><p>This page is clean. It was sent by icaptap to check that a sensor lets clean content through unchanged.</p></body></html>\n";

/// `len` bytes of deterministic printable text (a counter pattern, so a
/// truncated or reordered echo is visible), never containing EICAR.
pub fn large_body(len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len);
    let mut line = 0u64;
    while out.len() < len {
        let text = format!("icaptap large sample line {line:08}\n");
        out.extend_from_slice(text.as_bytes());
        line += 1;
    }
    out.truncate(len);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eicar_is_the_standard_68_bytes() {
        assert_eq!(EICAR.len(), 68);
        assert!(EICAR.starts_with(b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$"));
    }

    #[test]
    fn large_sample_has_its_length_and_no_eicar() {
        let body = Sample::Large.body();
        assert_eq!(body.len(), LARGE_SAMPLE_LEN);
        assert!(!body.windows(EICAR.len()).any(|w| w == EICAR));
    }
}
