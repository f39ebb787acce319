//! What became of the `players` requests, second by second and target by target: the view
//! a fault test reads (when errors started, when they stopped, and of what kind).
//!
//! A request is counted in the second it was *meant* to be sent, as its latency is measured
//! from that moment: a player that meant to send at second 12 and timed out at second 17
//! was failed at second 12. So a second's count is the load the schedule offered then,
//! whatever the node did, and an outage shows where it began rather than a timeout later.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use crate::stats::{ErrorKind, HIGHEST_US, Timing, micros};

/// What became of one scheduled request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP answer with this status.
    Answered(u16),
    /// No HTTP answer (including a connection that could not be opened).
    Failed(ErrorKind),
    /// Never sent: the run ended while it waited for a connection.
    Unsent,
}

/// Requests counted by what became of them. Every request tried is `ok` or exactly one
/// kind of error, so `requests == ok + errors()`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    /// Requests tried: answered, or failed without an answer (failed connects included).
    pub requests: u64,
    /// 2xx, the only answers the players expect.
    pub ok: u64,
    /// 503: e.g. a user whose shard is on a node that is down or being handed over.
    pub status_503: u64,
    /// 5xx other than 503.
    pub other_5xx: u64,
    /// 4xx: the players never expect one.
    pub status_4xx: u64,
    /// 1xx and 3xx.
    pub other_status: u64,
    /// The connection could not be opened (refused, or not within `--timeout`).
    pub connect: u64,
    /// No complete answer within `--timeout`.
    pub timeout: u64,
    /// The node closed (or reset) the connection before answering.
    pub closed: u64,
    /// A malformed answer.
    pub protocol: u64,
    /// Scheduled but never sent because the run ended first; not part of `requests`.
    pub unsent: u64,
}

impl Outcomes {
    /// Requests tried that did not get a 2xx answer.
    pub fn errors(&self) -> u64 {
        self.requests - self.ok
    }

    /// Each kind of error with its count, in the order of the fields.
    pub fn errors_by_kind(&self) -> [(&'static str, u64); 8] {
        [
            ("503", self.status_503),
            ("5xx", self.other_5xx),
            ("4xx", self.status_4xx),
            ("other-status", self.other_status),
            ("connect", self.connect),
            ("timeout", self.timeout),
            ("closed", self.closed),
            ("protocol", self.protocol),
        ]
    }

    fn count(&mut self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Unsent => {
                self.unsent += 1;
                return;
            }
            Outcome::Answered(200..=299) => &mut self.ok,
            Outcome::Answered(503) => &mut self.status_503,
            Outcome::Answered(500..=599) => &mut self.other_5xx,
            Outcome::Answered(400..=499) => &mut self.status_4xx,
            Outcome::Answered(_) => &mut self.other_status,
            Outcome::Failed(ErrorKind::Connect) => &mut self.connect,
            Outcome::Failed(ErrorKind::Timeout) => &mut self.timeout,
            Outcome::Failed(ErrorKind::Closed) => &mut self.closed,
            Outcome::Failed(ErrorKind::Protocol) => &mut self.protocol,
        };
        *counter += 1;
        self.requests += 1;
    }

    fn add(&mut self, other: &Outcomes) {
        // Destructured so that a new field cannot be forgotten here.
        let Outcomes {
            requests,
            ok,
            status_503,
            other_5xx,
            status_4xx,
            other_status,
            connect,
            timeout,
            closed,
            protocol,
            unsent,
        } = other;
        self.requests += requests;
        self.ok += ok;
        self.status_503 += status_503;
        self.other_5xx += other_5xx;
        self.status_4xx += status_4xx;
        self.other_status += other_status;
        self.connect += connect;
        self.timeout += timeout;
        self.closed += closed;
        self.protocol += protocol;
        self.unsent += unsent;
    }
}

/// One second of the run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SecondStats {
    /// Counts the requests intended in `[second, second + 1)` seconds after the start.
    pub second: u32,
    #[serde(flatten)]
    pub outcomes: Outcomes,
    /// 99th percentile latency of this second's answered requests (any status), from the
    /// intended send time, in µs; `None` when none was answered.
    pub p99_us: Option<u64>,
}

/// All the requests to one target (the players stay with theirs, see README.md).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetStats {
    /// The base URL, as given.
    pub target: String,
    #[serde(flatten)]
    pub outcomes: Outcomes,
}

