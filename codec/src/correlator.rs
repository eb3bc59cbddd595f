//! correlator: work in progress.
/// Pairs requests and responses (placeholder).
#[derive(Debug, Default)]
pub struct Correlator;
/// One exchange (placeholder).
#[derive(Debug, Default)]
pub struct Exchange;
