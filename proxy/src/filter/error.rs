//! Why a filter expression was refused: what is wrong, where (a caret
//! under the columns of the expression at fault) and what to write
//! instead.

use std::fmt;

/// A filter expression that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterError {
    /// The expression as given.
    pub expression: String,
    /// Where the fault starts, in characters from 0.
    pub column: usize,
    /// How many characters the caret marks (at least 1).
    pub width: usize,
    /// What is wrong.
    pub what: String,
    /// What to write instead.
    pub hint: String,
}

impl FilterError {
    /// An error over the bytes `span` of `expression`.
    pub(crate) fn at(
        expression: &str,
        span: std::ops::Range<usize>,
        what: impl Into<String>,
        hint: impl Into<String>,
    ) -> FilterError {
        let start = span.start.min(expression.len());
        let end = span.end.clamp(start, expression.len());
        let column = expression[..start].chars().count();
        let width = expression[start..end].chars().count().max(1);
        FilterError {
            expression: expression.to_string(),
            column,
            width,
            what: what.into(),
            hint: hint.into(),
        }
    }
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bad filter expression at column {}: {}",
            self.column + 1,
            self.what
        )?;
        writeln!(f, "    {}", self.expression)?;
        writeln!(
            f,
            "    {}{}",
            " ".repeat(self.column),
            "^".repeat(self.width)
        )?;
        write!(f, "  {} (docs/evidence.md: filter expressions)", self.hint)
    }
}

impl std::error::Error for FilterError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caret_stands_under_the_fault() {
        let e = FilterError::at("verdict=blocked and x", 20..21, "what", "hint");
        let text = e.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "bad filter expression at column 21: what");
        assert_eq!(lines[1], "    verdict=blocked and x");
        assert_eq!(lines[2], format!("    {}^", " ".repeat(20)));
        assert!(lines[3].contains("hint"));
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let e = FilterError::at("url~\"é\" x", 8..9, "w", "h");
        assert_eq!(e.column, 7);
    }

    #[test]
    fn an_error_at_the_end_marks_one_column_past_it() {
        let e = FilterError::at("verdict=", 8..8, "w", "h");
        assert_eq!((e.column, e.width), (8, 1));
    }
}
