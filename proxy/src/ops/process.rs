//! The standard `process_*` metrics every Prometheus client exposes, read
//! from the running process at scrape time (Linux procfs, proc(5)):
//! CPU time (getrusage), resident and virtual memory (`/proc/self/status`),
//! open and allowed file descriptors (`/proc/self/fd`, `RLIMIT_NOFILE`),
//! and the start time (`/proc/self/stat` against `/proc/stat`'s boot time).
//! A figure the system does not give is left out, never made up.

use super::exposition::{float, Exposition};

/// Clock ticks per second of the times in `/proc/self/stat`: Linux
/// reports them in USER_HZ, 100 on every architecture (proc(5); the Go
/// procfs library Prometheus' own collector uses assumes the same).
const USER_HZ: f64 = 100.0;

/// What a scrape reports of the process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, bytes.
    pub virtual_bytes: Option<u64>,
    /// File descriptors open now.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// When the process started, seconds since the UNIX epoch.
    pub start_time_seconds: Option<f64>,
}

/// A `kB` line of `/proc/self/status` (`VmRSS:   1234 kB`) in bytes.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The process start time in clock ticks after boot: field 22 of
/// `/proc/self/stat`, counted after the command name, which may itself
/// hold spaces and parentheses (so after its last `)`).
fn start_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields from 3 (state) on; starttime is field 22.
    after_name.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// The boot time, seconds since the UNIX epoch (`btime` of `/proc/stat`).
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

impl ProcessStats {
    /// The figures of this process now.
    pub fn read() -> ProcessStats {
        use nix::sys::resource::{getrlimit, getrusage, Resource, UsageWho};
        let cpu_seconds = getrusage(UsageWho::RUSAGE_SELF).ok().map(|u| {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            secs(u.user_time()) + secs(u.system_time())
        });
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let start_time_seconds = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| start_ticks(&s))
            .zip(
                std::fs::read_to_string("/proc/stat")
                    .ok()
                    .and_then(|s| boot_time(&s)),
            )
            .map(|(ticks, boot)| boot as f64 + ticks as f64 / USER_HZ);
        ProcessStats {
            cpu_seconds,
            resident_bytes: status_kib(&status, "VmRSS:"),
            virtual_bytes: status_kib(&status, "VmSize:"),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            max_fds: getrlimit(Resource::RLIMIT_NOFILE)
                .ok()
                .map(|(soft, _)| soft),
            start_time_seconds,
        }
    }

    /// Writes the figures known as the standard `process_*` families.
    pub(super) fn render(&self, out: &mut Exposition) {
        let mut gauge = |name: &str, kind: &str, help: &str, value: Option<String>| {
            if let Some(value) = value {
                out.family(name, kind, help);
                out.sample(name, &[], value);
            }
        };
        gauge(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            self.cpu_seconds.map(float),
        );
        gauge(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            self.resident_bytes.map(|v| v.to_string()),
        );
        gauge(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            self.virtual_bytes.map(|v| v.to_string()),
        );
        gauge(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            self.open_fds.map(|v| v.to_string()),
        );
        gauge(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            self.max_fds.map(|v| v.to_string()),
        );
        gauge(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            self.start_time_seconds.map(float),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procfs_lines_are_read() {
        let status = "Name:\ticaptap\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(2048 * 1024));
        assert_eq!(status_kib(status, "VmSize:"), Some(123_456 * 1024));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        // A command name with spaces and a parenthesis does not shift the
        // fields.
        let stat = "4242 (icap tap) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 5 0 987654 1000 200";
        assert_eq!(start_ticks(stat), Some(987_654));
        assert_eq!(
            boot_time("cpu 1 2 3\nbtime 1764000000\nprocesses 5\n"),
            Some(1_764_000_000)
        );
    }

    #[test]
    fn this_process_has_sane_figures() {
        let s = ProcessStats::read();
        assert!(s.resident_bytes.is_some_and(|b| b > 1024 * 1024), "{s:?}");
        assert!(s.virtual_bytes >= s.resident_bytes, "{s:?}");
        assert!(s.open_fds.is_some_and(|n| n >= 3), "{s:?}");
        assert!(s.max_fds >= s.open_fds, "{s:?}");
        assert!(s.cpu_seconds.is_some_and(|c| c >= 0.0), "{s:?}");
        let now = crate::tap::now_micros() as f64 / 1e6;
        let started = s.start_time_seconds.unwrap();
        assert!(
            started <= now + 1.0 && started > now - 86_400.0 * 365.0,
            "{s:?}"
        );
    }
}
