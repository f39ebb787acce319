//! What a shard's backup node keeps of the shard's users, so that a crash of the owner
//! frees no live slot and loses at most one backup interval of progress.
//!
//! The owner sends, per user, the slots it holds whenever one is taken, released or
//! expires (renewals are not sent: a recovered slot gets a fresh lease anyway), and the
//! progress entries not yet stored whenever they change or are stored. Each update
//! replaces what the backup had for that part of the user; a full snapshot of a shard
//! replaces the whole shard (sent when the backup or the shard's epoch changed, or the
//! backup asked for one because it had lost track).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use serde::{Deserialize, Serialize};

use super::asset::AssetId;
use super::ids::UserId;
use super::progress::Seconds;
use super::slots::StreamSlots;

/// A progress entry not yet stored: its value, or `None` for a deletion.
pub type DirtyProgress = Vec<(AssetId, Option<Seconds>)>;

/// A change to what the backup keeps of one user; `None` parts are unchanged.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UserBackup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<StreamSlots>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<DirtyProgress>,
}

impl UserBackup {
    /// Folds a later change into this one.
    pub fn merge(&mut self, later: UserBackup) {
        if later.slots.is_some() {
            self.slots = later.slots;
        }
        if later.progress.is_some() {
            self.progress = later.progress;
        }
    }

    fn is_empty(&self) -> bool {
        self.slots.as_ref().is_none_or(|s| s.held() == 0)
            && self.progress.as_ref().is_none_or(Vec::is_empty)
    }
}

/// What one node keeps for one shard it backs up.
#[derive(Clone, Debug, Default)]
pub struct ShardBackup {
    /// The shard's epoch at its owner when this was sent.
    pub epoch: u64,
    /// The version of the shard table the owner chose this node as backup by. A backup
    /// whose own table is older may not see itself as the backup yet; it must keep the
    /// copy until its table is at least this new.
    pub chosen_in: u64,
    pub users: HashMap<UserId, UserBackup>,
}

impl ShardBackup {
    /// A full snapshot from the owner at `epoch`.
    pub fn snapshot(epoch: u64, users: Vec<(UserId, UserBackup)>) -> ShardBackup {
        let mut backup = ShardBackup {
            epoch,
            chosen_in: 0,
            users: HashMap::with_capacity(users.len()),
        };
        backup.apply(users);
        backup
    }

    /// Applies changes of the owner at this backup's epoch.
    pub fn apply(&mut self, users: Vec<(UserId, UserBackup)>) {
        for (user, change) in users {
            match self.users.entry(user) {
                Entry::Occupied(mut kept) => {
                    kept.get_mut().merge(change);
                    if kept.get().is_empty() {
                        kept.remove();
                    }
                }
                Entry::Vacant(slot) => {
                    if !change.is_empty() {
                        slot.insert(change);
                    }
                }
            }
        }
    }

    /// Live slots kept, over all users.
    pub fn slots(&self) -> usize {
        self.users
            .values()
            .map(|b| b.slots.as_ref().map_or(0, StreamSlots::held))
            .sum()
    }

    /// Progress entries kept that were not stored yet, over all users.
    pub fn progress_entries(&self) -> usize {
        self.users
            .values()
            .map(|b| b.progress.as_ref().map_or(0, Vec::len))
            .sum()
    }
}

/// Whether the backup can take changes sent at `epoch` for a shard it keeps at `kept`,
/// or must ask for a full snapshot first (it has nothing, or something of another epoch).
pub fn needs_snapshot(kept: Option<&ShardBackup>, epoch: u64) -> bool {
    kept.is_none_or(|k| k.epoch != epoch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Millis, Origin, SessionId, SlotRequest, StreamId, Timestamp};

    fn slots(sessions: &[&str]) -> StreamSlots {
        let mut slots = StreamSlots::default();
        for session in sessions {
            slots
                .heartbeat(
                    Timestamp(0),
                    SlotRequest {
                        origin: Origin::V1,
                        session: SessionId::parse(session).unwrap(),
                        stream: StreamId::parse("s").unwrap(),
                        lease: Millis(60_000),
                        limit: 3,
                    },
                )
                .unwrap();
        }
        slots
    }

    fn asset() -> AssetId {
        AssetId::parse("00000000-0000-4000-8000-000000000001").unwrap()
    }

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[test]
    fn changes_replace_their_part_and_an_emptied_user_is_forgotten() {
        let mut backup = ShardBackup::snapshot(
            2,
            vec![(
                user("a"),
                UserBackup {
                    slots: Some(slots(&["x", "y"])),
                    progress: None,
                },
            )],
        );
        assert_eq!(backup.slots(), 2);
        backup.apply(vec![(
            user("a"),
            UserBackup {
                slots: None,
                progress: Some(vec![(asset(), Some(30))]),
            },
        )]);
        assert_eq!((backup.slots(), backup.progress_entries()), (2, 1));
        // Progress stored, one slot released: the slots stay, the progress goes.
        backup.apply(vec![(
            user("a"),
            UserBackup {
                slots: Some(slots(&["y"])),
                progress: Some(vec![]),
            },
        )]);
        assert_eq!((backup.slots(), backup.progress_entries()), (1, 0));
        backup.apply(vec![(
            user("a"),
            UserBackup {
                slots: Some(slots(&[])),
                progress: None,
            },
        )]);
        assert!(backup.users.is_empty());
    }

    #[test]
    fn changes_of_another_epoch_need_a_snapshot_first() {
        assert!(needs_snapshot(None, 1));
        let kept = ShardBackup::snapshot(3, vec![]);
        assert!(!needs_snapshot(Some(&kept), 3));
        assert!(needs_snapshot(Some(&kept), 4));
    }

    #[test]
    fn a_later_change_wins_part_by_part() {
        let mut change = UserBackup {
            slots: Some(slots(&["x"])),
            progress: Some(vec![(asset(), Some(1))]),
        };
        change.merge(UserBackup {
            slots: None,
            progress: Some(vec![(asset(), Some(2))]),
        });
        assert_eq!(change.slots.as_ref().unwrap().held(), 1);
        assert_eq!(change.progress, Some(vec![(asset(), Some(2))]));
    }
}
