//! content URL → IMDB id (content API) → TMDB id → YouTube trailer links.
//!
//! Every call has a timeout; 5xx, 429 (honouring Retry-After) and network errors are
//! retried with backoff. What can never succeed (no such content, no IMDB id, no TMDB
//! match) is `Permanent`; what might succeed later is `Transient`.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::domain::ContentUrl;
use crate::domain::trailers::{TmdbVideo, trailer_links};
use crate::retry::backoff;
use crate::telemetry::Metrics;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot ever resolve: {0}")]
    Permanent(String),
    #[error("cannot resolve now: {0}")]
    Transient(String),
}

/// The longest Retry-After honoured; beyond it the message waits for SQS redelivery.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The resolver's HTTP client could not be built (its TLS set-up failed).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client for content and TMDB lookups")]
pub struct ResolverClientError(#[from] reqwest::Error);

pub struct Resolver {
    http: reqwest::Client,
    tmdb_base: String,
    tmdb_token: String,
    attempts: u32,
    metrics: Arc<Metrics>,
}

impl Resolver {
    pub fn new(
        tmdb_base: &str,
        tmdb_token: &str,
        timeout: Duration,
        attempts: u32,
        metrics: Arc<Metrics>,
    ) -> Result<Resolver, ResolverClientError> {
        let http = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Resolver {
            http,
            tmdb_base: tmdb_base.trim_end_matches('/').to_owned(),
            tmdb_token: tmdb_token.to_owned(),
            attempts: attempts.max(1),
            metrics,
        })
    }

    pub async fn trailers(&self, url: &ContentUrl) -> Result<Vec<String>, ResolveError> {
        let content = self.get_json(url.as_str(), false).await?;
        let imdb = content
            .pointer("/_embedded/viaplay:blocks/0/_embedded/viaplay:product/content/imdb/id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
            .ok_or_else(|| ResolveError::Permanent("content has no IMDB id".into()))?;
        let found = self
            .get_json(
                &format!("{}/3/find/{imdb}?external_source=imdb_id", self.tmdb_base),
                true,
            )
            .await?;
        let tmdb_id = found
            .pointer("/movie_results/0/id")
            .and_then(Value::as_u64)
            .ok_or_else(|| ResolveError::Permanent(format!("TMDB has no movie for {imdb}")))?;
        let videos = self
            .get_json(
                &format!("{}/3/movie/{tmdb_id}/videos", self.tmdb_base),
                true,
            )
            .await?;
        let videos: Vec<TmdbVideo> = videos
            .get("results")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| ResolveError::Permanent(format!("TMDB videos are malformed: {e}")))?
            .unwrap_or_default();
        Ok(trailer_links(&videos))
    }

    async fn get_json(&self, url: &str, tmdb: bool) -> Result<Value, ResolveError> {
        let mut last = String::new();
        for attempt in 0..self.attempts {
            let mut request = self.http.get(url);
            if tmdb {
                request = request.bearer_auth(&self.tmdb_token);
            }
            let wait = match request.send().await {
                Err(e) => {
                    if tmdb {
                        self.metrics.tmdb_requests("error").inc();
                        self.metrics.tmdb_last_status.set(-1);
                    }
                    last = format!("GET {url}: {e}");
                    backoff(attempt, Duration::from_millis(200), Duration::from_secs(5))
                }
                Ok(response) => {
                    let status = response.status();
                    if tmdb {
                        self.metrics.tmdb_requests(status.as_str()).inc();
                        self.metrics
                            .tmdb_last_status
                            .set(i64::from(status.as_u16()));
                    }
                    if status.is_success() {
                        return response.json().await.map_err(|e| {
                            ResolveError::Permanent(format!("GET {url}: not JSON: {e}"))
                        });
                    }
                    last = format!("GET {url}: {status}");
                    match status {
                        StatusCode::TOO_MANY_REQUESTS => {
                            retry_after(&response).unwrap_or_else(|| {
                                backoff(
                                    attempt,
                                    Duration::from_millis(500),
                                    Duration::from_secs(10),
                                )
                            })
                        }
                        s if s.is_server_error() => {
                            backoff(attempt, Duration::from_millis(200), Duration::from_secs(5))
                        }
                        // A bad TMDB token is the operator's to fix; the message stays.
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if tmdb => {
                            return Err(ResolveError::Transient(last));
                        }
                        _ => return Err(ResolveError::Permanent(last)),
                    }
                }
            };
            if attempt + 1 < self.attempts {
                if wait > MAX_RETRY_AFTER {
                    break;
                }
                tokio::time::sleep(wait).await;
            }
        }
        Err(ResolveError::Transient(last))
    }
}

/// Retry-After in seconds (the HTTP-date form is rare from APIs and treated as absent).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let seconds: u64 = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}
