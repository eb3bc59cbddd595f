//! The outcome of a check run: one result per case, the table printed for
//! a person, and the facts the JUnit writer needs. A case passes, fails (the
//! vendor did not do what the suite expects) or is an error (the check could
//! not test the vendor, e.g. its proxy could not be reached): an error is
//! never counted as a pass or a fail.

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
    /// Why the case could not test the vendor (then `passed` is false and
    /// the case is neither a pass nor a fail).
    pub error: Option<String>,
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

/// A run's result as `icaptap check`'s exit status tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckStatus {
    /// Every case passed (exit 0).
    Passed,
    /// A case failed, none was an error (exit 1).
    Failed,
    /// A case could not test the vendor (exit 2).
    Error,
}

impl CheckStatus {
    /// The exit status: 0, 1 or 2.
    pub fn exit_code(self) -> u8 {
        match self {
            CheckStatus::Passed => 0,
            CheckStatus::Failed => 1,
            CheckStatus::Error => 2,
        }
    }
}

impl CaseResult {
    /// `PASS`, `FAIL` or `ERROR`.
    pub fn label(&self) -> &'static str {
        match (self.passed, &self.error) {
            (_, Some(_)) => "ERROR",
            (true, None) => "PASS",
            (false, None) => "FAIL",
        }
    }
}

impl CheckReport {
    /// How many cases failed (errors not counted).
    pub fn failed(&self) -> usize {
        self.results
            .iter()
            .filter(|r| !r.passed && r.error.is_none())
            .count()
    }

    /// How many cases could not test the vendor.
    pub fn errors(&self) -> usize {
        self.results.iter().filter(|r| r.error.is_some()).count()
    }

    /// The run's status: an error outweighs a failure.
    pub fn status(&self) -> CheckStatus {
        if self.errors() > 0 {
            CheckStatus::Error
        } else if self.failed() > 0 {
            CheckStatus::Failed
        } else {
            CheckStatus::Passed
        }
    }

    /// Whether every case passed.
    pub fn passed(&self) -> bool {
        self.results.iter().all(|r| r.passed)
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
            writeln!(f, "  {:<6}  {:<width$}  {}", r.label(), r.title, r.detail)?;
        }
        let passed = self.results.iter().filter(|r| r.passed).count();
        writeln!(
            f,
            "{} cases: {passed} passed, {} failed, {} errors in {:.1} s; exchanges recorded in {}",
            self.results.len(),
            self.failed(),
            self.errors(),
            self.elapsed.as_secs_f64(),
            self.out.display()
        )?;
        // One line of what to do per distinct reason, not one per case.
        let mut reasons: Vec<&str> = Vec::new();
        for r in self.results.iter().filter_map(|r| r.error.as_deref()) {
            if !reasons.contains(&r) {
                reasons.push(r);
            }
        }
        for reason in reasons {
            writeln!(f, "error: {reason}")?;
        }
        Ok(())
    }
}
