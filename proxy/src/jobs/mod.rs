//! The two long-running jobs, each wiring the rooms of icaptap together
//! for one subcommand:
//!
//! - [`proxy`]: `icaptap proxy`, forwarding with the live observer and
//!   recorder on side paths;
//! - [`analyze`]: `icaptap analyze`, the same observer over tcpdump
//!   captures.

pub mod analyze;
pub mod proxy;
