//! The summary of a run: built once from the merged statistics, printed for people and
//! written as JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::runner::ShardStats;
use crate::server_stats::Usage;
use crate::stats::{ErrorKind, OpStats, Percentiles};
use crate::timeline::{self, Timeline};

#[derive(Serialize, Debug)]
pub struct Summary {
    pub scenario: &'static str,
    pub targets: Vec<String>,
    pub connections: u32,
    pub threads: u32,
    /// The `--duration` asked for.
    pub duration_s: f64,
    /// How long load was actually sent.
    pub elapsed_s: f64,
    /// "duration", "max-requests", "interrupted" (Ctrl-C) or "stopped" (`Running::stop`).
    pub stopped_by: &'static str,
    /// Requests put on a connection.
    pub requests: u64,
    /// Requests that got an HTTP response (any status).
    pub responses: u64,
    /// Responses per second.
    pub rate_per_s: f64,
    pub operations: BTreeMap<String, OpSummary>,
    /// Responses by status over all operations.
    pub statuses: BTreeMap<String, u64>,
    /// Transport errors by kind, including failed connects.
    pub errors: BTreeMap<String, u64>,
    pub transport_errors: u64,
    pub open_loop: Option<OpenLoop>,
    /// Players only: what became of the requests second by second and target by target.
    pub timeline: Option<Timeline>,
    /// Each server process watched (`--server-pid`, once per node).
    pub servers: Vec<ServerUsage>,
    /// CPU-seconds of all watched servers per 1,000 responses: what a request costs the
    /// nodes, comparable between one node and a cluster.
    pub server_cpu_seconds_per_1000: Option<f64>,
    /// This load generator's own CPU and memory (it shares the machine with the server).
    pub loadgen: Option<Usage>,
}

#[derive(Serialize, Debug, Clone)]
pub struct ServerUsage {
    pub pid: u32,
    pub usage: Usage,
}

/// CPU-seconds of `servers` per 1,000 responses, when both are known.
pub fn cpu_per_1000(servers: &[ServerUsage], responses: u64) -> Option<f64> {
    if servers.is_empty() || responses == 0 {
        return None;
    }
    let cpu: f64 = servers.iter().map(|s| s.usage.cpu_seconds).sum();
    Some(cpu * 1000.0 / responses as f64)
}

#[derive(Serialize, Debug)]
pub struct OpSummary {
    pub requests: u64,
    pub responses: u64,
    pub rate_per_s: f64,
    /// From the intended send time when open-loop, from the actual send otherwise.
    pub latency_us: Percentiles,
    /// Open loop only: from the actual send.
    pub service_time_us: Option<Percentiles>,
    pub statuses: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    /// Open loop only: started later than the threshold.
    pub late: Option<u64>,
}

impl Summary {
    /// Responses to `operation` (a key of `operations`) with HTTP status `status`.
    pub fn count(&self, operation: &str, status: u16) -> u64 {
        self.operations
            .get(operation)
            .map_or(0, |op| op.count(status))
    }
}

impl OpSummary {
    /// Responses with HTTP status `status`.
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status.to_string()).copied().unwrap_or(0)
    }
}

/// Did the server keep up with a fixed offered rate.
#[derive(Serialize, Debug)]
pub struct OpenLoop {
    /// What the simulated population offers on paper.
    pub nominal_rate_per_s: f64,
    /// Requests the schedule produced during the run, per second.
    pub offered_rate_per_s: f64,
    /// Responses per second.
    pub achieved_rate_per_s: f64,
    pub scheduled: u64,
    pub sent: u64,
    /// Scheduled but never sent: the backlog left when the run ended.
    pub unsent: u64,
    pub late: u64,
    pub late_threshold_us: u64,
    /// `late / sent`.
    pub late_share: f64,
    /// Fewer than 1% of requests late and under 0.1% left unsent.
    pub kept_up: bool,
}

/// What the run was, besides what it measured.
pub struct RunInfo {
    pub scenario: &'static str,
    pub op_names: &'static [&'static str],
    pub targets: Vec<String>,
    pub connections: u32,
    pub threads: u32,
    pub duration: Duration,
    pub elapsed: Duration,
    pub stopped_by: &'static str,
    /// Open loop: nominal rate and late threshold.
    pub open_loop: Option<(f64, Duration)>,
    pub servers: Vec<ServerUsage>,
    pub loadgen: Option<Usage>,
}

