//! analyze: work in progress.
