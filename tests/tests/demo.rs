//! `icaptap demo` is the README's main job: it must show every verdict class
//! it promises, leave a capture, logs and a summary behind, and finish fast.

use icaptap::output::records::ExchangeRecord;
use icaptap::toolkit::demo::{demo_main, DemoArgs};

#[test]
fn demo_shows_the_promised_mix() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let code = demo_main(DemoArgs {
        out: Some(out.clone()),
        port: None,
        live: icaptap::live::LiveArgs {
            quiet: true,
            ..Default::default()
        },
        lines_filter: Default::default(),
    });
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    let text = std::fs::read_to_string(out.join("exchanges.jsonl")).unwrap();
    let records: Vec<ExchangeRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let verdict_of = |url_part: &str| {
        records
            .iter()
            .find(|r| r.http_url.as_deref().is_some_and(|u| u.contains(url_part)))
            .map(|r| r.verdict.clone())
            .unwrap_or_else(|| panic!("no record for {url_part}: {records:#?}"))
    };
    assert_eq!(verdict_of("/clean/"), "clean");
    assert_eq!(verdict_of("eicar.com"), "infected");
    assert_eq!(verdict_of("installer.iso"), "clean");
    assert_eq!(verdict_of("/upload/"), "blocked");
    assert_eq!(verdict_of("/error/503"), "error");
    assert_eq!(verdict_of("/close/"), "missing");
    assert_eq!(verdict_of("/malformed/"), "malformed");
    assert!(records.iter().any(|r| r.verdict == "options"));
    let big = records
        .iter()
        .find(|r| {
            r.http_url
                .as_deref()
                .is_some_and(|u| u.contains("installer.iso"))
        })
        .unwrap();
    assert_eq!(big.request_body_bytes, 2 * 1024 * 1024);
    assert!(big.preview.as_ref().is_some_and(|p| p.continued), "{big:?}");
    for file in [
        "connections.jsonl",
        "summary.json",
        "capture.pcapng",
        "report.html",
        "report.md",
    ] {
        assert!(out.join(file).exists(), "{file} missing");
    }
}
