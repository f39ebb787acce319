//! What each operation did: latency histograms, statuses and transport errors.
//!
//! Every load-generator thread keeps its own `OpStats` per operation and they are merged
//! once at the end, so the send loop never contends on shared state for statistics. The
//! only shared state during a run is `Live`, a handful of atomic counters for the progress
//! bar.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, from 1 µs up to an hour with 3 significant
/// digits; anything longer is clamped to the top (a run never lasts that long).
pub const HIGHEST_US: u64 = 3_600_000_000;

/// Why a request got no HTTP response.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The TCP connection could not be opened.
    Connect,
    /// No complete response within `--timeout`.
    Timeout,
    /// The server closed or reset the connection before answering.
    Closed,
    /// Anything else: a malformed response, ...
    Protocol,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Closed => "closed",
            ErrorKind::Protocol => "protocol",
        }
    }
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("static histogram bounds are valid")
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// When one request was meant to go, went, and was answered.
#[derive(Copy, Clone, Debug)]
pub struct Timing {
    /// When the schedule wanted it sent. For a closed loop this is when it was sent.
    pub intended: Instant,
    pub started: Instant,
    pub finished: Instant,
}

impl Timing {
    /// The latency a user would have seen: from when the request should have gone out.
    /// Measuring from `started` instead would hide every request that queued behind a
    /// slow one (coordinated omission).
    pub fn latency(&self) -> Duration {
        self.finished.saturating_duration_since(self.intended)
    }

    /// How long the server took once the request was on the wire.
    pub fn service(&self) -> Duration {
        self.finished.saturating_duration_since(self.started)
    }

    pub fn start_delay(&self) -> Duration {
        self.started.saturating_duration_since(self.intended)
    }
}

/// Statistics of one operation (e.g. "heartbeat") on one thread, or merged.
#[derive(Clone)]
pub struct OpStats {
    /// Requests put on a connection (answered or not).
    pub sent: u64,
    /// Latency in µs of answered requests; from the intended send time when open-loop.
    pub latency: Histogram<u64>,
    /// Open loop only: time from actual send to answer, in µs.
    pub service: Option<Histogram<u64>>,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Open loop only: requests that started more than the late threshold after their
    /// intended time.
    pub late: u64,
}

impl OpStats {
    pub fn new(open_loop: bool) -> OpStats {
        OpStats {
            sent: 0,
            latency: histogram(),
            service: open_loop.then(histogram),
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            late: 0,
        }
    }

    pub fn record_response(&mut self, status: u16, timing: &Timing, late_threshold: Duration) {
        self.latency.saturating_record(micros(timing.latency()));
        if let Some(service) = &mut self.service {
            service.saturating_record(micros(timing.service()));
            if timing.start_delay() > late_threshold {
                self.late += 1;
            }
        }
        *self.statuses.entry(status).or_default() += 1;
    }

    pub fn record_error(&mut self, kind: ErrorKind, timing: Option<&Timing>, late: Duration) {
        *self.errors.entry(kind).or_default() += 1;
        if let (Some(t), Some(_)) = (timing, &self.service)
            && t.start_delay() > late
        {
            self.late += 1;
        }
    }