fn rate(n: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        0.0
    } else {
        n as f64 / elapsed.as_secs_f64()
    }
}

fn keyed<K: ToString>(map: impl IntoIterator<Item = (K, u64)>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (k, n) in map {
        *out.entry(k.to_string()).or_default() += n;
    }
    out
}

fn errors_of(op: &OpStats) -> BTreeMap<String, u64> {
    keyed(op.errors.iter().map(|(k, n)| (k.as_str(), *n)))
}

pub fn summarize(info: RunInfo, stats: &ShardStats) -> Summary {
    let mut operations = BTreeMap::new();
    let mut all = OpStats::new(false);
    for (name, op) in info.op_names.iter().zip(&stats.ops) {
        all.merge(op);
        // An operation that was never scheduled (e.g. --no-progress) is left out.
        if op.sent == 0 && op.all_errors() == 0 {
            continue;
        }
        operations.insert(
            (*name).to_owned(),
            OpSummary {
                requests: op.sent,
                responses: op.responses(),
                rate_per_s: rate(op.responses(), info.elapsed),
                latency_us: Percentiles::of(&op.latency),
                service_time_us: op.service.as_ref().map(Percentiles::of),
                statuses: keyed(op.statuses.iter().map(|(s, n)| (s, *n))),
                errors: errors_of(op),
                late: info.open_loop.map(|_| op.late),
            },
        );
    }
    // In an open loop a failed connect costs a scheduled request and is already counted
    // under its operation; in a closed loop it is counted only here.
    let mut errors = errors_of(&all);
    if info.open_loop.is_none() && stats.connect_errors > 0 {
        *errors
            .entry(ErrorKind::Connect.as_str().into())
            .or_default() += stats.connect_errors;
    }
    let transport_errors = errors.values().sum();
    let responses = all.responses();
    let open_loop = info.open_loop.map(|(nominal, threshold)| {
        let late_share = if all.sent == 0 {
            0.0
        } else {
            all.late as f64 / all.sent as f64
        };
        OpenLoop {
            nominal_rate_per_s: nominal,
            offered_rate_per_s: rate(stats.scheduled, info.elapsed),
            achieved_rate_per_s: rate(responses, info.elapsed),
            scheduled: stats.scheduled,
            sent: all.sent,
            unsent: stats.unsent,
            late: all.late,
            late_threshold_us: threshold.as_micros() as u64,
            late_share,
            kept_up: stats.scheduled > 0
                && late_share < 0.01
                && stats.unsent * 1000 <= stats.scheduled,
        }
    });
    let timeline = stats
        .timeline
        .as_ref()
        .map(|recorder| recorder.timeline(info.elapsed, &info.targets));
    Summary {
        scenario: info.scenario,
        targets: info.targets,
        connections: info.connections,
        threads: info.threads,
        duration_s: info.duration.as_secs_f64(),
        elapsed_s: info.elapsed.as_secs_f64(),
        stopped_by: info.stopped_by,
        requests: all.sent,
        responses,
        rate_per_s: rate(responses, info.elapsed),
        operations,
        statuses: keyed(all.statuses.iter().map(|(s, n)| (s, *n))),
        errors,
        transport_errors,
        open_loop,
        timeline,
        server_cpu_seconds_per_1000: cpu_per_1000(&info.servers, responses),
        servers: info.servers,
        loadgen: info.loadgen,
    }
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn counts(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn usage_line(u: &Usage) -> String {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut line = format!(
        "peak RSS {:.1} MiB (start {:.1}, end {:.1}, lifetime peak {:.1}), CPU {:.2} s = {:.2} cores",
        mib(u.peak_rss_kib),
        mib(u.start_rss_kib),
        mib(u.end_rss_kib),
        mib(u.hwm_kib),
        u.cpu_seconds,
        u.cpu_cores
    );
    if u.exited {
        line.push_str(" [process exited during the run]");
    }
    line
}

/// The report for a terminal.
pub fn render(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "loadtest {}: {} for {:.2} s (stopped by {}), {} connections on {} threads",
        s.scenario,
        s.targets.join(", "),
        s.elapsed_s,
        s.stopped_by,
        s.connections,
        s.threads
    );
    let _ = writeln!(
        out,
        "{} requests, {} responses, {:.0} responses/s",
        s.requests, s.responses, s.rate_per_s
    );
    let _ = writeln!(out);
    let what = if s.open_loop.is_some() {
        "latency from intended send time, ms"
    } else {
        "latency, ms"
    };
    let _ = writeln!(
        out,
        "{:<18} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}   ({what})",
        "operation", "requests", "resp/s", "p50", "p90", "p99", "p99.9", "max"
    );
    let row = |out: &mut String, name: &str, requests: String, rate: String, p: &Percentiles| {
        let _ = writeln!(
            out,
            "{:<18} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            name,
            requests,
            rate,
            ms(p.p50),
            ms(p.p90),
            ms(p.p99),
            ms(p.p999),
            ms(p.max)
        );
    };
    for (name, op) in &s.operations {
        row(
            &mut out,
            name,
            op.requests.to_string(),
            format!("{:.0}", op.rate_per_s),
            &op.latency_us,
        );
        if let Some(service) = &op.service_time_us {
            row(
                &mut out,
                "  service time",
                String::new(),
                String::new(),
                service,
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "statuses:");
    for (name, op) in &s.operations {
        let _ = writeln!(out, "  {name:<16} {}", counts(&op.statuses));
    }
    let _ = writeln!(
        out,
        "transport errors: {} ({})",
        s.transport_errors,
        counts(&s.errors)
    );
    if let Some(t) = &s.timeline {
        let _ = writeln!(out);
        timeline::render(t, &mut out);
    }
    if let Some(o) = &s.open_loop {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "offered {:.0}/s (nominal {:.0}/s), achieved {:.0}/s",
            o.offered_rate_per_s, o.nominal_rate_per_s, o.achieved_rate_per_s
        );
        let _ = writeln!(
            out,
            "scheduled {}, sent {}, unsent at end {}, late (> {} ms) {} = {:.2}%",
            o.scheduled,
            o.sent,
            o.unsent,
            ms(o.late_threshold_us),
            o.late,
            o.late_share * 100.0
        );
        let _ = writeln!(
            out,
            "kept up: {}",
            if o.kept_up {
                "yes"
            } else {
                "NO (over 1% of requests late, or over 0.1% never sent)"
            }
        );
    }
    let _ = writeln!(out);
    for server in &s.servers {
        let _ = writeln!(
            out,
            "server (pid {}): {}",
            server.pid,
            usage_line(&server.usage)
        );
    }
    if s.servers.len() > 1 {
        let cpu: f64 = s.servers.iter().map(|u| u.usage.cpu_seconds).sum();
        let _ = writeln!(out, "servers in all: CPU {cpu:.2} s");
    }
    if let Some(per) = s.server_cpu_seconds_per_1000 {
        let _ = writeln!(out, "server CPU per 1,000 responses: {per:.3} s");
    }
    if let Some(u) = &s.loadgen {
        let _ = writeln!(out, "load generator: {}", usage_line(u));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Timing;
    use tokio::time::Instant;

    fn info(open_loop: Option<(f64, Duration)>) -> RunInfo {
        RunInfo {
            scenario: "players",
            op_names: &["heartbeat", "progress"],
            targets: vec!["http://127.0.0.1:1".into()],
            connections: 4,
            threads: 2,
            duration: Duration::from_secs(10),
            elapsed: Duration::from_secs(10),
            stopped_by: "duration",
            open_loop,
            servers: Vec::new(),
            loadgen: None,
        }
    }

    #[test]
    fn cpu_per_1000_responses_adds_every_node() {
        let usage = |cpu: f64| Usage {
            peak_rss_kib: 1,
            start_rss_kib: 1,
            end_rss_kib: 1,
            hwm_kib: 1,
            cpu_seconds: cpu,
            cpu_cores: 0.0,
            samples: 2,
            exited: false,
        };
        let servers: Vec<ServerUsage> = [1.5, 0.5, 2.0]
            .iter()
            .enumerate()
            .map(|(i, cpu)| ServerUsage {
                pid: i as u32,
                usage: usage(*cpu),
            })
            .collect();
        assert_eq!(cpu_per_1000(&servers, 8_000), Some(0.5));
        assert_eq!(cpu_per_1000(&servers, 0), None);
        assert_eq!(cpu_per_1000(&[], 10), None);
    }

    fn shard(late_every: u64, unsent: u64) -> ShardStats {
        let mut s = ShardStats::new(2, true);
        let t0 = Instant::now();
        for i in 0..1_000u64 {
            let delay = if late_every > 0 && i % late_every == 0 {
                50
            } else {
                0
            };
            let timing = Timing {
                intended: t0,
                started: t0 + Duration::from_millis(delay),
                finished: t0 + Duration::from_millis(delay + 2),
            };
            s.ops[0].sent += 1;
            s.ops[0].record_response(
                if i < 990 { 200 } else { 404 },
                &timing,
                Duration::from_millis(10),
            );
        }
        s.ops[0].record_error(ErrorKind::Timeout, None, Duration::ZERO);
        s.scheduled = 1_000 + unsent;
        s.unsent = unsent;
        s
    }

    #[test]
    fn open_loop_summary_counts_and_verdict() {
        let s = summarize(info(Some((100.0, Duration::from_millis(10)))), &shard(0, 0));
        assert_eq!(s.requests, 1_000);
        assert_eq!(s.responses, 1_000);
        assert_eq!(s.rate_per_s, 100.0);
        assert_eq!(s.statuses["200"], 990);
        assert_eq!(s.statuses["404"], 10);
        assert_eq!(s.count("heartbeat", 200), 990);
        assert_eq!(s.operations["heartbeat"].count(404), 10);
        assert_eq!(s.count("heartbeat", 500), 0);
        assert_eq!(s.count("progress", 200), 0);
        assert_eq!(s.errors["timeout"], 1);
        assert_eq!(s.transport_errors, 1);
        assert!(!s.operations.contains_key("progress"), "never sent");
        let hb = &s.operations["heartbeat"];
        assert_eq!(hb.latency_us.p50, 2_000);
        assert_eq!(hb.late, Some(0));
        let o = s.open_loop.as_ref().unwrap();
        assert!(o.kept_up);
        assert_eq!(o.achieved_rate_per_s, 100.0);

        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["operations"]["heartbeat"]["latency_us"]["p99_9"],
            2_000
        );
        assert_eq!(json["open_loop"]["kept_up"], true);
        let text = render(&s);
        assert!(text.contains("kept up: yes"), "{text}");
        assert!(text.contains("200=990 404=10"), "{text}");
    }

    #[test]
    fn late_or_unsent_requests_mean_it_did_not_keep_up() {
        let late = summarize(
            info(Some((100.0, Duration::from_millis(10)))),
            &shard(50, 0),
        );
        let o = late.open_loop.as_ref().unwrap();
        assert_eq!(o.late, 20);
        assert!(!o.kept_up);
        // Late requests waited 50 ms: the latency shows it, the service time does not.
        let hb = &late.operations["heartbeat"];
        assert!(hb.latency_us.max >= 52_000);
        assert!(hb.service_time_us.as_ref().unwrap().max <= 2_002);

        let unsent = summarize(info(Some((100.0, Duration::from_millis(10)))), &shard(0, 5));
        assert!(!unsent.open_loop.as_ref().unwrap().kept_up);
        assert!(render(&unsent).contains("kept up: NO"));
    }

    #[test]
    fn closed_loop_counts_failed_connects_as_transport_errors() {
        let mut stats = ShardStats::new(2, false);
        stats.connect_errors = 3;
        let mut i = info(None);
        i.scenario = "heartbeat";
        let s = summarize(i, &stats);
        assert_eq!(s.errors["connect"], 3);
        assert_eq!(s.transport_errors, 3);
        assert!(s.open_loop.is_none());
        assert!(!render(&s).contains("kept up"));
    }
}
