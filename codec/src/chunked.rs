//! Chunked transfer coding of encapsulated bodies (RFC 3507 section 4.4.1:
//! bodies are always chunked; section 4.5: the `ieof` extension ends a
//! preview; the 206 draft's `use-original-body=N` extension).
//!
//! The state machine has one variant per position in the grammar, like
//! hyper's `ChunkedState`. Chunk data is handed out as slices of the input.

use bytes::Bytes;

use crate::anomaly::AnomalyCode;
use crate::framing::{Line, LineReader, LineStatus};
use crate::head::{looks_like_icap_start, Finding};
use crate::limits::Limits;

/// Where in the chunked grammar the next byte belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkedState {
    /// A chunk-size line: hex size, optional whitespace, `;` extensions, CRLF.
    Size,
    /// Chunk data, `remaining` bytes still to come.
    Data {
        /// Bytes of the current chunk not seen yet.
        remaining: u64,
    },
    /// The CR that ends chunk data.
    DataCr,
    /// The LF that ends chunk data.
    DataLf,
    /// Trailer lines after the zero chunk, up to an empty line.
    Trailer,
}

/// A parsed chunk-size line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkLine {
    /// The chunk size.
    pub size: u64,
    /// Whether the `ieof` extension is present.
    pub ieof: bool,
    /// The value of `use-original-body=N`, if present and numeric.
    pub use_original_body: Option<u64>,
    /// The first extension other than `ieof` and `use-original-body`.
    pub unknown_extension: Option<String>,
    /// Whether the extensions were longer than allowed and ignored.
    pub extensions_too_long: bool,
}

/// Why a chunk-size line cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkLineError {
    /// It does not start with a hexadecimal digit, or junk follows the size.
    NotHex,
    /// More hexadecimal digits than [`Limits::max_chunk_size_digits`].
    TooManyDigits,
    /// The size does not fit in 64 bits.
    Overflow,
}

impl ChunkLineError {
    fn describe(self) -> &'static str {
        match self {
            ChunkLineError::NotHex => "the chunk-size line is not a hexadecimal size",
            ChunkLineError::TooManyDigits => "the chunk size has too many hexadecimal digits",
            ChunkLineError::Overflow => "the chunk size overflows 64 bits",
        }
    }
}

/// Parses a chunk-size line (terminator removed). Whitespace is accepted
/// between the size and `;` and around extension names and values, as
/// real clients write `0; ieof`.
pub fn parse_chunk_line(line: &[u8], limits: &Limits) -> Result<ChunkLine, ChunkLineError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ChunkLineError::NotHex);
    }
    if digits > limits.max_chunk_size_digits {
        return Err(ChunkLineError::TooManyDigits);
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let d = (b as char).to_digit(16).unwrap_or(0);
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(d)))
            .ok_or(ChunkLineError::Overflow)?;
    }
    let rest = line[digits..].trim_ascii_start();
    let mut parsed = ChunkLine {
        size,
        ..ChunkLine::default()
    };
    if rest.is_empty() {
        return Ok(parsed);
    }
    if rest[0] != b';' {
        return Err(ChunkLineError::NotHex);
    }
    if rest.len() > limits.max_chunk_ext_len {
        parsed.extensions_too_long = true;
        return Ok(parsed);
    }
    for ext in rest[1..].split(|&b| b == b';') {
        let (name, value) = match ext.iter().position(|&b| b == b'=') {
            Some(eq) => (ext[..eq].trim_ascii(), Some(ext[eq + 1..].trim_ascii())),
            None => (ext.trim_ascii(), None),
        };
        if name.eq_ignore_ascii_case(b"ieof") {
            parsed.ieof = true;
        } else if name.eq_ignore_ascii_case(b"use-original-body") {
            let value = value.map(|v| v.strip_prefix(b"\"").unwrap_or(v));
            let value = value.map(|v| v.strip_suffix(b"\"").unwrap_or(v));
            parsed.use_original_body = value.and_then(crate::head::parse_decimal);
        } else if parsed.unknown_extension.is_none() {
            parsed.unknown_extension = Some(String::from_utf8_lossy(ext.trim_ascii()).into_owned());
        }
    }
    Ok(parsed)
}

/// What one step through a chunked body gave.
#[derive(Debug)]
pub(crate) enum ChunkStep {
    /// De-chunked body data, a slice of the input.
    Data(Bytes),
    /// The input is used up; the body goes on.
    NeedMore,
    /// A violation that does not break the framing.
    Finding(Finding),
    /// The zero chunk and its trailers are over; the body is complete.
    End {
        /// Whether the zero chunk carried `ieof`.
        ieof: bool,
        /// `use-original-body=N` from the zero chunk.
        use_original_body: Option<u64>,
    },
    /// The framing is lost; the message cannot be followed further.
    Broken(Finding),
    /// Where the first chunk-size line was due, an ICAP start line came:
    /// the declared body never arrived.
    NotABody(Line),
}

/// A chunked body being decoded.
#[derive(Debug)]
pub(crate) struct ChunkedBody {
    state: ChunkedState,
    line: LineReader,
    started: bool,
    last: ChunkLine,
}

impl ChunkedBody {
    pub fn new() -> Self {
        ChunkedBody {
            state: ChunkedState::Size,
            line: LineReader::default(),
            started: false,
            last: ChunkLine::default(),
        }
    }

    /// Whether no byte of the body has been seen yet.
    pub fn is_untouched(&self) -> bool {
        !self.started && self.line.is_empty()
    }

    /// Whether the body is past its zero chunk (only trailers remain).
    pub fn in_trailer(&self) -> bool {
        self.state == ChunkedState::Trailer
    }