/// The `players` run second by second and target by target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timeline {
    /// One entry per second of the run, from second 0, none left out (`seconds[n].second
    /// == n`). The last one is partial when the run did not last a whole number of seconds.
    pub seconds: Vec<SecondStats>,
    /// One entry per target, in the order given.
    pub by_target: Vec<TargetStats>,
    /// The whole run.
    pub total: Outcomes,
    /// The first and last second in which any request failed; `None` without errors.
    pub first_error_second: Option<u32>,
    pub last_error_second: Option<u32>,
}

impl Timeline {
    /// The seconds in which any request failed.
    pub fn seconds_with_errors(&self) -> impl Iterator<Item = &SecondStats> {
        self.seconds.iter().filter(|s| s.outcomes.errors() > 0)
    }
}

/// Per-second latencies need far less precision than the run's percentiles (2 digits keep
/// p99 within 1%), and there is one histogram per second and thread: 13 KiB rather than
/// 180 KiB each.
fn second_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, HIGHEST_US, 2).expect("static histogram bounds are valid")
}

#[derive(Clone)]
struct Second {
    outcomes: Outcomes,
    latency: Histogram<u32>,
}

/// Collects the timeline of one load-generator thread; threads' recorders are merged at
/// the end, like their other statistics.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    /// Grown as requests of later seconds come in; the run's duration bounds it.
    seconds: Vec<Second>,
    /// Indexed like the targets.
    targets: Vec<Outcomes>,
}

impl Recorder {
    pub fn new(start: Instant, targets: usize) -> Recorder {
        Recorder {
            start,
            seconds: Vec::new(),
            targets: vec![Outcomes::default(); targets],
        }
    }

    /// Counts a request to target number `target`, in the second of `timing.intended`.
    pub fn record(&mut self, target: usize, timing: &Timing, outcome: Outcome) {
        let second = timing
            .intended
            .saturating_duration_since(self.start)
            .as_secs() as usize;
        if self.seconds.len() <= second {
            self.seconds.resize_with(second + 1, || Second {
                outcomes: Outcomes::default(),
                latency: second_histogram(),
            });
        }
        let entry = &mut self.seconds[second];
        entry.outcomes.count(outcome);
        if let Outcome::Answered(_) = outcome {
            entry.latency.saturating_record(micros(timing.latency()));
        }
        self.targets[target].count(outcome);
    }

    pub fn merge(&mut self, other: &Recorder) {
        for (n, theirs) in other.seconds.iter().enumerate() {
            match self.seconds.get_mut(n) {
                Some(mine) => {
                    mine.outcomes.add(&theirs.outcomes);
                    // Both histograms share their bounds, so adding cannot fail.
                    let _ = mine.latency.add(&theirs.latency);
                }
                None => self.seconds.push(theirs.clone()),
            }
        }
        for (mine, theirs) in self.targets.iter_mut().zip(&other.targets) {
            mine.add(theirs);
        }
    }

    /// The timeline of a run that sent load for `elapsed`, to `targets` (URLs in the
    /// order their indexes were recorded with).
    pub fn timeline(&self, elapsed: Duration, targets: &[String]) -> Timeline {
        let run_seconds = elapsed.as_secs_f64().ceil() as usize;
        let seconds: Vec<SecondStats> = (0..run_seconds.max(self.seconds.len()))
            .map(|n| {
                let (outcomes, p99_us) = match self.seconds.get(n) {
                    Some(s) => (
                        s.outcomes,
                        (!s.latency.is_empty()).then(|| s.latency.value_at_quantile(0.99)),
                    ),
                    None => (Outcomes::default(), None),
                };
                SecondStats {
                    second: n as u32,
                    outcomes,
                    p99_us,
                }
            })
            .collect();
        let mut total = Outcomes::default();
        for s in &seconds {
            total.add(&s.outcomes);
        }
        let mut failing = seconds
            .iter()
            .filter(|s| s.outcomes.errors() > 0)
            .map(|s| s.second);
        let first_error_second = failing.next();
        let last_error_second = failing.next_back().or(first_error_second);
        Timeline {
            by_target: targets
                .iter()
                .zip(&self.targets)
                .map(|(url, outcomes)| TargetStats {
                    target: url.clone(),
                    outcomes: *outcomes,
                })
                .collect(),
            seconds,
            total,
            first_error_second,
            last_error_second,
        }
    }
}

