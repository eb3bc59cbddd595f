//! `icaptap clean DIR`: the last manual step of a ticket (freeing the disk
//! the evidence took) done safely. Only the files icaptap writes are
//! removed, and only from a directory that holds a run's records; anything
//! else in it is left and named, and the directory goes only when empty.

use std::path::{Path, PathBuf};

use super::load::{self, RunFiles};
use super::EvidenceError;
use crate::output::directory::is_capture_name;

/// Options of `icaptap clean`.
#[derive(Clone, Debug, clap::Args)]
pub struct CleanArgs {
    /// The run's output directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// What `clean` did (or would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanOutcome {
    /// Files removed.
    pub removed: Vec<PathBuf>,
    /// Bytes freed.
    pub bytes: u64,
    /// Files icaptap does not write, left in place.
    pub kept: Vec<PathBuf>,
    /// Whether the directory itself was removed.
    pub dir_removed: bool,
}

/// Whether `name` is a file icaptap writes into a run directory.
pub fn is_run_file(name: &str) -> bool {
    matches!(
        name,
        load::SUMMARY_FILE
            | load::EXCHANGES_FILE
            | load::CONNECTIONS_FILE
            | load::REPORT_HTML_FILE
            | load::REPORT_MD_FILE
            | ".icaptap-write-test"
    ) || is_capture_name(name)
}

/// Removes the run in `dir`.
pub fn clean(dir: &Path, dry_run: bool) -> Result<CleanOutcome, EvidenceError> {
    let meta = std::fs::symlink_metadata(dir).map_err(|source| EvidenceError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(EvidenceError::CleanRefused {
            dir: dir.to_path_buf(),
            reason: "it is a symbolic link; give the run directory itself".to_string(),
        });
    }
    let files = RunFiles::scan(dir).map_err(|e| match e {
        EvidenceError::NotARunDir { .. } => EvidenceError::CleanRefused {
            dir: dir.to_path_buf(),
            reason: "it holds no summary.json, exchanges.jsonl or connections.jsonl, so it does not look like an icaptap output directory".to_string(),
        },
        other => other,
    })?;
    if files.read_summary().is_err() {
        return Err(EvidenceError::CleanRefused {
            dir: dir.to_path_buf(),
            reason: "its summary.json is not one icaptap wrote".to_string(),
        });
    }
    let mut out = CleanOutcome::default();
    let entries = std::fs::read_dir(dir).map_err(|source| EvidenceError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && is_run_file(&name) {
            out.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            if !dry_run {
                std::fs::remove_file(&path).map_err(|source| EvidenceError::Write {
                    path: path.clone(),
                    source,
                })?;
            }
            out.removed.push(path);
        } else {
            out.kept.push(path);
        }
    }
    out.removed.sort();
    out.kept.sort();
    if out.kept.is_empty() && !dry_run {
        out.dir_removed = std::fs::remove_dir(dir).is_ok();
    }
    Ok(out)
}

/// `icaptap clean DIR`.
pub fn run(args: CleanArgs) -> Result<CleanOutcome, EvidenceError> {
    let out = clean(&args.dir, args.dry_run)?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    println!(
        "icaptap: {verb} {} files ({}) from {}",
        out.removed.len(),
        super::readable::bytes(out.bytes),
        args.dir.display()
    );
    for k in &out.kept {
        println!("  kept (not written by icaptap): {}", k.display());
    }
    if out.dir_removed {
        println!("  the directory was empty and is removed too");
    }
    Ok(out)
}
