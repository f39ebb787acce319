//! Where user actors leave what a shard's backup node must learn (see
//! `domain::backup`): the sender in `users::backup` collects it every backup interval,
//! and at once when a slot was taken.
//!
//! Changes wait per user, so a player updating progress many times an interval costs
//! one entry; the map is split into lanes by shard so that actors on different threads
//! rarely share a lock, and nothing here is ever awaited.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::cluster::ShardId;
use crate::domain::{UserBackup, UserId};

const LANES: usize = 64;

type Lane = HashMap<UserId, (ShardId, UserBackup)>;

pub struct BackupFeed {
    lanes: Box<[Mutex<Lane>]>,
    /// Whether any shard has a backup node (a cluster of more than one member); when not,
    /// actors skip building changes nobody would receive.
    enabled: AtomicBool,
    urgent: tokio::sync::Notify,
    /// Progress entries on their way to a backup, not yet acknowledged.
    in_flight: AtomicUsize,
    /// Whether the last round failed to reach a backup.
    failing: AtomicBool,
}

impl Default for BackupFeed {
    fn default() -> BackupFeed {
        BackupFeed {
            lanes: (0..LANES).map(|_| Mutex::default()).collect(),
            enabled: AtomicBool::new(false),
            urgent: tokio::sync::Notify::new(),
            in_flight: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
        }
    }
}

impl BackupFeed {
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Leaves a change of one user; `urgent` (a slot taken) wakes the sender now.
    pub fn push(&self, shard: ShardId, user: &UserId, change: UserBackup, urgent: bool) {
        {
            let mut lane = self.lanes[shard.0 as usize % LANES]
                .lock()
                .expect("not poisoned");
            match lane.get_mut(user.as_str()) {
                Some((_, waiting)) => waiting.merge(change),
                None => {
                    lane.insert(user.clone(), (shard, change));
                }
            }
        }
        if urgent {
            self.urgent.notify_one();
        }
    }

    /// Takes every change left so far.
    pub fn take(&self) -> Vec<(ShardId, UserId, UserBackup)> {
        let mut taken = Vec::new();
        for lane in self.lanes.iter() {
            let lane = std::mem::take(&mut *lane.lock().expect("not poisoned"));
            taken.extend(
                lane.into_iter()
                    .map(|(user, (shard, change))| (shard, user, change)),
            );
        }
        taken
    }

    /// The sender is about to send `entries` progress entries.
    pub fn sending(&self, entries: usize) {
        self.in_flight.store(entries, Ordering::Release);
    }

    /// The sender's round is over; `ok` when every backup acknowledged its part.
    pub fn sent(&self, ok: bool) {
        self.in_flight.store(0, Ordering::Release);
        self.failing.store(!ok, Ordering::Release);
    }

    /// Of the node's `dirty` unstored progress entries, how many no backup holds: all of
    /// them without backups (a single node) or while backups cannot be reached, else those
    /// not yet sent or acknowledged. What a crash now would lose.
    pub fn unbacked(&self, dirty: usize) -> usize {
        if !self.is_enabled() || self.failing.load(Ordering::Acquire) {
            return dirty;
        }
        let waiting: usize = self
            .lanes
            .iter()
            .map(|lane| {
                let lane = lane.lock().expect("not poisoned");
                lane.values()
                    .map(|(_, change)| change.progress.as_ref().map_or(0, Vec::len))
                    .sum::<usize>()
            })
            .sum();
        (waiting + self.in_flight.load(Ordering::Acquire)).min(dirty)
    }

    /// Waits until a change is urgent.
    pub async fn urgent(&self) {
        self.urgent.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AssetId;

    #[test]
    fn changes_of_one_user_wait_as_one() {
        let feed = BackupFeed::default();
        let user = UserId::parse("u").unwrap();
        let asset = AssetId::parse("00000000-0000-4000-8000-000000000001").unwrap();
        for seconds in [10, 20] {
            feed.push(
                ShardId(3),
                &user,
                UserBackup {
                    slots: None,
                    progress: Some(vec![(asset, Some(seconds))]),
                },
                false,
            );
        }
        let taken = feed.take();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].2.progress, Some(vec![(asset, Some(20))]));
        assert!(feed.take().is_empty());
    }
}
