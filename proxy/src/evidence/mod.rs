//! evidence: work in progress.
