//! CPU time and resident memory of a process under test, read from
//! `/proc` (Linux). A proxy that forks per connection (socat) is measured
//! with its children: the parent's reaped-children times plus every live
//! child's own.

use std::fs;
use std::io;

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`): 100 on
/// every Linux architecture the benches run on.
pub const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// A process's CPU time, its children's included, in seconds.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let own = stat_fields(pid)?;
    // Fields 14-17 (1-based): utime, stime, cutime, cstime.
    let mut ticks: u64 = (14..=17).map(|n| field(&own, n)).sum();
    for child in children(pid) {
        if let Ok(fields) = stat_fields(child) {
            ticks += field(&fields, 14) + field(&fields, 15);
        }
    }
    Ok(ticks as f64 / CLOCK_TICKS_PER_SECOND)
}

/// A process's resident memory (`VmRSS`) plus its live children's, in bytes.
pub fn resident_bytes(pid: u32) -> io::Result<u64> {
    let mut total = vm_rss(pid)?;
    for child in children(pid) {
        total += vm_rss(child).unwrap_or(0);
    }
    Ok(total)
}

fn vm_rss(pid: u32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| io::Error::other(format!("/proc/{pid}/status has no VmRSS line")))?;
    Ok(kib * 1024)
}

/// The fields of `/proc/PID/stat` after the command name (which may hold
/// spaces), so that index 0 is field 3 (state).
fn stat_fields(pid: u32) -> io::Result<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat is not readable")))?;
    Ok(after.split_whitespace().map(str::to_owned).collect())
}

/// Field `n` (1-based, as in proc(5)) of a split stat line.
fn field(fields: &[String], n: usize) -> u64 {
    fields
        .get(n.saturating_sub(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Pids whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            // Field 4: ppid.
            stat_fields(p).is_ok_and(|f| field(&f, 4) == u64::from(pid))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_seconds(pid).unwrap() > 0.0);
        assert!(resident_bytes(pid).unwrap() > 1024 * 1024);
    }

    #[test]
    fn children_are_counted() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let kids = children(std::process::id());
        assert!(kids.contains(&child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
