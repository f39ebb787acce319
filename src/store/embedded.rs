//! The embedded store: one redb file under the data dir. A real backend for a single
//! machine (and the default), not a test double: ACID, crash-safe, survives restarts.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::redb_file;
use super::{ProgressItem, StoreError, StoredLibrary, TrailerStore, UserStore};
use crate::domain::{AssetId, Timestamp, TrailerEntry, UserId};

/// Keys are `user NUL asset`: user ids never contain control characters, so a user's
/// records are one contiguous key range.
const PROGRESS: TableDefinition<&str, u32> = TableDefinition::new("progress");
const WATCHLIST: TableDefinition<&str, u64> = TableDefinition::new("watchlist");
/// sha256(url) → the entry as JSON.
const TRAILERS: TableDefinition<&str, &str> = TableDefinition::new("trailers");

pub struct EmbeddedStore {
    db: Arc<Database>,
    path: Arc<Path>,
}

/// What starting without the file gives up (see `redb_file::remedy`).
const LOSES: &str = "the users' progress and watchlists it holds";

fn key(user: &UserId, asset: &AssetId) -> String {
    format!("{}\0{}", user.as_str(), asset)
}

/// The key range of one user: from `user NUL` up to (not including) `user SOH`.
fn user_range(user: &UserId) -> (String, String) {
    (
        format!("{}\0", user.as_str()),
        format!("{}\u{1}", user.as_str()),
    )
}

fn asset_of(key: &str) -> Result<AssetId, StoreError> {
    let (_, asset) = key
        .split_once('\0')
        .ok_or_else(|| StoreError::corrupt(format!("key without separator: {key:?}")))?;
    AssetId::parse(asset).map_err(|_| StoreError::corrupt(format!("bad asset in key {key:?}")))
}

impl EmbeddedStore {
    /// Opens the store, or creates it in a data dir that never held one; a damaged, emptied
    /// or vanished file is an error naming it (see `redb_file`).
    pub fn open(path: &Path) -> Result<EmbeddedStore, StoreError> {
        let db = redb_file::open(path, LOSES, |db| {
            // Create the tables up front so reads never meet a missing table.
            let txn = db.begin_write()?;
            txn.open_table(PROGRESS)?;
            txn.open_table(WATCHLIST)?;
            txn.open_table(TRAILERS)?;
            Ok(txn.commit()?)
        })
        .map_err(StoreError::unavailable)?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            path: path.into(),
        })
    }

    /// Runs blocking redb work off the async threads. redb panics on some damage it meets
    /// only when reading (a page altered after the start's check): that fails the
    /// operation as `Corrupt`, naming the file, instead of a bare task failure.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        match tokio::task::spawn_blocking(move || work(&db)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => {
                let damaged = redb_file::damaged(
                    &self.path,
                    &redb_file::remedy(&self.path, LOSES),
                    &redb_file::panic_message(&*e.into_panic()),
                );
                Err(StoreError::corrupt(damaged))
            }
            Err(e) => Err(StoreError::unavailable(e)),
        }
    }
}

#[async_trait]
impl UserStore for EmbeddedStore {
    async fn load_library(&self, user: &UserId) -> Result<StoredLibrary, StoreError> {
        let (from, to) = user_range(user);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(StoreError::unavailable)?;
            let mut library = StoredLibrary::default();
            let progress = txn.open_table(PROGRESS).map_err(StoreError::unavailable)?;
            for row in progress
                .range(from.as_str()..to.as_str())
                .map_err(StoreError::unavailable)?
            {
                let (k, v) = row.map_err(StoreError::unavailable)?;
                library.progress.push((asset_of(k.value())?, v.value()));
            }
            let watchlist = txn.open_table(WATCHLIST).map_err(StoreError::unavailable)?;
            for row in watchlist
                .range(from.as_str()..to.as_str())
                .map_err(StoreError::unavailable)?
            {
                let (k, v) = row.map_err(StoreError::unavailable)?;
                library
                    .watchlist
                    .push((asset_of(k.value())?, Timestamp(v.value())));
            }
            Ok(library)
        })
        .await
    }

    async fn write_progress(&self, items: &[ProgressItem]) -> Result<(), StoreError> {
        let writes: Vec<(String, Option<u32>)> = items
            .iter()
            .map(|item| (key(&item.user, &item.asset), item.seconds))
            .collect();
        self.blocking(move |db| {
            // One transaction, one fsync, for the whole batch: the flusher groups many
            // users' writes precisely so that this stays cheap.
            let txn = db.begin_write().map_err(StoreError::unavailable)?;
            {
                let mut table = txn.open_table(PROGRESS).map_err(StoreError::unavailable)?;
                for (k, seconds) in &writes {
                    match seconds {
                        Some(s) => table.insert(k.as_str(), *s).map(|_| ()),
                        None => table.remove(k.as_str()).map(|_| ()),
                    }
                    .map_err(StoreError::unavailable)?;
                }
            }
            txn.commit().map_err(StoreError::unavailable)
        })
        .await
    }

    async fn add_to_watchlist(
        &self,
        user: &UserId,
        asset: AssetId,
        added_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let k = key(user, &asset);
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(StoreError::unavailable)?;
            let added = {
                let mut table = txn.open_table(WATCHLIST).map_err(StoreError::unavailable)?;
                let present = table
                    .get(k.as_str())
                    .map_err(StoreError::unavailable)?
                    .is_some();
                if !present {
                    table
                        .insert(k.as_str(), added_at.0)
                        .map_err(StoreError::unavailable)?;
                }
                !present
            };
            txn.commit().map_err(StoreError::unavailable)?;
            Ok(added)
        })
        .await
    }

    async fn remove_from_watchlist(
        &self,
        user: &UserId,
        asset: AssetId,
    ) -> Result<bool, StoreError> {
        let k = key(user, &asset);
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(StoreError::unavailable)?;
            let removed = {
                let mut table = txn.open_table(WATCHLIST).map_err(StoreError::unavailable)?;
                table
                    .remove(k.as_str())
                    .map_err(StoreError::unavailable)?
                    .is_some()
            };
            txn.commit().map_err(StoreError::unavailable)?;
            Ok(removed)
        })
        .await
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.blocking(|db| db.begin_read().map(|_| ()).map_err(StoreError::unavailable))
            .await
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }
}

