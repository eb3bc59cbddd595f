//! `icaptap bundle DIR`: the support-ticket archive. A `.tar.gz` (mode
//! 0600) holding one folder with the run's captures, logs and summary, the
//! reports, `ticket.md` and `manifest.json`. A rotated record log goes in
//! as its files, under their own names. Files are staged in a private
//! folder beside the archive only when they change (redaction, size cut);
//! untouched captures are streamed straight from the run directory.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::output::directory::create_private_file;
use crate::output::logset::Log;
use crate::output::terminal::sayln;

use super::facts::Facts;
use super::hostinfo::HostInfo;
use super::load::{self, RunFiles};
use super::manifest::{self, Dropped, FileEntry, Manifest, RedactionFacts, Truncated};
use super::pseudonym::Pseudonyms;
use super::redact::{self, Secrets};
use super::redact_pcap::{self, CaptureRedaction};
use super::{write_report_shown, EvidenceError};
use crate::analyze::peer_file::PEER_FILE;
use crate::progress::Progress;

/// Room kept for `manifest.json` when fitting `--max-size` (it is written
/// last, so its size is estimated).
const MANIFEST_RESERVE: u64 = 16 * 1024;

/// Options of `icaptap bundle`.
#[derive(Clone, Debug, clap::Args)]
pub struct BundleArgs {
    /// The run's output directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The archive to write (default: DIR.tar.gz beside DIR, or
    /// DIR-redacted.tar.gz with --redact).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Mask user names, cookies and authorization headers (same length) in
    /// captures and logs, and cut bodies in captures to their preview.
    #[arg(long)]
    pub redact: bool,
    /// With --redact: replace every IP address with a consistent stand-in
    /// (checksums fixed).
    #[arg(long, requires = "redact")]
    pub pseudonymise_ips: bool,
    /// Keep the bundle's content within this many bytes (before
    /// compression): the oldest capture files are left out first, then
    /// logs are cut from their start. Accepts K, M and G suffixes (powers
    /// of 1024), e.g. 5M.
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    pub max_size: Option<u64>,
}

