//! Configuration files for any subcommand: `--config FILE` names a TOML file
//! whose keys are the long option names of that subcommand (`upstream`,
//! `connect-timeout` or `connect_timeout`), with the same values one would
//! type. Precedence: command-line flag > `ICAPTAP_*` environment variable >
//! file > built-in default.
//!
//! How: the command line is parsed once leniently to learn, through
//! `ArgMatches::value_source`, which options the user already gave by flag
//! or environment; each remaining file key becomes `--key value` appended to
//! the arguments, and clap then parses the result as usual. So the file goes
//! through exactly the same validation as flags, and nothing here knows any
//! subcommand's options.
//!
//! Each subcommand that takes a file flattens [`ConfigFileArg`] (or defines
//! an argument with id `config` itself).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// The `--config FILE` option, to flatten into a subcommand's arguments.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ConfigFileArg {
    /// TOML file of options: keys are the long option names, e.g.
    /// `upstream = "sensor:1344"`; flags and ICAPTAP_* variables win over it.
    #[arg(
        long = "config",
        id = "config",
        env = "ICAPTAP_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// Reading the file failed.
    #[error("cannot read config file {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {} is not valid TOML: {message}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// The TOML parser's message (with line and column).
        message: String,
    },
    /// A key names no option of the subcommand.
    #[error("config file {}: unknown key `{key}`; valid keys are the long options of `{command}`: {valid}", file.display())]
    UnknownKey {
        /// The file.
        file: PathBuf,
        /// The key as written.
        key: String,
        /// The subcommand.
        command: String,
        /// The keys it would accept.
        valid: String,
    },
    /// A value of the wrong kind or that the option refuses.
    #[error("config file {}: bad value for `{key}`: {expected}", file.display())]
    BadValue {
        /// The file.
        file: PathBuf,
        /// The key as written.
        key: String,
        /// What was wrong and what the option expects.
        expected: String,
    },
    /// The resulting command line was refused (for a reason not tied to one
    /// key: shown as clap shows usage errors; call `.exit()` on it).
    #[error(transparent)]
    Cli(#[from] clap::Error),
}

/// Returns `argv` with the options of the subcommand's `--config` file (if
/// one is given by flag or environment) appended, for those options the
/// user did not give by flag or environment. `cmd` is the whole program's
/// command (e.g. `Cli::command()`); the file applies to the deepest
/// subcommand on the command line. When the command line itself is wrong,
/// or asks for help, `argv` comes back unchanged for clap to report.
pub fn args_with_config_file<I, T>(cmd: &Command, argv: I) -> Result<Vec<OsString>, ConfigFileError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let lenient = cmd.clone().ignore_errors(true);
    let Ok(matches) = lenient.try_get_matches_from(argv.iter()) else {
        return Ok(argv);
    };
    let (sub, sub_matches, path) = deepest(cmd, &matches);
    let Some(file) = config_path(sub_matches) else {
        return Ok(argv);
    };
    let table = read_table(&file)?;
    let extra = file_arguments(sub, sub_matches, &path, &file, &table)?;
    // Options must come before a `--`, after which everything is positional.
    let at = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    argv.splice(at..at, extra);
    Ok(argv)
}

/// Parses `argv` into `P`, with the `--config` file applied as
/// [`args_with_config_file`] describes.
pub fn parse_with_config_file<P, I, T>(argv: I) -> Result<P, ConfigFileError>
where
    P: clap::Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let argv = args_with_config_file(&P::command(), argv)?;
    Ok(P::try_parse_from(argv)?)
}

/// The deepest subcommand on the command line, its matches, and its path
/// of names (for messages).
fn deepest<'a>(cmd: &'a Command, matches: &'a ArgMatches) -> (&'a Command, &'a ArgMatches, String) {
    let mut cmd = cmd;
    let mut matches = matches;
    let mut path = cmd.get_name().to_string();
    while let Some((name, sub_matches)) = matches.subcommand() {
        let Some(sub) = cmd.find_subcommand(name) else {
            break;
        };
        path.push(' ');
        path.push_str(name);
        cmd = sub;
        matches = sub_matches;
    }
    (cmd, matches, path)
}

/// The file named by the `config` argument, from the flag or environment.
fn config_path(matches: &ArgMatches) -> Option<PathBuf> {
    let mut raw = matches.try_get_raw("config").ok()??;
    raw.next().map(PathBuf::from)
}

fn read_table(file: &Path) -> Result<toml::Table, ConfigFileError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigFileError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    text.parse::<toml::Table>()
        .map_err(|e| ConfigFileError::Syntax {
            file: file.to_path_buf(),
            message: e.to_string(),
        })
}

