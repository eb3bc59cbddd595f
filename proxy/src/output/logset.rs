//! The two record logs of a run as sets of files: `exchanges.jsonl` and
//! `connections.jsonl`, or, when they rotate (`--log-rotate-size`,
//! `--log-rotate-time`, `--log-ring`), `exchanges-0001.jsonl`,
//! `exchanges-0002.jsonl`, ... (numbered from 1, at least four digits, the
//! way the capture names `capture-NNNN.pcapng`). Every reader takes a set
//! through [`list`], oldest file first, and reads it as one log.

use std::path::{Path, PathBuf};

/// One of the two record logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Log {
    /// One record per ICAP exchange.
    Exchanges,
    /// One record per TCP connection.
    Connections,
}

impl Log {
    /// Both logs.
    pub const BOTH: [Log; 2] = [Log::Exchanges, Log::Connections];

    /// `exchanges` or `connections`: the file names' stem.
    pub fn stem(self) -> &'static str {
        match self {
            Log::Exchanges => "exchanges",
            Log::Connections => "connections",
        }
    }

    /// The name of the log when it does not rotate: `exchanges.jsonl`.
    pub fn plain_name(self) -> String {
        format!("{}.jsonl", self.stem())
    }

    /// The name of file number `index` (from 1) of a rotating log:
    /// `exchanges-0001.jsonl`.
    pub fn rotated_name(self, index: u32) -> String {
        format!("{}-{index:04}.jsonl", self.stem())
    }

    /// Where `name` stands in this log's set: `Some(0)` for the plain
    /// name, `Some(n)` for file number n, `None` for any other file.
    pub fn position_of(self, name: &str) -> Option<u32> {
        let stem = name.strip_suffix(".jsonl")?;
        if stem == self.stem() {
            return Some(0);
        }
        let digits = stem.strip_prefix(self.stem())?.strip_prefix('-')?;
        if digits.len() < 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// The log a file named `name` belongs to, if any.
    pub fn of_name(name: &str) -> Option<Log> {
        Log::BOTH
            .into_iter()
            .find(|log| log.position_of(name).is_some())
    }
}

/// Whether `name` is one of the record logs' files, rotated or not.
pub fn is_log_name(name: &str) -> bool {
    Log::of_name(name).is_some()
}

/// The files of `log` in `dir`, oldest first (by number, so file 10000
/// comes after file 9999); empty when there are none or `dir` cannot be
/// read.
pub fn list(dir: &Path, log: Log) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name();
            let at = log.position_of(&name.to_string_lossy())?;
            Some((at, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, path)| path).collect()
}

/// How a set of files is named on one line for people: `exchanges.jsonl`,
/// or `exchanges-0003.jsonl … exchanges-0011.jsonl (9 files)`.
pub fn describe(files: &[PathBuf]) -> String {
    let name = |p: &PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    match files {
        [] => String::new(),
        [one] => name(one),
        [first, .., last] => format!("{} … {} ({} files)", name(first), name(last), files.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_a_set_are_read_back_in_number_order() {
        assert_eq!(Log::Exchanges.rotated_name(7), "exchanges-0007.jsonl");
        assert_eq!(
            Log::Connections.rotated_name(12345),
            "connections-12345.jsonl"
        );
        assert_eq!(Log::Exchanges.position_of("exchanges.jsonl"), Some(0));
        assert_eq!(Log::Exchanges.position_of("exchanges-0003.jsonl"), Some(3));
        assert_eq!(
            Log::Exchanges.position_of("exchanges-12345.jsonl"),
            Some(12345)
        );
        for other in [
            "exchanges-3.jsonl",
            "exchanges-x001.jsonl",
            "exchanges-0001.jsonl.tail",
            "connections-0001.jsonl",
            "exchanges.json",
        ] {
            assert_eq!(Log::Exchanges.position_of(other), None, "{other}");
        }
        assert_eq!(
            Log::of_name("connections-0001.jsonl"),
            Some(Log::Connections)
        );
        assert!(!is_log_name("notes.jsonl"));

        let tmp = tempfile::tempdir().unwrap();
        for n in [10000, 2, 9999, 1] {
            std::fs::write(tmp.path().join(Log::Exchanges.rotated_name(n)), b"").unwrap();
        }
        std::fs::write(tmp.path().join("connections-0001.jsonl"), b"").unwrap();
        let names: Vec<String> = list(tmp.path(), Log::Exchanges)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "exchanges-0001.jsonl",
                "exchanges-0002.jsonl",
                "exchanges-9999.jsonl",
                "exchanges-10000.jsonl"
            ]
        );
        assert_eq!(
            describe(&list(tmp.path(), Log::Exchanges)),
            "exchanges-0001.jsonl … exchanges-10000.jsonl (4 files)"
        );
    }
}
