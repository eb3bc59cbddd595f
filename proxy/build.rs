//! Build script: names the git commit in `icaptap --version`, as
//! `0.1.0 (1a2b3c4)`, or `0.1.0 (1a2b3c4-dirty)` when tracked files differ
//! from that commit. Without git or a `.git` (a source tarball, a container
//! build context without it) the version is the package version alone,
//! unless the packager names the commit in `ICAPTAP_BUILD_COMMIT`.

use std::path::Path;
use std::process::Command;

/// Runs git in the package directory; its trimmed output when it succeeds.
fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let version = env!("CARGO_PKG_VERSION");
    println!("cargo:rerun-if-env-changed=ICAPTAP_BUILD_COMMIT");
    // Any source edit may change "-dirty"; git's own files say when the
    // commit or the index moved.
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=../codec/src");
    let given = std::env::var("ICAPTAP_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty());
    let commit = given.or_else(|| {
        let commit = git(&["rev-parse", "--short", "HEAD"]).filter(|c| !c.is_empty())?;
        for file in ["HEAD", "index", "packed-refs"] {
            if let Some(path) = git(&["rev-parse", "--git-path", file]) {
                println!("cargo:rerun-if-changed={path}");
            }
        }
        if let Some(name) = git(&["rev-parse", "--symbolic-full-name", "HEAD"]) {
            if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
                if Path::new(&path).exists() {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
        }
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|changes| !changes.is_empty());
        Some(if dirty {
            format!("{commit}-dirty")
        } else {
            commit
        })
    });
    match commit {
        Some(commit) => println!("cargo:rustc-env=ICAPTAP_VERSION={version} ({commit})"),
        None => println!("cargo:rustc-env=ICAPTAP_VERSION={version}"),
    }
}
