//! A filtered view of a run (`report --filter`): its summary keeps the
//! run's own facts (mode, times, drops, evidence) and counts only the
//! records the filter kept; the reports say which filter that was.

use crate::output::summary::Summary;

/// "Filtered: ..." when the records were limited by `--filter`, for the
/// top of the reports.
pub fn filter_note(s: &Summary) -> Option<String> {
    s.filter.as_deref().map(|f| {
        format!(
            "Filtered: only the exchanges matching `{f}` (and their connections) are counted and shown."
        )
    })
}

/// The summary of a filtered view: the counts of the records kept, the
/// run's own facts from `run` when it wrote a summary.
pub(crate) fn restricted(run: Option<Summary>, kept: Summary) -> Summary {
    let Some(run) = run else {
        return kept;
    };
    // A run recorded under a filter already: both apply.
    let filter = match (run.filter, kept.filter.clone()) {
        (Some(a), Some(b)) => Some(format!("({a}) and ({b})")),
        (a, b) => b.or(a),
    };
    Summary {
        filter,
        icaptap_version: run.icaptap_version,
        mode: run.mode,
        evidence: run.evidence,
        command: run.command,
        started: run.started,
        ended: run.ended,
        forwarded: run.forwarded,
        drops: run.drops,
        capture_stopped: run.capture_stopped,
        output_dir_recreated: run.output_dir_recreated,
        ..kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_counts_what_was_kept_and_keeps_the_runs_own_facts() {
        let run = Summary {
            mode: "proxy".into(),
            started: Some("2026-12-03T17:00:00Z".into()),
            exchanges: 10,
            filter: Some("client=10.0.0.0/8".into()),
            ..Summary::default()
        };
        let kept = Summary {
            exchanges: 2,
            filter: Some("verdict=blocked".into()),
            ..Summary::default()
        };
        let view = restricted(Some(run), kept);
        assert_eq!(view.mode, "proxy");
        assert_eq!(view.started.as_deref(), Some("2026-12-03T17:00:00Z"));
        assert_eq!(view.exchanges, 2);
        assert_eq!(
            view.filter.as_deref(),
            Some("(client=10.0.0.0/8) and (verdict=blocked)")
        );
        assert!(filter_note(&view).unwrap().contains("verdict=blocked"));
        assert_eq!(filter_note(&Summary::default()), None);
    }
}
