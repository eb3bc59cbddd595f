//! `manifest.json` of a bundle: what is inside (name, size, SHA-256 of
//! every file), what made it (icaptap version, the run's and the bundle's
//! command lines), the host, what `--redact` did and what `--max-size`
//! left out, so the receiver can check the archive and know what is
//! missing.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::hostinfo::HostInfo;
use super::EvidenceError;

/// Version of the manifest's layout.
pub const MANIFEST_SCHEMA: u32 = 1;

/// One file in the bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    /// Name inside the archive's folder.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// A file of the run left out to fit `--max-size`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dropped {
    /// Name in the run directory.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// Why.
    pub reason: String,
}

/// A log cut from its start to fit `--max-size`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Truncated {
    /// Name.
    pub name: String,
    /// Size in the run directory.
    pub original_bytes: u64,
    /// Size in the bundle.
    pub kept_bytes: u64,
    /// Whole lines left out from the start.
    pub dropped_lines: u64,
}

/// What `--redact` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RedactionFacts {
    /// Distinct secret spellings found (their values are never written).
    pub secrets_found: u64,
    /// Secret occurrences masked in logs.
    pub log_masks: u64,
    /// Capture packets whose payload was masked or cut.
    pub capture_packets_changed: u64,
    /// Capture packets cut to a shorter captured length.
    pub capture_packets_cut: u64,
    /// Payload bytes removed from captures.
    pub capture_bytes_cut: u64,
    /// Whether IP addresses were replaced by stand-ins.
    pub ips_pseudonymised: bool,
    /// How many addresses got a stand-in.
    pub addresses_mapped: u64,
}

/// `manifest.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Manifest {
    /// Layout version.
    pub schema: u32,
    /// icaptap's version that made the bundle.
    pub icaptap_version: String,
    /// When (RFC 3339).
    pub created: String,
    /// The bundle's command line.
    pub bundle_command: Vec<String>,
    /// The run's command line (from summary.json).
    pub run_command: Vec<String>,
    /// The run's icaptap version.
    pub run_icaptap_version: String,
    /// The host the bundle was made on.
    pub host: HostInfo,
    /// Every file in the bundle except this manifest.
    pub files: Vec<FileEntry>,
    /// Redaction, when asked for.
    pub redaction: Option<RedactionFacts>,
    /// `--max-size`, when given.
    pub max_size: Option<u64>,
    /// Files left out.
    pub dropped: Vec<Dropped>,
    /// Logs cut from the start.
    pub truncated: Vec<Truncated>,
}

/// SHA-256 (hex) and size of a file, read in blocks.
pub fn hash_file(path: &Path) -> Result<(u64, String), EvidenceError> {
    let err = |source| EvidenceError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, crate::output::hex(&hasher.finalize())))
}
