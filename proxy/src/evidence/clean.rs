//! `icaptap clean DIR`: the last manual step of a ticket (freeing the disk
//! the evidence took) done safely. Only the files icaptap writes are
//! removed (records, rotated ones too, summary and the space reserved for it, reports,
//! captures, the flight recorder's `incidents/`, the peer side of
//! `analyze --peer`), and only from a directory that holds a run, finished
//! or not (a run killed before its end has no summary.json); anything else
//! is left and named, and a directory goes only when empty. On a terminal
//! a progress line counts the files removed.

use std::path::{Path, PathBuf};

use super::load::{self, RunFiles};
use super::EvidenceError;
use crate::output::directory::is_run_entry;
use crate::output::terminal::sayln;
use crate::progress::Progress;

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
    /// The run never wrote its summary.json: it was killed or crashed.
    pub unfinished: bool,
}

/// Whether `name` is a file icaptap writes into a run directory (or into
/// an incident of the flight recorder, or the peer side of `analyze
/// --peer`).
pub fn is_run_file(name: &str) -> bool {
    const DIRS: &[&str] = &[INCIDENTS_DIR, PEER_DIR];
    const MORE: &[&str] = &["incident.json", ".capture-copy.partial"];
    (is_run_entry(name) && !DIRS.contains(&name)) || MORE.contains(&name)
}

/// The flight recorder's folder in a run directory.
const INCIDENTS_DIR: &str = "incidents";

/// The peer side's folder of `analyze --peer` (`jobs::analyze::PEER_DIR`,
/// named here as `output::directory::is_run_entry` does: evidence does not
/// depend on the jobs).
const PEER_DIR: &str = "peer-side";

/// The space a running icaptap keeps for its summary: the mark of a run
/// that did not finish.
const SUMMARY_RESERVE: &str = ".icaptap-summary-reserve";

/// What a directory below a run holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tree {
    /// A run's files (the run itself, an incident, the peer side).
    Run,
    /// `incidents/`: one run folder and one bundle per incident.
    Incidents,
    /// A bundle's staging folder (`NAME.tar.gz.partial.d`) left by an
    /// interrupted bundle.
    Staging,
}

/// `NNNN-CODE`, as the flight recorder names an incident.
fn is_incident_name(name: &str) -> bool {
    name.split_once('-').is_some_and(|(n, code)| {
        n.len() == 4 && n.bytes().all(|b| b.is_ascii_digit()) && !code.is_empty()
    })
}

/// Whether the file `name` in a folder of kind `tree` is icaptap's.
fn ours(tree: Tree, name: &str) -> bool {
    match tree {
        Tree::Run => is_run_file(name),
        Tree::Incidents => {
            let bundle = name
                .strip_suffix(".tar.gz.partial")
                .or_else(|| name.strip_suffix(".tar.gz"));
            bundle.is_some_and(is_incident_name)
        }
        Tree::Staging => {
            is_run_file(name)
                || matches!(name, "ticket.md" | "manifest.json")
                || name.ends_with(".jsonl.tail")
        }
    }
}

/// The kind of the folder `name` in a folder of kind `tree`, if it is one
/// icaptap makes.
fn subtree(tree: Tree, name: &str) -> Option<Tree> {
    match tree {
        Tree::Run if name == INCIDENTS_DIR => Some(Tree::Incidents),
        Tree::Run if name == PEER_DIR => Some(Tree::Run),
        Tree::Incidents if is_incident_name(name) => Some(Tree::Run),
        Tree::Incidents
            if name
                .strip_suffix(".tar.gz.partial.d")
                .is_some_and(is_incident_name) =>
        {
            Some(Tree::Staging)
        }
        _ => None,
    }
}

