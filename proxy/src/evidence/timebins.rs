//! Exchanges over time by verdict, at a resolution that fits the run: a
//! 50 ms run is counted per millisecond, a day per minutes. Bins start at
//! 1 ms and are merged into the next coarser width whenever the run spans
//! more than [`MAX_KEPT`] of them, so memory stays bounded whatever the
//! number of records and however they are ordered. Every width divides the
//! next one ([`WIDTHS_US`]), so merging is exact: a bin of the coarser width
//! holds exactly the exchanges that started in it.

use std::collections::BTreeMap;

use super::facts::VERDICT_ORDER;

/// Bin widths in microseconds, each a whole multiple of the one before
/// (1-2-10 steps, then minutes, hours, days). Beyond the last, widths
/// double.
pub const WIDTHS_US: [i64; 19] = [
    1_000,
    2_000,
    10_000,
    20_000,
    100_000,
    200_000,
    1_000_000,
    2_000_000,
    10_000_000,
    20_000_000,
    60_000_000,
    120_000_000,
    600_000_000,
    1_200_000_000,
    3_600_000_000,
    7_200_000_000,
    21_600_000_000,
    43_200_000_000,
    86_400_000_000,
];

/// Bins kept at most while reading; twice what a chart draws, so the
/// final width can still be chosen.
pub const MAX_KEPT: i64 = 480;

/// Verdicts a bin counts: [`VERDICT_ORDER`] and one "other".
pub const KINDS: usize = VERDICT_ORDER.len() + 1;

/// The width after `w`.
pub fn coarser(w: i64) -> i64 {
    WIDTHS_US
        .iter()
        .copied()
        .find(|x| *x > w)
        .unwrap_or(w.saturating_mul(2))
}

/// The index of `verdict` in a bin's counts.
pub fn kind_of(verdict: &str) -> usize {
    VERDICT_ORDER
        .iter()
        .position(|v| *v == verdict)
        .unwrap_or(VERDICT_ORDER.len())
}

/// The name of a bin's count at `kind`.
pub fn kind_name(kind: usize) -> &'static str {
    VERDICT_ORDER.get(kind).copied().unwrap_or("other")
}

/// Exchange start times counted per bin and verdict.
#[derive(Clone, Debug)]
pub struct TimeBins {
    width_us: i64,
    bins: BTreeMap<i64, [u64; KINDS]>,
}

impl Default for TimeBins {
    fn default() -> Self {
        TimeBins {
            width_us: WIDTHS_US[0],
            bins: BTreeMap::new(),
        }
    }
}

/// The columns a chart draws: contiguous, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Columns {
    /// Start of the first column, microseconds since the epoch.
    pub start_us: i64,
    /// Width of one column.
    pub width_us: i64,
    /// Counts per verdict kind, one entry per column.
    pub counts: Vec<[u64; KINDS]>,
}

impl TimeBins {
    /// Counts one exchange that started at `at_us` with `verdict`.
    pub fn add(&mut self, at_us: i64, verdict: &str) {
        let key = at_us.div_euclid(self.width_us);
        self.bins.entry(key).or_insert([0; KINDS])[kind_of(verdict)] += 1;
        while self.span() > MAX_KEPT {
            self.merge_into(coarser(self.width_us));
        }
    }

    /// Whether no exchange was counted.
    pub fn is_empty(&self) -> bool {
        self.bins.is_empty()
    }

    /// The current bin width.
    pub fn width_us(&self) -> i64 {
        self.width_us
    }

    fn span(&self) -> i64 {
        match (self.bins.keys().next(), self.bins.keys().next_back()) {
            (Some(a), Some(b)) => b - a + 1,
            _ => 0,
        }
    }

    fn merge_into(&mut self, width: i64) {
        let factor = width / self.width_us;
        let mut merged: BTreeMap<i64, [u64; KINDS]> = BTreeMap::new();
        for (key, counts) in std::mem::take(&mut self.bins) {
            let into = merged.entry(key.div_euclid(factor)).or_insert([0; KINDS]);
            for (a, b) in into.iter_mut().zip(counts) {
                *a += b;
            }
        }
        self.width_us = width;
        self.bins = merged;
    }

    /// The columns of a chart over `[from_us, to_us]` (the run; widened to
    /// the bins when they lie outside it) in at most `max_columns` columns
    /// of the finest width that fits. `None` when nothing was counted.
    pub fn columns(&self, from_us: i64, to_us: i64, max_columns: usize) -> Option<Columns> {
        let first = *self.bins.keys().next()? * self.width_us;
        let last = (*self.bins.keys().next_back()? + 1) * self.width_us - 1;
        let (from, to) = (from_us.min(first), to_us.max(last));
        let mut bins = self.clone();
        let fits = |w: i64| (to.div_euclid(w) - from.div_euclid(w) + 1) as usize <= max_columns;
        while !fits(bins.width_us) {
            bins.merge_into(coarser(bins.width_us));
        }
        let w = bins.width_us;
        let (first_key, last_key) = (from.div_euclid(w), to.div_euclid(w));
        let counts = (first_key..=last_key)
            .map(|k| bins.bins.get(&k).copied().unwrap_or([0; KINDS]))
            .collect();
        Some(Columns {
            start_us: first_key * w,
            width_us: w,
            counts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_nest() {
        for pair in WIDTHS_US.windows(2) {
            assert_eq!(pair[1] % pair[0], 0, "{pair:?}");
        }
    }

    #[test]
    fn a_short_run_is_counted_per_millisecond() {
        let mut b = TimeBins::default();
        let t0 = 1_700_000_000_000_000;
        for i in 0..8 {
            b.add(t0 + i * 6_000, if i == 3 { "missing" } else { "clean" });
        }
        let c = b.columns(t0, t0 + 50_000, 240).unwrap();
        assert_eq!(c.width_us, 1_000);
        assert_eq!(c.counts.len(), 51);
        let total: u64 = c.counts.iter().flatten().sum();
        assert_eq!(total, 8);
        assert_eq!(c.counts[18][kind_of("missing")], 1);
    }

    #[test]
    fn a_long_run_stays_bounded_and_loses_nothing() {
        let mut b = TimeBins::default();
        let t0 = 1_700_000_000_000_000;
        // A day, one exchange every 0.9 s, out of order at the end.
        let n = 96_000;
        for i in 0..n {
            b.add(t0 + i * 900_000, "clean");
        }
        b.add(t0 + 5, "error");
        assert!(b.bins.len() as i64 <= MAX_KEPT);
        let c = b.columns(t0, t0 + n * 900_000, 240).unwrap();
        assert!(c.counts.len() <= 240);
        let total: u64 = c.counts.iter().flatten().sum();
        assert_eq!(total, n as u64 + 1);
        assert_eq!(c.width_us, 600_000_000);
    }
}
