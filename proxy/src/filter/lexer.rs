//! Cutting a filter expression into tokens, each with the byte range it
//! came from (for the caret of an error): parentheses, the operators `=`,
//! `!=`, `~` and `!~`, bare words and quoted strings.

use std::ops::Range;

use super::error::FilterError;

/// What a token is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// `(`.
    Open,
    /// `)`.
    Close,
    /// A comparison operator.
    Op(Op),
    /// A bare word: a field name, a keyword or a value.
    Word(String),
    /// A quoted value, quotes removed and `\"`, `\\` unescaped.
    Quoted(String),
}

/// How a field is compared with its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// `=`: equal.
    Equal,
    /// `!=`: not equal.
    NotEqual,
    /// `~`: the regular expression matches.
    Regex,
    /// `!~`: the regular expression does not match.
    NotRegex,
}

impl Op {
    /// As written.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Op::Equal => "=",
            Op::NotEqual => "!=",
            Op::Regex => "~",
            Op::NotRegex => "!~",
        }
    }

    /// Whether the operator negates its comparison.
    pub(crate) fn negated(self) -> bool {
        matches!(self, Op::NotEqual | Op::NotRegex)
    }
}

/// One token and where it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    /// What it is.
    pub kind: TokenKind,
    /// Its bytes in the expression.
    pub span: Range<usize>,
}

/// Characters that end a bare word.
fn ends_word(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '=' | '!' | '~' | '"' | '\'')
}

/// The tokens of `text`.
pub(crate) fn tokens(text: &str) -> Result<Vec<Token>, FilterError> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(at, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let single = |kind| Token {
            kind,
            span: at..at + 1,
        };
        match c {
            '(' => {
                chars.next();
                out.push(single(TokenKind::Open));
            }
            ')' => {
                chars.next();
                out.push(single(TokenKind::Close));
            }
            '=' => {
                chars.next();
                // `==` is what many filter languages write: take it too.
                let end = if chars.peek().map(|p| p.1) == Some('=') {
                    chars.next();
                    at + 2
                } else {
                    at + 1
                };
                out.push(Token {
                    kind: TokenKind::Op(Op::Equal),
                    span: at..end,
                });
            }
            '~' => {
                chars.next();
                out.push(single(TokenKind::Op(Op::Regex)));
            }
            '!' => {
                chars.next();
                let op = match chars.peek().map(|p| p.1) {
                    Some('=') => Op::NotEqual,
                    Some('~') => Op::NotRegex,
                    _ => {
                        return Err(FilterError::at(
                            text,
                            at..at + 1,
                            "`!` alone is not an operator",
                            "write `!=` or `!~` after a field, `not` before a condition, or quote a value that holds `!`",
                        ))
                    }
                };
                chars.next();
                out.push(Token {
                    kind: TokenKind::Op(op),
                    span: at..at + 2,
                });
            }
            '"' | '\'' => {
                chars.next();
                let mut value = String::new();
                let mut end = None;
                while let Some((i, ch)) = chars.next() {
                    if ch == c {
                        end = Some(i + 1);
                        break;
                    }
                    if ch == '\\' {
                        match chars.peek() {
                            // Only the quote and the backslash are escapes:
                            // a regex keeps its `\d`, `\.` as written.
                            Some(&(_, next)) if next == c || next == '\\' => {
                                value.push(next);
                                chars.next();
                                continue;
                            }
                            _ => {}
                        }
                    }
                    value.push(ch);
                }
                let Some(end) = end else {
                    return Err(FilterError::at(
                        text,
                        at..text.len(),
                        format!("the quoted value starting here has no closing {c}"),
                        format!("end the value with {c} (write \\{c} for a {c} inside it)"),
                    ));
                };
                out.push(Token {
                    kind: TokenKind::Quoted(value),
                    span: at..end,
                });
            }
            _ => {
                let mut end = text.len();
                while let Some(&(i, ch)) = chars.peek() {
                    if ends_word(ch) {
                        end = i;
                        break;
                    }
                    chars.next();
                }
                out.push(Token {
                    kind: TokenKind::Word(text[at..end].to_string()),
                    span: at..end,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<TokenKind> {
        tokens(text).unwrap().into_iter().map(|t| t.kind).collect()
    }

    fn word(w: &str) -> TokenKind {
        TokenKind::Word(w.to_string())
    }

    #[test]
    fn words_operators_and_parentheses() {
        assert_eq!(
            kinds("not (verdict=blocked or client!=10.0.0.0/8)"),
            vec![
                word("not"),
                TokenKind::Open,
                word("verdict"),
                TokenKind::Op(Op::Equal),
                word("blocked"),
                word("or"),
                word("client"),
                TokenKind::Op(Op::NotEqual),
                word("10.0.0.0/8"),
                TokenKind::Close,
            ]
        );
    }

    #[test]
    fn times_and_addresses_stay_one_word() {
        assert_eq!(
            kinds("after=2026-12-03T17:00:00+01:00 client=[::1]:1344"),
            vec![
                word("after"),
                TokenKind::Op(Op::Equal),
                word("2026-12-03T17:00:00+01:00"),
                word("client"),
                TokenKind::Op(Op::Equal),
                word("[::1]:1344"),
            ]
        );
    }

    #[test]
    fn quoted_values_keep_regex_escapes() {
        assert_eq!(
            kinds(r#"url~"\.exe(\?|$)" url!~'it\'s'"#),
            vec![
                word("url"),
                TokenKind::Op(Op::Regex),
                TokenKind::Quoted(r"\.exe(\?|$)".to_string()),
                word("url"),
                TokenKind::Op(Op::NotRegex),
                TokenKind::Quoted("it's".to_string()),
            ]
        );
    }

    #[test]
    fn double_equals_is_equals() {
        let t = tokens("method==REQMOD").unwrap();
        assert_eq!(t[1].kind, TokenKind::Op(Op::Equal));
        assert_eq!(t[1].span, 6..8);
    }

    #[test]
    fn an_unclosed_quote_and_a_lone_bang_are_refused_where_they_are() {
        let e = tokens("url~\"abc").unwrap_err();
        assert_eq!((e.column, e.width), (4, 4));
        let e = tokens("verdict ! blocked").unwrap_err();
        assert_eq!(e.column, 8);
        assert!(e.hint.contains("not"));
    }
}
