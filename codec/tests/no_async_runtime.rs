//! The codec is sans-I/O: no async runtime may enter its normal dependencies.

use std::process::Command;

#[test]
fn tokio_is_not_a_dependency_of_the_codec() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "icap-codec",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(
        tree.contains("icap-codec"),
        "unexpected cargo tree output: {tree}"
    );
    for runtime in ["tokio ", "async-std ", "smol "] {
        assert!(
            !tree.lines().any(|l| l.starts_with(runtime)),
            "{} is a dependency of icap-codec:\n{tree}",
            runtime.trim()
        );
    }
}
