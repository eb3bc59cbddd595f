//! The long jobs' progress line with the real `icaptap` binary: `report`,
//! `bundle`, `replay` (to a real c-icap) and `clean` of a demo run draw it
//! on a terminal (a pty from `script`), and write no progress and no
//! control characters when stderr is a pipe, or with `-q` on a terminal.

mod faults_support;
mod peers;

use std::path::Path;
use std::process::Command;

use faults_support::icaptap_binary;

/// The jobs, as arguments after `icaptap`, and the label each one's
/// progress line starts with.
fn jobs(run: &Path, tmp: &Path, target: &str, n: usize) -> Vec<(Vec<String>, &'static str)> {
    let run = run.display().to_string();
    vec![
        (vec!["report".into(), run.clone()], "report"),
        (
            vec![
                "bundle".into(),
                run.clone(),
                "-o".into(),
                tmp.join(format!("b{n}.tar.gz")).display().to_string(),
            ],
            "bundle: packing",
        ),
        (
            vec![
                "replay".into(),
                run.clone(),
                "--target".into(),
                target.into(),
            ],
            "replay",
        ),
    ]
}

/// A finished demo run in `dir`.
fn demo_run(dir: &Path) {
    let out = Command::new(icaptap_binary())
        .args(["demo", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `icaptap ARGS` on a pty; what the terminal showed.
fn on_a_terminal(args: &[String]) -> String {
    let mut line = icaptap_binary().display().to_string();
    for a in args {
        line.push(' ');
        line.push_str(a);
    }
    let out = Command::new("script")
        .args(["-qfec", &line, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `icaptap ARGS` with stdout and stderr piped; both, as text.
fn piped(args: &[String]) -> (String, String) {
    let out = Command::new(icaptap_binary()).args(args).output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_plain(what: &str, text: &str, label: &str) {
    assert!(
        !text.contains('\x1b') && !text.contains('\r'),
        "{what}: control characters in {text:?}"
    );
    assert!(
        !text.contains(&format!("{label} [")),
        "{what}: a progress line in {text:?}"
    );
}

#[test]
fn long_jobs_show_progress_on_a_terminal_only() {
    assert!(
        peers::have("c-icap"),
        "c-icap is not installed: run .ci/run, which installs it"
    );
    let tmp = tempfile::tempdir().unwrap();
    let cicap = peers::CIcap::start(&tmp.path().join("c-icap"), "");
    let target = cicap.addr.to_string();
    let run = tmp.path().join("run");
    demo_run(&run);

    for (args, label) in jobs(&run, tmp.path(), &target, 0) {
        let (stdout, stderr) = piped(&args);
        assert_plain(&format!("{args:?} stderr"), &stderr, label);
        assert_plain(&format!("{args:?} stdout"), &stdout, label);
    }
    for (args, label) in jobs(&run, tmp.path(), &target, 1) {
        let shown = on_a_terminal(&args);
        assert!(
            shown.contains(&format!("{label} [")),
            "{args:?} on a terminal shows no progress line: {shown:?}"
        );
    }
    for (args, label) in jobs(&run, tmp.path(), &target, 2) {
        let mut quiet = vec!["-q".to_string()];
        quiet.extend(args.iter().cloned());
        let shown = on_a_terminal(&quiet);
        assert!(
            !shown.contains(&format!("{label} [")),
            "{quiet:?} shows a progress line: {shown:?}"
        );
    }

    // clean, last: a dry run draws nothing, the real one counts files.
    let dry = piped(&[
        "clean".into(),
        run.display().to_string(),
        "--dry-run".into(),
    ]);
    assert_plain("clean --dry-run", &dry.1, "clean");
    let shown = on_a_terminal(&["clean".into(), run.display().to_string()]);
    assert!(shown.contains("clean ["), "clean on a terminal: {shown:?}");
    assert!(!run.exists(), "clean removed the run: {shown}");
}

#[test]
fn clean_off_a_terminal_prints_only_its_result() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    demo_run(&run);
    let (stdout, stderr) = piped(&["clean".into(), run.display().to_string()]);
    assert_plain("clean stderr", &stderr, "clean");
    assert_plain("clean stdout", &stdout, "clean");
    assert!(stdout.contains("removed"), "{stdout}");
    assert!(!run.exists());
}