#[async_trait]
impl TrailerStore for EmbeddedStore {
    async fn put_trailers(&self, key: &str, entry: &TrailerEntry) -> Result<(), StoreError> {
        let key = key.to_owned();
        let json = serde_json::to_string(entry).map_err(StoreError::corrupt)?;
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(StoreError::unavailable)?;
            txn.open_table(TRAILERS)
                .map_err(StoreError::unavailable)?
                .insert(key.as_str(), json.as_str())
                .map_err(StoreError::unavailable)?;
            txn.commit().map_err(StoreError::unavailable)
        })
        .await
    }

    async fn all_trailers(&self) -> Result<Vec<TrailerEntry>, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(StoreError::unavailable)?;
            let table = txn.open_table(TRAILERS).map_err(StoreError::unavailable)?;
            let mut entries = Vec::new();
            for row in table.iter().map_err(StoreError::unavailable)? {
                let (_, json) = row.map_err(StoreError::unavailable)?;
                entries.push(serde_json::from_str(json.value()).map_err(StoreError::corrupt)?);
            }
            Ok(entries)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(n: u8) -> AssetId {
        AssetId::parse(&format!("00000000-0000-4000-8000-0000000000{n:02}")).unwrap()
    }

    #[tokio::test]
    async fn stores_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let alice = UserId::parse("alice").unwrap();
        let alicia = UserId::parse("alice2").unwrap();
        {
            let store = EmbeddedStore::open(&path).unwrap();
            let item = |user: &UserId, n, s| ProgressItem {
                user: user.clone(),
                asset: asset(n),
                seconds: s,
            };
            store
                .write_progress(&[
                    item(&alice, 1, Some(10)),
                    item(&alice, 2, Some(20)),
                    item(&alicia, 1, Some(99)),
                ])
                .await
                .unwrap();
            store
                .write_progress(&[item(&alice, 2, None)])
                .await
                .unwrap();
            assert!(
                store
                    .add_to_watchlist(&alice, asset(3), Timestamp(5))
                    .await
                    .unwrap()
            );
            assert!(
                !store
                    .add_to_watchlist(&alice, asset(3), Timestamp(6))
                    .await
                    .unwrap()
            );
            assert!(
                store
                    .add_to_watchlist(&alice, asset(4), Timestamp(7))
                    .await
                    .unwrap()
            );
            assert!(store.remove_from_watchlist(&alice, asset(4)).await.unwrap());
            assert!(!store.remove_from_watchlist(&alice, asset(4)).await.unwrap());
        }
        let store = EmbeddedStore::open(&path).unwrap();
        let library = store.load_library(&alice).await.unwrap();
        assert_eq!(library.progress, vec![(asset(1), 10)]);
        assert_eq!(library.watchlist, vec![(asset(3), Timestamp(5))]);
        store.check().await.unwrap();
    }

    #[tokio::test]
    async fn trailers_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let entry = TrailerEntry {
            url: "https://content/x".into(),
            trailers: vec!["https://www.youtube.com/watch?v=a".into()],
            updated_at: Timestamp(9),
        };
        EmbeddedStore::open(&path)
            .unwrap()
            .put_trailers("k", &entry)
            .await
            .unwrap();
        let all = EmbeddedStore::open(&path)
            .unwrap()
            .all_trailers()
            .await
            .unwrap();
        assert_eq!(all, vec![entry]);
    }
}
