//! The DynamoDB store. Single-table design:
//!
//! | PK | SK | attributes |
//! |---|---|---|
//! | `USER#<userId>` | `PROGRESS#<assetId>` | `asset` (S), `progress` (N) |
//! | `USER#<userId>` | `WATCHLIST#<assetId>` | `asset` (S), `addedAt` (N, Unix ms) |
//! | `TRAILER#<sha256(url)>` | `TRAILER` | `url` (S), `trailers` (L of S), `updatedAt` (N, Unix ms) |
//!
//! One Query reads a user's whole library; progress is written with BatchWriteItem in
//! chunks of 25; watchlist edits are conditional so that "added" and "removed" are exact.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, KeySchemaElement, KeyType,
    PutRequest, ReturnValue, ScalarAttributeType, TableStatus, WriteRequest,
};

use super::{ProgressItem, StoreError, StoredLibrary, TrailerStore, UserStore};
use crate::domain::{AssetId, Timestamp, TrailerEntry, UserId};
use crate::retry::backoff;

/// DynamoDB's BatchWriteItem limit.
const BATCH: usize = 25;
/// Rounds of retrying unprocessed items (throttling) before giving the batch back.
const UNPROCESSED_ROUNDS: u32 = 8;

pub struct DynamoStore {
    client: Client,
    table: String,
}

/// How long start-up waits for a table it created (or found CREATING) to become ACTIVE.
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// A table serves reads and writes while ACTIVE and while UPDATING (e.g. an index build).
fn table_usable(status: &TableStatus) -> bool {
    matches!(status, TableStatus::Active | TableStatus::Updating)
}

fn pk(user: &UserId) -> AttributeValue {
    AttributeValue::S(format!("USER#{}", user.as_str()))
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

impl DynamoStore {
    pub async fn connect(
        sdk: &aws_config::SdkConfig,
        table: &str,
        create_table: bool,
    ) -> Result<DynamoStore, StoreError> {
        let store = DynamoStore {
            client: Client::new(sdk),
            table: table.to_owned(),
        };
        if create_table {
            store.ensure_table().await?;
        }
        Ok(store)
    }

    /// Creates the table if missing (development only: production tables belong to IaC),
    /// and waits until it is ACTIVE: DynamoDB answers CreateTable at once but refuses
    /// reads and writes with ResourceNotFound while the table is still CREATING.
    async fn ensure_table(&self) -> Result<(), StoreError> {
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => return self.wait_until_active().await,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) => {}
            Err(e) => return Err(StoreError::unavailable(e)),
        }
        let key = |name: &str, kind| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .expect("complete key schema")
        };
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("complete attribute definition")
        };
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("PK", KeyType::Hash))
            .key_schema(key("SK", KeyType::Range))
            .attribute_definitions(attr("PK"))
            .attribute_definitions(attr("SK"))
            .send()
            .await;
        match created {
            Ok(_) => tracing::info!(table = %self.table, "created DynamoDB table"),
            // Another node created it first.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) => {}
            Err(e) => return Err(StoreError::unavailable(e)),
        }
        self.wait_until_active().await
    }

    async fn wait_until_active(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        loop {
            let status = self.table_status().await?;
            if table_usable(&status) {
                return Ok(());
            }
            if started.elapsed() >= TABLE_ACTIVE_TIMEOUT {
                return Err(StoreError::unavailable(format!(
                    "table {} is still {status} after {}s",
                    self.table,
                    TABLE_ACTIVE_TIMEOUT.as_secs()
                )));
            }
            tracing::info!(table = %self.table, %status, "waiting for the DynamoDB table to become ACTIVE");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn table_status(&self) -> Result<TableStatus, StoreError> {
        let described = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(StoreError::unavailable)?;
        Ok(described
            .table
            .and_then(|t| t.table_status)
            .unwrap_or(TableStatus::Active))
    }

    async fn write_chunk(&self, mut requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        for round in 0..UNPROCESSED_ROUNDS {
            let response = self
                .client
                .batch_write_item()
                .request_items(&self.table, requests)
                .send()
                .await
                .map_err(StoreError::unavailable)?;
            requests = response
                .unprocessed_items
                .and_then(|mut unprocessed| unprocessed.remove(&self.table))
                .unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(backoff(
                round,
                Duration::from_millis(50),
                Duration::from_secs(2),
            ))
            .await;
        }
        Err(StoreError::unavailable(format!(
            "{} items still unprocessed after {UNPROCESSED_ROUNDS} rounds",
            requests.len()
        )))
    }
}

fn write_request(item: &ProgressItem) -> WriteRequest {
    let sk = s(format!("PROGRESS#{}", item.asset));
    match item.seconds {
        Some(seconds) => {
            let record = HashMap::from([
                ("PK".to_owned(), pk(&item.user)),
                ("SK".to_owned(), sk),
                ("asset".to_owned(), s(item.asset.to_string())),
                ("progress".to_owned(), n(seconds)),
            ]);
            let put = PutRequest::builder()
                .set_item(Some(record))
                .build()
                .expect("item is set");
            WriteRequest::builder().put_request(put).build()
        }
        None => {
            let key = HashMap::from([("PK".to_owned(), pk(&item.user)), ("SK".to_owned(), sk)]);
            let delete = DeleteRequest::builder()
                .set_key(Some(key))
                .build()
                .expect("key is set");
            WriteRequest::builder().delete_request(delete).build()
        }
    }
}

fn attr_asset(item: &HashMap<String, AttributeValue>) -> Result<AssetId, StoreError> {
    let raw = item
        .get("asset")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| StoreError::corrupt("item without asset"))?;
    AssetId::parse(raw).map_err(|_| StoreError::corrupt(format!("bad asset {raw:?}")))
}

