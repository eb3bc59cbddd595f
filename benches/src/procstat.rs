//! CPU time, resident memory and scheduling counts of a process under
//! test, read from `/proc` (Linux). A proxy that forks per connection
//! (socat) is measured with its children: the parent's reaped-children
//! times plus every live child's own.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::ops::AddAssign;

use serde::Serialize;

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

/// How often a thread was switched out and moved between CPUs, from the
/// kernel's per-task counters (`/proc/PID/task/TID/sched`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Switches {
    /// The thread gave up its CPU to wait (for a socket, a queue, a timer):
    /// each one ends in a wake-up.
    pub voluntary: u64,
    /// The thread was preempted while it could still run.
    pub involuntary: u64,
    /// The thread moved to another CPU (on a VM, a wake-up across vCPUs
    /// costs tens of microseconds).
    pub migrations: u64,
}

impl AddAssign for Switches {
    fn add_assign(&mut self, other: Switches) {
        self.voluntary += other.voluntary;
        self.involuntary += other.involuntary;
        self.migrations += other.migrations;
    }
}

impl Switches {
    /// What happened between `before` and `self` (counters only grow;
    /// a thread that ended in between counts as zero, never negative).
    pub fn since(&self, before: &Switches) -> Switches {
        Switches {
            voluntary: self.voluntary.saturating_sub(before.voluntary),
            involuntary: self.involuntary.saturating_sub(before.involuntary),
            migrations: self.migrations.saturating_sub(before.migrations),
        }
    }
}

/// The switches of every thread of a process and its live children, by
/// thread name (threads of one name summed: a runtime's workers share one).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Scheduling {
    /// Thread name (`comm`) to its counts.
    pub by_thread: BTreeMap<String, Switches>,
}

impl Scheduling {
    /// Every thread together.
    pub fn total(&self) -> Switches {
        let mut total = Switches::default();
        for s in self.by_thread.values() {
            total += *s;
        }
        total
    }

    /// What happened between `before` and `self`, thread name by name.
    pub fn since(&self, before: &Scheduling) -> Scheduling {
        Scheduling {
            by_thread: self
                .by_thread
                .iter()
                .map(|(name, now)| {
                    let then = before.by_thread.get(name).copied().unwrap_or_default();
                    (name.clone(), now.since(&then))
                })
                .collect(),
        }
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Scheduling) {
        for (name, s) in &other.by_thread {
            *self.by_thread.entry(name.clone()).or_default() += *s;
        }
    }
}

/// The scheduling counts of `pid`'s threads and of its live children's.
pub fn scheduling(pid: u32) -> io::Result<Scheduling> {
    let mut out = Scheduling::default();
    add_threads(pid, &mut out)?;
    for child in children(pid) {
        // A child may end between listing and reading: it is left out.
        let _ = add_threads(child, &mut out);
    }
    Ok(out)
}

fn add_threads(pid: u32, out: &mut Scheduling) -> io::Result<()> {
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = task?.path();
        // A thread may end between listing and reading: it is left out.
        let (Ok(sched), Ok(comm)) = (
            fs::read_to_string(dir.join("sched")),
            fs::read_to_string(dir.join("comm")),
        ) else {
            continue;
        };
        *out.by_thread.entry(comm.trim().to_owned()).or_default() += parse_sched(&sched);
    }
    Ok(())
}

/// The counters of one `/proc/PID/task/TID/sched` text.
fn parse_sched(text: &str) -> Switches {
    let mut s = Switches::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<u64>() else {
            continue;
        };
        match key.trim() {
            "nr_voluntary_switches" => s.voluntary = value,
            "nr_involuntary_switches" => s.involuntary = value,
            "se.nr_migrations" => s.migrations = value,
            _ => {}
        }
    }
    s
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
        // Long enough to cross several clock ticks in a release build too:
        // `black_box` keeps the optimiser from folding the loop away.
        let mut x = 0u64;
        for i in 0..200_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(x != 1);
        assert!(cpu_seconds(pid).unwrap() > 0.0);
        assert!(resident_bytes(pid).unwrap() > 1024 * 1024);
    }

    #[test]
    fn a_thread_that_sleeps_switches_voluntarily_and_is_counted_by_name() {
        let pid = std::process::id();
        let sleeper = std::thread::Builder::new()
            .name("procstat-sleep".into())
            .spawn(move || {
                let before = scheduling(pid).unwrap();
                for _ in 0..5 {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                scheduling(pid).unwrap().since(&before)
            })
            .unwrap();
        let slept = sleeper.join().unwrap();
        let mine = slept.by_thread["procstat-sleep"];
        assert!(mine.voluntary >= 5, "{mine:?}");
        assert!(slept.total().voluntary >= mine.voluntary);
    }

    #[test]
    fn sched_counters_are_read_from_the_kernels_layout() {
        let text = "x (1, #threads: 1)\n---\nse.nr_migrations                             :                    7\n\
                    nr_switches                                  :                   12\n\
                    nr_voluntary_switches                        :                   10\n\
                    nr_involuntary_switches                      :                    2\n";
        assert_eq!(
            parse_sched(text),
            Switches {
                voluntary: 10,
                involuntary: 2,
                migrations: 7
            }
        );
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
