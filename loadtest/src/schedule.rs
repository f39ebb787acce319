//! The open-loop schedule: many periodic timers (one per stream and kind of request),
//! ordered in a heap by their next due time.
//!
//! Due times are kept as integer nanoseconds since the start of the run and advanced by
//! adding the period, never by reading the clock, so a late dispatcher cannot make the
//! schedule drift: the offered rate is exactly the sum of the timers' rates, however the
//! server behaves.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// Index of a timer in the order it was added.
pub type TimerId = u32;

/// One due occurrence of a timer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Fire {
    pub timer: TimerId,
    /// When it is due, since the start of the run.
    pub at: Duration,
}

#[derive(Default)]
pub struct Schedule {
    heap: BinaryHeap<Reverse<(u64, TimerId)>>,
    periods_ns: Vec<u64>,
}

impl Schedule {
    pub fn new() -> Schedule {
        Schedule::default()
    }

    /// Adds a timer that first fires at `phase` and then every `period`.
    pub fn add(&mut self, period: Duration, phase: Duration) -> TimerId {
        let id = TimerId::try_from(self.periods_ns.len()).expect("fewer than 2^32 timers");
        // A zero period would fire forever at the same instant.
        let period_ns = nanos(period).max(1);
        self.periods_ns.push(period_ns);
        self.heap.push(Reverse((nanos(phase), id)));
        id
    }

    /// When the next timer is due, since the start of the run.
    pub fn next_due(&self) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((at, _))| Duration::from_nanos(*at))
    }

    /// The earliest timer due at or before `now`, rescheduled one period later.
    pub fn pop_due(&mut self, now: Duration) -> Option<Fire> {
        let now = nanos(now);
        let mut top = self.heap.peek_mut()?;
        let Reverse((at, timer)) = *top;
        if at > now {
            return None;
        }
        // Replacing the top in place sifts it down once instead of pop + push.
        *top = Reverse((at + self.periods_ns[timer as usize], timer));
        Some(Fire {
            timer,
            at: Duration::from_nanos(at),
        })
    }

    /// Requests per second the timers offer in total.
    pub fn nominal_rate(&self) -> f64 {
        self.periods_ns.iter().map(|p| 1e9 / *p as f64).sum()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2)
}

/// A phase in `[0, period)`, so timers of the same period are spread evenly over it
/// instead of all firing together at the start.
pub fn random_phase(rng: &mut fastrand::Rng, period: Duration) -> Duration {
    Duration::from_nanos(rng.u64(..nanos(period).max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: &mut Schedule, until: Duration) -> Vec<Fire> {
        let mut out = Vec::new();
        while let Some(f) = s.pop_due(until) {
            out.push(f);
        }
        out
    }

    #[test]
    fn fires_at_exact_times_in_order() {
        let mut s = Schedule::new();
        let a = s.add(Duration::from_millis(100), Duration::from_millis(30));
        let b = s.add(Duration::from_millis(250), Duration::ZERO);
        assert_eq!(s.next_due(), Some(Duration::ZERO));
        let fires = drain(&mut s, Duration::from_millis(500));
        let ms = |f: &Fire| (f.timer, f.at.as_millis());
        assert_eq!(
            fires.iter().map(ms).collect::<Vec<_>>(),
            [
                (b, 0),
                (a, 30),
                (a, 130),
                (a, 230),
                (b, 250),
                (a, 330),
                (a, 430),
                (b, 500),
            ]
        );
        assert_eq!(s.next_due(), Some(Duration::from_millis(530)));
        assert!(s.pop_due(Duration::from_millis(529)).is_none());
    }

    #[test]
    fn offers_exactly_the_expected_number_of_events() {
        // 10,000 streams heartbeating every 1 s at random phases, observed over 10 s in
        // uneven steps, as a dispatcher woken by a coarse timer would: exactly 100,000
        // events, each at phase + k * period, never before its time.
        let mut rng = fastrand::Rng::with_seed(3);
        let mut s = Schedule::new();
        let period = Duration::from_secs(1);
        let phases: Vec<Duration> = (0..10_000)
            .map(|_| {
                let p = random_phase(&mut rng, period);
                s.add(period, p);
                p
            })
            .collect();
        assert!((s.nominal_rate() - 10_000.0).abs() < 1e-6);

        let window = Duration::from_secs(10);
        let mut now = Duration::ZERO;
        let mut seen = vec![0u32; phases.len()];
        let mut last = Duration::ZERO;
        let mut total = 0u64;
        while now < window {
            // Events due at exactly `window` belong to the next window.
            let horizon = now.min(window - Duration::from_nanos(1));
            while let Some(f) = s.pop_due(horizon) {
                let i = f.timer as usize;
                assert_eq!(f.at, phases[i] + period * seen[i]);
                assert!(f.at <= horizon && f.at >= last);
                last = f.at;
                seen[i] += 1;
                total += 1;
            }
            now += Duration::from_micros(rng.u64(100..3_000));
        }
        let horizon = window - Duration::from_nanos(1);
        while let Some(f) = s.pop_due(horizon) {
            seen[f.timer as usize] += 1;
            total += 1;
        }
        assert_eq!(total, 100_000);
        assert!(seen.iter().all(|n| *n == 10));
    }

    #[test]
    fn mixed_periods_offer_their_summed_rate() {
        let mut s = Schedule::new();
        for i in 0..30u64 {
            s.add(Duration::from_millis(50), Duration::from_millis(i));
        }
        for i in 0..20u64 {
            s.add(Duration::from_millis(200), Duration::from_millis(i * 10));
        }
        assert!((s.nominal_rate() - (30.0 * 20.0 + 20.0 * 5.0)).abs() < 1e-9);
        // Over [0, 2 s): 30 timers * 40 + 20 timers * 10.
        let fires = drain(&mut s, Duration::from_millis(1_999));
        assert_eq!(fires.len(), 30 * 40 + 20 * 10);
    }

    #[test]
    fn phases_stay_within_the_period() {
        let mut rng = fastrand::Rng::with_seed(9);
        for _ in 0..1_000 {
            assert!(random_phase(&mut rng, Duration::from_millis(7)) < Duration::from_millis(7));
        }
        assert_eq!(random_phase(&mut rng, Duration::ZERO), Duration::ZERO);
    }
}
