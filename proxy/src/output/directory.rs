//! The output directory of a run: `./icaptap-YYYYMMDD-HHMMSS/` by default,
//! created 0700 with files 0600 inside, because captures and logs hold
//! users' traffic.
//!
//! A run never writes over another run's evidence: a directory that already
//! holds a file or folder icaptap writes ([`is_run_entry`]) is refused
//! before anything is created ([`check_unused`]). A directory that does not
//! exist is created with its parents, and an existing directory holding
//! none of icaptap's files (typically an empty one) is used as it is.
//! [`prepare_new`] records which directories it created, so that a run
//! failing to start removes exactly those and nothing else.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often a run checks that its output directory is still the one it
/// created.
pub const DIRECTORY_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The placeholder `--out` replaces with the start time
/// (`--out /var/lib/icaptap/run-{time}`): a service restarted with the
/// same command line gets a new directory each start.
pub const TIME_PLACEHOLDER: &str = "{time}";

/// The start time as directory names carry it: `YYYYMMDD-HHMMSS`, local
/// time.
fn start_stamp() -> String {
    let now = time::OffsetDateTime::now_local().unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let format = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    now.format(&format).unwrap_or_else(|_| "run".to_string())
}

/// The default output directory name for a run starting now (local time).
pub fn default_dir_name() -> PathBuf {
    PathBuf::from(format!("icaptap-{}", start_stamp()))
}

/// The output directory of a run starting now: `out` with
/// [`TIME_PLACEHOLDER`] replaced by the start time, or
/// [`default_dir_name`] without `--out`.
pub fn out_dir(out: Option<&Path>) -> PathBuf {
    match out {
        None => default_dir_name(),
        Some(out) => match out.to_str() {
            Some(text) if text.contains(TIME_PLACEHOLDER) => {
                PathBuf::from(text.replace(TIME_PLACEHOLDER, &start_stamp()))
            }
            _ => out.to_path_buf(),
        },
    }
}

/// Whether `name` is something icaptap writes into a run directory: the
/// record files (rotated ones too: `exchanges-NNNN.jsonl`; and the ECS files), the summary (and the space reserved for it), the reports,
/// captures (`capture.pcap[ng]`, `capture-NNNN.pcap[ng]`), the flight
/// recorder's `incidents/`, and the `--peer` results of `analyze`.
pub fn is_run_entry(name: &str) -> bool {
    const NAMES: &[&str] = &[
        super::ecs::EXCHANGES_ECS_FILE,
        super::ecs::CONNECTIONS_ECS_FILE,
        "summary.json",
        ".icaptap-summary-reserve",
        ".icaptap-write-test",
        "report.html",
        "report.md",
        "incidents",
        "peer.json",
        "peer-side",
    ];
    NAMES.contains(&name) || is_capture_name(name) || super::logset::is_log_name(name)
}

/// Whether `name` is a capture file icaptap writes: `capture.pcapng`,
/// `capture.pcap`, or a rotated `capture-NNNN.pcap[ng]`.
pub fn is_capture_name(name: &str) -> bool {
    let Some(stem) = name
        .strip_suffix(".pcapng")
        .or_else(|| name.strip_suffix(".pcap"))
    else {
        return false;
    };
    stem == "capture"
        || stem
            .strip_prefix("capture-")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Why a directory cannot take a new run.
#[derive(Debug)]
pub enum Unusable {
    /// It holds these entries of an earlier run (sorted, at most a few).
    HoldsRun(Vec<String>),
    /// It exists and is not a directory.
    NotADirectory,
    /// It could not be read.
    Io(io::Error),
}

/// Checks that `dir` can take a new run without touching anything in it:
/// it does not exist yet, or it is a directory holding none of the
/// entries [`is_run_entry`] names.
pub fn check_unused(dir: &Path) -> Result<(), Unusable> {
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Unusable::Io(e)),
    };
    if !meta.is_dir() {
        return Err(Unusable::NotADirectory);
    }
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map_err(Unusable::Io)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| is_run_entry(name))
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    found.sort();
    Err(Unusable::HoldsRun(found))
}

/// Creates `dir` as [`prepare`] does and returns the directories this call
/// created, outermost first (empty when `dir` existed already).
pub fn prepare_new(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|p| !p.as_os_str().is_empty()) {
        if std::fs::symlink_metadata(path).is_ok() {
            break;
        }
        missing.push(path.to_path_buf());
        at = path.parent();
    }
    missing.reverse();
    if let Err(e) = prepare(dir) {
        remove_created(&[], &missing);
        return Err(e);
    }
    Ok(missing)
}

/// Removes `files`, then the directories in `dirs` (outermost first, as
/// [`prepare_new`] returns them) that are empty now: what a run created
/// before it failed to start. Anything else stays.
pub fn remove_created(files: &[PathBuf], dirs: &[PathBuf]) {
    for file in files {
        let _ = std::fs::remove_file(file);
    }
    for dir in dirs.iter().rev() {
        if std::fs::remove_dir(dir).is_err() {
            break;
        }
    }
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

/// Creates a new file readable and writable by its owner only; fails if
/// the file exists, so that no earlier evidence is ever truncated.
pub fn create_new_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Opens a file for appending, creating it (readable and writable by its
/// owner only) when missing.
pub fn open_append_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
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

/// Watches `dir` while a run writes into it. When it is removed, it is
/// created again (0700, with a new summary reserve) and `epoch` is bumped:
/// the record files and the capture follow it and open their files there
/// again, so records written from then on are kept; what was written
/// before the removal is gone, and summary.json says so. When it is
/// replaced by something else (another directory, a file) nothing is
/// written into that: a warning says so once. Returns when `stop` is
/// cancelled.
pub async fn watch_directory(dir: PathBuf, epoch: Arc<AtomicU64>, stop: CancellationToken) {
    let identity = |d: &Path| std::fs::metadata(d).ok().map(|m| (m.dev(), m.ino()));
    let Some(mut original) = identity(&dir) else {
        return;
    };
    let mut every = tokio::time::interval(DIRECTORY_CHECK_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let now = identity(&dir);
        if now == Some(original) {
            continue;
        }
        let gone =
            std::fs::symlink_metadata(&dir).is_err_and(|e| e.kind() == io::ErrorKind::NotFound);
        let recreated =
            gone && prepare(&dir).is_ok() && identity(&dir).map(|id| original = id).is_some();
        if recreated {
            // The summary's reserved space went with the directory.
            let _ = create_private_file(&dir.join(SUMMARY_RESERVE_NAME))
                .and_then(|mut f| io::Write::write_all(&mut f, &[0u8; 64 * 1024]));
            epoch.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "the output directory {} was removed during the run; icaptap created it again and \
                 writes records and capture there from now on (forwarding is not affected); what was \
                 written before is lost, summary.json will say so and still hold the run's totals",
                dir.display()
            );
            continue;
        }
        tracing::warn!(
            "the output directory {} was removed or replaced during the run and could not be created \
             again: records and capture written from now on are lost (forwarding is not affected); \
             summary.json goes there at the end if it can, else to stderr",
            dir.display()
        );
        return;
    }
}

/// The file holding space for summary.json until it is written.
pub const SUMMARY_RESERVE_NAME: &str = ".icaptap-summary-reserve";
