//! e2guardian 5.3 (Debian `e2guardian`) as a real ICAP peer: as an ICAP
//! client through its `icapscan` content scanner, and as an ICAP server
//! (`icapport`) for Squid. It binds its ICAP port on every address, so the
//! tests that start it run in a network namespace of their own
//! ([`private_network`]). It ignores SIGINT: it is stopped with SIGTERM,
//! then SIGKILL by PID.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{free_port, require, wait_listening, Daemon};

/// Moves the calling thread into a new network namespace with only `lo`,
/// brought up. Everything it starts afterwards (threads, processes) lives
/// there: a daemon that binds every address binds only this namespace's.
/// Call it first thing in a plain `#[test]` (not under a runtime started
/// before it). Needs root, as .ci/run runs the tests.
pub fn private_network() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "a private network namespace needs root (the tests run as root under .ci/run)"
    );
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("run ip (iproute2, installed by .ci/run)");
    assert!(up.success(), "ip link set lo up");
}

/// A private e2guardian: its filtering HTTP proxy on `proxy`, its ICAP
/// server on `icap` when asked for, its logs in its directory.
pub struct E2guardian {
    pub proxy: SocketAddr,
    pub icap: Option<SocketAddr>,
    pub daemon: Daemon,
}

/// How e2guardian is set up.
#[derive(Default)]
pub struct E2gSetup {
    /// The ICAP service its content scanner sends each download to
    /// (`icapscan.conf`'s `icapurl`), e.g. `icap://127.0.0.1:1344/virus_scan`.
    pub scanner_url: Option<String>,
    /// Serve ICAP (REQMOD `/request`, RESPMOD `/response`) on a free port.
    pub icap_server: bool,
    /// Lift the filter group's file-extension bans (Debian's defaults ban
    /// `.bin`, `.com`, `.exe` and more before any ICAP is asked).
    pub no_extension_bans: bool,
}

impl E2guardian {
    /// Starts e2guardian from Debian's configuration with private ports,
    /// logs, PID file and lists, and waits until it listens.
    pub fn start(dir: &Path, setup: &E2gSetup) -> E2guardian {
        require("e2guardian", "e2guardian");
        std::fs::create_dir_all(dir).unwrap();
        let d = dir.display();
        let port = free_port();
        let icap_port = setup.icap_server.then(free_port);
        let base = std::fs::read_to_string("/etc/e2guardian/e2guardian.conf")
            .expect("e2guardian is installed (.ci/run)");
        let ours = [
            "filterip",
            "filterports",
            "loglocation",
            "pidfilename",
            "daemonuser",
            "daemongroup",
            "icapport",
            "contentscanner",
            "httpworkers",
            "dstatlocation",
        ];
        let mut conf: String = base
            .lines()
            .filter(|l| {
                let key = l.trim_start_matches('#').split('=').next().unwrap_or("");
                !ours.contains(&key.trim())
            })
            .map(|l| format!("{l}\n"))
            .collect();
        conf.push_str(&format!(
            "filterip = 127.0.0.1\nfilterports = {port}\nloglocation = '{d}/access.log'\n\
             pidfilename = '{d}/e2guardian.pid'\ndaemonuser = 'root'\ndaemongroup = 'root'\n\
             httpworkers = 20\n"
        ));
        if let Some(p) = icap_port {
            conf.push_str(&format!("icapport = {p}\n"));
        }
        if let Some(url) = &setup.scanner_url {
            std::fs::write(
                dir.join("icapscan.conf"),
                format!("plugname = 'icapscan'\nicapurl = '{url}'\n"),
            )
            .unwrap();
            conf.push_str(&format!("contentscanner = '{d}/icapscan.conf'\n"));
        }
        std::fs::write(dir.join("e2guardian.conf"), conf).unwrap();
        // The filter group's file sits beside the main one.
        let mut group = std::fs::read_to_string("/etc/e2guardian/e2guardianf1.conf")
            .expect("e2guardian's filter group configuration");
        if setup.no_extension_bans {
            let none = dir.join("bannedextensionlist");
            std::fs::write(&none, "").unwrap();
            group = group.replace(
                "/etc/e2guardian/lists/bannedextensionlist",
                &none.display().to_string(),
            );
        }
        std::fs::write(dir.join("e2guardianf1.conf"), group).unwrap();
        let out = std::fs::File::create(dir.join("e2guardian.out")).unwrap();
        let child = Command::new("e2guardian")
            .arg("-N")
            .arg("-c")
            .arg(dir.join("e2guardian.conf"))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("run e2guardian");
        let daemon = Daemon {
            child,
            dir: dir.to_path_buf(),
        };
        let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_listening(proxy, "e2guardian");
        let icap = icap_port.map(|p| {
            let addr: SocketAddr = format!("127.0.0.1:{p}").parse().unwrap();
            wait_listening(addr, "e2guardian's ICAP server");
            addr
        });
        E2guardian {
            proxy,
            icap,
            daemon,
        }
    }

    /// Lines of e2guardian's access log so far (it writes them a moment
    /// after answering).
    pub fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.daemon.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The directory with its configuration and logs.
    pub fn dir(&self) -> PathBuf {
        self.daemon.dir.clone()
    }
}

impl Drop for E2guardian {
    fn drop(&mut self) {
        // SIGINT is ignored; SIGTERM usually works, SIGKILL always.
        let pid = self.daemon.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    }
}
