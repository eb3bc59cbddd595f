//! decoder: work in progress.
/// The decoder (placeholder).
#[derive(Debug)]
pub struct Decoder;
