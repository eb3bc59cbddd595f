//! The deploy/ folder: the systemd unit passes `systemd-analyze verify` and
//! its hardening rates "OK", and its sandbox lets icaptap lower its
//! threads' priority (icaptap run under the unit's system-call filter,
//! loaded with libseccomp) and read the host facts bundles need (a bundle
//! made under a /proc mounted as the unit mounts it); the
//! Containerfile's volume belongs to its user and each start gets a new run
//! directory (checked as text: images may not build here); the nftables and iptables scripts' dry runs
//! inside a namespace of the test's own accept good rules, refuse bad ones
//! and change nothing; the sample config is a valid `icaptap proxy` config;
//! completions and man pages come out of the clap definitions.

mod faults_support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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

/// The system calls a group of `systemd-analyze syscall-filter` names,
/// nested groups expanded.
fn syscall_group(group: &str, seen: &mut std::collections::BTreeSet<String>) {
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", group])
        .output()
        .expect("systemd-analyze is needed: install the systemd package");
    assert!(out.status.success(), "unknown group {group}");
    for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let name = line.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        if name.starts_with('@') {
            syscall_group(name, seen);
        } else {
            seen.insert(name.to_string());
        }
    }
}

/// The system calls a unit's `SystemCallFilter=` lines allow, applied in
/// order as systemd.exec(5) says: the first line is an allow list, a later
/// `~` line takes calls out of it, a later plain line puts calls back.
fn allowed_syscalls(unit: &str) -> std::collections::BTreeSet<String> {
    let mut allowed = std::collections::BTreeSet::new();
    let lines: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
        .collect();
    assert!(
        !lines.is_empty() && !lines[0].starts_with('~'),
        "the unit's filter starts with an allow list"
    );
    for line in lines {
        let (deny, names) = match line.strip_prefix('~') {
            Some(names) => (true, names),
            None => (false, line),
        };
        for name in names.split_whitespace() {
            let mut calls = std::collections::BTreeSet::new();
            if name.starts_with('@') {
                syscall_group(name, &mut calls);
            } else {
                calls.insert(name.to_string());
            }
            if deny {
                allowed.retain(|c| !calls.contains(c));
            } else {
                allowed.extend(calls);
            }
        }
    }
    allowed
}

/// What the unit's sandbox lets icaptap do that its performance and its
/// bundles depend on. systemd is not PID 1 on every test machine, so the
/// filter is computed from systemd's own group lists (systemd-analyze)
/// rather than read from a running unit; the next test runs icaptap under
/// that filter.
#[test]
fn the_unit_lets_icaptap_lower_thread_priorities_and_read_host_facts() {
    let text = std::fs::read_to_string(deploy().join("icaptap.service")).unwrap();
    let allowed = allowed_syscalls(&text);
    // The side-path threads call setpriority(2) (tap/priority.rs).
    assert!(
        allowed.contains("setpriority"),
        "setpriority is filtered out"
    );
    // The rest of @resources stays denied.
    for denied in ["sched_setscheduler", "setrlimit", "sched_setattr"] {
        assert!(!allowed.contains(denied), "{denied} is allowed");
    }
    // The check can fail: without the line that allows it, setpriority is
    // denied by `~@resources`.
    let without: String = text
        .lines()
        .filter(|l| *l != "SystemCallFilter=setpriority")
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!allowed_syscalls(&without).contains("setpriority"));

    // Bundles read /proc/cpuinfo, /proc/meminfo and /proc/sys/kernel
    // (evidence/hostinfo.rs): ProcSubset=pid would hide them.
    assert!(
        !text.lines().any(|l| l.trim() == "ProcSubset=pid"),
        "ProcSubset=pid hides the host facts bundles need"
    );
}

