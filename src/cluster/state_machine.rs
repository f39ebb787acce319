//! The Raft state machine: applies committed commands to the cluster state and the
//! trailer cache, publishes the shard table to the router after each change, and keeps
//! its snapshot durable in `raft.redb` beside the log.
// openraft's traits fix the error type (`StorageError`, large); helpers return it as they do.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use super::node::OpenError;
use super::router::{Router, ShardTable};
use super::state::ClusterState;
use super::types::{
    Entry, LogId, Request, Response, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::domain::TrailerEntry;
use crate::telemetry::Metrics;

/// "current" → the latest snapshot (meta and data, JSON).
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");

fn sm_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

/// What every part of the node reads of the replicated metadata, without locks.
#[derive(Clone)]
pub struct Replica {
    pub state: Arc<ArcSwap<ClusterState>>,
    pub trailers: Arc<DashMap<String, Arc<TrailerEntry>>>,
    pub router: Router,
}

#[derive(Serialize, Deserialize)]
struct SnapshotData {
    state: ClusterState,
    trailers: Vec<(String, TrailerEntry)>,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

struct Applied {
    state: ClusterState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

#[derive(Clone)]
pub struct StateMachine {
    applied: Arc<Mutex<Applied>>,
    replica: Replica,
    db: Arc<Database>,
    metrics: Arc<Metrics>,
}

impl StateMachine {
    /// Opens the state machine at its last snapshot (the log replays the rest).
    pub fn open(
        db: Arc<Database>,
        replica: Replica,
        metrics: Arc<Metrics>,
    ) -> Result<StateMachine, OpenError> {
        {
            let txn = db.begin_write().map_err(redb::Error::from)?;
            txn.open_table(SNAPSHOT).map_err(redb::Error::from)?;
            txn.commit().map_err(redb::Error::from)?;
        }
        let machine = StateMachine {
            applied: Arc::new(Mutex::new(Applied {
                state: ClusterState::default(),
                last_applied: None,
                membership: StoredMembership::default(),
            })),
            replica,
            db,
            metrics,
        };
        let snapshot_error = |e| OpenError::Snapshot(Box::new(e));
        if let Some(stored) = machine.stored_snapshot().map_err(snapshot_error)? {
            machine
                .restore(&stored.meta, &stored.data)
                .map_err(snapshot_error)?;
        }
        Ok(machine)
    }

    fn stored_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let txn = self.db.begin_read().map_err(sm_err)?;
        let table = txn.open_table(SNAPSHOT).map_err(sm_err)?;
        match table.get("current").map_err(sm_err)? {
            Some(value) => Ok(Some(serde_json::from_slice(value.value()).map_err(sm_err)?)),
            None => Ok(None),
        }
    }

    fn store_snapshot(&self, stored: &StoredSnapshot) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(stored).map_err(sm_err)?;
        let txn = self.db.begin_write().map_err(sm_err)?;
        txn.open_table(SNAPSHOT)
            .map_err(sm_err)?
            .insert("current", bytes.as_slice())
            .map_err(sm_err)?;
        txn.commit().map_err(sm_err)
    }

    /// Replaces everything by a snapshot's content.
    fn restore(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        let snapshot: SnapshotData = serde_json::from_slice(data).map_err(sm_err)?;
        let mut applied = self.applied.lock().expect("not poisoned");
        applied.state = snapshot.state;
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        self.replica.trailers.clear();
        for (key, entry) in snapshot.trailers {
            self.replica.trailers.insert(key, Arc::new(entry));
        }
        self.publish(&applied);
        Ok(())
    }

    fn publish(&self, applied: &Applied) {
        let version = applied.last_applied.map_or(0, |id| id.index);
        self.replica.state.store(Arc::new(applied.state.clone()));
        self.replica
            .router
            .publish(ShardTable::from_state(&applied.state, version));
        self.metrics
            .trailer_cache_entries
            .set(self.replica.trailers.len() as i64);
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, data) = {
            let applied = self.applied.lock().expect("not poisoned");
            let data = SnapshotData {
                state: applied.state.clone(),
                trailers: self
                    .replica
                    .trailers
                    .iter()
                    .map(|e| (e.key().clone(), TrailerEntry::clone(e.value())))
                    .collect(),
            };
            let id = applied.last_applied.map_or_else(
                || "none".to_owned(),
                |id| format!("{}-{}", id.leader_id, id.index),
            );
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
                snapshot_id: id,
            };
            (meta, serde_json::to_vec(&data).map_err(sm_err)?)
        };
        self.store_snapshot(&StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        })?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.applied.lock().expect("not poisoned");
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut applied = self.applied.lock().expect("not poisoned");
        let mut responses = Vec::new();
        let mut routing_changed = false;
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::Applied,
                EntryPayload::Normal(Request::PutTrailer { key, entry }) => {
                    self.replica.trailers.insert(key, Arc::new(entry));
                    Response::Applied
                }
                EntryPayload::Normal(request) => {
                    routing_changed = true;
                    applied.state.apply(&request)
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Response::Applied
                }
            };
            responses.push(response);
        }
        if routing_changed {
            self.publish(&applied);
        } else {
            self.metrics
                .trailer_cache_entries
                .set(self.replica.trailers.len() as i64);
        }
        self.metrics
            .cluster
            .last_applied
            .set(applied.last_applied.map_or(0, |id| id.index) as i64);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        self.restore(meta, &data)?;
        self.store_snapshot(&StoredSnapshot {
            meta: meta.clone(),
            data,
        })
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.stored_snapshot()?.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}
