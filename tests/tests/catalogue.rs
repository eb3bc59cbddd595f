//! The anomaly catalogue stays complete: every code the codec or the
//! observer can report has an entry in docs/anomalies.md, the catalogue
//! names no code that does not exist, and some test triggers each code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use icap_codec::AnomalyCode;
use icaptap::observe::RuleCode;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn all_codes() -> BTreeSet<&'static str> {
    named_codes().into_iter().map(|(code, _)| code).collect()
}

/// Every code with the enum path a test may name it by.
fn named_codes() -> Vec<(&'static str, String)> {
    AnomalyCode::ALL
        .iter()
        .map(|c| (c.as_str(), format!("AnomalyCode::{c:?}")))
        .chain(
            RuleCode::ALL
                .iter()
                .map(|c| (c.as_str(), format!("RuleCode::{c:?}"))),
        )
        .collect()
}

#[test]
fn every_code_is_documented_and_nothing_else() {
    let doc = std::fs::read_to_string(root().join("docs/anomalies.md")).unwrap();
    let documented: BTreeSet<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("### `")?.strip_suffix('`'))
        .collect();
    let codes = all_codes();
    let undocumented: Vec<_> = codes.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&codes).collect();
    assert!(
        undocumented.is_empty(),
        "codes missing from docs/anomalies.md: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "docs/anomalies.md names codes that do not exist: {unknown:?}"
    );
}

fn sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn every_code_has_a_test_that_names_it() {
    let mut text = String::new();
    sources(&root().join("tests/tests"), &mut text);
    sources(&root().join("codec/tests"), &mut text);
    let this_file = include_str!("catalogue.rs");
    let text = text.replace(this_file, "");
    // A test names a code by its string (in an assertion, an expected event
    // line or a fixture name) or by its enum variant.
    let untested: Vec<_> = named_codes()
        .into_iter()
        .filter(|(code, variant)| !text.contains(code) && !text.contains(variant.as_str()))
        .map(|(code, _)| code)
        .collect();
    assert!(untested.is_empty(), "codes no test names: {untested:?}");
}
