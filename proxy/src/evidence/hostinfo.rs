//! Facts about the machine icaptap ran on, for the bundle's manifest and
//! ticket: what support asks first (hardware model, CPU, memory, OS,
//! kernel, network interfaces). Read from /etc/os-release, /proc
//! (`cpuinfo`, `meminfo`, `sys/kernel`), /sys and getifaddrs(3), so nothing
//! has to be installed and nothing is run; a fact that cannot be read is
//! `null`, never a failure.

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
    /// Addresses (`192.0.2.2/24`), from getifaddrs(3); empty when hidden
    /// by IP pseudonymisation.
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

/// Addresses per interface (`192.0.2.2/24`, `fe80::1/64`), IPv4 first,
/// as `ip -brief addr` lists them, but from getifaddrs(3): nothing has to
/// be installed (the container image has no `ip`) and nothing is run.
fn addresses() -> Vec<(String, Vec<String>)> {
    let Ok(list) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut v4: Vec<(String, String)> = Vec::new();
    let mut v6: Vec<(String, String)> = Vec::new();
    for entry in list {
        let Some(address) = entry.address else {
            continue;
        };
        let mask = entry.netmask;
        if let Some(ip) = address.as_sockaddr_in() {
            let prefix = mask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .map_or(32, |m| u32::from(m.ip()).count_ones());
            v4.push((entry.interface_name, format!("{}/{prefix}", ip.ip())));
        } else if let Some(ip) = address.as_sockaddr_in6() {
            let prefix = mask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in6())
                .map_or(128, |m| u128::from(m.ip()).count_ones());
            v6.push((entry.interface_name, format!("{}/{prefix}", ip.ip())));
        }
    }
    let mut by_name: Vec<(String, Vec<String>)> = Vec::new();
    for (name, address) in v4.into_iter().chain(v6) {
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, addresses)) => addresses.push(address),
            None => by_name.push((name, vec![address])),
        }
    }
    by_name
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
        // The loopback address, as `ip -brief addr` would show it, read
        // without running `ip`.
        let lo = h.interfaces.iter().find(|i| i.name == "lo").unwrap();
        assert!(
            lo.addresses.iter().any(|a| a == "127.0.0.1/8"),
            "{:?}",
            lo.addresses
        );
        // The same addresses as iproute2 finds, where it is installed.
        if let Ok(out) = std::process::Command::new("ip")
            .args(["-brief", "addr"])
            .output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let mut words = line.split_whitespace();
                let name = words.next().unwrap().split('@').next().unwrap();
                let _state = words.next();
                let mut theirs: Vec<&str> = words.collect();
                let ours = h.interfaces.iter().find(|i| i.name == name).unwrap();
                let mut ours: Vec<&str> = ours.addresses.iter().map(String::as_str).collect();
                theirs.sort_unstable();
                ours.sort_unstable();
                assert_eq!(ours, theirs, "{name}");
            }
        }
        let private = HostInfo::collect(true);
        assert!(private.hostname.is_none());
        assert!(private.interfaces.iter().all(|i| i.addresses.is_empty()));
    }
}
