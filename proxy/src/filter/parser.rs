//! The grammar of a filter expression, read by recursive descent:
//!
//! ```text
//! expr      = or
//! or        = and { "or" and }
//! and       = unary { "and" unary }
//! unary     = "not" unary | "(" expr ")" | condition
//! condition = FIELD ( "=" | "!=" | "~" | "!~" ) VALUE
//! ```
//!
//! `not` binds tightest, then `and`, then `or`; keywords are
//! case-insensitive. Every refusal names the token at fault and what would
//! fit there.

use super::condition::{closest_field, Condition, Field, FIELDS};
use super::error::FilterError;
use super::lexer::{tokens, Token, TokenKind};

/// A parsed expression.
#[derive(Clone, Debug)]
pub(crate) enum Expr {
    /// Both hold.
    And(Box<Expr>, Box<Expr>),
    /// Either holds.
    Or(Box<Expr>, Box<Expr>),
    /// It does not hold.
    Not(Box<Expr>),
    /// One condition.
    Condition(Condition),
}

/// Parses `text` into an expression.
pub(crate) fn parse(text: &str) -> Result<Expr, FilterError> {
    let tokens = tokens(text)?;
    if tokens.is_empty() {
        return Err(FilterError::at(
            text,
            0..0,
            "the filter is empty",
            "write a condition, e.g. verdict=blocked or anomaly=any",
        ));
    }
    let mut p = Parser {
        text,
        tokens: &tokens,
        at: 0,
    };
    let expr = p.or()?;
    if let Some(t) = p.peek() {
        return Err(match t.kind {
            TokenKind::Close => FilterError::at(
                text,
                t.span.clone(),
                "this `)` closes no `(`",
                "remove it, or add the `(` it belongs to",
            ),
            TokenKind::Op(op) => operator_in_value(text, t, op),
            _ => FilterError::at(
                text,
                t.span.clone(),
                "a condition cannot follow another without `and` or `or`",
                "write `and` or `or` between two conditions",
            ),
        });
    }
    Ok(expr)
}

/// An operator right after a whole condition: most likely part of a
/// value that needed quotes (`url=http://x/?a=b`).
fn operator_in_value(text: &str, t: &Token, op: super::lexer::Op) -> FilterError {
    FilterError::at(
        text,
        t.span.clone(),
        format!("`{}` after a whole condition", op.as_str()),
        "quote a value that holds `=`, `!`, `~`, spaces or parentheses, e.g. url=\"http://example.com/?a=b\"",
    )
}

fn keyword(t: &Token, word: &str) -> bool {
    matches!(&t.kind, TokenKind::Word(w) if w.eq_ignore_ascii_case(word))
}

fn is_keyword(w: &str) -> bool {
    ["and", "or", "not"]
        .iter()
        .any(|k| w.eq_ignore_ascii_case(k))
}

struct Parser<'a> {
    text: &'a str,
    tokens: &'a [Token],
    at: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<&'a Token> {
        let t = self.tokens.get(self.at);
        self.at += usize::from(t.is_some());
        t
    }

    /// The byte range just past the last token, for "missing here".
    fn end(&self) -> std::ops::Range<usize> {
        let end = self
            .tokens
            .get(self.at.saturating_sub(1))
            .map_or(0, |t| t.span.end);
        end..end
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.peek().is_some_and(|t| keyword(t, "or")) {
            self.next();
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while self.peek().is_some_and(|t| keyword(t, "and")) {
            self.next();
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        let Some(t) = self.next() else {
            return Err(FilterError::at(
                self.text,
                self.end(),
                "the expression ends where a condition should follow",
                "add a condition, e.g. verdict=blocked",
            ));
        };
        match &t.kind {
            TokenKind::Word(w) if w.eq_ignore_ascii_case("not") => {
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            TokenKind::Open => {
                let inner = self.or()?;
                match self.next() {
                    Some(c) if c.kind == TokenKind::Close => Ok(inner),
                    Some(
                        other @ Token {
                            kind: TokenKind::Op(op),
                            ..
                        },
                    ) => Err(operator_in_value(self.text, other, *op)),
                    Some(other) => Err(FilterError::at(
                        self.text,
                        other.span.clone(),
                        "expected `and`, `or` or `)` here",
                        "write `and` or `or` between two conditions, or close the `(` with `)`",
                    )),
                    None => Err(FilterError::at(
                        self.text,
                        t.span.clone(),
                        "this `(` is never closed",
                        "add `)` where the group ends",
                    )),
                }
            }
            TokenKind::Word(w) if is_keyword(w) => Err(FilterError::at(
                self.text,
                t.span.clone(),
                format!("`{w}` where a condition should be"),
                "write a condition on each side of `and` / `or`, e.g. verdict=blocked or verdict=error",
            )),
            TokenKind::Word(w) => self.condition(w, t),
            TokenKind::Close => Err(FilterError::at(
                self.text,
                t.span.clone(),
                "`)` where a condition should be",
                "write a condition before `)`, or remove the empty `()`",
            )),
            TokenKind::Op(op) => Err(FilterError::at(
                self.text,
                t.span.clone(),
                format!("`{}` without a field before it", op.as_str()),
                format!("write FIELD{}VALUE, e.g. verdict{}blocked", op.as_str(), op.as_str()),
            )),
            TokenKind::Quoted(_) => Err(FilterError::at(
                self.text,
                t.span.clone(),
                "a quoted value where a field name should be",
                "write FIELD=VALUE, e.g. url~\"\\.exe$\"",
            )),
        }
    }

    fn condition(&mut self, name: &str, name_token: &Token) -> Result<Expr, FilterError> {
        let Some(field) = Field::named(name) else {
            let near = closest_field(name)
                .map(|n| format!("did you mean `{n}`? "))
                .unwrap_or_default();
            let all: Vec<&str> = FIELDS.iter().map(|(n, _)| *n).collect();
            return Err(FilterError::at(
                self.text,
                name_token.span.clone(),
                format!("unknown field `{name}`"),
                format!("{near}fields are {}", all.join(", ")),
            ));
        };
        let op_token = match self.next() {
            Some(
                t @ Token {
                    kind: TokenKind::Op(_),
                    ..
                },
            ) => t,
            other => {
                let span = other.map_or_else(|| self.end(), |t| t.span.clone());
                return Err(FilterError::at(
                    self.text,
                    span,
                    format!("expected `=` or `!=` after `{name}`"),
                    format!("write {}", field.example()),
                ));
            }
        };
        let TokenKind::Op(op) = op_token.kind else {
            unreachable!("matched an operator above")
        };
        let (value, span) = match self.next() {
            Some(Token {
                kind: TokenKind::Word(v) | TokenKind::Quoted(v),
                span,
            }) => (v.as_str(), span.clone()),
            other => {
                let span = other.map_or_else(|| self.end(), |t| t.span.clone());
                return Err(FilterError::at(
                    self.text,
                    span,
                    format!("`{name}{}` has no value", op.as_str()),
                    "write the value right after the operator; quote it (\"...\") if it holds spaces or parentheses",
                ));
            }
        };
        let condition = Condition::parse(self.text, field, op, op_token.span.clone(), value, span)?;
        let expr = Expr::Condition(condition);
        Ok(if op.negated() {
            Expr::Not(Box::new(expr))
        } else {
            expr
        })
    }
}
