//! A [`RecordSink`] that passes on only the exchanges a [`Filter`]
//! selects, and the connection records of the connections that had at
//! least one of them (a connection's record follows its exchanges).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::Filter;
use crate::output::records::{ConnectionRecord, ExchangeRecord};
use crate::output::writer::RecordSink;

/// Passes the selected records to `inner`.
#[derive(Debug)]
pub struct FilterSink<S> {
    filter: Filter,
    inner: S,
    /// Connections with a selected exchange whose record is still to come.
    selected: HashSet<u64>,
    /// Where the run's start appears once known (0 until then), for a
    /// filter with relative times whose start is not known when it is
    /// made (an analysis learns it from the first packet).
    run_start: Option<Arc<AtomicU64>>,
}

impl<S: RecordSink> FilterSink<S> {
    /// A sink passing what `filter` selects to `inner`.
    pub fn new(filter: Filter, inner: S) -> Self {
        FilterSink {
            filter,
            inner,
            selected: HashSet::new(),
            run_start: None,
        }
    }

    /// Takes the run's start from `start` (microseconds since the epoch,
    /// 0 while unknown) when the filter needs it and has none.
    pub fn run_start_from(mut self, start: Arc<AtomicU64>) -> Self {
        self.run_start = Some(start);
        self
    }
}

impl<S: RecordSink> RecordSink for FilterSink<S> {
    fn exchange(&mut self, record: &ExchangeRecord) {
        if self.filter.run_start().is_none() && self.filter.uses_run_start() {
            if let Some(start) = &self.run_start {
                let at = start.load(Ordering::Acquire);
                if at > 0 {
                    self.filter.set_run_start(at);
                }
            }
        }
        if self.filter.matches(record) {
            self.selected.insert(record.conn);
            self.inner.exchange(record);
        }
    }

    fn connection(&mut self, record: &ConnectionRecord) {
        if self.selected.remove(&record.conn) {
            self.inner.connection(record);
        }
    }

    fn flush(&mut self) {
        self.inner.flush();
    }
}
