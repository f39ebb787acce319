//! `players`: open-loop simulation of viewers watching video.
//!
//! Each viewer watches 1 to 3 streams. Every stream heartbeats and reports progress on its
//! own fixed period, and each viewer now and then adds or removes a title from its
//! watchlist. The schedule decides when each request is due, whatever the server does: a
//! slow server makes requests queue and start late (and that wait counts in their latency),
//! it does not slow the offered load down. That is what makes "did it keep up" answerable.
//!
//! Each viewer talks to one target only (viewer `v` to target `v % targets`), as a real
//! player stays on the node it reached, and keeps to its schedule whatever that node
//! answers: refused connections, timeouts and 5xx are counted and the next request goes out
//! on time, to the same node. So when a node dies, the timeline shows its viewers failing
//! while the others' requests go on.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, Uri};
use tokio::sync::Notify;

use crate::client::{Conn, Req, header_value};
use crate::ids;
use crate::runner::{Control, ShardStats, connections_of, finish_shard};
use crate::schedule::{Fire, Schedule, random_phase};
use crate::stats::{ErrorKind, Live, Timing};
use crate::target::Target;
use crate::timeline::{Outcome, Recorder};

pub const OPS: [&str; 4] = ["heartbeat", "progress", "watchlist-put", "watchlist-delete"];
const HEARTBEAT: usize = 0;
const PROGRESS: usize = 1;
const WATCHLIST_PUT: usize = 2;
const WATCHLIST_DELETE: usize = 3;

/// Everything a thread needs to build its viewers.
#[derive(Clone, Debug)]
pub struct Plan {
    pub viewers: u64,
    /// Intervals after `--speedup`.
    pub heartbeat_every: Duration,
    pub progress_every: Option<Duration>,
    /// Share of all requests that are watchlist edits; 0 for none.
    pub watchlist_share: f64,
    /// Simulated seconds of content watched between two progress reports (the interval
    /// before speed-up), so progress rises as a real player's would.
    pub progress_step: u64,
    pub late_threshold: Duration,
    pub prefix: String,
    pub seed: u64,
    pub connections: u32,
    pub targets: Vec<Target>,
}

struct Stream {
    heartbeat: Req,
    progress_uri: Uri,
    /// Last progress reported, seconds into the asset.
    position: u64,
}

struct Viewer {
    /// Index in `Plan::targets` of the one node this viewer talks to.
    target: usize,
    authorization: HeaderValue,
    streams: Vec<Stream>,
    /// Two titles the viewer keeps adding to and removing from its watchlist.
    watchlist: [Uri; 2],
    watchlist_edits: u64,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Timer {
    Heartbeat { viewer: u32, stream: u8 },
    Progress { viewer: u32, stream: u8 },
    Watchlist { viewer: u32 },
}

impl Timer {
    fn viewer(self) -> u32 {
        match self {
            Timer::Heartbeat { viewer, .. }
            | Timer::Progress { viewer, .. }
            | Timer::Watchlist { viewer } => viewer,
        }
    }
}

/// The viewers of one thread and the schedule of their requests.
pub struct Population {
    viewers: Vec<Viewer>,
    timers: Vec<Timer>,
    pub schedule: Schedule,
    progress_step: u64,
}

impl Population {
    /// Builds the viewers `first, first + stride, ...` below `plan.viewers`. Each viewer's
    /// shape comes from a generator seeded by its own number, so the population does not
    /// depend on how it is split across threads.
    pub fn build(plan: &Plan, first: u64, stride: u64) -> Population {
        let mut population = Population {
            viewers: Vec::new(),
            timers: Vec::new(),
            schedule: Schedule::new(),
            progress_step: plan.progress_step,
        };
        for v in (first..plan.viewers).step_by(stride.max(1) as usize) {
            population.add_viewer(plan, v);
        }
        population
    }