    /// Decodes from `input`, advancing `pos`, up to the next thing to report.
    pub fn step(&mut self, input: &mut Bytes, pos: &mut u64, limits: &Limits) -> ChunkStep {
        loop {
            if input.is_empty() {
                return ChunkStep::NeedMore;
            }
            match self.state {
                ChunkedState::Data { remaining } => {
                    let n = remaining.min(input.len() as u64);
                    let data = input.split_to(n as usize);
                    *pos += n;
                    self.state = if remaining == n {
                        ChunkedState::DataCr
                    } else {
                        ChunkedState::Data {
                            remaining: remaining - n,
                        }
                    };
                    return ChunkStep::Data(data);
                }
                ChunkedState::DataCr | ChunkedState::DataLf => {
                    let want = if self.state == ChunkedState::DataCr {
                        b'\r'
                    } else {
                        b'\n'
                    };
                    let got = input[0];
                    if got == want || (want == b'\r' && got == b'\n') {
                        let _ = input.split_to(1);
                        *pos += 1;
                        self.state = if got == b'\r' {
                            ChunkedState::DataLf
                        } else {
                            ChunkedState::Size
                        };
                        continue;
                    }
                    self.state = ChunkedState::Size;
                    return ChunkStep::Finding((
                        AnomalyCode::ChunkCrlfMissing,
                        *pos,
                        format!(
                            "chunk data not followed by CRLF (byte 0x{got:02x}); the chunk size is probably wrong"
                        ),
                    ));
                }
                ChunkedState::Size => {
                    let max = limits.max_chunk_size_digits + limits.max_chunk_ext_len + 32;
                    let line = match self.line.read(input, pos, max) {
                        LineStatus::Partial => return ChunkStep::NeedMore,
                        LineStatus::TooLong { start } => {
                            return ChunkStep::Broken((
                                AnomalyCode::LimitExceeded,
                                start,
                                format!("chunk-size line longer than {max} bytes"),
                            ))
                        }
                        LineStatus::Complete(line) => line,
                    };
                    match parse_chunk_line(&line.bytes, limits) {
                        Ok(chunk) => {
                            self.started = true;
                            self.state = if chunk.size == 0 {
                                ChunkedState::Trailer
                            } else {
                                ChunkedState::Data {
                                    remaining: chunk.size,
                                }
                            };
                            let finding = if chunk.extensions_too_long {
                                Some((
                                    AnomalyCode::LimitExceeded,
                                    line.start,
                                    format!(
                                        "chunk extensions longer than {} bytes; ignored",
                                        limits.max_chunk_ext_len
                                    ),
                                ))
                            } else {
                                chunk.unknown_extension.as_ref().map(|ext| {
                                    (
                                        AnomalyCode::ChunkExtensionUnknown,
                                        line.start,
                                        format!("unknown chunk extension `{ext}`"),
                                    )
                                })
                            };
                            self.last = chunk;
                            if let Some(finding) = finding {
                                return ChunkStep::Finding(finding);
                            }
                        }
                        Err(_) if !self.started && looks_like_icap_start(&line.bytes) => {
                            return ChunkStep::NotABody(line);
                        }
                        Err(e) => {
                            let code = if e == ChunkLineError::TooManyDigits {
                                AnomalyCode::LimitExceeded
                            } else {
                                AnomalyCode::ChunkSizeInvalid
                            };
                            let shown = &line.bytes[..line.bytes.len().min(32)];
                            return ChunkStep::Broken((
                                code,
                                line.start,
                                format!("{}: {:?}", e.describe(), String::from_utf8_lossy(shown)),
                            ));
                        }
                    }
                }
                ChunkedState::Trailer => {
                    let line = match self.line.read(input, pos, limits.max_line_len) {
                        LineStatus::Partial => return ChunkStep::NeedMore,
                        LineStatus::TooLong { start } => {
                            return ChunkStep::Broken((
                                AnomalyCode::LimitExceeded,
                                start,
                                format!("trailer line longer than {} bytes", limits.max_line_len),
                            ))
                        }
                        LineStatus::Complete(line) => line,
                    };
                    if line.bytes.is_empty() {
                        self.state = ChunkedState::Size;
                        self.started = false;
                        return ChunkStep::End {
                            ieof: self.last.ieof,
                            use_original_body: self.last.use_original_body,
                        };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_lines() {
        let l = Limits::DEFAULT;
        assert_eq!(parse_chunk_line(b"1a", &l).map(|c| c.size), Ok(26));
        let c = parse_chunk_line(b"0; ieof", &l).unwrap();
        assert!(c.ieof && c.size == 0);
        assert!(parse_chunk_line(b"0 ;ieof", &l).unwrap().ieof);
        assert!(parse_chunk_line(b"0\t; ieof ", &l).unwrap().ieof);
        assert_eq!(
            parse_chunk_line(b"0; use-original-body=42", &l)
                .unwrap()
                .use_original_body,
            Some(42)
        );
        assert_eq!(
            parse_chunk_line(b"5;foo=bar", &l)
                .unwrap()
                .unknown_extension,
            Some("foo=bar".into())
        );
        assert_eq!(parse_chunk_line(b"zz", &l), Err(ChunkLineError::NotHex));
        assert_eq!(parse_chunk_line(b"5 x", &l), Err(ChunkLineError::NotHex));
        assert_eq!(
            parse_chunk_line(b"11111111111111111", &l),
            Err(ChunkLineError::TooManyDigits)
        );
        let wide = Limits {
            max_chunk_size_digits: 40,
            ..Limits::DEFAULT
        };
        assert_eq!(
            parse_chunk_line(b"ffffffffffffffffff", &wide),
            Err(ChunkLineError::Overflow)
        );
    }
}
