//! chunked: work in progress.