/// The by-target and per-second tables of the report. `other` adds up the rare kinds
/// (1xx/3xx answers and malformed ones); the JSON keeps them apart.
pub fn render(t: &Timeline, out: &mut String) {
    let width = t
        .by_target
        .iter()
        .map(|target| target.target.len())
        .max()
        .unwrap_or(0);
    let _ = writeln!(out, "by target:");
    let _ = writeln!(out, "  {}", header("target", width, false));
    for target in &t.by_target {
        let _ = writeln!(
            out,
            "  {}",
            row(&target.target, width, &target.outcomes, None)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "timeline (each request in the second it was meant to be sent; p99 in ms of those answered):"
    );
    let _ = writeln!(out, "  {}", header("second", 6, true));
    for s in &t.seconds {
        let label = s.second.to_string();
        let _ = writeln!(out, "  {}", row(&label, 6, &s.outcomes, Some(s.p99_us)));
    }
    let _ = match (t.first_error_second, t.last_error_second) {
        (Some(first), Some(last)) => {
            let kinds: Vec<String> = t
                .total
                .errors_by_kind()
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(kind, n)| format!("{kind}={n}"))
                .collect();
            writeln!(
                out,
                "errors from second {first} to {last}: {} ({})",
                t.total.errors(),
                kinds.join(" ")
            )
        }
        _ => writeln!(out, "errors: none"),
    };
}

/// The column names; `p99` only for the seconds.
fn header(label: &str, width: usize, p99: bool) -> String {
    format!(
        "{label:<width$} {:>8} {:>8} {:>6} {:>6} {:>6} {:>8} {:>8} {:>7} {:>6} {:>7} {:>9}",
        "requests",
        "ok",
        "503",
        "5xx",
        "4xx",
        "connect",
        "timeout",
        "closed",
        "other",
        "unsent",
        if p99 { "p99" } else { "" }
    )
    .trim_end()
    .to_owned()
}

