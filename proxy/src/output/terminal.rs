//! What icaptap says on the terminal besides its logs: notices on standard
//! error (`icaptap: listening on ...`) and the story and tables a command
//! prints on standard output.
//!
//! Notices follow `--log-format`: a line of text, or with `json` one JSON
//! object shaped like the log events (`timestamp`, `level`,
//! `fields.message`, `target`), so that stderr then holds only JSON lines.
//! No write here panics or fails a command when its reader went away
//! (`icaptap analyze ... | head`, a terminal closed by SIGHUP): what a
//! command prints tells what it did; its files and its exit status are the
//! result. [`print_output`] is for commands whose output *is* the result
//! (`completions`, `manpage`, `--print-scenario`): a reader that stopped
//! reading is not an error there either, but a full disk is.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{json, Value};

static JSON_NOTICES: AtomicBool = AtomicBool::new(false);

/// Makes notices JSON objects (`--log-format json`) or lines of text.
pub fn set_json_notices(on: bool) {
    JSON_NOTICES.store(on, Ordering::Relaxed);
}

/// Whether notices are JSON objects: then nothing else may write to
/// stderr (no status line, no progress bar).
pub fn json_notices() -> bool {
    JSON_NOTICES.load(Ordering::Relaxed)
}

/// How much a notice matters, as the log events say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeLevel {
    /// What the command is doing.
    Info,
    /// Something the user should look at; the command goes on.
    Warn,
    /// Why the command failed.
    Error,
}

impl NoticeLevel {
    fn as_str(self) -> &'static str {
        match self {
            NoticeLevel::Info => "INFO",
            NoticeLevel::Warn => "WARN",
            NoticeLevel::Error => "ERROR",
        }
    }
}

/// Writes one notice to stderr: `text` as a line, or as the message of a
/// JSON object carrying `fields` too. `fields` (a JSON object, or
/// `Value::Null` for none) appear only in JSON; text notices say
/// everything in `text`.
pub fn notice_with(level: NoticeLevel, text: fmt::Arguments<'_>, fields: Value) {
    let mut stderr = io::stderr().lock();
    if json_notices() {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let mut all = json!({ "message": text.to_string() });
        if let (Some(all), Value::Object(more)) = (all.as_object_mut(), fields) {
            all.extend(more);
        }
        let line = json!({
            "timestamp": super::rfc3339(micros),
            "level": level.as_str(),
            "fields": all,
            "target": "icaptap",
        });
        let _ = writeln!(stderr, "{line}");
    } else {
        let _ = writeln!(stderr, "{text}");
    }
}

/// Writes one notice to stderr (see [`notice_with`]).
pub fn write_notice(level: NoticeLevel, text: fmt::Arguments<'_>) {
    notice_with(level, text, Value::Null);
}

/// Writes the story of a command to stdout, as `print!` would, but never
/// panics when stdout is closed.
pub fn write_story(text: fmt::Arguments<'_>) {
    let _ = io::stdout().lock().write_fmt(text);
}

/// Writes a command's result to stdout and flushes it. A reader that
/// stopped reading (`| head`) has what it wanted: that is success; any
/// other failure (a full disk) is returned.
pub fn print_output(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        done => done,
    }
}

/// `notice!("...")`, `notice!(Warn, "...")`: a notice on stderr (see
/// [`notice`]).
macro_rules! notice {
    (Warn, $($arg:tt)*) => {
        $crate::output::terminal::write_notice(
            $crate::output::terminal::NoticeLevel::Warn,
            format_args!($($arg)*),
        )
    };
    (Error, $($arg:tt)*) => {
        $crate::output::terminal::write_notice(
            $crate::output::terminal::NoticeLevel::Error,
            format_args!($($arg)*),
        )
    };
    ($($arg:tt)*) => {
        $crate::output::terminal::write_notice(
            $crate::output::terminal::NoticeLevel::Info,
            format_args!($($arg)*),
        )
    };
}

/// `say!(...)` and `sayln!(...)`: `print!` and `println!` that survive a
/// closed stdout (see [`write_story`]).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::terminal::write_story(format_args!($($arg)*))
    };
}

/// `println!` that survives a closed stdout (see [`write_story`]).
macro_rules! sayln {
    () => {
        $crate::output::terminal::write_story(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::terminal::write_story(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {notice, say, sayln};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_named_as_the_log_events_name_them() {
        assert_eq!(NoticeLevel::Info.as_str(), tracing::Level::INFO.as_str());
        assert_eq!(NoticeLevel::Warn.as_str(), tracing::Level::WARN.as_str());
        assert_eq!(NoticeLevel::Error.as_str(), tracing::Level::ERROR.as_str());
    }
}