/// The container image, checked as text: this test machine may not be able
/// to build images (no container daemon), so what a build would need is
/// read from the Containerfile and the ignore files.
#[test]
fn the_containerfile_owns_its_volume_and_starts_a_new_run_each_time() {
    let root = deploy().join("..");
    let file = std::fs::read_to_string(deploy().join("Containerfile")).unwrap();
    // The volume's directory belongs to the user icaptap runs as, before
    // the VOLUME line (a new volume takes its owner from the image).
    let user = file
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert_eq!(user.trim(), "nonroot");
    let volume = file
        .lines()
        .position(|l| l.starts_with("VOLUME"))
        .expect("a VOLUME line");
    let chown = file
        .lines()
        .position(|l| l.contains("--chown=65532:65532") && l.contains("/var/lib/icaptap"))
        .expect("the data directory is copied owned by nonroot (65532)");
    assert!(chown < volume, "the owner must be set before VOLUME");
    // Every start gets its own run directory: icaptap refuses a directory
    // holding an earlier run, so a fixed --out fails on restart.
    let cmd = file
        .lines()
        .find(|l| l.starts_with("CMD"))
        .expect("a CMD line");
    let args: Vec<String> = serde_json::from_str(cmd.trim_start_matches("CMD").trim()).unwrap();
    if let Some(i) = args.iter().position(|a| a == "--out") {
        assert!(
            args[i + 1].contains(icaptap::output::directory::TIME_PLACEHOLDER),
            "a fixed --out collides on restart: {}",
            args[i + 1]
        );
    }
    let cli: Cli = Cli::try_parse_from(
        std::iter::once("icaptap".to_string()).chain(
            args.iter()
                .filter(|a| !a.starts_with("--config") && !a.ends_with(".toml"))
                .cloned()
                .chain(["--upstream".to_string(), "s:1".to_string()]),
        ),
    )
    .unwrap_or_else(|e| panic!("the CMD does not parse: {e}"));
    let Job::Proxy(_) = cli.command else {
        panic!("the CMD is not the proxy command");
    };
    // The build context leaves out build output, history and captures,
    // and the two ignore files (podman's and docker's) are one.
    let containerignore = std::fs::read_to_string(root.join(".containerignore")).unwrap();
    let dockerignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    assert_eq!(containerignore, dockerignore);
    for pattern in ["target/", ".git/", "icaptap-*/"] {
        assert!(
            containerignore.lines().any(|l| l.trim() == pattern),
            "{pattern} is not ignored"
        );
    }
    // ...but keeps what the build copies.
    for needed in ["deploy/icaptap.toml", "Cargo.lock", "proxy/src/main.rs"] {
        assert!(root.join(needed).exists());
        assert!(
            !containerignore.lines().any(|l| l.trim() == needed),
            "{needed} is ignored"
        );
    }
}

/// Loads a seccomp filter allowing the system calls named in argv[1]
/// (every other call fails with EPERM, as `SystemCallErrorNumber=EPERM`
/// makes it in the unit), then executes argv[2:].
const SECCOMP_EXEC: &str = r#"
import errno, os, sys
import seccomp
f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
for name in open(sys.argv[1]).read().split():
    try:
        f.add_rule(seccomp.ALLOW, name)
    except (RuntimeError, ValueError):
        pass  # not a system call of this architecture
f.load()
os.execv(sys.argv[2], sys.argv[2:])
"#;

/// Runs `icaptap proxy` under the system-call filter of `unit`; returns
/// the nice levels of its observer and recorder threads once both have
/// tried to lower their priority: when `denied`, once both said (at debug
/// level) that they keep it, else once both levels are lowered (waiting
/// at most [`faults_support::PATIENCE`], then failing).
fn side_path_nice_under(unit: &str, dir: &Path, denied: bool) -> (Option<i64>, Option<i64>) {
    let allowed = dir.join("allowed");
    let calls: Vec<String> = allowed_syscalls(unit).into_iter().collect();
    std::fs::write(&allowed, calls.join("\n")).unwrap();
    let script = dir.join("seccomp-exec.py");
    std::fs::write(&script, SECCOMP_EXEC).unwrap();
    let out = dir.join(format!("run-{denied}"));
    let mut child = Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(&allowed)
        .arg(faults_support::icaptap_binary())
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:9",
            "--out",
        ])
        .arg(&out)
        .env("RUST_LOG", "warn,icaptap=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + faults_support::PATIENCE;
    let mut said = String::new();
    let mut listening = false;
    let mut kept = 0;
    let nice = |threads: &[(String, i64, i64)], prefix: &str| {
        threads
            .iter()
            .find(|(name, _, _)| name.starts_with(prefix))
            .map(|(_, nice, _)| *nice)
    };
    let threads = loop {
        let threads = faults_support::thread_nice(child.id());
        let lowered = nice(&threads, "icaptap-observ") == Some(5)
            && nice(&threads, "icaptap-record") == Some(10);
        if listening && ((denied && kept >= 2) || (!denied && lowered)) {
            break threads;
        }
        let wait = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(wait.min(std::time::Duration::from_millis(50))) {
            Ok(line) => {
                listening |= line.starts_with("icaptap: listening on");
                kept += usize::from(line.contains("keeps its CPU priority"));
                said.push_str(&line);
                said.push('\n');
            }
            Err(_) if std::time::Instant::now() < deadline => {}
            Err(_) => {
                let _ = child.kill();
                panic!("no answer under the unit's filter: {threads:?}\n{said}");
            }
        }
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "icaptap did not stop in order: {said}");
    (
        nice(&threads, "icaptap-observ"),
        nice(&threads, "icaptap-record"),
    )
}

