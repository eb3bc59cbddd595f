//! Anomaly codes as people type them on the command line (`--stop-on`,
//! `--trigger`): checked against every code icaptap can report (the
//! codec's [`AnomalyCode`]s and the observer's [`RuleCode`]s), so that a
//! misspelt code is refused at start-up with the closest valid one instead
//! of a stop condition or trigger that silently never fires.

use icap_codec::AnomalyCode;

use super::finding::RuleCode;

/// The `--trigger` value that matches every error-severity anomaly.
pub const ANY: &str = "any";

/// Every anomaly code icaptap can report: the codec's, then the observer's.
pub fn all_codes() -> impl Iterator<Item = &'static str> {
    AnomalyCode::ALL
        .iter()
        .map(|c| c.as_str())
        .chain(RuleCode::ALL.iter().map(|c| c.as_str()))
}

/// Parses one anomaly code (a `--stop-on` value).
pub fn parse_code(text: &str) -> Result<String, String> {
    let code = text.trim();
    if all_codes().any(|c| c == code) {
        return Ok(code.to_string());
    }
    Err(unknown(code, ""))
}

/// Parses one `--trigger` value: an anomaly code, or `any`.
pub fn parse_trigger(text: &str) -> Result<String, String> {
    let code = text.trim();
    if code == ANY || all_codes().any(|c| c == code) {
        return Ok(code.to_string());
    }
    Err(unknown(
        code,
        " (or `any` for every error-severity anomaly)",
    ))
}

/// The message for an unknown code: the closest valid one, then all of
/// them.
fn unknown(code: &str, also: &str) -> String {
    let hint = closest(code)
        .map(|c| format!("did you mean `{c}`? "))
        .unwrap_or_default();
    let valid: Vec<&str> = all_codes().collect();
    format!(
        "unknown anomaly code `{code}`; {hint}valid codes{also}: {} (docs/anomalies.md describes each)",
        valid.join(", ")
    )
}

/// The valid code `text` most likely means: one a small typo away, else
/// the one sharing the most telling words (`missing-verdict` shares
/// `verdict`, which few codes have, with `verdict-timeout`), ties going to
/// the nearer spelling.
pub fn closest(text: &str) -> Option<&'static str> {
    let text = text.trim().to_ascii_lowercase();
    if text.is_empty() {
        return None;
    }
    let by_spelling = all_codes().min_by_key(|c| edit_distance(&text, c))?;
    if edit_distance(&text, by_spelling) <= (text.len() / 4).max(2) {
        return Some(by_spelling);
    }
    let words = |code: &str| code.split('-').map(str::to_string).collect::<Vec<_>>();
    let codes: Vec<(&'static str, Vec<String>)> = all_codes().map(|c| (c, words(c))).collect();
    let alike = |a: &str, b: &str| a == b || (a.len() > 4 && edit_distance(a, b) <= 1);
    // A word shared with few codes says more than one most codes have.
    let weight = |word: &str| {
        let with = codes
            .iter()
            .filter(|(_, ws)| ws.iter().any(|w| alike(word, w)))
            .count();
        if with == 0 {
            0.0
        } else {
            1.0 / with as f64
        }
    };
    let typed = words(&text);
    codes
        .iter()
        .map(|(code, ws)| {
            let score: f64 = typed
                .iter()
                .filter(|t| ws.iter().any(|w| alike(t, w)))
                .map(|t| weight(t))
                .sum();
            (score, *code)
        })
        .filter(|(score, _)| *score > 0.0)
        .max_by(|a, b| {
            a.0.total_cmp(&b.0)
                .then_with(|| edit_distance(&text, b.1).cmp(&edit_distance(&text, a.1)))
        })
        .map(|(_, code)| code)
}

/// Levenshtein distance in characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reported_code_is_accepted() {
        for code in all_codes() {
            assert_eq!(parse_code(code).as_deref(), Ok(code));
            assert_eq!(parse_trigger(code).as_deref(), Ok(code));
        }
        assert_eq!(parse_trigger("any").as_deref(), Ok("any"));
        assert!(parse_code("any").is_err(), "`any` is for --trigger only");
    }

    #[test]
    fn unknown_codes_get_the_closest_and_the_list() {
        assert_eq!(closest("missing-verdict"), Some("verdict-timeout"));
        assert_eq!(closest("verdict-timout"), Some("verdict-timeout"));
        assert_eq!(closest("istag-chnged"), Some("istag-changed"));
        assert_eq!(closest("Sensor-Unreachable"), Some("sensor-unreachable"));
        assert_eq!(closest("nonsense"), None);
        let err = parse_trigger("missing-verdict").unwrap_err();
        assert!(err.contains("did you mean `verdict-timeout`?"), "{err}");
        assert!(err.contains("server-reset-before-response"), "{err}");
        assert!(err.contains("`any`"), "{err}");
        let err = parse_code("nonsense").unwrap_err();
        assert!(!err.contains("did you mean"), "{err}");
        assert!(err.contains("docs/anomalies.md"), "{err}");
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
