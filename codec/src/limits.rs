//! Limits that bound the decoder's memory whatever the input: every limit is
//! a named field with a documented default. Exceeding one is an anomaly
//! (`limit-exceeded`), never unbounded buffering.

/// Bounds on what one decoder buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest single header line (ICAP or encapsulated HTTP), in bytes.
    pub max_line_len: usize,
    /// Largest ICAP or HTTP header block, in bytes.
    pub max_head_len: usize,
    /// Most header fields in one block.
    pub max_headers: usize,
    /// Most hexadecimal digits in a chunk-size (16 fits a u64).
    pub max_chunk_size_digits: usize,
    /// Longest chunk extension, in bytes.
    pub max_chunk_ext_len: usize,
}

impl Limits {
    /// Defaults that fit every real peer seen in the field.
    pub const DEFAULT: Limits = Limits {
        max_line_len: 16 * 1024,
        max_head_len: 64 * 1024,
        max_headers: 128,
        max_chunk_size_digits: 16,
        max_chunk_ext_len: 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