/// Removes icaptap's files from `dir` (a folder of kind `tree`), and its
/// own folders below it once they are empty; returns whether `dir` is
/// empty now.
fn clean_tree(
    dir: &Path,
    tree: Tree,
    dry_run: bool,
    out: &mut CleanOutcome,
    progress: &Progress,
) -> Result<bool, EvidenceError> {
    let entries = std::fs::read_dir(dir).map_err(|source| EvidenceError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut empty = true;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type().ok();
        let is_file = kind.is_some_and(|t| t.is_file());
        let is_dir = kind.is_some_and(|t| t.is_dir());
        if is_file && ours(tree, &name) {
            out.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            if !dry_run {
                std::fs::remove_file(&path).map_err(|source| EvidenceError::Write {
                    path: path.clone(),
                    source,
                })?;
            }
            out.removed.push(path);
            progress.advance(1);
            progress.message(super::readable::bytes(out.bytes));
        } else if let Some(sub) = subtree(tree, &name).filter(|_| is_dir) {
            let sub_empty = clean_tree(&path, sub, dry_run, out, progress)?;
            if sub_empty && !dry_run {
                std::fs::remove_dir(&path).map_err(|source| EvidenceError::Write {
                    path: path.clone(),
                    source,
                })?;
            }
            empty &= sub_empty;
        } else {
            out.kept.push(path);
            empty = false;
        }
    }
    Ok(empty)
}

/// Removes the run in `dir`.
pub fn clean(dir: &Path, dry_run: bool) -> Result<CleanOutcome, EvidenceError> {
    clean_shown(dir, dry_run, &Progress::hidden())
}

/// [`clean`], advancing `progress` by each file removed.
pub fn clean_shown(
    dir: &Path,
    dry_run: bool,
    progress: &Progress,
) -> Result<CleanOutcome, EvidenceError> {
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
    // A run that was killed before its end has no summary.json, and may
    // have lost its record files too: the space reserved for the summary
    // still says icaptap made the directory.
    let reserved = dir.join(SUMMARY_RESERVE).is_file();
    match RunFiles::scan(dir) {
        Ok(files) => {
            if files.read_summary().is_err() {
                return Err(EvidenceError::CleanRefused {
                    dir: dir.to_path_buf(),
                    reason: "its summary.json is not one icaptap wrote".to_string(),
                });
            }
        }
        Err(EvidenceError::NotARunDir { .. }) if reserved => {}
        Err(EvidenceError::NotARunDir { .. }) => {
            return Err(EvidenceError::CleanRefused {
                dir: dir.to_path_buf(),
                reason: format!(
                    "it holds none of summary.json, exchanges.jsonl, connections.jsonl or {SUMMARY_RESERVE} \
                     (it holds {}), so it does not look like an icaptap output directory",
                    listing(dir)
                ),
            });
        }
        Err(other) => return Err(other),
    }
    let mut out = CleanOutcome {
        unfinished: !dir.join(load::SUMMARY_FILE).is_file(),
        ..CleanOutcome::default()
    };
    let empty = clean_tree(dir, Tree::Run, dry_run, &mut out, progress)?;
    out.removed.sort();
    out.kept.sort();
    if empty && !dry_run {
        out.dir_removed = std::fs::remove_dir(dir).is_ok();
    }
    Ok(out)
}

/// A few names of what `dir` holds, for a refusal.
fn listing(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    match names.len() {
        0 => "nothing".to_string(),
        n if n <= 5 => names.join(", "),
        n => format!("{}, and {} more", names[..5].join(", "), n - 5),
    }
}

/// `icaptap clean DIR`.
pub fn run(args: CleanArgs) -> Result<CleanOutcome, EvidenceError> {
    let progress = Progress::counter(!args.dry_run, "clean", "files removed");
    let out = clean_shown(&args.dir, args.dry_run, &progress);
    progress.finish();
    let out = out?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    sayln!(
        "icaptap: {verb} {} files ({}) from {}",
        out.removed.len(),
        super::readable::bytes(out.bytes),
        args.dir.display()
    );
    for k in &out.kept {
        sayln!("  kept (not written by icaptap): {}", k.display());
    }
    if out.unfinished {
        sayln!(
            "  the run had no summary.json: it did not finish (killed or crashed); its records and capture up to then were {}",
            if args.dry_run { "found" } else { "removed too" }
        );
    }
    if out.dir_removed {
        sayln!("  the directory was empty and is removed too");
    }
    Ok(out)
}