/// What `bundle` made.
#[derive(Clone, Debug)]
pub struct BundleOutcome {
    /// The archive.
    pub path: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

/// Removes the staging folder however the bundle ends.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One file to put in the archive: its name there and where it is now.
#[derive(Clone, Debug)]
struct Entry {
    name: String,
    path: PathBuf,
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn size_of(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// The ICAP ports of a run: every sensor port and every listening port.
fn icap_ports(files: &RunFiles) -> Result<Vec<u16>, EvidenceError> {
    let mut ports = std::collections::BTreeSet::new();
    load::for_each_connection(files, &mut |c| {
        for addr in [&c.server, &c.listen] {
            if let Some(p) = addr
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
            {
                ports.insert(p);
            }
        }
    })?;
    Ok(ports.into_iter().collect())
}

/// Makes the bundle `args` asks for, silently (the flight recorder's
/// incidents, tests).
pub fn bundle(args: &BundleArgs) -> Result<BundleOutcome, EvidenceError> {
    bundle_shown(args, false)
}

/// [`bundle`], with a progress line for each phase when `show` (and
/// stderr is a terminal): redacting, the report, packing.
pub fn bundle_shown(args: &BundleArgs, show: bool) -> Result<BundleOutcome, EvidenceError> {
    let files = RunFiles::scan(&args.dir)?;
    let run_name = {
        let canonical = args.dir.canonicalize().unwrap_or_else(|_| args.dir.clone());
        let n = file_name(&canonical);
        if n.is_empty() {
            "icaptap-run".to_string()
        } else {
            n
        }
    };
    let suffix = if args.redact { "-redacted" } else { "" };
    let output = args.output.clone().unwrap_or_else(|| {
        let parent = args
            .dir
            .canonicalize()
            .ok()
            .and_then(|d| d.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        parent.join(format!("{run_name}{suffix}.tar.gz"))
    });
    let folder = format!("{run_name}{suffix}");
    let staging_dir = PathBuf::from(format!("{}.partial.d", output.display()));
    let _ = std::fs::remove_dir_all(&staging_dir);
    crate::output::directory::prepare(&staging_dir).map_err(|source| EvidenceError::Write {
        path: staging_dir.clone(),
        source,
    })?;
    let staging = Staging(staging_dir);

    let mut entries: Vec<Entry> = Vec::new();
    let mut captures: Vec<Entry> = Vec::new();
    let mut logs: Vec<Entry> = Vec::new();
    let mut redaction = None;
    let report_source: PathBuf;
    // The `--peer` comparison goes with the run; the reports and the
    // ticket made from the bundle's files state it.
    let peer_file = Some(args.dir.join(PEER_FILE)).filter(|p| p.is_file());
    // With --redact, what is masked and mapped in the files is masked and
    // mapped wherever else the bundle says it (the manifest's command
    // lines): no byte of a redacted bundle holds a secret or, with
    // --pseudonymise-ips, a real address.
    let mut secrets = Secrets::new();
    let mut pseudonyms = (args.redact && args.pseudonymise_ips).then(Pseudonyms::new);
    if args.redact {
        let capture_bytes: u64 = files.captures.iter().map(|c| size_of(c)).sum();
        let redacting = Progress::bytes(
            show,
            "bundle: redacting",
            2 * capture_bytes + files.log_bytes(),
        );
        redacting.message("finding secrets");
        load::for_each_exchange(&files, &mut |x| secrets.add_record(&x))?;
        let ports = icap_ports(&files)?;
        let mut capture_stats = CaptureRedaction::default();
        if !files.captures.is_empty() {
            let plan =
                redact_pcap::plan(&files.captures, &ports, &mut secrets, pseudonyms.as_mut())?;
            redacting.advance(capture_bytes);
            for c in &files.captures {
                let dst = staging.0.join(file_name(c));
                redacting.message(file_name(c));
                redact_pcap::rewrite(c, &dst, &plan, pseudonyms.as_mut(), &mut capture_stats)?;
                redacting.advance(size_of(c));
                captures.push(Entry {
                    name: file_name(c),
                    path: dst,
                });
            }
        }
        let mut log_masks = 0;
        let texts = [&files.summary, &peer_file].into_iter().flatten();
        for (src, is_log) in texts
            .map(|p| (p, false))
            .chain(files.logs().map(|p| (p, true)))
        {
            let dst = staging.0.join(file_name(src));
            log_masks += redact::redact_text_file(src, &dst, &secrets, pseudonyms.as_mut())?.masked;
            if is_log {
                redacting.advance(size_of(src));
            }
            let e = Entry {
                name: file_name(src),
                path: dst,
            };
            if is_log {
                logs.push(e);
            } else {
                entries.push(e);
            }
        }
        redaction = Some(RedactionFacts {
            secrets_found: secrets.len() as u64,
            log_masks,
            capture_packets_changed: capture_stats.masked_packets,
            capture_packets_cut: capture_stats.cut_packets,
            capture_bytes_cut: capture_stats.cut_bytes,
            ips_pseudonymised: pseudonyms.is_some(),
            addresses_mapped: pseudonyms.as_ref().map_or(0, |p| p.len() as u64),
        });
        redacting.finish();
        report_source = staging.0.clone();
    } else {
        for c in &files.captures {
            captures.push(Entry {
                name: file_name(c),
                path: c.clone(),
            });
        }
        for s in [&files.summary, &peer_file].into_iter().flatten() {
            entries.push(Entry {
                name: file_name(s),
                path: s.clone(),
            });
        }
        for l in files.logs() {
            logs.push(Entry {
                name: file_name(l),
                path: l.clone(),
            });
        }
        report_source = args.dir.clone();
    }
    let reading = Progress::bytes(
        show,
        "bundle: report",
        RunFiles::scan(&report_source)?.log_bytes(),
    );
    let reports = write_report_shown(&report_source, &staging.0, None, &reading);
    reading.finish();
    let reports = reports?;
    entries.push(Entry {
        name: load::REPORT_HTML_FILE.to_string(),
        path: reports.html,
    });
    entries.push(Entry {
        name: load::REPORT_MD_FILE.to_string(),
        path: reports.markdown,
    });

    let facts = Facts::gather(&report_source)?;
    let host = HostInfo::collect(args.redact);
    let ticket_path = staging.0.join("ticket.md");
    let archive_name = file_name(&output);
    write_file(
        &ticket_path,
        super::ticket::render(&facts, &host, &archive_name).as_bytes(),
    )?;
    entries.push(Entry {
        name: "ticket.md".to_string(),
        path: ticket_path,
    });

    let mut dropped = Vec::new();
    let mut truncated = Vec::new();
    if let Some(max) = args.max_size {
        let fixed: u64 = entries.iter().map(|e| size_of(&e.path)).sum::<u64>() + MANIFEST_RESERVE;
        if fixed > max {
            return Err(EvidenceError::TooSmall { max, needed: fixed });
        }
        let mut room = max - fixed;
        // Oldest captures go first (rotation numbers sort oldest first).
        let mut total: u64 = captures.iter().chain(&logs).map(|e| size_of(&e.path)).sum();
        while total > room && !captures.is_empty() {
            let oldest = captures.remove(0);
            let size = size_of(&oldest.path);
            total -= size;
            dropped.push(Dropped {
                name: oldest.name,
                bytes: size,
                reason: "oldest capture left out to fit --max-size".to_string(),
            });
        }
        let capture_bytes: u64 = captures.iter().map(|e| size_of(&e.path)).sum();
        room -= capture_bytes.min(room);
        let log_bytes: u64 = logs.iter().map(|e| size_of(&e.path)).sum();
        if log_bytes > room {
            let mut kept = Vec::new();
            for log in Log::BOTH {
                let set: Vec<Entry> = logs
                    .iter()
                    .filter(|e| Log::of_name(&e.name) == Some(log))
                    .cloned()
                    .collect();
                let set_bytes: u64 = set.iter().map(|e| size_of(&e.path)).sum();
                let share = (room as u128 * set_bytes as u128 / log_bytes.max(1) as u128) as u64;
                kept.extend(fit_log_set(
                    set,
                    share,
                    &staging.0,
                    &mut dropped,
                    &mut truncated,
                )?);
            }
            logs = kept;
        }
    }
    entries.extend(logs);
    entries.extend(captures);

    let entry_bytes: u64 = entries.iter().map(|e| size_of(&e.path)).sum();
    let packing = Progress::bytes(show, "bundle: packing", 2 * entry_bytes);
    let mut listed = Vec::new();
    for e in &entries {
        packing.message(e.name.clone());
        let (bytes, sha256) = manifest::hash_file(&e.path)?;
        packing.advance(bytes);
        listed.push(FileEntry {
            name: e.name.clone(),
            bytes,
            sha256,
        });
    }
    let run = files.read_summary()?.unwrap_or_default();
    let mut scrub = |words: Vec<String>| -> Vec<String> {
        if !args.redact {
            return words;
        }
        words
            .into_iter()
            .map(|w| {
                let mut bytes = w.into_bytes();
                secrets.mask(&mut bytes);
                if let Some(p) = pseudonyms.as_mut() {
                    p.rewrite_text(&mut bytes, false);
                }
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .collect()
    };
    let bundle_command = scrub(std::env::args().collect());
    let run_command = scrub(run.command.clone());
    let manifest = Manifest {
        schema: manifest::MANIFEST_SCHEMA,
        icaptap_version: env!("CARGO_PKG_VERSION").to_string(),
        created: super::now_text(),
        bundle_command,
        run_command,
        run_icaptap_version: run.icaptap_version.clone(),
        host,
        files: listed,
        redaction,
        max_size: args.max_size,
        dropped,
        truncated,
    };
    let manifest_path = staging.0.join("manifest.json");
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| EvidenceError::Write {
        path: manifest_path.clone(),
        source: std::io::Error::other(e),
    })?;
    write_file(&manifest_path, &json)?;
    entries.push(Entry {
        name: "manifest.json".to_string(),
        path: manifest_path,
    });

    packing.message("compressing");
    let written = write_archive(&output, &folder, &entries, &packing);
    packing.finish();
    written?;
    Ok(BundleOutcome {
        path: output,
        manifest,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), EvidenceError> {
    let err = |source| EvidenceError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = create_private_file(path).map_err(err)?;
    f.write_all(bytes).map_err(err)
}

/// Keeps the newest `room` bytes of one log's files (oldest first in
/// `set`): the newest files whole, the oldest of those kept cut at its
/// start (`keep_tail`), older ones left out; what went is listed.
fn fit_log_set(
    set: Vec<Entry>,
    mut room: u64,
    staging: &Path,
    dropped: &mut Vec<Dropped>,
    truncated: &mut Vec<Truncated>,
) -> Result<Vec<Entry>, EvidenceError> {
    let one = set.len() == 1;
    let mut kept = Vec::new();
    for mut e in set.into_iter().rev() {
        let size = size_of(&e.path);
        if size <= room {
            room -= size;
            kept.push(e);
        } else if room > 0 || one {
            let dst = staging.join(format!("{}.tail", e.name));
            let (kept_bytes, dropped_lines) = keep_tail(&e.path, &dst, room)?;
            truncated.push(Truncated {
                name: e.name.clone(),
                original_bytes: size,
                kept_bytes,
                dropped_lines,
            });
            room = 0;
            e.path = dst;
            kept.push(e);
        } else {
            dropped.push(Dropped {
                name: e.name,
                bytes: size,
                reason: "oldest log file left out to fit --max-size".to_string(),
            });
        }
    }
    kept.reverse();
    Ok(kept)
}

/// Copies the last `max` bytes of `src` that start on a line to `dst`;
/// returns the bytes kept and the lines left out.
fn keep_tail(src: &Path, dst: &Path, max: u64) -> Result<(u64, u64), EvidenceError> {
    let read_err = |source| EvidenceError::Read {
        path: src.to_path_buf(),
        source,
    };
    let write_err = |source| EvidenceError::Write {
        path: dst.to_path_buf(),
        source,
    };
    let size = size_of(src);
    let mut input = BufReader::new(File::open(src).map_err(read_err)?);
    let mut skip_to = size.saturating_sub(max);
    let mut dropped_lines = 0u64;
    // Count the lines before the cut, then move the cut to the next line.
    let mut pos = 0u64;
    let mut line = Vec::new();
    while pos < skip_to {
        line.clear();
        let n = input.read_until(b'\n', &mut line).map_err(read_err)? as u64;
        if n == 0 {
            break;
        }
        pos += n;
        dropped_lines += 1;
    }
    skip_to = pos;
    input.seek(SeekFrom::Start(skip_to)).map_err(read_err)?;
    let mut out = create_private_file(dst).map_err(write_err)?;
    let kept = std::io::copy(&mut input, &mut out).map_err(write_err)?;
    Ok((kept, dropped_lines))
}

/// Writes the archive (0600): one folder holding every entry.
fn write_archive(
    output: &Path,
    folder: &str,
    entries: &[Entry],
    progress: &Progress,
) -> Result<(), EvidenceError> {
    let write_err = |source| EvidenceError::Write {
        path: output.to_path_buf(),
        source,
    };
    let partial = PathBuf::from(format!("{}.partial", output.display()));
    let file = create_private_file(&partial).map_err(write_err)?;
    let mut tar = tar::Builder::new(GzEncoder::new(
        std::io::BufWriter::new(file),
        Compression::default(),
    ));
    let mtime = crate::tap::now_micros() / 1_000_000;
    for e in entries {
        let f = File::open(&e.path).map_err(|source| EvidenceError::Read {
            path: e.path.clone(),
            source,
        })?;
        let len = f
            .metadata()
            .map_err(|source| EvidenceError::Read {
                path: e.path.clone(),
                source,
            })?
            .len();
        let mut header = tar::Header::new_gnu();
        header.set_size(len);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(
            &mut header,
            format!("{folder}/{}", e.name),
            progress.reader(f),
        )
        .map_err(write_err)?;
    }
    let gz = tar.into_inner().map_err(write_err)?;
    let mut buffered = gz.finish().map_err(write_err)?;
    buffered.flush().map_err(write_err)?;
    let file = buffered
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    file.sync_all().map_err(write_err)?;
    std::fs::rename(&partial, output).map_err(write_err)?;
    Ok(())
}

/// `icaptap bundle`: makes the archive and says where it is.
pub fn run(args: BundleArgs) -> Result<BundleOutcome, EvidenceError> {
    let outcome = bundle_shown(&args, true)?;
    sayln!(
        "icaptap: bundle written: {} ({} files{}{})",
        outcome.path.display(),
        outcome.manifest.files.len() + 1,
        if outcome.manifest.redaction.is_some() {
            ", redacted"
        } else {
            ""
        },
        if outcome.manifest.dropped.is_empty() && outcome.manifest.truncated.is_empty() {
            String::new()
        } else {
            format!(
                ", {} files left out and {} logs cut to fit --max-size (see manifest.json)",
                outcome.manifest.dropped.len(),
                outcome.manifest.truncated.len()
            )
        }
    );
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_log_cut_to_fit_keeps_its_newest_files_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let staging = tmp.path().join("staging");
        std::fs::create_dir(&staging).unwrap();
        // Three files of 10 lines of 10 bytes each.
        let set: Vec<Entry> = (1..=3)
            .map(|n| {
                let name = Log::Exchanges.rotated_name(n);
                let path = tmp.path().join(&name);
                let lines: String = (0..10).map(|i| format!("{n}-{i:07}\n")).collect();
                std::fs::write(&path, lines).unwrap();
                Entry { name, path }
            })
            .collect();
        let (mut dropped, mut truncated) = (Vec::new(), Vec::new());
        // Room for the newest file and half of the one before.
        let kept = fit_log_set(set, 150, &staging, &mut dropped, &mut truncated).unwrap();
        let names: Vec<&str> = kept.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["exchanges-0002.jsonl", "exchanges-0003.jsonl"]);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].name, "exchanges-0001.jsonl");
        assert_eq!(dropped[0].bytes, 100);
        assert_eq!(truncated.len(), 1);
        assert_eq!(truncated[0].name, "exchanges-0002.jsonl");
        assert_eq!(
            (truncated[0].kept_bytes, truncated[0].dropped_lines),
            (50, 5)
        );
        let cut = std::fs::read_to_string(&kept[0].path).unwrap();
        assert!(
            cut.starts_with("2-0000005\n") && cut.ends_with("2-0000009\n"),
            "{cut}"
        );
        assert_eq!(kept[1].path, tmp.path().join("exchanges-0003.jsonl"));
    }
}
