//! The deploy/ folder: the systemd unit passes `systemd-analyze verify` and
//! its hardening rates "OK"; the nftables and iptables scripts' dry runs
//! inside a namespace of the test's own accept good rules, refuse bad ones
//! and change nothing; the sample config is a valid `icaptap proxy` config;
//! completions and man pages come out of the clap definitions.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::Parser;
use icaptap::cli::{Cli, Command as Job};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The unit with ExecStart pointing at a stand-in executable (verify checks
/// that the program exists; the real binary is not built for this package).
fn unit_in(dir: &Path, text: &str) -> PathBuf {
    let exe = dir.join("icaptap");
    std::fs::write(&exe, "#!/bin/sh\nexit 0\n").unwrap();
    Command::new("chmod").arg("755").arg(&exe).status().unwrap();
    let unit = dir.join("icaptap.service");
    let text = text.replace("/usr/local/bin/icaptap", exe.to_str().unwrap());
    std::fs::write(&unit, text).unwrap();
    unit
}

fn analyze(args: &[&str], unit: &Path) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze is needed: install the systemd package")
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(deploy().join("icaptap.service")).unwrap();
    let unit = unit_in(dir.path(), &text);
    let out = analyze(&["verify", "--man=no"], &unit);
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    for directive in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=icaptap",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE",
        // The journal gets no second copy of exchanges.jsonl.
        "Environment=ICAPTAP_QUIET=true",
    ] {
        assert!(text.contains(directive), "{directive} missing");
    }
    // Exposure 2.5 or lower ("OK" is below 4).
    let out = analyze(&["security", "--offline=yes", "--threshold=25"], &unit);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The check can fail: a bad value is reported (as a warning, which the
    // check above does not accept either).
    let broken = unit_in(
        dir.path(),
        &text.replace("ProtectSystem=strict", "ProtectSystem=strictly"),
    );
    let out = analyze(&["verify", "--man=no"], &broken);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("strictly"), "a bad unit passed: {said}");
}

/// A namespace for one dry run, removed when dropped.
struct Namespace(String);

impl Namespace {
    fn new(tag: &str) -> Namespace {
        let name = format!("icaptap-deploy-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(ok.success());
        Namespace(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .unwrap()
    }

    /// Every icaptap rule in the namespace (nftables and iptables).
    fn icaptap_rules(&self) -> String {
        let out = self.run(&["sh", "-c", "(nft list ruleset; iptables-save; ip rule) 2>/dev/null | grep -i -e icaptap -e 0x1344 || true"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn dry_runs(script: &str, tag: &str) {
    if !is_root() {
        eprintln!("SKIPPED: the deploy scripts' dry run needs root (a network namespace); run as root to cover it");
        return;
    }
    let ns = Namespace::new(tag);
    let script = deploy().join(script);
    let script = script.to_str().unwrap();
    for extra in [
        &["--sensor", "10.254.2.2"][..],
        &["--sensor", "fd00:1344::2"][..],
        &[][..],
        &["--tproxy", "--to-port", "15344"][..],
    ] {
        let mut args = vec![script, "--dry-run", "insert"];
        args.extend_from_slice(extra);
        let out = ns.run(&args);
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {said}");
        assert!(said.contains("dry run"), "{args:?}: {said}");
        assert!(
            ns.icaptap_rules().is_empty(),
            "a dry run changed the rules: {}",
            ns.icaptap_rules()
        );
    }
    // The dry run checks the rules for real: a bad address is refused.
    let out = ns.run(&[script, "--dry-run", "insert", "--sensor", "10.254.2.300"]);
    assert!(!out.status.success(), "a bad address passed the dry run");
    // Removing what is not there is harmless.
    let out = ns.run(&[script, "--dry-run", "remove"]);
    assert!(out.status.success());
}

#[test]
fn the_nftables_script_dry_run_checks_rules_and_changes_nothing() {
    dry_runs("icaptap-nft.sh", "nft");
}

#[test]
fn the_iptables_script_dry_run_checks_rules_and_changes_nothing() {
    dry_runs("icaptap-iptables.sh", "ipt");
}

#[test]
fn the_sample_config_is_a_valid_proxy_config() {
    let path = deploy().join("icaptap.toml");
    let cli: Cli = icaptap::config::parse_with_config_file::<Cli, _, _>([
        "icaptap",
        "proxy",
        "--config",
        path.to_str().unwrap(),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let Job::Proxy(args) = cli.command else {
        panic!("not the proxy command");
    };
    assert_eq!(args.forward.upstream, "sensor.example.internal:1344");
    assert_eq!(args.ops.metrics, Some("127.0.0.1:9344".parse().unwrap()));
    assert_eq!(args.ops.ring, Some(2 << 30));
    assert_eq!(args.ops.trigger.len(), 3);
    assert!(args.duration.is_some());
    // Flags still win over the file.
    let cli = Cli::try_parse_from(["icaptap", "proxy", "--upstream", "s:1", "--metrics"]).unwrap();
    let Job::Proxy(args) = cli.command else {
        panic!("not the proxy command");
    };
    assert_eq!(
        args.ops.metrics,
        Some("127.0.0.1:9344".parse().unwrap()),
        "--metrics alone means loopback"
    );
}

#[test]
fn completions_and_man_pages_come_from_the_command_line_definitions() {
    let mut script = Vec::new();
    icaptap::cli::manual::write_completions(clap_complete_shell_bash(), &mut script);
    let script = String::from_utf8(script).unwrap();
    for option in [
        "--max-exchanges",
        "--transparent",
        "--trigger",
        "--upstream",
    ] {
        assert!(script.contains(option), "bash completion lacks {option}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("icaptap.bash");
    std::fs::write(&file, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );

    let pages = icaptap::cli::manual::manpage(&icaptap::cli::ManpageArgs {
        dir: Some(dir.path().to_path_buf()),
    })
    .unwrap();
    let names: Vec<String> = pages
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"icaptap.1".to_string()) && names.contains(&"icaptap-proxy.1".to_string()),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("completions")),
        "the packaging commands get no page: {names:?}"
    );
    // Listed where a user looks for them.
    let help = <icaptap::cli::Cli as clap::CommandFactory>::command()
        .render_help()
        .to_string();
    assert!(
        help.contains("completions") && help.contains("manpage"),
        "{help}"
    );
    let proxy = std::fs::read_to_string(dir.path().join("icaptap-proxy.1")).unwrap();
    assert!(
        proxy.starts_with(".ie") || proxy.contains(".TH"),
        "not roff"
    );
    assert!(
        proxy.contains("transparent") && proxy.contains("max\\-exchanges"),
        "{proxy}"
    );
    // man itself renders it, when installed.
    if Command::new("man").arg("--version").output().is_ok() {
        let rendered = Command::new("man")
            .arg("-l")
            .arg(dir.path().join("icaptap-proxy.1"))
            .env("MANPAGER", "cat")
            .output()
            .unwrap();
        assert!(rendered.status.success());
    }
}

fn clap_complete_shell_bash() -> icaptap::cli::manual::Shell {
    icaptap::cli::manual::Shell::Bash
}
