//! Escaping for every string that reaches a report. Anything from the wire
//! (URIs, ISTags, threat names, details, header values, addresses) is data
//! chosen by whoever sent the traffic: it goes through these functions and
//! never into markup as-is.

/// Escapes text for HTML element content and quoted attribute values.
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters would make the file unreadable or let a
            // value break out of a line; show them as code points.
            c if c.is_control() && c != '\n' && c != '\t' => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for a Markdown table cell or paragraph: no markup, no HTML,
/// no line breaks, no table pipes survive.
pub fn markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '!' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' | '\n' => out.push(' '),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A Markdown inline code span holding `text`, whatever backticks it has.
/// Text with `<`, `>` or `&` is written escaped instead: renderers differ on
/// HTML inside code spans, and a ticket system may not follow CommonMark.
pub fn markdown_code(text: &str) -> String {
    if text.contains(['<', '>', '&']) {
        return markdown(text);
    }
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut fence = String::from("`");
    while clean.contains(fence.as_str()) {
        fence.push('`');
    }
    format!("{fence} {clean} {fence}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_markup_and_quotes() {
        assert_eq!(
            html("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(html("a\u{1b}b"), "a\\u{1b}b");
    }

    #[test]
    fn markdown_escapes_tables_and_html() {
        assert_eq!(markdown("a|b<i>\nc"), "a\\|b&lt;i&gt; c");
        assert_eq!(markdown_code("x`y"), "`` x`y ``");
    }
}
