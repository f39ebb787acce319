//! The trailer cache: what reads are answered from.

use std::sync::Arc;

use dashmap::DashMap;

use crate::domain::{Timestamp, TrailerEntry};
use crate::telemetry::Metrics;

/// Written by onboarding and refreshing, read by every trailer route. The cluster backs
/// it with its replicated state machine; this interface is all the rest of the code sees.
pub trait TrailerCache: Send + Sync + 'static {
    fn get(&self, key: &str) -> Option<Arc<TrailerEntry>>;
    fn put(&self, key: String, entry: TrailerEntry);
    /// Up to `limit` entries last updated before `before`, oldest first.
    fn older_than(&self, before: Timestamp, limit: usize) -> Vec<TrailerEntry>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

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

impl TrailerCache for LocalTrailerCache {
    fn get(&self, key: &str) -> Option<Arc<TrailerEntry>> {
        self.entries.get(key).map(|e| Arc::clone(&e))
    }

    fn put(&self, key: String, entry: TrailerEntry) {
        self.entries.insert(key, Arc::new(entry));
        self.metrics
            .trailer_cache_entries
            .set(self.entries.len() as i64);
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

    #[test]
    fn finds_the_oldest_stale_entries() {
        let cache = LocalTrailerCache::new(Arc::new(Metrics::new()));
        cache.put("a".into(), entry("a", 30));
        cache.put("b".into(), entry("b", 10));
        cache.put("c".into(), entry("c", 50));
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
