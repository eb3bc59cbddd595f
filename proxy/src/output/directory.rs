//! The output directory of a run: `./icaptap-YYYYMMDD-HHMMSS/` by default,
//! created 0700 with files 0600 inside, because captures and logs hold
//! users' traffic.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often a run checks that its output directory is still the one it
/// created.
pub const DIRECTORY_CHECK_EVERY: Duration = Duration::from_secs(2);

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

/// Warns once when `dir` is removed or replaced while a run writes into
/// it: open files keep taking records into a directory nobody can reach,
/// so nothing else would notice before the summary fails at the end.
/// Returns when `stop` is cancelled.
pub async fn watch_directory(dir: PathBuf, stop: CancellationToken) {
    let identity = |d: &Path| std::fs::metadata(d).ok().map(|m| (m.dev(), m.ino()));
    let Some(original) = identity(&dir) else {
        return;
    };
    let mut every = tokio::time::interval(DIRECTORY_CHECK_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        if identity(&dir) != Some(original) {
            tracing::warn!(
                "the output directory {} was removed or replaced during the run: records and capture \
                 written from now on are lost (forwarding is not affected); stop icaptap and start it \
                 again with an output directory that stays",
                dir.display()
            );
            return;
        }
    }
}
