//! The filter expression language: one way to select exchanges wherever a
//! user does (`icaptap analyze --filter`, `icaptap report --filter`,
//! `icaptap export --filter`). docs/evidence.md describes it for users.
//!
//! ```text
//! verdict=blocked and not client=10.0.0.0/8
//! (anomaly=verdict-timeout or verdict=error) and after=+5m
//! method=RESPMOD and url~"\.exe$" and exchange!=3/0
//! ```
//!
//! Fields: `verdict`, `anomaly` (a code, or `any`), `method`, `service`
//! (the ICAP URI's path, or its last segment), `client` (IP, ip:port or
//! CIDR), `url` (the encapsulated HTTP URL: `=` exact, `~` a regular
//! expression), `exchange` (`CONN/SEQ` as records name it, or `CONN`),
//! `after` / `before` (RFC 3339, or `+DURATION` from the run's start).
//! Operators `=` `!=` (and `~` `!~` for url and service); `and`, `or`,
//! `not` and parentheses combine them.
//!
//! The API is small on purpose:
//!
//! - [`Filter::parse`] reads an expression or says, with a
//!   [`FilterError`], what is wrong, at which column, and what to write;
//! - [`Filter::matches`] tests one [`ExchangeRecord`]. Every field is on
//!   the exchange record, so a filter never needs connection records;
//!   a caller that writes connection records too keeps those of the
//!   connections with a matching exchange ([`FilterSink`] does so);
//! - a time relative to the run's start (`after=+5m`) needs that start:
//!   [`Filter::uses_run_start`] says whether the expression has one, and
//!   [`Filter::set_run_start`] gives it (until then such a condition
//!   holds for no exchange).
//!
//! Files: [`lexer`] (tokens), [`parser`] (the grammar), [`condition`]
//! (fields, values, matching), [`error`] (the caret message), [`sink`]
//! (a record sink that passes only what matches).

pub mod condition;
pub mod error;
pub mod lexer;
pub mod parser;
pub mod sink;

pub use error::FilterError;
pub use sink::FilterSink;

use crate::output::records::ExchangeRecord;
use parser::Expr;

/// A parsed filter expression.
#[derive(Clone, Debug)]
pub struct Filter {
    text: String,
    expr: Expr,
    run_start: Option<u64>,
}

impl Filter {
    /// Parses `text` (see the module documentation for the language).
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        Ok(Filter {
            text: text.trim().to_string(),
            expr: parser::parse(text)?,
            run_start: None,
        })
    }

    /// Whether the exchange `record` is selected.
    pub fn matches(&self, record: &ExchangeRecord) -> bool {
        self.eval(&self.expr, record)
    }

    fn eval(&self, e: &Expr, r: &ExchangeRecord) -> bool {
        match e {
            Expr::And(a, b) => self.eval(a, r) && self.eval(b, r),
            Expr::Or(a, b) => self.eval(a, r) || self.eval(b, r),
            Expr::Not(a) => !self.eval(a, r),
            Expr::Condition(c) => c.matches(r, self.run_start),
        }
    }

    /// The expression as given (trimmed), for summaries and reports.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether a condition counts from the run's start (`after=+5m`).
    pub fn uses_run_start(&self) -> bool {
        fn walk(e: &Expr) -> bool {
            match e {
                Expr::And(a, b) | Expr::Or(a, b) => walk(a) || walk(b),
                Expr::Not(a) => walk(a),
                Expr::Condition(c) => c.uses_run_start(),
            }
        }
        walk(&self.expr)
    }

    /// When the run started (microseconds since the UNIX epoch), for
    /// relative times.
    pub fn set_run_start(&mut self, micros: u64) {
        self.run_start = Some(micros);
    }

    /// The run start given, if any.
    pub fn run_start(&self) -> Option<u64> {
        self.run_start
    }
}

impl std::str::FromStr for Filter {
    type Err = FilterError;

    fn from_str(text: &str) -> Result<Filter, FilterError> {
        Filter::parse(text)
    }
}

#[cfg(test)]
pub(crate) mod tests;
