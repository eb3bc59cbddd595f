//! forward: work in progress.
