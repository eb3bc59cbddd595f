//! `icaptap check` with its default suite against real Squid (Debian),
//! configured by the test with `bypass=0` and again with `bypass=1`,
//! pointed at the check's sensor address: Squid blocks EICAR, fails closed
//! without bypass, and with bypass fails open, which the check flags
//! ("sensor down: user got the file unscanned").

use std::net::SocketAddr;
use std::process::Command;

use icaptap::toolkit::check::{junit_xml, CheckEnv, CheckReport, Suite};

mod faults_support;
mod peers;
use peers::{free_port, have, Squid, SquidIcap};

/// Runs the default suite with Squid in front; returns the report and the
/// JUnit XML.
fn default_suite_through_squid(bypass: bool) -> Option<(CheckReport, String)> {
    if !have("squid") {
        eprintln!("squid is not installed (.ci/run installs it); skipping");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = if std::env::var_os("ICAPTAP_KEEP").is_some() {
        tmp.keep()
    } else {
        tmp.path().to_path_buf()
    };
    let mut suite = Suite::default_suite().unwrap();
    suite.sensor.listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt
        .block_on(CheckEnv::start(suite.clone(), &root.join("run")))
        .unwrap();
    // Squid probes its services with OPTIONS at start-up: the check's
    // sensor is already listening.
    let squid = Squid::start(
        &root.join("squid"),
        &SquidIcap {
            icap: env.icap_listen(),
            reqmod_service: suite.sensor.reqmod.clone(),
            respmod_service: suite.sensor.respmod.clone(),
            bypass,
            preview_size: 1024,
        },
    );
    let report = rt.block_on(env.run(Some(squid.addr))).unwrap();
    eprintln!("bypass={bypass}:\n{report}");
    let xml = junit_xml(&report);
    drop(squid);
    Some((report, xml))
}

fn case<'a>(report: &'a CheckReport, id: &str) -> &'a icaptap::toolkit::check::CaseResult {
    report
        .result(id)
        .unwrap_or_else(|| panic!("no {id} case in {report}"))
}

#[test]
fn squid_without_bypass_blocks_eicar_and_fails_closed() {
    let Some((report, xml)) = default_suite_through_squid(false) else {
        return;
    };
    let infected = case(&report, "infected-blocked");
    assert!(infected.passed, "{report}");
    assert!(
        infected
            .detail
            .contains("RESPMOD infected (EICAR-Test-File)"),
        "{report}"
    );
    assert!(case(&report, "clean-intact").passed, "{report}");
    let down = case(&report, "sensor-down");
    assert!(down.passed, "{report}");
    assert!(down.detail.contains("fail-closed as expected"), "{report}");
    assert!(case(&report, "identity-headers").passed, "{report}");
    assert!(case(&report, "preview-honoured").passed, "{report}");
    assert!(report.passed(), "{report}");
    assert!(xml.contains("name=\"infected download blocked\""), "{xml}");
}

#[test]
fn squid_with_bypass_fails_open_and_the_check_flags_it() {
    let Some((report, xml)) = default_suite_through_squid(true) else {
        return;
    };
    assert!(case(&report, "infected-blocked").passed, "{report}");
    let down = case(&report, "sensor-down");
    assert!(!down.passed, "{report}");
    assert!(
        down.detail
            .contains("sensor down: user got the file unscanned"),
        "{report}"
    );
    assert!(!report.passed());
    assert!(
        xml.contains("<failure message=\"sensor down: user got the file unscanned"),
        "{xml}"
    );
}

#[test]
fn the_command_prints_the_default_suite_and_refuses_a_broken_one() {
    let bin = faults_support::icaptap_binary();
    let o = Command::new(&bin)
        .args(["check", "--print-suite"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    Suite::from_toml(&text, "printed").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken.toml");
    std::fs::write(&broken, "name = \"x\"\n").unwrap();
    let o = Command::new(&bin)
        .arg("check")
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("broken.toml"), "{err}");
}
