//! The trailer cache: what reads are answered from.

use std::sync::Arc;

use dashmap::DashMap;

use crate::domain::{Timestamp, TrailerEntry};
use crate::telemetry::Metrics;

/// Written by onboarding and refreshing, read by every trailer route. The cluster backs
/// it with its replicated state machine; this interface is all the rest of the code sees.
#[async_trait::async_trait]
pub trait TrailerCache: Send + Sync + 'static {
    fn get(&self, key: &str) -> Option<Arc<TrailerEntry>>;
    /// Stores an entry where every reader will see it: for the replicated cache, once the
    /// cluster has committed it.
    async fn put(&self, key: String, entry: TrailerEntry) -> Result<(), CacheError>;
    /// Up to `limit` entries last updated before `before`, oldest first.
    fn older_than(&self, before: Timestamp, limit: usize) -> Vec<TrailerEntry>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("the trailer cache cannot take the entry now: {0}")]
pub struct CacheError(pub String);

/// One node's map.
pub struct LocalTrailerCache {
    entries: DashMap<String, Arc<TrailerEntry>>,
    metrics: Arc<Metrics>,
}

impl LocalTrailerCache {
    pub fn new(metrics: Arc<Metrics>) -> LocalTrailerCache {
        LocalTrailerCache {
            entries: DashMap::new(),
            metrics,
        }
    }
}

#[async_trait::async_trait]
impl TrailerCache for LocalTrailerCache {
    fn get(&self, key: &str) -> Option<Arc<TrailerEntry>> {
        self.entries.get(key).map(|e| Arc::clone(&e))
    }

    async fn put(&self, key: String, entry: TrailerEntry) -> Result<(), CacheError> {
        self.entries.insert(key, Arc::new(entry));
        self.metrics
            .trailer_cache_entries
            .set(self.entries.len() as i64);
        Ok(())
    }

    fn older_than(&self, before: Timestamp, limit: usize) -> Vec<TrailerEntry> {
        let mut stale: Vec<TrailerEntry> = self
            .entries
            .iter()
            .filter(|e| e.updated_at < before)
            .map(|e| TrailerEntry::clone(&e))
            .collect();
        stale.sort_by_key(|e| e.updated_at);
        stale.truncate(limit);
        stale
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(url: &str, at: u64) -> TrailerEntry {
        TrailerEntry {
            url: url.into(),
            trailers: vec![],
            updated_at: Timestamp(at),
        }
    }

    #[tokio::test]
    async fn finds_the_oldest_stale_entries() {
        let cache = LocalTrailerCache::new(Arc::new(Metrics::new()));
        for (key, at) in [("a", 30), ("b", 10), ("c", 50)] {
            cache.put(key.into(), entry(key, at)).await.unwrap();
        }
        let stale: Vec<String> = cache
            .older_than(Timestamp(40), 10)
            .into_iter()
            .map(|e| e.url)
            .collect();
        assert_eq!(stale, ["b", "a"]);
        assert_eq!(cache.older_than(Timestamp(40), 1).len(), 1);
        assert_eq!(cache.get("c").unwrap().url, "c");
        assert_eq!(cache.len(), 3);
    }
}
