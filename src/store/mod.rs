//! Durable user state behind one port, with two adapters: DynamoDB for production and an
//! embedded redb file for a single machine. Callers never know which one they have.

pub mod dynamo;
pub mod embedded;
pub mod redb_file;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{AssetId, Seconds, Timestamp, TrailerEntry, UserId};
use crate::error_chain::DisplayChain;
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

/// What made a store operation fail, kept whole for the log. Shared, since one failed
/// batch write fails every caller whose items it carried.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Why a store operation failed: the variant is the kind callers act on, the cause says
/// what happened. Only between nodes is the cause flattened to text (`WireStoreError`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(into = "WireStoreError", from = "WireStoreError")]
pub enum StoreError {
    Unavailable(Cause),
    Corrupt(Cause),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreError::Unavailable(_) => "store unavailable",
            StoreError::Corrupt(_) => "stored record is malformed",
        })
    }
}

/// By hand rather than derived: the source is the cause itself, not the `Arc` around it,
/// so that it can be downcast to its type.
impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let (StoreError::Unavailable(cause) | StoreError::Corrupt(cause)) = self;
        Some(&**cause)
    }
}

impl StoreError {
    /// `cause` is an error, or the text of a condition the adapter detected itself.
    pub fn unavailable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
        StoreError::Unavailable(Arc::from(cause.into()))
    }

    pub fn corrupt(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
        StoreError::Corrupt(Arc::from(cause.into()))
    }
}

/// A `StoreError` as it crosses to another node, in a forwarded command's reply: its kind,
/// and its causes as one text (`{"Unavailable":"…"}`, the JSON nodes have always sent, so
/// that nodes of two releases talk during a rolling upgrade). The receiver gets the same
/// kind back, with the text as its cause.
#[derive(serde::Serialize, serde::Deserialize)]
enum WireStoreError {
    Unavailable(String),
    Corrupt(String),
}

impl From<StoreError> for WireStoreError {
    fn from(e: StoreError) -> WireStoreError {
        match e {
            StoreError::Unavailable(cause) => {
                WireStoreError::Unavailable(DisplayChain(&*cause).to_string())
            }
            StoreError::Corrupt(cause) => {
                WireStoreError::Corrupt(DisplayChain(&*cause).to_string())
            }
        }
    }
}

impl From<WireStoreError> for StoreError {
    fn from(e: WireStoreError) -> StoreError {
        match e {
            WireStoreError::Unavailable(message) => StoreError::unavailable(message),
            WireStoreError::Corrupt(message) => StoreError::corrupt(message),
        }
    }
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
            let (backend, error) = (self.inner.backend(), DisplayChain(e));
            // A store that is away comes back by itself; a damaged record or file does not.
            match e {
                StoreError::Unavailable(_) => {
                    tracing::warn!(backend, %error, "store operation failed")
                }
                StoreError::Corrupt(_) => {
                    tracing::error!(backend, %error, "store operation failed")
                }
            }
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

#[cfg(test)]
mod tests {
    use std::error::Error;
    use std::io;

    use super::*;

    #[test]
    fn a_store_error_keeps_its_cause_as_its_source() {
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        let e = StoreError::unavailable(refused);
        let source = e.source().expect("a source");
        let io = source
            .downcast_ref::<io::Error>()
            .expect("the io::Error itself");
        assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(DisplayChain(&e).to_string(), "store unavailable: refused");
    }

    #[test]
    fn the_wire_form_keeps_the_kind_and_the_causes_text() {
        let cause = io::Error::other(StoreError::corrupt("bad asset"));
        let sent = serde_json::to_value(StoreError::corrupt(cause)).unwrap();
        // The shape nodes of the previous release send and expect.
        assert_eq!(
            sent,
            serde_json::json!({ "Corrupt": "stored record is malformed: bad asset" })
        );
        let received: StoreError = serde_json::from_value(sent).unwrap();
        assert!(matches!(received, StoreError::Corrupt(_)), "{received:?}");
        assert_eq!(
            received.source().unwrap().to_string(),
            "stored record is malformed: bad asset"
        );
        let unavailable: StoreError =
            serde_json::from_str(r#"{"Unavailable":"throttled"}"#).unwrap();
        assert!(matches!(unavailable, StoreError::Unavailable(_)));
        assert_eq!(
            DisplayChain(&unavailable).to_string(),
            "store unavailable: throttled"
        );
    }
}
