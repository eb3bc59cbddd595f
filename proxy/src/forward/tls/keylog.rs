//! `--tls-keylog FILE`: the TLS secrets of both legs in the NSS key log
//! format (what `SSLKEYLOGFILE` gives for browsers), so that a tcpdump
//! capture of the real encrypted traffic on either side can be decrypted
//! in Wireshark (Preferences > Protocols > TLS > (Pre)-Master-Secret log
//! filename). The file holds keys: treat it as secret as the traffic.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

/// Appends one line per secret to a file.
#[derive(Debug)]
pub struct KeyLogFile {
    file: Mutex<File>,
}

impl KeyLogFile {
    /// Opens (creates, or appends to) `path`, readable by its owner only.
    pub fn open(path: &Path) -> std::io::Result<KeyLogFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(KeyLogFile {
            file: Mutex::new(file),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

impl rustls::KeyLog for KeyLogFile {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let line = format!("{label} {} {}\n", hex(client_random), hex(secret));
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A key log that cannot be written loses only the decryption of
        // a capture made elsewhere; forwarding goes on.
        let _ = file.write_all(line.as_bytes());
    }

    fn will_log(&self, _label: &str) -> bool {
        true
    }
}