/// Turns the file's keys into `--long value` arguments for the options not
/// already given, checking each against its option on its own so that a
/// bad value is blamed on its key and file.
fn file_arguments(
    sub: &Command,
    matches: &ArgMatches,
    path: &str,
    file: &Path,
    table: &toml::Table,
) -> Result<Vec<OsString>, ConfigFileError> {
    let mut extra = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let arg = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && a.get_id() != "config");
        let Some(arg) = arg else {
            return Err(ConfigFileError::UnknownKey {
                file: file.to_path_buf(),
                key: key.clone(),
                command: path.to_string(),
                valid: valid_keys(sub),
            });
        };
        let bad = |expected: String| ConfigFileError::BadValue {
            file: file.to_path_buf(),
            key: key.clone(),
            expected,
        };
        let given = matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
        );
        let flag = format!("--{long}");
        let tokens: Vec<OsString> = match (arg.get_action(), value) {
            (ArgAction::SetTrue | ArgAction::SetFalse, toml::Value::Boolean(on)) => {
                // A flag's file value can only switch it away from its default.
                let wanted = matches!(arg.get_action(), ArgAction::SetTrue);
                if *on == wanted {
                    vec![flag.clone().into()]
                } else {
                    Vec::new()
                }
            }
            (ArgAction::SetTrue | ArgAction::SetFalse, _) => {
                return Err(bad("expected true or false".to_string()));
            }
            (ArgAction::Count, toml::Value::Integer(n)) if *n >= 0 => {
                (0..*n).map(|_| OsString::from(&flag)).collect()
            }
            (ArgAction::Count, _) => return Err(bad("expected a count (0, 1, 2...)".to_string())),
            (ArgAction::Append, toml::Value::Array(items)) => {
                let mut tokens = Vec::new();
                for item in items {
                    tokens.push(OsString::from(&flag));
                    tokens.push(scalar(item).map_err(bad)?.into());
                }
                tokens
            }
            (action, value) if action.takes_values() => {
                vec![flag.clone().into(), scalar(value).map_err(bad)?.into()]
            }
            _ => {
                return Err(ConfigFileError::UnknownKey {
                    file: file.to_path_buf(),
                    key: key.clone(),
                    command: path.to_string(),
                    valid: valid_keys(sub),
                })
            }
        };
        if given || tokens.is_empty() {
            continue;
        }
        check_alone(sub, &tokens).map_err(bad)?;
        extra.extend(tokens);
    }
    Ok(extra)
}

/// A TOML scalar as the text one would type after the flag.
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(x) => Ok(x.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(d) => Ok(d.to_string()),
        toml::Value::Array(_) => Err("expected one value, not a list".to_string()),
        toml::Value::Table(_) => Err("expected a value, not a table".to_string()),
    }
}

/// Parses `tokens` against the subcommand with nothing else required, so
/// the only possible complaint is about these tokens.
fn check_alone(sub: &Command, tokens: &[OsString]) -> Result<(), String> {
    let alone = sub
        .clone()
        .mut_args(|a| a.required(false))
        .subcommand_required(false)
        .arg_required_else_help(false);
    let argv =
        std::iter::once(OsStr::new(sub.get_name())).chain(tokens.iter().map(OsString::as_os_str));
    match alone.try_get_matches_from(argv) {
        Ok(_) => Ok(()),
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("").trim();
            Err(first.trim_start_matches("error: ").to_string())
        }
    }
}

/// The keys a file for `sub` may use.
fn valid_keys(sub: &Command) -> String {
    let keys: Vec<&str> = sub
        .get_arguments()
        .filter(|a| a.get_id() != "config")
        .filter(|a| {
            !matches!(
                a.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            )
        })
        .filter_map(|a| a.get_long())
        .collect();
    keys.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser, Subcommand};
    use std::io::Write;

    #[derive(Debug, Parser)]
    #[command(name = "tool")]
    struct Tool {
        #[command(subcommand)]
        command: Job,
    }

    #[derive(Debug, Subcommand)]
    enum Job {
        Run(RunArgs),
    }

    #[derive(Debug, clap::Args)]
    struct RunArgs {
        #[command(flatten)]
        config: ConfigFileArg,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 1)]
        level: u8,
        #[arg(long)]
        loud: bool,
        #[arg(long)]
        tag: Vec<String>,
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn run(argv: &[&str]) -> Result<RunArgs, ConfigFileError> {
        let Tool {
            command: Job::Run(args),
        } = parse_with_config_file::<Tool, _, _>(argv)?;
        Ok(args)
    }

    #[test]
    fn file_fills_what_the_command_line_left_out() {
        let f = file("name = \"from-file\"\nlevel = 3\nloud = true\ntag = [\"a\", \"b\"]\n");
        let path = f.path().to_str().unwrap();
        let args = run(&["tool", "run", "--config", path]).unwrap();
        assert_eq!(args.name, "from-file");
        assert_eq!(args.level, 3);
        assert!(args.loud);
        assert_eq!(args.tag, vec!["a", "b"]);

        let args = run(&[
            "tool", "run", "--config", path, "--level", "7", "--name", "cli",
        ])
        .unwrap();
        assert_eq!(args.level, 7);
        assert_eq!(args.name, "cli");
    }

    #[test]
    fn without_a_file_nothing_changes() {
        let argv: Vec<OsString> = ["tool", "run", "--name", "x"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(
            args_with_config_file(&Tool::command(), argv.clone()).unwrap(),
            argv
        );
    }

    #[test]
    fn snake_case_keys_work_and_unknown_keys_are_named() {
        let f = file("name = \"n\"\nno_such_option = 1\n");
        let err = run(&["tool", "run", "--config", f.path().to_str().unwrap()]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("no_such_option"), "{text}");
        assert!(text.contains(f.path().to_str().unwrap()), "{text}");
        assert!(text.contains("name, level, loud, tag"), "{text}");
    }

    #[test]
    fn bad_values_name_key_file_and_expectation() {
        let f = file("name = \"n\"\nlevel = \"high\"\n");
        let err = run(&["tool", "run", "--config", f.path().to_str().unwrap()]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`level`"), "{text}");
        assert!(text.contains(f.path().to_str().unwrap()), "{text}");
        assert!(text.contains("high"), "{text}");

        let f = file("name = \"n\"\nloud = \"yes\"\n");
        let text = run(&["tool", "run", "--config", f.path().to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("`loud`") && text.contains("true or false"),
            "{text}"
        );
    }

    #[test]
    fn broken_toml_and_missing_files_say_so() {
        let f = file("name = \n");
        let text = run(&["tool", "run", "--config", f.path().to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(text.contains("not valid TOML"), "{text}");
        let text = run(&["tool", "run", "--config", "/nonexistent/icaptap.toml"])
            .unwrap_err()
            .to_string();
        assert!(text.contains("/nonexistent/icaptap.toml"), "{text}");
    }
}
