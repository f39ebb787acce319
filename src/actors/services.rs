//! What user actors need besides their own state, shared by all of them on a node.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::backup::BackupFeed;
use super::flusher::Flusher;
use super::unflushed::UnflushedMarker;
use crate::clock::Clock;
use crate::cluster::OwnershipLease;
use crate::events::Outbox;
use crate::store::UserStore;
use crate::telemetry::Metrics;

#[derive(Clone, Debug)]
pub struct ActorSettings {
    pub threads: usize,
    pub idle_timeout: Duration,
    pub tick: Duration,
    pub call_timeout: Duration,
    /// Start actors on the HTTP worker thread that first needs them.
    pub host_on_http_workers: bool,
    /// Cluster shards users are hashed into.
    pub shards: u32,
}

pub struct UserServices {
    pub store: Arc<dyn UserStore>,
    pub flusher: Flusher,
    pub outbox: Outbox,
    pub dirty: DirtyBudget,
    pub flush_interval: Duration,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    /// Progress is stored only while it holds: once it has run out, the shard may be
    /// about to move by failover, and the new owner stores the backed-up copy.
    pub lease: Arc<OwnershipLease>,
    /// Where actors leave changes for their shards' backup nodes.
    pub backup_feed: Arc<BackupFeed>,
    /// Covers every acknowledged update in the count a crash would leave.
    pub unflushed: Arc<UnflushedMarker>,
}

impl UserServices {
    /// At most how many acknowledged progress entries a crash now would lose: those not
    /// stored, or, while backups hold this node's changes, the changes made since they
    /// last acknowledged everything, if fewer. Atomics only: read on every update.
    pub fn at_risk(&self) -> usize {
        let dirty = self.dirty.used();
        self.backup_feed
            .unbacked_changes()
            .map_or(dirty, |changes| changes.min(dirty))
    }
}

/// How many unflushed progress entries this node may hold: bounds the memory (and the
/// crash loss) of write-behind. Updates beyond it are refused, never dropped silently.
pub struct DirtyBudget {
    used: AtomicUsize,
    max: usize,
    metrics: Arc<Metrics>,
}

impl DirtyBudget {
    pub fn new(max: usize, metrics: Arc<Metrics>) -> DirtyBudget {
        metrics.progress_dirty_budget.set(max as i64);
        DirtyBudget {
            used: AtomicUsize::new(0),
            max,
            metrics,
        }
    }

    /// Takes one entry's worth, or `false` when the node is at its bound.
    pub fn take(&self) -> bool {
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.max).then_some(used + 1)
            })
            .is_ok();
        if taken {
            self.metrics.progress_dirty_entries.inc();
        }
        taken
    }

    /// Gives back entries that were stored (or that another node now owns).
    pub fn give_back(&self, entries: usize) {
        self.release(entries);
    }

    /// Gives back entries that will never be stored, counting them lost.
    pub fn lose(&self, entries: usize) {
        let lost = self.release(entries);
        self.metrics.progress_lost.inc_by(lost as u64);
    }

    /// At the end of a shutdown: counts as lost whatever is still taken, and gives it back.
    /// Actors that stop later (dropped with an HTTP worker) find nothing left to count, so
    /// no entry is counted twice.
    pub fn lose_the_rest(&self) -> usize {
        let rest = self.used.swap(0, Ordering::AcqRel);
        self.metrics.progress_dirty_entries.sub(rest as i64);
        self.metrics.progress_lost.inc_by(rest as u64);
        rest
    }

    /// Gives back up to `entries`, never below zero (`lose_the_rest` may have taken them
    /// already); returns how many it gave back.
    fn release(&self, entries: usize) -> usize {
        if entries == 0 {
            return 0;
        }
        let before = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(entries))
            })
            .unwrap_or_else(|used| used);
        let released = before.min(entries);
        self.metrics.progress_dirty_entries.sub(released as i64);
        released
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_beyond_its_bound_and_recovers() {
        let budget = DirtyBudget::new(2, Arc::new(Metrics::new()));
        assert!(budget.take());
        assert!(budget.take());
        assert!(!budget.take());
        budget.give_back(1);
        assert!(budget.take());
        assert_eq!(budget.used(), 2);
    }

    #[test]
    fn an_entry_lost_at_shutdown_counts_once() {
        let metrics = Arc::new(Metrics::new());
        let budget = DirtyBudget::new(10, Arc::clone(&metrics));
        for _ in 0..3 {
            assert!(budget.take());
        }
        budget.lose(1);
        assert_eq!(budget.lose_the_rest(), 2);
        // An actor that stops after the sweep, still holding its two entries.
        budget.lose(2);
        budget.give_back(1);
        assert_eq!(metrics.progress_lost.get(), 3);
        assert_eq!(budget.used(), 0);
        assert_eq!(metrics.progress_dirty_entries.get(), 0);
    }
}
