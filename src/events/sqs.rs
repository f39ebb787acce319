//! Events to an SQS queue with SendMessageBatch. Each message body is one event record;
//! its `eventId` lets the consumer drop the duplicates that at-least-once delivery allows.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, SdkError};
use aws_sdk_sqs::operation::create_queue::CreateQueueError;
use aws_sdk_sqs::operation::get_queue_url::GetQueueUrlError;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures_util::StreamExt;

use super::{EventSink, NotDelivered};
use crate::domain::EventRecord;

/// Why a queue could not be found by its name (or created).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot create queue {name}")]
    Create {
        name: String,
        #[source]
        source: Box<SdkError<CreateQueueError, HttpResponse>>,
    },
    #[error("queue {name} was created without a URL")]
    CreatedWithoutUrl { name: String },
    #[error("cannot find queue {name}")]
    Find {
        name: String,
        #[source]
        source: Box<SdkError<GetQueueUrlError, HttpResponse>>,
    },
    #[error("queue {name} has no URL")]
    NoUrl { name: String },
}

pub struct SqsSink {
    client: Client,
    queue_url: String,
}

impl SqsSink {
    /// Resolves the queue by URL, or by name (creating it when `create` is set, for
    /// development).
    pub async fn connect(
        sdk: &aws_config::SdkConfig,
        queue_url: &str,
        queue_name: &str,
        create: bool,
    ) -> Result<SqsSink, QueueError> {
        let client = Client::new(sdk);
        let queue_url = resolve_queue(&client, queue_url, queue_name, create).await?;
        Ok(SqsSink { client, queue_url })
    }
}

/// A queue URL from the configured URL or name.
pub async fn resolve_queue(
    client: &Client,
    url: &str,
    name: &str,
    create: bool,
) -> Result<String, QueueError> {
    if !url.is_empty() {
        return Ok(url.to_owned());
    }
    let name = name.to_owned();
    if create {
        let created = client.create_queue().queue_name(&name).send().await;
        return match created {
            Ok(created) => created
                .queue_url
                .ok_or(QueueError::CreatedWithoutUrl { name }),
            Err(e) => Err(QueueError::Create {
                name,
                source: Box::new(e),
            }),
        };
    }
    match client.get_queue_url().queue_name(&name).send().await {
        Ok(found) => found.queue_url.ok_or(QueueError::NoUrl { name }),
        Err(e) => Err(QueueError::Find {
            name,
            source: Box::new(e),
        }),
    }
}

/// SendMessageBatch takes at most this many messages.
const SQS_BATCH: usize = 10;

/// SendMessageBatch requests in flight at once while delivering one round.
const CONCURRENT_REQUESTS: usize = 16;

#[async_trait]
impl EventSink for SqsSink {
    async fn deliver(&self, batch: &[EventRecord]) -> Result<(), NotDelivered> {
        let mut requests = Vec::with_capacity(batch.len().div_ceil(SQS_BATCH));
        for (n, chunk) in batch.chunks(SQS_BATCH).enumerate() {
            requests.push(async move { (n * SQS_BATCH, self.send_batch(chunk).await) });
        }
        let answers: Vec<(usize, Result<(), NotDelivered>)> = futures_util::stream::iter(requests)
            .buffer_unordered(CONCURRENT_REQUESTS)
            .collect()
            .await;
        let mut failed = Vec::new();
        let mut reason = String::new();
        for (offset, answer) in answers {
            if let Err(not_delivered) = answer {
                failed.extend(not_delivered.failed.iter().map(|i| offset + i));
                reason = not_delivered.reason;
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            failed.sort_unstable();
            Err(NotDelivered { failed, reason })
        }
    }

    fn name(&self) -> &'static str {
        "sqs"
    }
}

impl SqsSink {
    /// One SendMessageBatch; failed indexes are into `batch`.
    async fn send_batch(&self, batch: &[EventRecord]) -> Result<(), NotDelivered> {
        let mut entries = Vec::with_capacity(batch.len());
        for (i, record) in batch.iter().enumerate() {
            let body = serde_json::to_string(record)
                .map_err(|e| NotDelivered::all(batch, e.to_string()))?;
            let entry = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(body)
                .build()
                .map_err(|e| NotDelivered::all(batch, e.to_string()))?;
            entries.push(entry);
        }
        let response = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| NotDelivered::all(batch, DisplayErrorContext(e).to_string()))?;
        let failed: Vec<usize> = response
            .failed
            .iter()
            .filter_map(|f| f.id.parse().ok())
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            let reason = response
                .failed
                .first()
                .map(|f| format!("{}: {}", f.code, f.message.as_deref().unwrap_or("")))
                .unwrap_or_default();
            Err(NotDelivered { failed, reason })
        }
    }
}