    pub fn merge(&mut self, other: &OpStats) {
        self.sent += other.sent;
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        if let (Some(mine), Some(theirs)) = (&mut self.service, &other.service) {
            let _ = mine.add(theirs);
        }
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_default() += n;
        }
        for (kind, n) in &other.errors {
            *self.errors.entry(*kind).or_default() += n;
        }
        self.late += other.late;
    }

    pub fn responses(&self) -> u64 {
        self.statuses.values().sum()
    }

    pub fn all_errors(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Percentiles of a histogram in µs.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    #[serde(rename = "p99_9")]
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles {
                count: 0,
                mean: 0.0,
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0,
            };
        }
        Percentiles {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Counters the progress bar reads while the run goes on.
#[derive(Default)]
pub struct Live {
    pub responses: AtomicU64,
    pub errors: AtomicU64,
    pub late: AtomicU64,
    pub scheduled: AtomicU64,
}

impl Live {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within hdrhistogram's 3-significant-digit resolution.
    fn close(actual: u64, expected: u64) -> bool {
        actual.abs_diff(expected) as f64 <= expected as f64 * 0.001 + 1.0
    }

    #[test]
    fn percentiles_of_a_uniform_ramp() {
        let mut h = histogram();
        for v in 1..=100_000u64 {
            h.record(v).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 100_000);
        assert!(close(p.p50, 50_000), "{p:?}");
        assert!(close(p.p90, 90_000), "{p:?}");
        assert!(close(p.p99, 99_000), "{p:?}");
        assert!(close(p.p999, 99_900), "{p:?}");
        assert!(close(p.max, 100_000), "{p:?}");
        assert!((p.mean - 50_000.5).abs() < 50.0, "{p:?}");
    }

    #[test]
    fn percentiles_of_a_tail() {
        // 990 fast answers and 10 slow ones: p99 is still fast, p99.9 is slow.
        let mut h = histogram();
        for _ in 0..990 {
            h.record(1_000).unwrap();
        }
        for _ in 0..10 {
            h.record(250_000).unwrap();
        }
        let p = Percentiles::of(&h);
        assert!(close(p.p50, 1_000) && close(p.p90, 1_000) && close(p.p99, 1_000));
        assert!(close(p.p999, 250_000) && close(p.max, 250_000), "{p:?}");
    }

    #[test]
    fn empty_histogram_has_zero_percentiles() {
        let p = Percentiles::of(&histogram());
        assert_eq!(p.count, 0);
        assert_eq!(p.max, 0);
    }

    #[test]
    fn huge_latencies_are_clamped_not_lost() {
        let mut s = OpStats::new(false);
        let t0 = Instant::now();
        let timing = Timing {
            intended: t0,
            started: t0,
            finished: t0 + Duration::from_secs(10_000),
        };
        s.record_response(200, &timing, Duration::ZERO);
        assert_eq!(s.latency.len(), 1);
        assert!(s.latency.max() >= HIGHEST_US);
    }

    /// One connection, a request intended every 10 ms, each answered in 1 ms, except that
    /// the server stalls for 1 s once. Queued requests then start late; measured from the
    /// intended time their latency shows the stall, measured from the send it would not.
    #[test]
    fn coordinated_omission_is_corrected() {
        let t0 = Instant::now();
        let interval = Duration::from_millis(10);
        let threshold = Duration::from_millis(5);
        let mut stats = OpStats::new(true);
        let mut free_at = t0;
        for i in 0..1_000u32 {
            let intended = t0 + interval * i;
            let started = intended.max(free_at);
            let service = if i == 100 {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(1)
            };
            let finished = started + service;
            free_at = finished;
            let timing = Timing {
                intended,
                started,
                finished,
            };
            stats.record_response(200, &timing, threshold);
        }
        let service = Percentiles::of(stats.service.as_ref().unwrap());
        let latency = Percentiles::of(&stats.latency);
        // Only one request was slow to serve...
        assert!(close(service.p99, 1_000), "{service:?}");
        // ...but the ~100 scheduled during the stall waited for it.
        assert!(latency.p90 > 50_000, "{latency:?}");
        assert!(latency.p99 > 800_000, "{latency:?}");
        assert!(close(latency.max, 1_000_000), "{latency:?}");
        // The 99 requests intended during the stall, and the ~10 after it that queued
        // while the backlog drained, started more than 5 ms late.
        assert!((105..=115).contains(&stats.late), "late = {}", stats.late);
    }

    #[test]
    fn merge_adds_everything() {
        let t0 = Instant::now();
        let timing = Timing {
            intended: t0,
            started: t0 + Duration::from_millis(20),
            finished: t0 + Duration::from_millis(21),
        };
        let mut a = OpStats::new(true);
        a.sent = 2;
        a.record_response(200, &timing, Duration::from_millis(10));
        a.record_error(ErrorKind::Timeout, Some(&timing), Duration::from_millis(10));
        let mut b = OpStats::new(true);
        b.sent = 1;
        b.record_response(404, &timing, Duration::from_millis(10));
        b.record_error(ErrorKind::Connect, None, Duration::from_millis(10));
        a.merge(&b);
        assert_eq!(a.sent, 3);
        assert_eq!(a.responses(), 2);
        assert_eq!(a.statuses[&200], 1);
        assert_eq!(a.statuses[&404], 1);
        assert_eq!(a.errors[&ErrorKind::Timeout], 1);
        assert_eq!(a.all_errors(), 2);
        assert_eq!(a.late, 3);
        assert_eq!(a.latency.len(), 2);
    }
}
