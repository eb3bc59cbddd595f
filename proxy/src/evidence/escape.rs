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

/// Renders icaptap's own prose (the catalogue's Markdown-ish text, never
/// wire data) as HTML: everything is escaped first, then `` `code` `` spans
/// become `<code>`, `**bold**` becomes `<strong>`, and `[text](target)`
/// links keep their text only (a report has nowhere to link them to). No
/// backtick, asterisk pair or bracket of that markup is left in the page.
pub fn html_prose(text: &str) -> String {
    let escaped = html(text);
    let mut out = String::with_capacity(escaped.len() + 16);
    let mut rest = escaped.as_str();
    while let Some(c) = rest.chars().next() {
        if c == '`' {
            if let Some(end) = rest[1..].find('`') {
                out.push_str("<code>");
                out.push_str(&rest[1..1 + end]);
                out.push_str("</code>");
                rest = &rest[end + 2..];
                continue;
            }
        }
        if let Some(body) = rest.strip_prefix("**") {
            if let Some(end) = body.find("**") {
                out.push_str("<strong>");
                out.push_str(&body[..end]);
                out.push_str("</strong>");
                rest = &body[end + 2..];
                continue;
            }
        }
        if c == '[' {
            if let Some(close) = rest.find("](") {
                if let Some(end) = rest[close..].find(')') {
                    let label = &rest[1..close];
                    if !label.contains('[') {
                        out.push_str(&html_prose_inner(label));
                        rest = &rest[close + end + 1..];
                        continue;
                    }
                }
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// [`html_prose`] on text that is already escaped (a link's label).
fn html_prose_inner(escaped: &str) -> String {
    escaped
        .split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{part}</code>")
            } else {
                part.to_string()
            }
        })
        .collect()
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
    fn prose_renders_code_bold_and_links_without_markup_left() {
        assert_eq!(
            html_prose("the verdict is `missing` (**error**), see [RFC `3507`](https://x) <b>"),
            "the verdict is <code>missing</code> (<strong>error</strong>), see RFC <code>3507</code> &lt;b&gt;"
        );
        // A lone backtick stays text.
        assert_eq!(html_prose("a ` b"), "a ` b");
    }

    #[test]
    fn markdown_escapes_tables_and_html() {
        assert_eq!(markdown("a|b<i>\nc"), "a\\|b&lt;i&gt; c");
        assert_eq!(markdown_code("x`y"), "`` x`y ``");
    }
}
