//! Where "now" comes from. Production reads the system clock; tests can run a node with
//! a manual clock that moves only when told to, so lease expiry is tested exactly and
//! without waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::domain::{Millis, Timestamp};

#[derive(Clone, Debug)]
pub enum Clock {
    System,
    /// Starts at the system time of its creation and moves only by `advance`.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    pub fn manual() -> Clock {
        Clock::Manual(Arc::new(AtomicU64::new(system_now().0)))
    }

    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => system_now(),
            Clock::Manual(now) => Timestamp(now.load(Ordering::Acquire)),
        }
    }

    /// Moves a manual clock forward; returns the new time, or `None` for the system clock.
    pub fn advance(&self, by: Millis) -> Option<Timestamp> {
        match self {
            Clock::System => None,
            Clock::Manual(now) => {
                let before = now.fetch_add(by.0, Ordering::AcqRel);
                Some(Timestamp(before.saturating_add(by.0)))
            }
        }
    }
}

fn system_now() -> Timestamp {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = Clock::manual();
        let start = clock.now();
        assert_eq!(clock.now(), start);
        assert_eq!(
            clock.advance(Millis(1_500)),
            Some(start.plus(Millis(1_500)))
        );
        assert_eq!(clock.now(), start.plus(Millis(1_500)));
    }

    #[test]
    fn system_clock_cannot_be_advanced() {
        assert_eq!(Clock::System.advance(Millis(1)), None);
    }
}
