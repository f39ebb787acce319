//! The new-content consumer: long-polls the queue and onboards each content URL.
//!
//! A message is deleted only after its trailers are stored and cached. One that can
//! never succeed is deleted with a logged reason and counted (or moved to the dead-letter
//! queue when one is configured); one that fails transiently is left for SQS to deliver
//! again after its visibility timeout.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use serde::Deserialize;

use super::cache::TrailerCache;
use super::resolve::{ResolveError, Resolver};
use crate::clock::Clock;
use crate::domain::{ContentUrl, TrailerEntry};
use crate::error_chain::DisplayChain;
use crate::retry::backoff;
use crate::store::TrailerStore;
use crate::telemetry::Metrics;

pub struct Onboarding {
    pub resolver: Resolver,
    pub cache: Arc<dyn TrailerCache>,
    pub store: Arc<dyn TrailerStore>,
    pub prefix: String,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Onboarded,
    Rejected(String),
    Retry(String),
}

#[derive(Deserialize)]
struct NewContent {
    url: String,
}

impl Onboarding {
    /// Resolves, stores and caches one content URL.
    pub async fn onboard(&self, url: &ContentUrl) -> Result<TrailerEntry, ResolveError> {
        let trailers = self.resolver.trailers(url).await?;
        let entry = TrailerEntry {
            url: url.as_str().to_owned(),
            trailers,
            updated_at: self.clock.now(),
        };
        self.store
            .put_trailers(&url.key(), &entry)
            .await
            .map_err(|e| ResolveError::Transient(DisplayChain(&e).to_string()))?;
        self.cache
            .put(url.key(), entry.clone())
            .await
            .map_err(|e| ResolveError::Transient(e.to_string()))?;
        Ok(entry)
    }

    async fn handle(&self, body: &str) -> Outcome {
        let Ok(message) = serde_json::from_str::<NewContent>(body) else {
            return Outcome::Rejected("body is not {\"url\": \"...\"}".into());
        };
        let Some(url) = ContentUrl::parse(&message.url, &self.prefix) else {
            return Outcome::Rejected(format!(
                "url {:?} is not under {}",
                message.url, self.prefix
            ));
        };
        match self.onboard(&url).await {
            Ok(entry) => {
                tracing::info!(url = %entry.url, trailers = entry.trailers.len(), "onboarded trailers");
                Outcome::Onboarded
            }
            Err(ResolveError::Permanent(why)) => Outcome::Rejected(why),
            Err(ResolveError::Transient(why)) => Outcome::Retry(why),
        }
    }

    /// Polls until the process ends. `wait` is the long-poll time (at most 20 s).
    pub async fn consume(
        self: Arc<Self>,
        sqs: Client,
        queue_url: String,
        dead_letters: Option<String>,
        wait: Duration,
    ) {
        let wait_seconds = wait.as_secs().clamp(0, 20) as i32;
        let mut failures = 0;
        loop {
            let received = sqs
                .receive_message()
                .queue_url(&queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(wait_seconds)
                .send()
                .await;
            let messages = match received {
                Ok(received) => {
                    failures = 0;
                    received.messages.unwrap_or_default()
                }
                Err(e) => {
                    tracing::warn!(error = %DisplayErrorContext(e), "cannot receive new-content messages");
                    tokio::time::sleep(backoff(
                        failures,
                        Duration::from_millis(500),
                        Duration::from_secs(30),
                    ))
                    .await;
                    failures += 1;
                    continue;
                }
            };
            for message in messages {
                let body = message.body().unwrap_or_default();
                let outcome = self.handle(body).await;
                let label = match &outcome {
                    Outcome::Onboarded => "onboarded",
                    Outcome::Rejected(_) => "rejected",
                    Outcome::Retry(_) => "retry",
                };
                self.metrics.trailer_messages(label).inc();
                match outcome {
                    Outcome::Retry(why) => {
                        tracing::warn!(reason = %why, "new-content message failed; SQS will deliver it again");
                        continue;
                    }
                    Outcome::Rejected(why) => {
                        tracing::warn!(reason = %why, body, "new-content message can never succeed; dropping it");
                        if let Some(dlq) = &dead_letters
                            && let Err(e) = sqs
                                .send_message()
                                .queue_url(dlq)
                                .message_body(body)
                                .send()
                                .await
                        {
                            tracing::error!(error = %DisplayErrorContext(e), "cannot dead-letter; keeping the message");
                            continue;
                        }
                    }
                    Outcome::Onboarded => {}
                }
                let handle = message.receipt_handle().unwrap_or_default();
                if let Err(e) = sqs
                    .delete_message()
                    .queue_url(&queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                {
                    tracing::warn!(error = %DisplayErrorContext(e), "cannot delete a handled message; it may be handled again");
                }
            }
        }
    }
}
