//! The trailer cache backed by the state machine: reads from this node's replica, writes
//! committed through Raft so that every node (and every node that joins later) has them.

use std::sync::Arc;

use super::node::Cluster;
use super::types::Request;
use crate::domain::{Timestamp, TrailerEntry};
use crate::trailers::{CacheError, TrailerCache, oldest_before};

pub struct ReplicatedTrailerCache {
    cluster: Cluster,
}

impl ReplicatedTrailerCache {
    pub fn new(cluster: Cluster) -> ReplicatedTrailerCache {
        ReplicatedTrailerCache { cluster }
    }
}

#[async_trait::async_trait]
impl TrailerCache for ReplicatedTrailerCache {
    fn get(&self, key: &str) -> Option<Arc<TrailerEntry>> {
        self.cluster
            .replica()
            .trailers
            .get(key)
            .map(|e| Arc::clone(&e))
    }

    async fn put(&self, key: String, entry: TrailerEntry) -> Result<(), CacheError> {
        self.cluster
            .write(Request::PutTrailer { key, entry })
            .await
            .map(|_| ())
            .map_err(|e| CacheError(e.to_string()))
    }

    fn older_than(&self, before: Timestamp, limit: usize) -> Vec<TrailerEntry> {
        oldest_before(&self.cluster.replica().trailers, before, limit)
    }

    fn len(&self) -> usize {
        self.cluster.replica().trailers.len()
    }
}