/// `p99`: `None` leaves the column out (targets), `Some(None)` shows that nothing was
/// answered.
fn row(label: &str, width: usize, o: &Outcomes, p99: Option<Option<u64>>) -> String {
    let p99 = match p99 {
        None => String::new(),
        Some(None) => "-".to_owned(),
        Some(Some(us)) => format!("{:.3}", us as f64 / 1000.0),
    };
    format!(
        "{label:<width$} {:>8} {:>8} {:>6} {:>6} {:>6} {:>8} {:>8} {:>7} {:>6} {:>7} {p99:>9}",
        o.requests,
        o.ok,
        o.status_503,
        o.other_5xx,
        o.status_4xx,
        o.connect,
        o.timeout,
        o.closed,
        o.protocol + o.other_status,
        o.unsent,
    )
    .trim_end()
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request intended `at_ms` after `t0` and answered (or not) `took_ms` later.
    fn timing(t0: Instant, at_ms: u64, took_ms: u64) -> Timing {
        let intended = t0 + Duration::from_millis(at_ms);
        Timing {
            intended,
            started: intended,
            finished: intended + Duration::from_millis(took_ms),
        }
    }

    #[test]
    fn every_outcome_has_its_counter() {
        let mut o = Outcomes::default();
        for outcome in [
            Outcome::Answered(200),
            Outcome::Answered(204),
            Outcome::Answered(503),
            Outcome::Answered(500),
            Outcome::Answered(502),
            Outcome::Answered(404),
            Outcome::Answered(302),
            Outcome::Failed(ErrorKind::Connect),
            Outcome::Failed(ErrorKind::Timeout),
            Outcome::Failed(ErrorKind::Closed),
            Outcome::Failed(ErrorKind::Protocol),
            Outcome::Unsent,
        ] {
            o.count(outcome);
        }
        let expected = Outcomes {
            requests: 11,
            ok: 2,
            status_503: 1,
            other_5xx: 2,
            status_4xx: 1,
            other_status: 1,
            connect: 1,
            timeout: 1,
            closed: 1,
            protocol: 1,
            unsent: 1,
        };
        assert_eq!(o, expected);
        assert_eq!(o.errors(), 9);
        let by_kind: u64 = o.errors_by_kind().iter().map(|(_, n)| n).sum();
        assert_eq!(by_kind, o.errors());
        let mut twice = o;
        twice.add(&o);
        assert_eq!(twice.requests, 22);
        assert_eq!(twice.unsent, 2);
    }

    /// Two threads' recorders: requests land in the second they were meant for, targets
    /// are counted apart, and an outage in seconds 2 and 3 shows as such.
    #[test]
    fn seconds_and_targets_of_a_merged_run() {
        let t0 = Instant::now();
        let mut a = Recorder::new(t0, 2);
        let mut b = Recorder::new(t0, 2);
        for ms in (0..5_000).step_by(100) {
            // Target 0 answers throughout, in 1 ms; a slow answer once per second.
            let took = if ms % 1_000 == 900 { 40 } else { 1 };
            a.record(0, &timing(t0, ms, took), Outcome::Answered(200));
            // Target 1 is refused during seconds 2 and 3, then answers 503 once.
            let outcome = match ms {
                2_000..4_000 => Outcome::Failed(ErrorKind::Connect),
                4_000 => Outcome::Answered(503),
                _ => Outcome::Answered(200),
            };
            b.record(1, &timing(t0, ms, 1), outcome);
        }
        // Meant for second 4, timed out long after: still second 4.
        b.record(
            1,
            &timing(t0, 4_950, 5_000),
            Outcome::Failed(ErrorKind::Timeout),
        );
        a.merge(&b);
        let urls = [
            "http://127.0.0.1:1".to_owned(),
            "http://127.0.0.1:2".to_owned(),
        ];
        let t = a.timeline(Duration::from_millis(5_000), &urls);

        assert_eq!(t.seconds.len(), 5);
        for (n, s) in t.seconds.iter().enumerate() {
            assert_eq!(s.second as usize, n);
        }
        let s0 = &t.seconds[0].outcomes;
        assert_eq!((s0.requests, s0.ok, s0.errors()), (20, 20, 0));
        // 20 answers in the second, one of which took 40 ms: p99 is that one.
        assert_eq!(t.seconds[0].p99_us.map(|us| us / 1_000), Some(40));
        for s in &t.seconds[2..4] {
            assert_eq!((s.outcomes.ok, s.outcomes.connect), (10, 10));
        }
        let s4 = &t.seconds[4].outcomes;
        assert_eq!((s4.requests, s4.status_503, s4.timeout), (21, 1, 1));
        assert_eq!(t.first_error_second, Some(2));
        assert_eq!(t.last_error_second, Some(4));
        assert_eq!(
            t.seconds_with_errors()
                .map(|s| s.second)
                .collect::<Vec<_>>(),
            [2, 3, 4]
        );

        assert_eq!(t.by_target[0].target, urls[0]);
        assert_eq!(t.by_target[0].outcomes.ok, 50);
        assert_eq!(t.by_target[0].outcomes.errors(), 0);
        let to_1 = &t.by_target[1].outcomes;
        assert_eq!((to_1.requests, to_1.connect, to_1.status_503), (51, 20, 1));
        assert_eq!(t.total.requests, 101);
        assert_eq!(t.total.errors(), 22);

        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["seconds"][2]["second"], 2);
        assert_eq!(json["seconds"][2]["connect"], 10);
        assert_eq!(json["by_target"][1]["status_503"], 1);
        assert_eq!(json["first_error_second"], 2);

        let mut text = String::new();
        render(&t, &mut text);
        assert!(text.contains("errors from second 2 to 4: 22 (503=1 connect=20 timeout=1)"));
        assert!(text.contains("http://127.0.0.1:2"), "{text}");
    }

    #[test]
    fn seconds_without_requests_are_listed_too() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0, 1);
        r.record(0, &timing(t0, 1_500, 1), Outcome::Answered(200));
        // Stopped 3.2 s in: seconds 0 to 3, the last one partial.
        let t = r.timeline(Duration::from_millis(3_200), &["u".to_owned()]);
        let requests: Vec<u64> = t.seconds.iter().map(|s| s.outcomes.requests).collect();
        assert_eq!(requests, [0, 1, 0, 0]);
        assert_eq!(t.seconds[0].p99_us, None);
        assert_eq!(t.first_error_second, None);
        let mut text = String::new();
        render(&t, &mut text);
        assert!(text.ends_with("errors: none\n"), "{text}");
    }
}
