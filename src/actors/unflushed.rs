//! `data_dir/unflushed`: how much acknowledged progress a crash of this node could lose,
//! so that its next start can count it in `playstate_progress_lost_total`.
//!
//! The count must never be low: an update is acknowledged only once the file holds a
//! number at least the progress entries then at risk (acknowledged, not stored, held by
//! no backup: `UserServices::at_risk`). Writing the file per update would put a disk
//! write on the hot path; so the file holds a reservation ahead of that count instead,
//! the way a sequence allocator reserves ids in blocks. A writer thread keeps it between
//! `at risk + headroom / 2` and `at risk + headroom`, raising it before it runs out and
//! lowering it once progress is stored; an update checks the reservation with one atomic
//! load and waits for the writer only when a burst outran it. A crash therefore never
//! undercounts, and overcounts by at most the headroom: `HEADROOM` entries, or twice what
//! went at risk in the last `TICK` when more (a burst). Once the count has not moved for
//! `STEADY`, the reservation comes down to it exactly, so a crash of a quiet node counts
//! exactly what it lost (nothing, when all was stored or backed up); the first update
//! after such a spell waits for one write.
//!
//! The file is one fixed-width line rewritten in place and synced, so it survives a power
//! loss too. A graceful stop replaces the reservation with what that run really lost.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::telemetry::Metrics;

/// The least reservation kept beyond what is at risk while updates come in.
pub const HEADROOM: usize = 16;

/// How often the writer looks without being woken, and the window over which it
/// measures how fast entries go at risk.
const TICK: Duration = Duration::from_millis(25);

/// How long the count must stay the same for the reservation to come down to it exactly.
const STEADY: Duration = Duration::from_millis(250);

pub struct UnflushedMarker {
    path: PathBuf,
    file: Mutex<File>,
    /// The reservation, never above what the file holds: updates compare against it.
    reserved: AtomicUsize,
    /// What the file holds, for updates waiting on the writer.
    durable: tokio::sync::watch::Sender<usize>,
    /// The highest count an update is waiting to see covered.
    wanted: AtomicUsize,
    writer: OnceLock<std::thread::Thread>,
    joined: Mutex<Option<std::thread::JoinHandle<()>>>,
    stopping: AtomicBool,
    /// Whether the last write failed (logged once per run of failures).
    failing: AtomicBool,
    /// What the previous run left, already added to `progress_lost` at start.
    inherited: u64,
}

impl UnflushedMarker {
    /// Counts what the previous run left as lost, then reserves `HEADROOM` before any
    /// update can be acknowledged.
    pub fn open(data_dir: &Path, metrics: &Metrics) -> io::Result<Arc<UnflushedMarker>> {
        let path = data_dir.join("unflushed");
        let lost: u64 = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if lost > 0 {
            tracing::error!(
                entries = lost,
                file = %path.display(),
                "the previous run stopped without storing progress that no backup held; \
                 counted as lost (after a crash, an upper bound)"
            );
            metrics.progress_lost.inc_by(lost);
        }
        let file = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let marker = UnflushedMarker {
            path,
            file: Mutex::new(file),
            reserved: AtomicUsize::new(0),
            durable: tokio::sync::watch::Sender::new(0),
            wanted: AtomicUsize::new(0),
            writer: OnceLock::new(),
            joined: Mutex::new(None),
            stopping: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            inherited: lost,
        };
        marker.write(HEADROOM)?;
        marker.reserved.store(HEADROOM, SeqCst);
        marker.durable.send_replace(HEADROOM);
        Ok(Arc::new(marker))
    }

    pub fn inherited(&self) -> u64 {
        self.inherited
    }

    /// Starts the writer thread; `at_risk` says how many entries are at risk now.
    pub fn start(self: &Arc<Self>, at_risk: impl Fn() -> usize + Send + 'static) {
        let marker = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("unflushed-marker".into())
            .spawn(move || marker.keep_ahead(at_risk));
        match spawned {
            Ok(handle) => {
                let _ = self.writer.set(handle.thread().clone());
                *self.joined.lock().expect("not poisoned") = Some(handle);
            }
            Err(e) => {
                // Updates past the first reservation would wait forever: let them through.
                tracing::error!(error = %e, "cannot start the unflushed-count writer");
                self.reserved.store(usize::MAX, SeqCst);
                self.durable.send_replace(usize::MAX);
            }
        }
    }

