//! tcpdump as the reference capture of the overload bench: `tcpdump -i lo
//! -nn -s 0 -B 65536 -U -w FILE 'tcp port P'` on the direct path, started
//! before a load step and stopped (SIGINT) after it, with the counts it
//! prints at exit (`packets captured`, `received by filter`, `dropped by
//! kernel`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Kernel capture buffer tcpdump is given (`-B`, KiB): the setting.
pub const BUFFER_KIB: u32 = 65536;

/// How long tcpdump may take to start capturing.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long tcpdump may take to write its last packets and exit.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Why tcpdump could not run.
#[derive(Debug, thiserror::Error)]
pub enum TcpdumpError {
    /// It could not be started.
    #[error("cannot run tcpdump: {0}; install it (Debian package tcpdump) and run as root")]
    Spawn(std::io::Error),
    /// It never said it was listening.
    #[error("tcpdump did not start capturing within {START_TIMEOUT:?}; it said: {0}")]
    NotListening(String),
    /// Waiting for it failed.
    #[error("tcpdump: {0}")]
    Wait(std::io::Error),
}

/// What tcpdump said at exit.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct TcpdumpCounts {
    /// `N packets captured`.
    pub captured: Option<u64>,
    /// `N packets received by filter`.
    pub received_by_filter: Option<u64>,
    /// `N packets dropped by kernel`.
    pub dropped_by_kernel: Option<u64>,
}

/// A running tcpdump.
#[derive(Debug)]
pub struct Tcpdump {
    child: Child,
    log: PathBuf,
    /// The capture file.
    pub file: PathBuf,
}

/// The command line the bench runs, for reports.
pub fn command_line(port: u16, file: &Path) -> String {
    format!(
        "tcpdump -i lo -nn -s 0 -B {BUFFER_KIB} -U -w {} 'tcp port {port}'",
        file.display()
    )
}

impl Tcpdump {
    /// Starts capturing `tcp port PORT` on `lo` into `file`; returns once
    /// tcpdump says it is listening.
    pub fn start(port: u16, file: &Path) -> Result<Tcpdump, TcpdumpError> {
        let log = file.with_extension("tcpdump.log");
        let err = fs::File::create(&log).map_err(TcpdumpError::Spawn)?;
        let child = Command::new("tcpdump")
            .args([
                "-i",
                "lo",
                "-nn",
                "-s",
                "0",
                "-B",
                &BUFFER_KIB.to_string(),
                "-U",
                "-w",
            ])
            .arg(file)
            .arg(format!("tcp port {port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(TcpdumpError::Spawn)?;
        let mut dump = Tcpdump {
            child,
            log,
            file: file.to_owned(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            let said = fs::read_to_string(&dump.log).unwrap_or_default();
            if said.contains("listening on") {
                return Ok(dump);
            }
            if let Ok(Some(_)) = dump.child.try_wait() {
                return Err(TcpdumpError::NotListening(said));
            }
            sleep(Duration::from_millis(20));
        }
        let said = fs::read_to_string(&dump.log).unwrap_or_default();
        let _ = dump.child.kill();
        let _ = dump.child.wait();
        Err(TcpdumpError::NotListening(said))
    }

    /// Stops it (SIGINT), waits for it to exit and reads its counts.
    pub fn stop(mut self) -> Result<TcpdumpCounts, TcpdumpError> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if self.child.try_wait().map_err(TcpdumpError::Wait)?.is_some() {
                break;
            }
            if Instant::now() >= deadline {
                self.child.kill().map_err(TcpdumpError::Wait)?;
                self.child.wait().map_err(TcpdumpError::Wait)?;
                break;
            }
            sleep(Duration::from_millis(20));
        }
        Ok(parse_counts(
            &fs::read_to_string(&self.log).unwrap_or_default(),
        ))
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The counts in tcpdump's exit lines.
pub fn parse_counts(said: &str) -> TcpdumpCounts {
    let count = |suffix: &str| {
        said.lines()
            .find(|l| l.trim_end().ends_with(suffix))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
    };
    TcpdumpCounts {
        captured: count("packets captured"),
        received_by_filter: count("packets received by filter"),
        dropped_by_kernel: count("packets dropped by kernel"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_exit_lines() {
        let said = "tcpdump: listening on lo, link-type EN10MB (Ethernet), snapshot length 262144 bytes\n\
                    1234 packets captured\n1240 packets received by filter\n6 packets dropped by kernel\n";
        let c = parse_counts(said);
        assert_eq!(c.captured, Some(1234));
        assert_eq!(c.received_by_filter, Some(1240));
        assert_eq!(c.dropped_by_kernel, Some(6));
        assert_eq!(parse_counts("").dropped_by_kernel, None);
    }
}
