//! record: work in progress.