    /// Called after an update made `at_risk` entries at risk, before acknowledging it:
    /// `None` when the reservation already covers them (one atomic load), else what to
    /// wait for.
    pub fn cover(&self, at_risk: usize) -> Option<impl Future<Output = ()> + 'static> {
        let reserved = self.reserved.load(SeqCst);
        if at_risk + HEADROOM / 2 > reserved {
            self.wake();
        }
        if at_risk <= reserved {
            return None;
        }
        self.wanted.fetch_max(at_risk, SeqCst);
        self.wake();
        let mut durable = self.durable.subscribe();
        Some(async move {
            // An error means the marker is gone (the node stopped): nothing to wait for.
            let _ = durable.wait_for(|written| *written >= at_risk).await;
        })
    }

    /// Stops the writer and leaves what this run lost (0 when it stored everything), so
    /// the next start counts it.
    pub fn finish(&self, lost_in_this_run: u64) {
        self.stopping.store(true, SeqCst);
        self.wake();
        if let Some(writer) = self.joined.lock().expect("not poisoned").take() {
            let _ = writer.join();
        }
        if let Err(e) = self.write(lost_in_this_run as usize) {
            tracing::warn!(error = %e, "cannot record what this run lost");
        }
        self.durable.send_replace(usize::MAX);
    }

    fn wake(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }

    fn keep_ahead(&self, at_risk: impl Fn() -> usize) {
        let mut growth = Growth::default();
        while !self.stopping.load(SeqCst) {
            std::thread::park_timeout(TICK);
            let need = at_risk().max(self.wanted.swap(0, SeqCst));
            let headroom = growth.headroom(need, Instant::now());
            let reserved = self.reserved.load(SeqCst);
            let target = need + headroom;
            if need + headroom / 2 > reserved {
                self.record(target);
                self.reserved.store(target, SeqCst);
            } else if reserved > target {
                // Lowered in memory first, so that no update is acknowledged against the
                // higher number while the file is rewritten; then checked again, since
                // an update may have counted itself covered just before.
                self.reserved.store(target, SeqCst);
                if at_risk() > target {
                    self.reserved.store(reserved, SeqCst);
                    continue;
                }
                self.record(target);
            } else {
                continue;
            }
            self.durable.send_replace(target);
        }
    }

    /// Writes the reservation; a failure is logged and let through, since refusing all
    /// progress for want of a count would be worse than a count that may be low.
    fn record(&self, reserved: usize) {
        match self.write(reserved) {
            Ok(()) => {
                if self.failing.swap(false, SeqCst) {
                    tracing::info!(file = %self.path.display(), "the unflushed count is recorded again");
                }
            }
            Err(e) => {
                if !self.failing.swap(true, SeqCst) {
                    tracing::error!(
                        file = %self.path.display(),
                        error = %e,
                        "cannot record the unflushed count; a crash now may count less progress lost than it loses"
                    );
                }
            }
        }
    }

    /// One fixed-width line, so a rewrite in place never leaves a longer old tail.
    fn write(&self, count: usize) -> io::Result<()> {
        let file = self.file.lock().expect("not poisoned");
        file.write_all_at(format!("{count:<20}\n").as_bytes(), 0)?;
        file.sync_data()
    }
}

/// How fast entries go at risk, for the headroom to keep.
#[derive(Default)]
struct Growth {
    /// The count at the start of the current `TICK` window, and when that was.
    window: Option<(usize, Instant)>,
    /// Growth over the last whole window.
    last: usize,
    /// The count last seen, and since when it has not moved.
    steady: Option<(usize, Instant)>,
}

impl Growth {
    /// `HEADROOM`, or twice the growth of a window when more; none once steady.
    fn headroom(&mut self, need: usize, now: Instant) -> usize {
        let (start, since) = *self.window.get_or_insert((need, now));
        let current = need.saturating_sub(start);
        if now.duration_since(since) >= TICK {
            self.last = current;
            self.window = Some((need, now));
        }
        match self.steady {
            Some((count, since)) if count == need => {
                if now.duration_since(since) >= STEADY {
                    return 0;
                }
            }
            _ => self.steady = Some((need, now)),
        }
        HEADROOM.max(2 * self.last.max(current))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn read(dir: &Path) -> usize {
        std::fs::read_to_string(dir.join("unflushed"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn an_update_beyond_the_reservation_waits_until_the_file_covers_it() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let marker = UnflushedMarker::open(dir.path(), &metrics).unwrap();
        assert_eq!(read(dir.path()), HEADROOM);
        let at_risk = Arc::new(AtomicUsize::new(0));
        marker.start({
            let at_risk = Arc::clone(&at_risk);
            move || at_risk.load(SeqCst)
        });
        assert!(marker.cover(1).is_none(), "within the first reservation");
        at_risk.store(1000, SeqCst);
        let wait = marker.cover(1000).expect("beyond the reservation");
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("the writer covers it");
        assert!(read(dir.path()) >= 1000);
        // Once stored, and the count steady, the reservation comes down to it exactly.
        at_risk.store(3, SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while read(dir.path()) != 3 {
            assert!(std::time::Instant::now() < deadline, "{}", read(dir.path()));
            std::thread::sleep(Duration::from_millis(10));
        }
        marker.finish(0);
        assert_eq!(read(dir.path()), 0);
    }

    #[test]
    fn the_next_start_counts_what_the_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("unflushed"), "7\n").unwrap();
        let metrics = Metrics::new();
        let marker = UnflushedMarker::open(dir.path(), &metrics).unwrap();
        assert_eq!(metrics.progress_lost.get(), 7);
        assert_eq!(marker.inherited(), 7);
        assert_eq!(read(dir.path()), HEADROOM);
    }
}