    fn add_viewer(&mut self, plan: &Plan, v: u64) {
        let mut rng = fastrand::Rng::with_seed(ids::mix(plan.seed ^ v.rotate_left(17)));
        let local = u32::try_from(self.viewers.len()).expect("fewer than 2^32 viewers per thread");
        let user = format!("{}-v{v}", plan.prefix);
        let authorization = header_value(ids::authorization(&user));
        let stream_count = rng.u8(1..=3);
        let mut streams = Vec::with_capacity(stream_count.into());
        for s in 0..stream_count {
            let asset = ids::uuid(&mut rng);
            let body = serde_json::json!({ "streamId": asset }).to_string();
            let heartbeat = Req::new(
                Method::PUT,
                format!("/v1/streams/{user}-s{s}"),
                Some(authorization.clone()),
                Bytes::from(body),
            );
            streams.push(Stream {
                heartbeat,
                progress_uri: path(format!("/v1/progress/{asset}")),
                position: rng.u64(0..3_600),
            });
            self.add_timer(
                Timer::Heartbeat {
                    viewer: local,
                    stream: s,
                },
                plan.heartbeat_every,
                &mut rng,
            );
            if let Some(every) = plan.progress_every {
                self.add_timer(
                    Timer::Progress {
                        viewer: local,
                        stream: s,
                    },
                    every,
                    &mut rng,
                );
            }
        }
        if plan.watchlist_share > 0.0 {
            // Give the viewer a watchlist timer whose rate is `share` of all its requests:
            // w / (r + w) = share  =>  w = r * share / (1 - share).
            let per_stream = 1.0 / plan.heartbeat_every.as_secs_f64()
                + plan.progress_every.map_or(0.0, |p| 1.0 / p.as_secs_f64());
            let rate = f64::from(stream_count) * per_stream;
            let watch_rate = rate * plan.watchlist_share / (1.0 - plan.watchlist_share);
            let every = Duration::from_secs_f64((1.0 / watch_rate).min(1e9));
            self.add_timer(Timer::Watchlist { viewer: local }, every, &mut rng);
        }
        let watchlist = [
            path(format!("/v1/watchlist/{}", ids::uuid(&mut rng))),
            path(format!("/v1/watchlist/{}", ids::uuid(&mut rng))),
        ];
        self.viewers.push(Viewer {
            target: (v % plan.targets.len().max(1) as u64) as usize,
            authorization,
            streams,
            watchlist,
            watchlist_edits: 0,
        });
    }

    fn add_timer(&mut self, timer: Timer, every: Duration, rng: &mut fastrand::Rng) {
        let phase = random_phase(rng, every);
        self.schedule.add(every, phase);
        self.timers.push(timer);
    }

    /// The targets (indexes in `Plan::targets`, of `targets`) this population's viewers
    /// talk to, each once.
    fn targets_in_use(&self, targets: usize) -> Vec<usize> {
        let mut used = vec![false; targets];
        for viewer in &self.viewers {
            used[viewer.target] = true;
        }
        (0..targets).filter(|t| used[*t]).collect()
    }

    /// The request a due timer sends, to whom, and when it is meant to go out in a run
    /// that started at `start`.
    fn request(&mut self, fire: Fire, start: Instant) -> Job {
        let viewer = self.timers[fire.timer as usize].viewer();
        let (op, req) = self.operation(fire);
        Job {
            op,
            target: self.viewers[viewer as usize].target,
            req,
            intended: start + fire.at,
        }
    }

