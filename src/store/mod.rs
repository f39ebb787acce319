//! Durable user state behind one port, with two adapters: DynamoDB for production and an
//! embedded redb file for a single machine. Callers never know which one they have.

pub mod dynamo;
pub mod embedded;
pub mod redb_file;

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{AssetId, Seconds, Timestamp, TrailerEntry, UserId};
use crate::telemetry::Metrics;

/// Everything stored about one user's library.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredLibrary {
    pub progress: Vec<(AssetId, Seconds)>,
    pub watchlist: Vec<(AssetId, Timestamp)>,
}

/// One progress write of a flush: a value, or `None` to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressItem {
    pub user: UserId,
    pub asset: AssetId,
    pub seconds: Option<Seconds>,
}

#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored record is malformed: {0}")]
    Corrupt(String),
}

#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// The user's progress and watchlist.
    async fn load_library(&self, user: &UserId) -> Result<StoredLibrary, StoreError>;

    /// Stores a batch of progress writes (of any users). All or nothing from the caller's
    /// view: on `Err` some may be stored, and rewriting them is harmless.
    async fn write_progress(&self, items: &[ProgressItem]) -> Result<(), StoreError>;

    /// Adds to the watchlist unless present; `true` if this call added it. Exact even when
    /// two nodes race, since BI events depend on it.
    async fn add_to_watchlist(
        &self,
        user: &UserId,
        asset: AssetId,
        added_at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Removes from the watchlist; `true` if this call removed it.
    async fn remove_from_watchlist(
        &self,
        user: &UserId,
        asset: AssetId,
    ) -> Result<bool, StoreError>;

    /// Whether the store answers, for readiness.
    async fn check(&self) -> Result<(), StoreError>;

    /// The adapter's name, for logs.
    fn backend(&self) -> &'static str;
}

/// Onboarded trailers, keyed by the sha256 of their content URL.
#[async_trait]
pub trait TrailerStore: Send + Sync + 'static {
    async fn put_trailers(&self, key: &str, entry: &TrailerEntry) -> Result<(), StoreError>;

    /// Every onboarded entry, to fill a node's cache at start.
    async fn all_trailers(&self) -> Result<Vec<TrailerEntry>, StoreError>;
}

/// Counts every store operation and failure, whichever adapter serves it.
pub struct MeteredStore {
    inner: Arc<dyn UserStore>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn UserStore>, metrics: Arc<Metrics>) -> MeteredStore {
        MeteredStore { inner, metrics }
    }

    fn count<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result {
            self.metrics.store_errors.inc();
            tracing::warn!(backend = self.inner.backend(), error = %e, "store operation failed");
        }
        result
    }
}

#[async_trait]
impl UserStore for MeteredStore {
    async fn load_library(&self, user: &UserId) -> Result<StoredLibrary, StoreError> {
        self.metrics.store_reads.inc();
        self.count(self.inner.load_library(user).await)
    }

    async fn write_progress(&self, items: &[ProgressItem]) -> Result<(), StoreError> {
        let result = self.count(self.inner.write_progress(items).await);
        if result.is_ok() {
            let deletes = items.iter().filter(|i| i.seconds.is_none()).count() as u64;
            let writes = &self.metrics.store_writes;
            writes.progress_put.inc_by(items.len() as u64 - deletes);
            writes.progress_delete.inc_by(deletes);
        }
        result
    }

    async fn add_to_watchlist(
        &self,
        user: &UserId,
        asset: AssetId,
        added_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let result = self.count(self.inner.add_to_watchlist(user, asset, added_at).await);
        if result.is_ok() {
            self.metrics.store_writes.watchlist_put.inc();
        }
        result
    }

    async fn remove_from_watchlist(
        &self,
        user: &UserId,
        asset: AssetId,
    ) -> Result<bool, StoreError> {
        let result = self.count(self.inner.remove_from_watchlist(user, asset).await);
        if result.is_ok() {
            self.metrics.store_writes.watchlist_delete.inc();
        }
        result
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.inner.check().await
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
}
