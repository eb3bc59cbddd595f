//! The anomaly catalogue as the report quotes it: docs/anomalies.md is
//! compiled into the binary and parsed, so the report's "what it means" and
//! "what to do" are the catalogue's own words and can never disagree with it.
//!
//! Each entry is a `### \`code\`` heading followed by `- Meaning:`,
//! `- Side: ... Severity: ...` and `- What to do:` bullets whose text may
//! continue on indented lines.

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The catalogue text as shipped with this build.
const ANOMALIES_MD: &str = include_str!("../../../docs/anomalies.md");

/// What the catalogue says about one anomaly code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogueEntry {
    /// The stable code.
    pub code: String,
    /// The "Meaning" bullet, continuation lines joined.
    pub meaning: String,
    /// The "What to do" bullet, continuation lines joined.
    pub what_to_do: String,
    /// The severity named on the "Side ... Severity" bullet, lower case.
    pub severity: Option<String>,
}

/// Every entry of a catalogue, by code.
#[derive(Clone, Debug, Default)]
pub struct Catalogue {
    entries: BTreeMap<String, CatalogueEntry>,
}

/// Which bullet the continuation lines belong to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bullet {
    Meaning,
    WhatToDo,
    Other,
}

impl Catalogue {
    /// The catalogue compiled into this build (parsed once).
    pub fn builtin() -> &'static Catalogue {
        static BUILTIN: OnceLock<Catalogue> = OnceLock::new();
        BUILTIN.get_or_init(|| Catalogue::parse(ANOMALIES_MD))
    }

    /// Parses catalogue text in the docs/anomalies.md layout.
    pub fn parse(text: &str) -> Catalogue {
        let mut entries = BTreeMap::new();
        let mut current: Option<CatalogueEntry> = None;
        let mut bullet = Bullet::Other;
        for line in text.lines() {
            if let Some(heading) = line.strip_prefix("### ") {
                if let Some(done) = current.take() {
                    entries.insert(done.code.clone(), done);
                }
                let code = heading.trim().trim_matches('`').to_string();
                current = Some(CatalogueEntry {
                    code,
                    ..CatalogueEntry::default()
                });
                bullet = Bullet::Other;
                continue;
            }
            if line.starts_with("## ") || line.starts_with("# ") {
                if let Some(done) = current.take() {
                    entries.insert(done.code.clone(), done);
                }
                continue;
            }
            let Some(entry) = current.as_mut() else {
                continue;
            };
            if let Some(rest) = line.strip_prefix("- ") {
                bullet = Bullet::Other;
                if let Some(text) = rest.strip_prefix("Meaning:") {
                    bullet = Bullet::Meaning;
                    entry.meaning = text.trim().to_string();
                } else if let Some(text) = rest.strip_prefix("What to do:") {
                    bullet = Bullet::WhatToDo;
                    entry.what_to_do = text.trim().to_string();
                } else if let Some(at) = rest.find("Severity:") {
                    let severity = rest[at + "Severity:".len()..]
                        .trim()
                        .trim_end_matches('.')
                        .to_ascii_lowercase();
                    entry.severity = Some(severity);
                }
            } else if line.starts_with("  ") && !line.trim().is_empty() {
                let target = match bullet {
                    Bullet::Meaning => &mut entry.meaning,
                    Bullet::WhatToDo => &mut entry.what_to_do,
                    Bullet::Other => continue,
                };
                target.push(' ');
                target.push_str(line.trim());
            } else {
                bullet = Bullet::Other;
            }
        }
        if let Some(done) = current.take() {
            entries.insert(done.code.clone(), done);
        }
        Catalogue { entries }
    }

    /// The entry for `code`, when the catalogue has one.
    pub fn get(&self, code: &str) -> Option<&CatalogueEntry> {
        self.entries.get(code)
    }

    /// Every code the catalogue describes.
    pub fn codes(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_covers_every_codec_code_with_both_bullets() {
        let catalogue = Catalogue::builtin();
        for code in icap_codec::AnomalyCode::ALL {
            let entry = catalogue
                .get(code.as_str())
                .unwrap_or_else(|| panic!("{} missing from docs/anomalies.md", code.as_str()));
            assert!(!entry.meaning.is_empty(), "{}: no meaning", entry.code);
            assert!(
                !entry.what_to_do.is_empty(),
                "{}: no what to do",
                entry.code
            );
        }
    }

    #[test]
    fn every_entry_gives_its_own_advice() {
        // A report shows one entry at a time: "as above" would point at
        // whatever code happens to be printed before it.
        for code in Catalogue::builtin().codes() {
            let entry = Catalogue::builtin().get(code).unwrap();
            let advice = entry.what_to_do.to_ascii_lowercase();
            for phrase in ["as above", "see above", "as below", "same as"] {
                assert!(
                    !advice.contains(phrase),
                    "{code}: what to do says {phrase:?}"
                );
            }
        }
    }

    #[test]
    fn continuation_lines_join_and_severity_is_read() {
        let text = "## Codes\n\n### `x-y`\n- Meaning: one\n  two.\n- Side: server. Severity: warn.\n- What to do: three\n  four.\n\n### `z`\n- Meaning: m\n";
        let c = Catalogue::parse(text);
        let e = c.get("x-y").unwrap();
        assert_eq!(e.meaning, "one two.");
        assert_eq!(e.what_to_do, "three four.");
        assert_eq!(e.severity.as_deref(), Some("warn"));
        assert_eq!(c.get("z").unwrap().meaning, "m");
    }
}
