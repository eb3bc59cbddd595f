//! How the side-path threads yield the CPU to forwarding: a Linux nice
//! level per thread, the recorder's nicer than the observer's.

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

/// Lowers the calling thread's CPU priority to `niceness`. Needs no
/// privilege; if the system refuses, the thread keeps the process's
/// priority and this is logged.
pub fn lower_thread_priority(niceness: i32) {
    let thread = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(thread), niceness) {
        tracing::debug!("thread keeps its CPU priority: {e}");
    }
}
