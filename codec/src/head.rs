//! head: work in progress.
