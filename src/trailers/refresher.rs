//! Re-resolves trailers older than `refresh_after`, at a bounded rate, so trailers added or
//! removed at TMDB show up without new-content messages.

use std::sync::Arc;
use std::time::Duration;

use super::consumer::Onboarding;
use crate::domain::{ContentUrl, Millis};

pub async fn refresh_forever(
    onboarding: Arc<Onboarding>,
    refresh_after: Duration,
    per_second: u32,
) {
    let per_second = per_second.max(1);
    let spacing = Duration::from_secs(1) / per_second;
    // Check often enough that an entry is refreshed soon after it turns stale.
    let check_every =
        (refresh_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
    loop {
        tokio::time::sleep(check_every).await;
        let now = onboarding.clock.now();
        let cutoff = crate::domain::Timestamp(now.0.saturating_sub(Millis::from(refresh_after).0));
        let batch = (check_every.as_secs_f64() * f64::from(per_second))
            .ceil()
            .max(1.0) as usize;
        for stale in onboarding.cache.older_than(cutoff, batch) {
            let Some(url) = ContentUrl::parse(&stale.url, &onboarding.prefix) else {
                continue;
            };
            match onboarding.onboard(&url).await {
                Ok(entry) => {
                    onboarding.metrics.trailer_refreshes("refreshed").inc();
                    tracing::debug!(url = %entry.url, trailers = entry.trailers.len(), "refreshed trailers");
                }
                Err(e) => {
                    onboarding.metrics.trailer_refreshes("failed").inc();
                    tracing::warn!(url = %stale.url, error = %e, "cannot refresh trailers; keeping the old ones");
                }
            }
            tokio::time::sleep(spacing).await;
        }
    }
}