    /// The operation a due timer sends, and its request.
    fn operation(&mut self, fire: Fire) -> (usize, Req) {
        match self.timers[fire.timer as usize] {
            Timer::Heartbeat { viewer, stream } => (
                HEARTBEAT,
                self.viewers[viewer as usize].streams[stream as usize]
                    .heartbeat
                    .clone(),
            ),
            Timer::Progress { viewer, stream } => {
                let viewer = &mut self.viewers[viewer as usize];
                let stream = &mut viewer.streams[stream as usize];
                stream.position += self.progress_step;
                let body = format!(r#"{{"progress":{}}}"#, stream.position);
                let req = Req {
                    method: Method::PUT,
                    uri: stream.progress_uri.clone(),
                    authorization: Some(viewer.authorization.clone()),
                    body: Bytes::from(body),
                };
                (PROGRESS, req)
            }
            Timer::Watchlist { viewer } => {
                let viewer = &mut self.viewers[viewer as usize];
                let n = viewer.watchlist_edits;
                viewer.watchlist_edits += 1;
                // Add a title, remove it next time, then the other title: the list stays
                // small and every edit is a real change.
                let (op, method) = if n.is_multiple_of(2) {
                    (WATCHLIST_PUT, Method::PUT)
                } else {
                    (WATCHLIST_DELETE, Method::DELETE)
                };
                let req = Req {
                    method,
                    uri: viewer.watchlist[(n / 2 % 2) as usize].clone(),
                    authorization: Some(viewer.authorization.clone()),
                    body: Bytes::new(),
                };
                (op, req)
            }
        }
    }
}

fn path(p: String) -> Uri {
    Uri::try_from(p).expect("paths built from UUIDs are valid")
}

struct Job {
    op: usize,
    /// Index in `Plan::targets`: the viewer's node.
    target: usize,
    req: Req,
    intended: Instant,
}

/// The jobs of one thread, due but not yet picked up by a connection.
#[derive(Default)]
struct Queue {
    jobs: RefCell<VecDeque<Job>>,
    ready: Notify,
    closed: Cell<bool>,
}

impl Queue {
    fn push(&self, job: Job) {
        self.jobs.borrow_mut().push_back(job);
        self.ready.notify_one();
    }

    fn close(&self) {
        self.closed.set(true);
        self.ready.notify_waiters();
    }

