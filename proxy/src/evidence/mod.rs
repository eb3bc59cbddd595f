//! Evidence: what a troubleshooting run leaves for people. `icaptap report
//! DIR` writes report.html and report.md from a run's output directory
//! (live proxy or offline analysis, docs/log-schema.md); `icaptap bundle
//! DIR` packs the directory into a support-ticket archive with a manifest,
//! host facts and a pre-filled ticket, optionally redacted; `icaptap clean
//! DIR` removes a run's files when the ticket is done; `icaptap export DIR
//! --filter EXPR -w FILE` takes the selected exchanges out of a run.
//!
//! - [`load`]: reading a run directory back;
//! - [`facts`]: the numbers and examples reports state, in one pass (the
//!   client and sensor products come from the records' summary, so a run
//!   without a capture reports them too);
//! - [`exchange_table`]: which request got which verdict, problems first;
//! - [`filtered`]: the summary of a `--filter` view;
//! - [`catalogue`]: docs/anomalies.md, compiled in;
//! - [`report_html`], [`report_md`], [`svg`], [`timebins`]: the two
//!   reports and their charts;
//! - [`peer_section`]: the `--peer` comparison (peer.json) in both
//!   reports and the ticket;
//! - [`bundle`], [`manifest`], [`hostinfo`], [`ticket`]: the archive;
//! - [`redact`], [`redact_pcap`], [`pseudonym`]: what `--redact` removes;
//! - [`clean`]: removing a run's files;
//! - [`export`]: `icaptap export`, the packets and records of the
//!   exchanges a filter selects.

pub mod bundle;
pub mod catalogue;
pub mod clean;
pub mod escape;
pub mod exchange_table;
pub mod export;
pub mod facts;
pub mod filtered;
pub mod hostinfo;
pub mod load;
pub mod manifest;
pub mod peer_section;
pub mod pseudonym;
pub mod readable;
pub mod redact;
pub mod redact_pcap;
pub mod report_html;
pub mod report_md;
pub mod svg;
pub mod ticket;
pub mod timebins;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use bundle::{BundleArgs, BundleOutcome};
pub use clean::CleanArgs;

use crate::output::directory::create_private_file;

/// Why evidence could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The directory cannot be listed.
    #[error("cannot read the run directory {dir}: {source}; give the directory a run wrote (icaptap-YYYYMMDD-HHMMSS)")]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The directory holds no record file.
    #[error("{dir} is not an icaptap output directory: it has no summary.json, exchanges.jsonl or connections.jsonl; give the directory `icaptap proxy` or `icaptap analyze` wrote")]
    NotARunDir {
        /// The directory.
        dir: PathBuf,
    },
    /// A file of the run cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file of the run is not what icaptap writes.
    #[error("cannot parse {path} at line {line}: {detail}; was it written by a newer icaptap, or edited?")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: u64,
        /// What the parser said.
        detail: String,
    },
    /// An output file cannot be written.
    #[error("cannot write {path}: {source}; check free space and permissions, or choose another place with -o")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A capture cannot be rewritten for redaction.
    #[error("cannot redact the capture {path} at byte {offset}: {detail}; leave --redact off and remove the capture from the bundle by hand, or report this file to icaptap's maintainers")]
    Capture {
        /// The capture file.
        path: PathBuf,
        /// Byte offset in the file where it failed (0 when unknown).
        offset: u64,
        /// What went wrong.
        detail: String,
    },
    /// `icaptap clean` refused the directory.
    #[error("refusing to clean {dir}: {reason}")]
    CleanRefused {
        /// The directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// The bundle cannot fit in `--max-size`.
    #[error("the bundle cannot fit in {max} bytes: the summary, reports, ticket and manifest alone take {needed} bytes; raise --max-size")]
    TooSmall {
        /// `--max-size`.
        max: u64,
        /// What the mandatory files need.
        needed: u64,
    },
}

/// Where the reports were written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportPaths {
    /// `report.html`.
    pub html: PathBuf,
    /// `report.md`.
    pub markdown: PathBuf,
}

/// Options of `icaptap report`.
#[derive(Clone, Debug, clap::Args)]
pub struct ReportArgs {
    /// The run's output directory (written by `icaptap proxy`, `analyze` or
    /// `demo`).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Report only the exchanges this filter expression selects (and
    /// their connections), e.g. `verdict=blocked and client=10.0.0.0/8`;
    /// the reports say which filter was applied (docs/evidence.md).
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<crate::filter::Filter>,
}

/// The time now, as reports print it.
pub(crate) fn now_text() -> String {
    crate::output::rfc3339(crate::tap::now_micros())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), EvidenceError> {
    let err = |source| EvidenceError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = create_private_file(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Writes `report.html` and `report.md` (mode 0600) into `dir` from the
/// records there; called at the end of `icaptap proxy`, `analyze` and
/// `demo`, and by `icaptap report`.
pub fn write_report(dir: &Path) -> Result<ReportPaths, EvidenceError> {
    write_report_to(dir, dir)
}

/// Like [`write_report`], reading the run in `dir` and writing the reports
/// into `out` (the bundle writes them next to redacted logs).
pub fn write_report_to(dir: &Path, out: &Path) -> Result<ReportPaths, EvidenceError> {
    write_report_filtered(dir, out, None)
}

/// Like [`write_report_to`], over only the exchanges `filter` selects.
pub fn write_report_filtered(
    dir: &Path,
    out: &Path,
    filter: Option<&crate::filter::Filter>,
) -> Result<ReportPaths, EvidenceError> {
    let facts = facts::Facts::gather_filtered(dir, filter)?;
    let catalogue = catalogue::Catalogue::builtin();
    let generated = now_text();
    let paths = ReportPaths {
        html: out.join(load::REPORT_HTML_FILE),
        markdown: out.join(load::REPORT_MD_FILE),
    };
    write_private(
        &paths.html,
        report_html::render(&facts, catalogue, &generated).as_bytes(),
    )?;
    write_private(
        &paths.markdown,
        report_md::render(&facts, catalogue, &generated).as_bytes(),
    )?;
    Ok(paths)
}

/// `icaptap report DIR`: writes both reports and says where.
pub fn report(args: ReportArgs) -> Result<ReportPaths, EvidenceError> {
    let paths = write_report_filtered(&args.dir, &args.dir, args.filter.as_ref())?;
    if let Some(f) = &args.filter {
        println!(
            "icaptap: report limited to the exchanges matching `{}`",
            f.text()
        );
    }
    println!(
        "icaptap: report written: {} and {}",
        paths.html.display(),
        paths.markdown.display()
    );
    Ok(paths)
}
