//! output: work in progress.
