//! The trailer cache: what reads are answered from.

use std::sync::Arc;

use dashmap::DashMap;

use crate::domain::{Timestamp, TrailerEntry};

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

/// Up to `limit` entries of `entries` last updated before `before`, oldest first.
pub fn oldest_before(
    entries: &DashMap<String, Arc<TrailerEntry>>,
    before: Timestamp,
    limit: usize,
) -> Vec<TrailerEntry> {
    let mut stale: Vec<TrailerEntry> = entries
        .iter()
        .filter(|e| e.updated_at < before)
        .map(|e| TrailerEntry::clone(&e))
        .collect();
    stale.sort_by_key(|e| e.updated_at);
    stale.truncate(limit);
    stale
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
        let entries = DashMap::new();
        for (key, at) in [("a", 30), ("b", 10), ("c", 50)] {
            entries.insert(key.to_owned(), Arc::new(entry(key, at)));
        }
        let stale: Vec<String> = oldest_before(&entries, Timestamp(40), 10)
            .into_iter()
            .map(|e| e.url)
            .collect();
        assert_eq!(stale, ["b", "a"]);
        assert_eq!(oldest_before(&entries, Timestamp(40), 1).len(), 1);
    }
}
