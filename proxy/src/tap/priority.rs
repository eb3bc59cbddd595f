//! How the side-path threads yield the CPU to forwarding: while a side
//! path keeps up with its queue its thread is `SCHED_IDLE`, so that any
//! forwarding thread (or the ICAP client or sensor on the same host) that
//! wakes takes the CPU from it at once; once it falls behind it takes a
//! fair share at a Linux nice level, the recorder's nicer than the
//! observer's, until it has caught up.

use rustix::process::Resource;
use rustix::thread::CapabilitySet;
use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};

use super::queue::Backlog;

/// How much nicer than forwarding the recorder's thread is (a Linux nice
/// level, per thread). When every CPU is busy, forwarding wins it, then the
/// observer (whose records are the product), and the capture, the bulk of
/// the side-path work at two bytes written per byte forwarded, falls
/// behind, drops and counts, which is what its bounded queue is for. When
/// there is CPU to spare, as in a deployment not at its limit, it changes
/// nothing.
pub const RECORDER_NICENESS: i32 = 10;

/// How much nicer than forwarding the live observer's thread is: less than
/// the recorder, so that of what forwarding leaves, records get about three
/// times the capture's share. A woken observer then also does not preempt
/// a forwarding thread on a shared CPU.
pub const OBSERVER_NICENESS: i32 = 5;

/// How full a side path's queue must be for its thread to leave
/// `SCHED_IDLE` for its nice level: about 4 MiB of the default budget, a
/// few milliseconds of forwarding at full speed.
const BEHIND: f64 = 1.0 / 16.0;

/// How empty the queue must be again for the thread to go back to
/// `SCHED_IDLE`.
const CAUGHT_UP: f64 = 1.0 / 128.0;

/// A side-path thread's standing with the scheduler, changed only when
/// the side path falls behind or catches up (one system call each time).
///
/// At `SCHED_IDLE` a side path costs forwarding nothing on a shared CPU:
/// measured side by side on two vCPUs, the added OPTIONS p99 on one CPU
/// fell from 4-5x HAProxy's to about 1x (docs/performance.md). But an idle
/// thread gets next to no CPU while every CPU is busy, so a side path that
/// sees its queue fill takes its fair share back before the queue must
/// drop input: records and capture stay as complete as at a plain nice
/// level. Linux lets a thread leave `SCHED_IDLE` only with `CAP_SYS_NICE`
/// or a `RLIMIT_NICE` that allows its nice level, so without either the
/// thread never enters it and just keeps its nice level.
#[derive(Debug)]
pub struct Standing {
    niceness: i32,
    idle: bool,
    /// False when the thread could not come back from `SCHED_IDLE`, or the
    /// system refused it: the thread stays at its nice level.
    can_idle: bool,
}

impl Standing {
    /// Puts the calling thread at `SCHED_IDLE` if it may come back from it,
    /// else at `niceness`.
    pub fn begin(niceness: i32) -> Standing {
        let mut standing = Standing {
            niceness,
            idle: false,
            can_idle: may_leave_idle(niceness),
        };
        if standing.can_idle {
            // Sets the nice level too.
            standing.go_idle();
        } else {
            lower_thread_priority(niceness);
        }
        standing
    }

    /// Follows the side path's queue: leaves `SCHED_IDLE` once it is
    /// [`BEHIND`], goes back once it has caught up.
    pub fn follow(&mut self, backlog: Backlog) {
        if self.idle && backlog.filled >= BEHIND {
            self.take_fair_share();
        } else if !self.idle && self.can_idle && backlog.filled < CAUGHT_UP {
            self.go_idle();
        }
    }

    /// Whether the thread is at `SCHED_IDLE` now.
    pub fn is_idle(&self) -> bool {
        self.idle
    }

    fn go_idle(&mut self) {
        set_policy(NormalThreadSchedulePolicy::Idle);
        // Setting the policy sets nice 0: keep the thread's own level, the
        // one it takes its share at when it leaves SCHED_IDLE.
        lower_thread_priority(self.niceness);
        self.idle = is_idle_now();
        if !self.idle {
            tracing::debug!("side-path thread stays at nice {}", self.niceness);
            self.can_idle = false;
        }
    }

    fn take_fair_share(&mut self) {
        set_policy(NormalThreadSchedulePolicy::Other);
        // Setting the policy sets a nice level too: put it back.
        lower_thread_priority(self.niceness);
        self.idle = is_idle_now();
        if self.idle {
            // Not expected after `may_leave_idle`; never go idle again.
            tracing::warn!("a side-path thread could not leave SCHED_IDLE");
            self.can_idle = false;
        }
    }
}

/// Whether Linux lets this thread leave `SCHED_IDLE` for `niceness`: with
/// `CAP_SYS_NICE`, or a `RLIMIT_NICE` of at least 20 - `niceness`.
fn may_leave_idle(niceness: i32) -> bool {
    let privileged = rustix::thread::capabilities(None)
        .is_ok_and(|caps| caps.effective.contains(CapabilitySet::SYS_NICE));
    let needed = u64::try_from(20 - niceness).unwrap_or(0);
    let limit = rustix::process::getrlimit(Resource::Nice).current;
    privileged || limit.is_none_or(|limit| limit >= needed)
}

/// Sets the calling thread's scheduling policy; what it became is read
/// back by the caller, since the call can change the policy and still
/// fail on the nice level it sets after.
fn set_policy(policy: NormalThreadSchedulePolicy) {
    if let Err(e) = thread_priority::set_thread_priority_and_policy(
        thread_priority::thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(policy),
    ) {
        tracing::debug!("setting a side-path thread's policy to {policy:?}: {e:?}");
    }
}

/// Whether the calling thread is at `SCHED_IDLE`.
fn is_idle_now() -> bool {
    thread_priority::thread_schedule_policy().is_ok_and(|policy| {
        policy == ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
    })
}

/// Lowers the calling thread's CPU priority to `niceness`. Needs no
/// privilege; if the system refuses, the thread keeps the process's
/// priority and this is logged.
pub fn lower_thread_priority(niceness: i32) {
    let thread = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(thread), niceness) {
        tracing::debug!("thread keeps its CPU priority: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ThreadSchedulePolicy {
        thread_priority::thread_schedule_policy().unwrap()
    }

    fn nice() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
    }

    #[test]
    fn a_side_path_thread_idles_while_it_keeps_up_and_takes_its_share_when_behind() {
        std::thread::spawn(|| {
            let mut standing = Standing::begin(7);
            let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
            if !may_leave_idle(7) {
                // A thread that could not come back never goes idle.
                assert!(!standing.is_idle());
                assert_eq!(nice(), 7);
                return;
            }
            assert!(standing.is_idle());
            assert_eq!(policy(), idle);
            assert_eq!(nice(), 7, "idle, it keeps its nice level");
            standing.follow(Backlog { filled: 0.01 });
            assert!(standing.is_idle(), "a little backlog changes nothing");
            standing.follow(Backlog { filled: 0.25 });
            assert!(!standing.is_idle());
            assert_eq!(
                policy(),
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other)
            );
            assert_eq!(nice(), 7, "its fair share is at its nice level");
            standing.follow(Backlog { filled: 0.02 });
            assert!(!standing.is_idle(), "it stays until it has caught up");
            standing.follow(Backlog { filled: 0.0 });
            assert!(standing.is_idle());
            assert_eq!(policy(), idle);
        })
        .join()
        .unwrap();
    }
}