/// icaptap run under the unit's system-call filter (loaded with
/// libseccomp, as systemd loads it): it starts, stops in order, and its
/// side-path threads take their nice levels. What is not reproduced here:
/// the unit's other sandboxing (namespaces, capabilities,
/// ProtectSystem...), which needs systemd as PID 1.
#[test]
fn under_the_units_system_call_filter_the_side_paths_take_their_priorities() {
    let seccomp = Command::new("/usr/bin/python3")
        .args(["-c", "import seccomp"])
        .output();
    if !seccomp.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: python3-seccomp is needed to load the unit's filter (apt-get install python3-seccomp)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(deploy().join("icaptap.service")).unwrap();
    assert_eq!(
        side_path_nice_under(&text, dir.path(), false),
        (Some(5), Some(10))
    );
    // The check can fail: with `~@resources` alone, the threads keep
    // forwarding's priority (what the unit did before).
    let without: String = text
        .lines()
        .filter(|l| *l != "SystemCallFilter=setpriority")
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        side_path_nice_under(&without, dir.path(), true),
        (Some(0), Some(0))
    );
}

/// The host facts of a bundle made with /proc mounted with `options`, in
/// a mount and PID namespace of the test's own (as systemd mounts /proc
/// for ProtectProc= and ProcSubset=).
fn bundle_host_facts_with_proc(options: &str, run: &Path, dir: &Path) -> serde_json::Value {
    let bundle = dir.join(format!(
        "bundle-{}.tar.gz",
        options.replace([',', '='], "-")
    ));
    let out = Command::new("unshare")
        .args(["--mount", "--pid", "--fork", "sh", "-c"])
        .arg(format!(
            "mount -t proc -o {options} proc /proc && exec '{}' bundle '{}' -o '{}'",
            faults_support::icaptap_binary().display(),
            run.display(),
            bundle.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unpacked = dir.join(format!("unpacked-{}", options.replace([',', '='], "-")));
    std::fs::create_dir_all(&unpacked).unwrap();
    let tar = Command::new("tar")
        .arg("-xzf")
        .arg(&bundle)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(tar.success());
    let out = Command::new("find")
        .arg(&unpacked)
        .args(["-name", "manifest.json"])
        .output()
        .unwrap();
    let manifest = String::from_utf8_lossy(&out.stdout);
    let manifest = manifest.lines().next().expect("a manifest in the bundle");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap();
    manifest["host"].clone()
}

/// A bundle made inside the unit's /proc still names the host's CPU,
/// memory and kernel: `ProtectProc=invisible` (kept) leaves them, while
/// `ProcSubset=pid` (removed from the unit) hides them.
#[test]
fn bundles_keep_the_host_facts_under_the_units_proc() {
    if !is_root() {
        eprintln!("SKIPPED: mounting a /proc of the unit's kind needs root (a mount namespace); run as root to cover it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = Command::new(faults_support::icaptap_binary())
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:9",
        ])
        .args(["--duration", "1s", "--out"])
        .arg(&run)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let host = bundle_host_facts_with_proc("hidepid=invisible", &run, dir.path());
    for fact in ["cpu_model", "memory_bytes", "kernel"] {
        assert!(
            !host[fact].is_null(),
            "{fact} missing under ProtectProc=invisible: {host}"
        );
    }
    // The check can fail: under ProcSubset=pid the same facts are gone.
    let host = bundle_host_facts_with_proc("hidepid=invisible,subset=pid", &run, dir.path());
    for fact in ["cpu_model", "memory_bytes", "kernel"] {
        assert!(
            host[fact].is_null(),
            "{fact} read under ProcSubset=pid: {host}"
        );
    }
}
