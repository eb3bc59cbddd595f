//! Facts about the machine icaptap ran on, for the bundle's manifest and
//! ticket: what support asks first (hardware model, CPU, memory, OS,
//! kernel, network interfaces). Read from /etc/os-release, /proc and /sys,
//! so nothing has to be installed; a fact that cannot be read is `null`,
//! never a failure.

use std::path::Path;

use serde::Serialize;

/// One network interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Interface {
    /// Name (`eth0`).
    pub name: String,
    /// `up`, `down`, `unknown`...
    pub state: Option<String>,
    /// MTU.
    pub mtu: Option<u64>,
    /// Link speed in Mbit/s, when the driver says.
    pub speed_mbps: Option<i64>,
    /// Addresses (`192.0.2.2/24`), from `ip -brief addr`; empty when
    /// hidden by IP pseudonymisation or when `ip` is missing.
    pub addresses: Vec<String>,
}

/// What is known about the host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostInfo {
    /// `PRETTY_NAME` from /etc/os-release.
    pub os: Option<String>,
    /// Kernel release and version (`uname -rv`).
    pub kernel: Option<String>,
    /// Hardware vendor and model (DMI), e.g. for a sensor appliance.
    pub hardware: Option<String>,
    /// CPU model name.
    pub cpu_model: Option<String>,
    /// Logical CPUs.
    pub cpu_count: Option<u64>,
    /// Total memory in bytes.
    pub memory_bytes: Option<u64>,
    /// Host name; `None` when redacting.
    pub hostname: Option<String>,
    /// Network interfaces.
    pub interfaces: Vec<Interface>,
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn os_release() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
}

fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|l| {
            l.starts_with("model name") || l.starts_with("Model") || l.starts_with("Hardware")
        })
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Addresses per interface from `ip -brief addr` (iproute2).
fn addresses() -> Vec<(String, Vec<String>)> {
    let Ok(out) = std::process::Command::new("ip")
        .args(["-brief", "addr"])
        .stdin(std::process::Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?.split('@').next()?.to_string();
            let _state = words.next();
            Some((name, words.map(str::to_string).collect()))
        })
        .collect()
}

fn interfaces(with_addresses: bool) -> Vec<Interface> {
    let addrs = if with_addresses {
        addresses()
    } else {
        Vec::new()
    };
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut list: Vec<Interface> = entries
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let base = Path::new("/sys/class/net").join(&name);
            let read = |f: &str| {
                std::fs::read_to_string(base.join(f))
                    .ok()
                    .map(|s| s.trim().to_string())
            };
            Interface {
                state: read("operstate"),
                mtu: read("mtu").and_then(|m| m.parse().ok()),
                speed_mbps: read("speed")
                    .and_then(|m| m.parse().ok())
                    .filter(|s| *s > 0),
                addresses: addrs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, a)| a.clone())
                    .unwrap_or_default(),
                name,
            }
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    list
}

impl HostInfo {
    /// Reads the host's facts. `private` leaves out what identifies the
    /// host on a network (host name, interface addresses).
    pub fn collect(private: bool) -> HostInfo {
        let kernel = match (
            read_trim("/proc/sys/kernel/ostype"),
            read_trim("/proc/sys/kernel/osrelease"),
            read_trim("/proc/sys/kernel/version"),
        ) {
            (Some(t), Some(r), Some(v)) => Some(format!("{t} {r} {v}")),
            (_, Some(r), _) => Some(r),
            _ => None,
        };
        let hardware = match (
            read_trim("/sys/class/dmi/id/sys_vendor"),
            read_trim("/sys/class/dmi/id/product_name"),
        ) {
            (Some(v), Some(p)) => Some(format!("{v} {p}")),
            (v, p) => v.or(p),
        };
        HostInfo {
            os: os_release(),
            kernel,
            hardware,
            cpu_model: cpu_model(),
            cpu_count: std::thread::available_parallelism()
                .ok()
                .map(|n| n.get() as u64),
            memory_bytes: memory_bytes(),
            hostname: if private {
                None
            } else {
                read_trim("/proc/sys/kernel/hostname")
            },
            interfaces: interfaces(!private),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_host_facts_are_found() {
        let h = HostInfo::collect(false);
        assert!(h.kernel.is_some());
        assert!(h.cpu_count.unwrap_or(0) >= 1);
        assert!(h.memory_bytes.unwrap_or(0) > 0);
        assert!(h.interfaces.iter().any(|i| i.name == "lo"));
        let private = HostInfo::collect(true);
        assert!(private.hostname.is_none());
        assert!(private.interfaces.iter().all(|i| i.addresses.is_empty()));
    }
}
