//! Where user actors leave what a shard's backup node must learn (see
//! `domain::backup`): the sender in `users::backup` collects it every backup interval,
//! and at once when a slot was taken.
//!
//! Changes wait per user, so a player updating progress many times an interval costs
//! one entry; the map is split into lanes by shard so that actors on different threads
//! rarely share a lock, and nothing here is ever awaited.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
    /// Progress changes left here since the node started (each may put one entry at risk).
    changes: AtomicU64,
    /// `changes` when the round being sent was taken.
    taken_at: AtomicU64,
    /// `changes` when the last round that every backup acknowledged was taken, or
    /// `NOT_BACKED` when none has been since backups were (re)enabled: the changes since
    /// are what no backup may hold yet.
    backed_through: AtomicU64,
    /// Whether the last round failed to reach a backup.
    failing: AtomicBool,
}

const NOT_BACKED: u64 = u64::MAX;

impl Default for BackupFeed {
    fn default() -> BackupFeed {
        BackupFeed {
            lanes: (0..LANES).map(|_| Mutex::default()).collect(),
            enabled: AtomicBool::new(false),
            urgent: tokio::sync::Notify::new(),
            changes: AtomicU64::new(0),
            taken_at: AtomicU64::new(0),
            backed_through: AtomicU64::new(NOT_BACKED),
            failing: AtomicBool::new(false),
        }
    }
}

impl BackupFeed {
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn set_enabled(&self, enabled: bool) {
        if !self.enabled.swap(enabled, Ordering::SeqCst) && enabled {
            // Nothing changed before is here: the first round's snapshots must hold it.
            self.backed_through.store(NOT_BACKED, Ordering::SeqCst);
        }
    }

    /// Leaves a change of one user; `urgent` (a slot taken) wakes the sender now.
    pub fn push(&self, shard: ShardId, user: &UserId, change: UserBackup, urgent: bool) {
        let progress = change.progress.is_some();
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
        if progress {
            // After the change is in a lane, so a round taken after this count has it.
            self.changes.fetch_add(1, Ordering::SeqCst);
        }
        if urgent {
            self.urgent.notify_one();
        }
    }

    /// Takes every change left so far.
    pub fn take(&self) -> Vec<(ShardId, UserId, UserBackup)> {
        self.taken_at
            .store(self.changes.load(Ordering::SeqCst), Ordering::SeqCst);
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

    /// The sender's round is over; `ok` when every backup acknowledged its part, which
    /// then holds every change taken into it.
    pub fn sent(&self, ok: bool) {
        if ok {
            self.backed_through
                .store(self.taken_at.load(Ordering::SeqCst), Ordering::SeqCst);
        }
        self.failing.store(!ok, Ordering::SeqCst);
    }

    /// At most how many progress entries changed since the backups last acknowledged
    /// everything (counting every change, so a bound, never low); `None` when backups
    /// cannot be counted on (a single node, none acknowledged yet, or the last round
    /// failed), so that every unstored entry is at risk.
    pub fn unbacked_changes(&self) -> Option<usize> {
        if !self.is_enabled() || self.failing.load(Ordering::SeqCst) {
            return None;
        }
        match self.backed_through.load(Ordering::SeqCst) {
            NOT_BACKED => None,
            through => Some(self.changes.load(Ordering::SeqCst).saturating_sub(through) as usize),
        }
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
