//! toolkit: work in progress.
