//! What every scenario shares: the bounds of the run, the load-generator threads, and the
//! per-thread results.
//!
//! Each thread runs its own single-threaded event loop with its share of the connections
//! (as wrk does). Nothing is shared between threads in the send path except a few atomic
//! counters, so adding threads scales until the cores run out.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::time::Instant;

use crate::stats::{Live, OpStats};
use crate::timeline::Recorder;

/// Set by Ctrl-C: every loop stops as if the duration had passed.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs a SIGINT handler that sets `INTERRUPTED`, so an interrupted run still reports.
pub fn catch_interrupt() {
    extern "C" fn on_sigint(_: libc::c_int) {
        // Only an atomic store: async-signal-safe.
        INTERRUPTED.store(true, Ordering::Relaxed);
    }
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

/// The bounds of a run and its live counters, shared by all threads.
pub struct Control {
    pub start: Instant,
    pub deadline: Instant,
    pub timeout: Duration,
    pub live: Live,
    max_requests: u64,
    issued: AtomicU64,
    capped: AtomicBool,
    /// When [`Control::stop`] ended the run before its deadline.
    stopped_at: OnceLock<Instant>,
}

impl Control {
    pub fn new(duration: Duration, max_requests: u64, timeout: Duration) -> Control {
        let start = Instant::now();
        Control {
            start,
            deadline: start + duration,
            timeout,
            live: Live::default(),
            max_requests,
            issued: AtomicU64::new(0),
            capped: AtomicBool::new(false),
            stopped_at: OnceLock::new(),
        }
    }

    /// Ends the run now, as Ctrl-C would but for this run only (a background run's
    /// handle). Once the deadline has passed the run ended by itself, and this does nothing.
    pub fn stop(&self) {
        let now = Instant::now();
        if now < self.deadline {
            let _ = self.stopped_at.set(now);
        }
    }

    /// When sending load stopped, or will: the deadline, or an earlier [`Control::stop`].
    pub fn end(&self) -> Instant {
        self.stopped_at
            .get()
            .map_or(self.deadline, |at| (*at).min(self.deadline))
    }

    /// True once the run is over: duration passed, request cap reached, interrupted or
    /// stopped.
    pub fn should_stop(&self, now: Instant) -> bool {
        now >= self.deadline || self.capped.load(Ordering::Relaxed) || self.interrupted()
    }

    /// Ctrl-C, or [`Control::stop`].
    fn interrupted(&self) -> bool {
        INTERRUPTED.load(Ordering::Relaxed) || self.stopped_at.get().is_some()
    }

    /// Open loop: true once requests still queued should no longer be sent. The
    /// schedule's last requests are due just before the deadline, and a dispatcher woken
    /// by a millisecond timer hands them over a little after it, so they get `grace` to
    /// start; an interrupt or a stop ends the run at once.
    pub fn is_over(&self, now: Instant, grace: Duration) -> bool {
        now >= self.deadline + grace || self.interrupted()
    }

    /// Claims one request of the `--max-requests` budget; false once it is spent.
    pub fn take_permit(&self) -> bool {
        if self.issued.fetch_add(1, Ordering::Relaxed) < self.max_requests {
            true
        } else {
            self.capped.store(true, Ordering::Relaxed);
            false
        }
    }

    pub fn stopped_by(&self) -> &'static str {
        if self.capped.load(Ordering::Relaxed) {
            "max-requests"
        } else if INTERRUPTED.load(Ordering::Relaxed) {
            "interrupted"
        } else if self.stopped_at.get().is_some() {
            "stopped"
        } else {
            "duration"
        }
    }

    /// Sleeps before retrying a failed connect, but never past the end of the run.
    pub async fn backoff(&self) {
        let until = (Instant::now() + Duration::from_millis(50)).min(self.deadline);
        tokio::time::sleep_until(until).await;
    }
}

