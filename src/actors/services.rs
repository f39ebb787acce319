//! What user actors need besides their own state, shared by all of them on a node.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::backup::BackupFeed;
use super::flusher::Flusher;
use crate::clock::Clock;
use crate::cluster::OwnershipLease;
use crate::events::Outbox;
use crate::store::UserStore;
use crate::telemetry::Metrics;

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

    pub fn give_back(&self, entries: usize) {
        if entries > 0 {
            self.used.fetch_sub(entries, Ordering::AcqRel);
            self.metrics.progress_dirty_entries.sub(entries as i64);
        }
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
}
