//! Exponential backoff with full jitter, shared by everything that retries a remote call.

use std::time::Duration;

/// The delay before retry number `attempt` (0-based): a random duration up to
/// `base × 2^attempt`, capped at `max`. Full jitter spreads retries of many callers that
/// failed together, so a recovering service is not hit by a synchronized wave.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = base.saturating_mul(1u32 << attempt.min(16)).min(max);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::random_range(0..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for _ in 0..200 {
            assert!(backoff(0, base, max) <= Duration::from_millis(100));
            assert!(backoff(3, base, max) <= Duration::from_millis(800));
            assert!(backoff(30, base, max) <= max);
        }
        let spread: std::collections::HashSet<_> = (0..50).map(|_| backoff(4, base, max)).collect();
        assert!(spread.len() > 10, "jitter should spread delays");
    }
}
