//! JUnit XML for CI systems (the Jenkins/GitLab/GitHub flavour of the
//! format): one `<testsuite>` per check run, one `<testcase>` per case, a
//! `<failure>` carrying what the user saw, an `<error>` for a case that
//! could not test the vendor (its proxy unreachable), and the vendor
//! configuration the suite expects in `<system-out>`.

use std::fmt::Write;

use super::report::CheckReport;

/// The report as a JUnit XML document.
pub fn junit_xml(report: &CheckReport) -> String {
    let failures = report.failed();
    let errors = report.errors();
    let total = report.results.len();
    let secs = report.elapsed.as_secs_f64();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"icaptap check\" tests=\"{total}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{secs:.3}\">"
    );
    let _ = writeln!(
        xml,
        "  <testsuite name=\"{}\" tests=\"{total}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\" time=\"{secs:.3}\" timestamp=\"{}\">",
        escape(&report.suite),
        escape(&report.started_at)
    );
    for r in &report.results {
        let _ = write!(
            xml,
            "    <testcase classname=\"icaptap.check.{}\" name=\"{}\" time=\"{:.3}\"",
            escape(r.check),
            escape(&r.title),
            r.elapsed.as_secs_f64()
        );
        if let Some(reason) = &r.error {
            let _ = writeln!(
                xml,
                ">\n      <error message=\"{}\" type=\"vendor-unreachable\">{}</error>\n    </testcase>",
                escape(reason),
                escape(&r.detail)
            );
        } else if r.passed {
            let _ = writeln!(
                xml,
                ">\n      <system-out>{}</system-out>\n    </testcase>",
                escape(&r.detail)
            );
        } else {
            let _ = writeln!(
                xml,
                ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>",
                escape(&r.detail),
                escape(r.check),
                escape(&r.detail)
            );
        }
    }
    let _ = writeln!(
        xml,
        "    <system-out>{}</system-out>\n  </testsuite>\n</testsuites>",
        escape(&report.vendor_setup)
    );
    xml
}

/// Text as XML character data or attribute value: markup escaped, and the
/// control characters XML 1.0 forbids replaced (a CI parser rejects the
/// whole file for one of them).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toolkit::check::report::CaseResult;
    use std::time::Duration;

    #[test]
    fn failures_and_markup_are_written_so_a_parser_reads_them() {
        let report = CheckReport {
            suite: "vendor <A> & \"B\"".to_owned(),
            started_at: "2026-01-01T00:00:00Z".to_owned(),
            elapsed: Duration::from_millis(1500),
            vendor_setup: "icap://127.0.0.1:11344/av/respmod".to_owned(),
            out: std::path::PathBuf::from("/tmp/x"),
            results: vec![
                CaseResult {
                    title: "clean file intact".to_owned(),
                    check: "clean-intact",
                    passed: true,
                    error: None,
                    detail: "HTTP 200".to_owned(),
                    elapsed: Duration::from_millis(20),
                },
                CaseResult {
                    title: "sensor down (fail-closed)".to_owned(),
                    check: "sensor-down",
                    passed: false,
                    error: None,
                    detail: "sensor down: user got the file unscanned\u{1}".to_owned(),
                    elapsed: Duration::from_millis(30),
                },
                CaseResult {
                    title: "infected download blocked".to_owned(),
                    check: "infected-blocked",
                    passed: false,
                    error: Some("the vendor proxy at 127.0.0.1:9 refused".to_owned()),
                    detail: "not tested".to_owned(),
                    elapsed: Duration::from_millis(1),
                },
            ],
        };
        let xml = junit_xml(&report);
        assert!(
            xml.contains("tests=\"3\" failures=\"1\" errors=\"1\""),
            "{xml}"
        );
        assert!(
            xml.contains("<error message=\"the vendor proxy at 127.0.0.1:9 refused\" type=\"vendor-unreachable\">not tested</error>"),
            "{xml}"
        );
        assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
        assert!(
            xml.contains("name=\"vendor &lt;A&gt; &amp; &quot;B&quot;\""),
            "{xml}"
        );
        assert!(
            xml.contains("<failure message=\"sensor down: user got the file unscanned\u{fffd}\""),
            "{xml}"
        );
        assert!(xml.contains(
            "classname=\"icaptap.check.clean-intact\" name=\"clean file intact\" time=\"0.020\""
        ));
        assert_eq!(xml.matches("<testcase ").count(), 3);
        assert_eq!(xml.matches("</testcase>").count(), 3);
        assert!(!xml.contains('\u{1}'));
    }
}