/// What one thread measured.
pub struct ShardStats {
    /// One entry per operation of the scenario, in the scenario's order.
    pub ops: Vec<OpStats>,
    /// Connections that could not be opened (not counted as requests).
    pub connect_errors: u64,
    /// Players only: the run second by second and target by target.
    pub timeline: Option<Recorder>,
    /// Open loop: requests the schedule produced.
    pub scheduled: u64,
    /// Open loop: scheduled requests never sent because the run ended first.
    pub unsent: u64,
}

impl ShardStats {
    pub fn new(op_count: usize, open_loop: bool) -> ShardStats {
        ShardStats {
            ops: (0..op_count).map(|_| OpStats::new(open_loop)).collect(),
            connect_errors: 0,
            timeline: None,
            scheduled: 0,
            unsent: 0,
        }
    }

    pub fn merge(&mut self, other: &ShardStats) {
        for (mine, theirs) in self.ops.iter_mut().zip(&other.ops) {
            mine.merge(theirs);
        }
        self.connect_errors += other.connect_errors;
        match (&mut self.timeline, &other.timeline) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, Some(theirs)) => self.timeline = Some(theirs.clone()),
            (_, None) => {}
        }
        self.scheduled += other.scheduled;
        self.unsent += other.unsent;
    }
}

/// Starts a load-generator thread running `make()`'s future on its own single-threaded
/// event loop. The future is built on that thread, so it may hold `Rc`s.
pub fn spawn_shard<F, Fut>(index: usize, make: F) -> std::io::Result<JoinHandle<ShardStats>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ShardStats> + 'static,
{
    std::thread::Builder::new()
        .name(format!("loadtest-{index}"))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a single-threaded runtime can always be built");
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, make())
        })
}

/// Waits for a shard's connection tasks and hands back the statistics they shared.
pub async fn finish_shard(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stats: Rc<RefCell<ShardStats>>,
) -> ShardStats {
    for task in tasks {
        // A panicking connection task is a bug; surface it rather than under-report.
        task.await.expect("connection task panicked");
    }
    Rc::try_unwrap(stats)
        .ok()
        .expect("all connection tasks have finished")
        .into_inner()
}

/// Which connections (of `connections`, numbered from 0) thread `shard` of `threads` owns.
pub fn connections_of(shard: usize, threads: usize, connections: u32) -> impl Iterator<Item = u32> {
    (shard as u32..connections).step_by(threads.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_stop_at_the_cap() {
        let ctl = Control::new(Duration::from_secs(60), 3, Duration::from_secs(1));
        assert!(!ctl.should_stop(Instant::now()));
        assert!(ctl.take_permit() && ctl.take_permit() && ctl.take_permit());
        assert!(!ctl.take_permit());
        assert!(ctl.should_stop(Instant::now()));
        assert_eq!(ctl.stopped_by(), "max-requests");
    }

    #[test]
    fn the_deadline_stops_the_run() {
        let ctl = Control::new(Duration::from_millis(10), 100, Duration::from_secs(1));
        assert!(ctl.should_stop(ctl.start + Duration::from_millis(10)));
        assert!(!ctl.should_stop(ctl.start + Duration::from_millis(9)));
        assert_eq!(ctl.stopped_by(), "duration");
    }

    #[test]
    fn a_stop_ends_the_run_early_but_not_after_its_deadline() {
        let ctl = Control::new(Duration::from_secs(60), 100, Duration::from_secs(1));
        assert_eq!(ctl.end(), ctl.deadline);
        ctl.stop();
        assert!(ctl.should_stop(Instant::now()));
        assert!(ctl.is_over(Instant::now(), Duration::from_secs(1)));
        assert_eq!(ctl.stopped_by(), "stopped");
        assert!(ctl.end() < ctl.deadline);

        let over = Control::new(Duration::from_nanos(1), 100, Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(1));
        over.stop();
        assert_eq!(over.stopped_by(), "duration");
        assert_eq!(over.end(), over.deadline);
    }

    #[test]
    fn connections_are_dealt_round_robin() {
        let all: Vec<Vec<u32>> = (0..3).map(|s| connections_of(s, 3, 8).collect()).collect();
        assert_eq!(all, [vec![0, 3, 6], vec![1, 4, 7], vec![2, 5]]);
    }
}
