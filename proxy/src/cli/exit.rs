//! The exit status of every subcommand, in one table: the same numbers mean
//! the same thing whichever job ran. The man pages' EXIT STATUS section is
//! rendered from [`EXIT_STATUS`] and docs/cli.md lists the same rows.

/// The job did what was asked and found nothing wrong.
pub const OK: u8 = 0;

/// The job ran to its end and its answer is "found something" (or "found
/// nothing to look at").
pub const FOUND: u8 = 1;

/// The job could not do what was asked: a usage error, a bad config file,
/// a failure to start or to run.
pub const FAILED: u8 = 2;

/// Each exit status and what it means, for the man pages and docs/cli.md.
pub const EXIT_STATUS: [(u8, &str); 4] = [
    (
        OK,
        "Success: the job did what was asked and found nothing wrong. A proxy run \
         ended by SIGINT, SIGTERM or SIGHUP, by --duration or by --max-exchanges \
         ended in order: 0. So does a command whose reader stopped reading its \
         standard output (`icaptap manpage | head`).",
    ),
    (
        FOUND,
        "The job ran and found something: analyze found no ICAP in the captures, \
         replay found verdicts that differ, check had a case that failed, client \
         got an ICAP error status (4xx, 5xx) or an error verdict.",
    ),
    (
        FAILED,
        "Usage error (an unknown option, a bad value), a config file that cannot be \
         read, or a failure to start or to run: a port in use, an output directory \
         holding an earlier run, an unreadable capture, a sensor that cannot listen; \
         check could not test the vendor; client got no answer.",
    ),
    (
        101,
        "icaptap itself failed (a panic): a bug; please report it with the message \
         printed on standard error.",
    ),
];
