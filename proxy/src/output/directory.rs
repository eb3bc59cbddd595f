//! The output directory of a run: `./icaptap-YYYYMMDD-HHMMSS/` by default,
//! created 0700 with files 0600 inside, because captures and logs hold
//! users' traffic.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The default output directory name for a run starting now (local time).
pub fn default_dir_name() -> PathBuf {
    let now = time::OffsetDateTime::now_local().unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let format = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    let stamp = now.format(&format).unwrap_or_else(|_| "run".to_string());
    PathBuf::from(format!("icaptap-{stamp}"))
}

/// Creates `dir` (and its parents) with mode 0700 and checks that files can
/// be created in it, so that a bad output directory is reported at start-up
/// and not after the first connection.
pub fn prepare(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let probe = dir.join(".icaptap-write-test");
    create_private_file(&probe)?;
    std::fs::remove_file(&probe)
}

/// Creates (truncating) a file readable and writable by its owner only.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}
