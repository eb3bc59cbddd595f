//! observe: work in progress.
