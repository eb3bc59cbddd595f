//! The outcome of a check run: one result per case, the table printed for
//! a person, and the facts the JUnit writer needs.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// One case's outcome.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// The case's name.
    pub title: String,
    /// The check's identifier (`sensor-down`...).
    pub check: &'static str,
    /// Whether the user saw what the suite expects.
    pub passed: bool,
    /// What the user saw and what the sensor saw, in words.
    pub detail: String,
    /// How long the case took to drive.
    pub elapsed: Duration,
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// The suite's name.
    pub suite: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// How long it took.
    pub elapsed: Duration,
    /// The vendor configuration the suite expects, in words.
    pub vendor_setup: String,
    /// The output directory with the recorded exchanges.
    pub out: PathBuf,
    /// One result per case, in suite order.
    pub results: Vec<CaseResult>,
}

impl CheckReport {
    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| !r.passed).count()
    }

    /// Whether every case passed.
    pub fn passed(&self) -> bool {
        self.failed() == 0
    }

    /// The result of the first case of check `id`.
    pub fn result(&self, id: &str) -> Option<&CaseResult> {
        self.results.iter().find(|r| r.check == id)
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .results
            .iter()
            .map(|r| r.title.chars().count())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            f,
            "  result  {:<width$}  what the user (and the sensor) saw",
            "case"
        )?;
        for r in &self.results {
            writeln!(
                f,
                "  {:<6}  {:<width$}  {}",
                if r.passed { "PASS" } else { "FAIL" },
                r.title,
                r.detail
            )?;
        }
        writeln!(
            f,
            "{} cases: {} passed, {} failed in {:.1} s; exchanges recorded in {}",
            self.results.len(),
            self.results.len() - self.failed(),
            self.failed(),
            self.elapsed.as_secs_f64(),
            self.out.display()
        )
    }
}