fn attr_number<T: std::str::FromStr>(
    item: &HashMap<String, AttributeValue>,
    name: &str,
) -> Result<T, StoreError> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|raw| raw.parse().ok())
        .ok_or_else(|| StoreError::corrupt(format!("item without numeric {name}")))
}

#[async_trait]
impl UserStore for DynamoStore {
    async fn load_library(&self, user: &UserId) -> Result<StoredLibrary, StoreError> {
        let mut library = StoredLibrary::default();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk")
                .expression_attribute_values(":pk", pk(user))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(StoreError::unavailable)?;
            for item in page.items() {
                let sk = item
                    .get("SK")
                    .and_then(|v| v.as_s().ok())
                    .map(String::as_str);
                match sk {
                    Some(sk) if sk.starts_with("PROGRESS#") => {
                        library
                            .progress
                            .push((attr_asset(item)?, attr_number(item, "progress")?));
                    }
                    Some(sk) if sk.starts_with("WATCHLIST#") => {
                        library
                            .watchlist
                            .push((attr_asset(item)?, Timestamp(attr_number(item, "addedAt")?)));
                    }
                    // Other record kinds may share the partition in later versions.
                    _ => {}
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(library);
            }
        }
    }

    async fn write_progress(&self, items: &[ProgressItem]) -> Result<(), StoreError> {
        let chunks = items
            .chunks(BATCH)
            .map(|chunk| self.write_chunk(chunk.iter().map(write_request).collect()));
        futures_util::future::try_join_all(chunks).await.map(|_| ())
    }

    async fn add_to_watchlist(
        &self,
        user: &UserId,
        asset: AssetId,
        added_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("PK", pk(user))
            .item("SK", s(format!("WATCHLIST#{asset}")))
            .item("asset", s(asset.to_string()))
            .item("addedAt", n(added_at.0))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(StoreError::unavailable(e)),
        }
    }

    async fn remove_from_watchlist(
        &self,
        user: &UserId,
        asset: AssetId,
    ) -> Result<bool, StoreError> {
        let response = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("PK", pk(user))
            .key("SK", s(format!("WATCHLIST#{asset}")))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(StoreError::unavailable)?;
        Ok(response.attributes.is_some_and(|old| !old.is_empty()))
    }

    async fn check(&self) -> Result<(), StoreError> {
        let status = self.table_status().await?;
        if table_usable(&status) {
            Ok(())
        } else {
            Err(StoreError::unavailable(format!(
                "table {} is {status}",
                self.table
            )))
        }
    }

    fn backend(&self) -> &'static str {
        "dynamodb"
    }
}

#[async_trait]
impl TrailerStore for DynamoStore {
    async fn put_trailers(&self, key: &str, entry: &TrailerEntry) -> Result<(), StoreError> {
        let links = entry.trailers.iter().map(|l| s(l.clone())).collect();
        self.client
            .put_item()
            .table_name(&self.table)
            .item("PK", s(format!("TRAILER#{key}")))
            .item("SK", s("TRAILER"))
            .item("url", s(entry.url.clone()))
            .item("trailers", AttributeValue::L(links))
            .item("updatedAt", n(entry.updated_at.0))
            .send()
            .await
            .map(|_| ())
            .map_err(StoreError::unavailable)
    }

    /// A filtered Scan: it reads the whole table, which is why it runs only when a node
    /// starts (at most tens of thousands of trailer items beside the user data).
    async fn all_trailers(&self) -> Result<Vec<TrailerEntry>, StoreError> {
        let mut entries = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(PK, :trailer)")
                .expression_attribute_values(":trailer", s("TRAILER#"))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(StoreError::unavailable)?;
            for item in page.items() {
                let url = item
                    .get("url")
                    .and_then(|v| v.as_s().ok())
                    .ok_or_else(|| StoreError::corrupt("trailer without url"))?;
                let trailers = item
                    .get("trailers")
                    .and_then(|v| v.as_l().ok())
                    .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
                    .unwrap_or_default();
                entries.push(TrailerEntry {
                    url: url.clone(),
                    trailers,
                    updated_at: Timestamp(attr_number(item, "updatedAt")?),
                });
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(entries);
            }
        }
    }
}