    async fn pop(&self) -> Option<Job> {
        loop {
            if let Some(job) = self.jobs.borrow_mut().pop_front() {
                return Some(job);
            }
            if self.closed.get() {
                return None;
            }
            // Single-threaded: nothing can push between the check above and this wait.
            self.ready.notified().await;
        }
    }
}

/// One load-generator thread: the schedule of its viewers, and its connections working
/// through the due requests. Each target has a queue of its own and the thread's
/// connections are dealt round-robin over the targets its viewers use, so a dead node's
/// requests only hold up the connections to that node.
pub async fn shard(
    plan: Arc<Plan>,
    population: Population,
    ctl: Arc<Control>,
    index: usize,
    threads: usize,
) -> ShardStats {
    let mut stats = ShardStats::new(OPS.len(), true);
    stats.timeline = Some(Recorder::new(ctl.start, plan.targets.len()));
    let stats = Rc::new(RefCell::new(stats));
    let queues: Vec<Rc<Queue>> = plan.targets.iter().map(|_| Rc::default()).collect();
    // Enough connections for every target in use: `lib::start` gives each thread at least
    // as many connections as there are targets.
    let targets = population.targets_in_use(plan.targets.len());
    let workers: Vec<_> = connections_of(index, threads, plan.connections)
        .zip(targets.iter().cycle())
        .map(|(_, &target)| {
            let (plan, ctl, stats, queue) = (
                plan.clone(),
                ctl.clone(),
                stats.clone(),
                queues[target].clone(),
            );
            tokio::task::spawn_local(
                async move { worker(&plan, &ctl, target, &queue, &stats).await },
            )
        })
        .collect();
    dispatch(population, &ctl, &queues, &stats).await;
    finish_shard(workers, stats).await
}

/// Hands each request to its target's connections when it is due, until the run ends.
async fn dispatch(
    mut population: Population,
    ctl: &Control,
    queues: &[Rc<Queue>],
    stats: &RefCell<ShardStats>,
) {
    'run: loop {
        let now = Instant::now();
        // Requests due at or after the end (the deadline, or when the run was stopped)
        // belong to no run.
        let last = ctl
            .end()
            .saturating_duration_since(ctl.start)
            .saturating_sub(Duration::from_nanos(1));
        let horizon = now.saturating_duration_since(ctl.start).min(last);
        let mut scheduled = 0;
        while let Some(fire) = population.schedule.pop_due(horizon) {
            if !ctl.take_permit() {
                break 'run;
            }
            let job = population.request(fire, ctl.start);
            queues[job.target].push(job);
            scheduled += 1;
        }
        stats.borrow_mut().scheduled += scheduled;
        Live::add(&ctl.live.scheduled, scheduled);
        // Checked after dispatching, so requests due just before the deadline are not
        // lost to the timer waking just after it.
        if ctl.should_stop(now) {
            break;
        }
        // Wake for the next due request, and at least every 100 ms to notice a stop.
        let next = population
            .schedule
            .next_due()
            .map_or(ctl.deadline, |d| ctl.start + d)
            .min(now + Duration::from_millis(100))
            .min(ctl.deadline);
        tokio::time::sleep_until(next).await;
    }
    for queue in queues {
        queue.close();
    }
}

/// One connection to `target`, sending its queue's jobs one after the other. Nothing that
/// goes wrong with a request ends the loop: it is counted, and the next job gets a new
/// connection if this one is gone.
async fn worker(
    plan: &Plan,
    ctl: &Control,
    target: usize,
    queue: &Queue,
    stats: &RefCell<ShardStats>,
) {
    let late = plan.late_threshold;
    let mut conn: Option<Conn> = None;
    while let Some(job) = queue.pop().await {
        let now = Instant::now();
        let not_sent = Timing {
            intended: job.intended,
            started: now,
            finished: now,
        };
        if ctl.is_over(now, late) {
            // The run is over: what is still queued was offered but never sent.
            record(ctl, stats, &job, &not_sent, Outcome::Unsent, late);
            continue;
        }
        let c = match conn.as_mut() {
            Some(c) if c.is_open() => c,
            _ => match Conn::connect(&plan.targets[target], ctl.timeout).await {
                Ok(c) => conn.insert(c),
                Err(kind) => {
                    // No pause before the next attempt, unlike the closed loop: the next
                    // job is not due before its time anyway, and a player whose node is
                    // down keeps trying on its schedule.
                    record(ctl, stats, &job, &not_sent, Outcome::Failed(kind), late);
                    continue;
                }
            },
        };
        let started = Instant::now();
        let result = c.send(&job.req, ctl.timeout).await;
        let timing = Timing {
            intended: job.intended,
            started,
            finished: Instant::now(),
        };
        let outcome = match result {
            Ok(status) => Outcome::Answered(status),
            Err(kind) => {
                debug_assert_ne!(kind, ErrorKind::Connect);
                Outcome::Failed(kind)
            }
        };
        record(ctl, stats, &job, &timing, outcome, late);
    }
}

/// Counts what became of `job` in its operation's statistics, the timeline and the live
/// counters.
fn record(
    ctl: &Control,
    stats: &RefCell<ShardStats>,
    job: &Job,
    timing: &Timing,
    outcome: Outcome,
    late: Duration,
) {
    let mut stats = stats.borrow_mut();
    let stats = &mut *stats;
    if let Some(timeline) = &mut stats.timeline {
        timeline.record(job.target, timing, outcome);
    }
    let op = &mut stats.ops[job.op];
    match outcome {
        Outcome::Unsent => {
            stats.unsent += 1;
            return;
        }
        Outcome::Answered(status) => {
            op.sent += 1;
            op.record_response(status, timing, late);
            Live::add(&ctl.live.responses, 1);
        }
        // A connection that could not be opened carried no request.
        Outcome::Failed(ErrorKind::Connect) => {
            stats.connect_errors += 1;
            op.record_error(ErrorKind::Connect, Some(timing), late);
            Live::add(&ctl.live.errors, 1);
        }
        Outcome::Failed(kind) => {
            op.sent += 1;
            op.record_error(kind, Some(timing), late);
            Live::add(&ctl.live.errors, 1);
        }
    }
    if timing.start_delay() > late {
        Live::add(&ctl.live.late, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(viewers: u64, progress: bool, watchlist_share: f64) -> Plan {
        Plan {
            viewers,
            heartbeat_every: Duration::from_secs(1),
            progress_every: progress.then(|| Duration::from_millis(250)),
            watchlist_share,
            progress_step: 5,
            late_threshold: Duration::from_millis(10),
            prefix: "p".into(),
            seed: 1,
            connections: 4,
            targets: Vec::new(),
        }
    }

    fn drain(pop: &mut Population, until: Duration) -> Vec<(usize, Req, Duration)> {
        let mut out = Vec::new();
        while let Some(fire) = pop.schedule.pop_due(until) {
            let (op, req) = pop.operation(fire);
            out.push((op, req, fire.at));
        }
        out
    }

    #[test]
    fn each_viewer_sticks_to_one_target() {
        let mut p = plan(30, true, 0.0);
        p.targets = (1..=3)
            .map(|port| crate::target::parse(&format!("http://127.0.0.1:{port}")).unwrap())
            .collect();
        // Thread 1 of 2: viewers 1, 3, 5, ... which between them use every target.
        let mut pop = Population::build(&p, 1, 2);
        assert_eq!(pop.targets_in_use(3), [0, 1, 2]);
        let start = Instant::now();
        let mut heartbeats = 0;
        while let Some(fire) = pop.schedule.pop_due(Duration::from_secs(3)) {
            let job = pop.request(fire, start);
            assert_eq!(job.intended, start + fire.at);
            let Some(session) = job.req.uri.path().strip_prefix("/v1/streams/p-v") else {
                continue;
            };
            let viewer: usize = session.split('-').next().unwrap().parse().unwrap();
            assert_eq!(job.target, viewer % 3, "{session}");
            heartbeats += 1;
        }
        assert!(heartbeats >= 15 * 3, "every viewer heartbeats every second");
        // Thread 0 of 3 has viewers 0, 3, 6, ...: all on target 0.
        assert_eq!(Population::build(&p, 0, 3).targets_in_use(3), [0]);
    }

    #[test]
    fn viewers_watch_one_to_three_streams() {
        let pop = Population::build(&plan(3_000, false, 0.0), 0, 1);
        let mut counts = [0; 4];
        for v in &pop.viewers {
            counts[v.streams.len()] += 1;
        }
        assert_eq!(counts[0], 0);
        assert!(
            counts[1..].iter().all(|c| (800..1_200).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn the_population_does_not_depend_on_threads() {
        let p = plan(100, true, 0.01);
        let whole = Population::build(&p, 0, 1);
        let halves = [Population::build(&p, 0, 2), Population::build(&p, 1, 2)];
        let rate: f64 = halves.iter().map(|h| h.schedule.nominal_rate()).sum();
        assert!((rate - whole.schedule.nominal_rate()).abs() < 1e-6);
        assert_eq!(
            whole.viewers[1].streams[0].heartbeat.uri,
            halves[1].viewers[0].streams[0].heartbeat.uri
        );
    }

    #[test]
    fn offers_the_expected_mix_over_a_window() {
        // 1 heartbeat/s and 4 progress/s per stream; watchlist edits are 1% of requests.
        let p = plan(1_000, true, 0.01);
        let mut pop = Population::build(&p, 0, 1);
        let streams: usize = pop.viewers.iter().map(|v| v.streams.len()).sum();
        let expected = streams as f64 * 5.0 / 0.99;
        assert!((pop.schedule.nominal_rate() - expected).abs() < 1e-6 * expected);

        let events = drain(&mut pop, Duration::from_secs(10) - Duration::from_nanos(1));
        let count = |op| events.iter().filter(|e| e.0 == op).count();
        // Every stream timer fires exactly once per period over a whole number of periods.
        assert_eq!(count(HEARTBEAT), streams * 10);
        assert_eq!(count(PROGRESS), streams * 40);
        let edits = (count(WATCHLIST_PUT) + count(WATCHLIST_DELETE)) as f64;
        let share = edits / events.len() as f64;
        assert!((0.008..0.012).contains(&share), "watchlist share {share}");
        assert!(count(WATCHLIST_PUT) >= count(WATCHLIST_DELETE));
        assert!(events.windows(2).all(|w| w[0].2 <= w[1].2), "in time order");
    }

    #[test]
    fn progress_rises_by_the_simulated_interval() {
        let p = plan(1, true, 0.0);
        let mut pop = Population::build(&p, 0, 1);
        let start = pop.viewers[0].streams[0].position;
        let events = drain(&mut pop, Duration::from_secs(2));
        let first_stream = pop.viewers[0].streams[0].progress_uri.clone();
        let positions: Vec<u64> = events
            .iter()
            .filter(|e| e.0 == PROGRESS && e.1.uri == first_stream)
            .map(|e| {
                let body: serde_json::Value = serde_json::from_slice(&e.1.body).unwrap();
                body["progress"].as_u64().unwrap()
            })
            .collect();
        assert!(positions.len() >= 8);
        for (i, pos) in positions.iter().enumerate() {
            assert_eq!(*pos, start + 5 * (i as u64 + 1));
        }
        let req = &events.iter().find(|e| e.0 == PROGRESS).unwrap().1;
        assert_eq!(req.method, Method::PUT);
        let asset = req.uri.path().strip_prefix("/v1/progress/").unwrap();
        assert_eq!(asset.len(), 36);
        assert!(req.authorization.is_some());
    }

    #[test]
    fn watchlist_edits_alternate_put_and_delete_of_the_same_title() {
        let mut p = plan(1, false, 0.5);
        p.heartbeat_every = Duration::from_millis(10);
        let mut pop = Population::build(&p, 0, 1);
        let edits: Vec<(usize, Req)> = drain(&mut pop, Duration::from_secs(1))
            .into_iter()
            .filter(|e| e.0 >= WATCHLIST_PUT)
            .map(|e| (e.0, e.1))
            .collect();
        assert!(edits.len() >= 8);
        for pair in edits.chunks_exact(2) {
            assert_eq!((pair[0].0, pair[1].0), (WATCHLIST_PUT, WATCHLIST_DELETE));
            assert_eq!(pair[0].1.method, Method::PUT);
            assert_eq!(pair[1].1.method, Method::DELETE);
            assert_eq!(pair[0].1.uri, pair[1].1.uri);
            assert!(pair[0].1.uri.path().starts_with("/v1/watchlist/"));
        }
    }

    #[test]
    fn without_progress_or_watchlist_only_heartbeats_are_sent() {
        let p = plan(50, false, 0.0);
        let mut pop = Population::build(&p, 0, 1);
        let events = drain(&mut pop, Duration::from_secs(3));
        assert!(!events.is_empty());
        assert!(events.iter().all(|e| e.0 == HEARTBEAT));
        let req = &events[0].1;
        assert!(req.uri.path().starts_with("/v1/streams/p-v"));
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["streamId"].as_str().unwrap().len(), 36);
    }

    /// The dispatcher, a queue and slow "connections" on a paused clock: requests are
    /// stamped with their scheduled time, not when a connection got to them.
    #[tokio::test(start_paused = true)]
    async fn jobs_carry_their_intended_time() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let p = plan(20, false, 0.0);
                let pop = Population::build(&p, 0, 1);
                let expected = 20 * pop.viewers.iter().map(|v| v.streams.len()).sum::<usize>();
                let ctl = Control::new(Duration::from_secs(20), u64::MAX, Duration::from_secs(1));
                let queue = Rc::new(Queue::default());
                let stats = RefCell::new(ShardStats::new(OPS.len(), true));
                let consumer = async {
                    let mut seen = Vec::new();
                    while let Some(job) = queue.pop().await {
                        // Fall behind: one job per 50 ms, whatever the schedule.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        seen.push(job.intended);
                    }
                    seen
                };
                let ((), seen) = tokio::join!(
                    dispatch(pop, &ctl, std::slice::from_ref(&queue), &stats),
                    consumer
                );
                assert_eq!(stats.borrow().scheduled as usize, expected);
                assert_eq!(seen.len(), expected);
                assert!(seen.windows(2).all(|w| w[0] <= w[1]));
                assert!(seen.iter().all(|t| *t < ctl.deadline));
            })
            .await;
    }
}
