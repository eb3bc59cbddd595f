//! The forwarding options through a whole command line, as `icaptap proxy`
//! will read them: flag > `ICAPTAP_*` environment > `--config` file >
//! default; an unknown file key or a bad file value is named with its file.

use std::io::Write;
use std::time::Duration;

use clap::{Parser, Subcommand};
use icaptap::config::{parse_with_config_file, ConfigFileArg};
use icaptap::forward::{ForwardArgs, ForwardConfig};

#[derive(Debug, Parser)]
#[command(name = "icaptap")]
struct Cli {
    #[command(subcommand)]
    command: Job,
}

#[derive(Debug, Subcommand)]
enum Job {
    Proxy {
        #[command(flatten)]
        config: ConfigFileArg,
        #[command(flatten)]
        forward: ForwardArgs,
    },
}

fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn forward_args(argv: &[&str]) -> Result<ForwardArgs, String> {
    match parse_with_config_file::<Cli, _, _>(argv) {
        Ok(Cli {
            command: Job::Proxy { forward, .. },
        }) => Ok(forward),
        Err(e) => Err(e.to_string()),
    }
}

// The environment is shared by every thread of this test binary, so this
// is the only test that sets ICAPTAP_* variables, and the others use keys
// it does not set.
#[test]
fn flag_beats_env_beats_file_beats_default() {
    let file = toml_file("upstream = \"127.0.0.1:11344\"\nconnect_timeout = \"7s\"\ndrain = \"1m\"\nmax-connections = 99\n");
    let path = file.path().to_str().unwrap();

    // Default, where neither file nor anything else speaks.
    let args = forward_args(&["icaptap", "proxy", "--config", path]).unwrap();
    assert_eq!(args.buffer_size, 64 * 1024);
    assert_eq!(args.listen, "0.0.0.0:1344".parse().unwrap());
    // File over default (and a required option may come from the file alone).
    assert_eq!(args.upstream, "127.0.0.1:11344");
    assert_eq!(args.connect_timeout, Duration::from_secs(7));
    assert_eq!(args.drain, Duration::from_secs(60));
    assert_eq!(args.max_connections, Some(99));

    // Environment over file.
    std::env::set_var("ICAPTAP_CONNECT_TIMEOUT", "8s");
    let env_args = forward_args(&["icaptap", "proxy", "--config", path]);
    // Flag over environment.
    let flag_args = forward_args(&[
        "icaptap",
        "proxy",
        "--config",
        path,
        "--connect-timeout",
        "250ms",
    ]);
    std::env::remove_var("ICAPTAP_CONNECT_TIMEOUT");
    assert_eq!(env_args.unwrap().connect_timeout, Duration::from_secs(8));
    assert_eq!(
        flag_args.unwrap().connect_timeout,
        Duration::from_millis(250)
    );

    // The file itself may be named by the environment.
    std::env::set_var("ICAPTAP_CONFIG", path);
    let via_env = forward_args(&["icaptap", "proxy"]);
    std::env::remove_var("ICAPTAP_CONFIG");
    assert_eq!(via_env.unwrap().upstream, "127.0.0.1:11344");

    // And the result resolves into what the listener runs with.
    let cfg: ForwardConfig = forward_args(&[
        "icaptap",
        "proxy",
        "--config",
        path,
        "--listen",
        "127.0.0.1:0",
    ])
    .unwrap()
    .into_config()
    .unwrap();
    assert_eq!(cfg.upstream, "127.0.0.1:11344".parse().unwrap());
    assert_eq!(cfg.max_connections, 99);
}

#[test]
fn an_unknown_key_is_named_with_its_file() {
    let file = toml_file("upstream = \"127.0.0.1:1344\"\nupstreem_timeout = \"5s\"\n");
    let path = file.path().to_str().unwrap();
    let err = forward_args(&["icaptap", "proxy", "--config", path]).unwrap_err();
    assert!(err.contains("`upstreem_timeout`"), "{err}");
    assert!(err.contains(path), "{err}");
    assert!(
        err.contains("connect-timeout"),
        "the message lists the valid keys: {err}"
    );
}

#[test]
fn a_bad_value_names_key_file_and_what_was_expected() {
    let file = toml_file("upstream = \"127.0.0.1:1344\"\nbuffer-size = \"huge\"\n");
    let path = file.path().to_str().unwrap();
    let err = forward_args(&["icaptap", "proxy", "--config", path]).unwrap_err();
    assert!(err.contains("`buffer-size`"), "{err}");
    assert!(err.contains(path), "{err}");
    assert!(
        err.contains("KiB"),
        "the message says what a size looks like: {err}"
    );

    let file = toml_file("upstream = \"127.0.0.1:1344\"\nmax_connections = 0\n");
    let path = file.path().to_str().unwrap();
    let err = forward_args(&["icaptap", "proxy", "--config", path]).unwrap_err();
    assert!(
        err.contains("`max_connections`") && err.contains(path),
        "{err}"
    );
}

#[test]
fn a_missing_upstream_is_a_usage_error() {
    let file = toml_file("listen = \"127.0.0.1:1344\"\n");
    let path = file.path().to_str().unwrap();
    let err = forward_args(&["icaptap", "proxy", "--config", path]).unwrap_err();
    assert!(err.contains("--upstream"), "{err}");
}
