//! `loadtest`: simulated video players against playstate nodes on this machine.
//!
//! A library so that tests can drive it ([`run`] returns the [`Summary`]), and a binary
//! that prints the report. See README.md for the scenarios, options and how to read the
//! report.

mod cli;
mod client;
mod ids;
mod monitor;
mod report;
mod runner;
mod scenario;
mod schedule;
mod server_stats;
mod stats;
mod target;

use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, bail};

pub use cli::{Cli, Common, Contract, HeartbeatArgs, PlayersArgs, Scenario};
pub use report::{OpSummary, OpenLoop, Summary, render};
pub use runner::catch_interrupt;
pub use server_stats::Usage;
pub use stats::Percentiles;

use report::RunInfo;
use runner::{Control, ShardStats, spawn_shard};
use scenario::{heartbeat, players};
use server_stats::{Proc, Sampler};
use target::Target;

/// The operations of the `heartbeat` scenario, as keys of [`Summary::operations`]:
/// renewals of sessions the user may hold, and attempts at a 4th session, which the
/// server must refuse. Both are the same HTTP call (`PUT /v1/streams/{sessionId}`, or
/// `POST /heartbeat` with `--contract heartbeat`).
pub const HEARTBEAT_OPERATIONS: [&str; 2] = heartbeat::OPS;

/// The operations of the `players` scenario, as keys of [`Summary::operations`]:
/// `PUT /v1/streams/{sessionId}`, `PUT /v1/progress/{assetId}`, `PUT` and
/// `DELETE /v1/watchlist/{assetId}`.
pub const PLAYERS_OPERATIONS: [&str; 4] = players::OPS;

/// What a scenario hands to the common part of a run.
struct Started {
    handles: Vec<JoinHandle<ShardStats>>,
    op_names: &'static [&'static str],
    open_loop: Option<(f64, Duration)>,
}

/// Runs the scenario `cli` names against its targets and returns the summary.
///
/// Blocks until the run is over (`--duration`, `--max-requests`, or Ctrl-C if
/// [`catch_interrupt`] was called): the load is sent from `--threads` threads of its own,
/// each with a single-threaded event loop, so call it from a plain thread (in async code,
/// inside `spawn_blocking`). It prints nothing and leaves `--json` to the caller (see
/// [`render`] and [`write_json`]); with `--quiet` or when stderr is not a terminal it does
/// not draw a progress bar either. The summary's `loadgen` usage is that of the whole
/// calling process.
///
/// Build `cli` with `Cli::try_parse_from` (clap's `Parser`) so every value is validated
/// as on the command line. Fails when a target is not a loopback URL, nothing listens at
/// a target, `--server-pid` cannot be read, or the options do not fit together.
pub fn run(cli: Cli) -> anyhow::Result<Summary> {
    let common = cli.scenario.common().clone();
    let targets = common
        .targets
        .iter()
        .map(|raw| target::parse(raw).with_context(|| format!("--target {raw}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    preflight(&targets)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let threads = common.threads.unwrap_or(cpus).min(common.connections) as usize;

    let mut servers = common
        .server_pid
        .iter()
        .map(|&pid| {
            Sampler::start(Proc::pid(pid)).with_context(|| {
                format!("--server-pid {pid}: cannot read /proc/{pid}/status and /proc/{pid}/stat")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut loadgen = Sampler::start(Proc::this());

    let scenario_name = match &cli.scenario {
        Scenario::Heartbeat(_) => "heartbeat",
        Scenario::Players(_) => "players",
    };
    // Build the players' population before the clock starts: with many viewers it takes
    // a moment, and that moment is not load.
    let prepared = match &cli.scenario {
        Scenario::Players(args) => Some(prepare_players(args, &targets, threads)?),
        Scenario::Heartbeat(_) => None,
    };
    let ctl = Arc::new(Control::new(
        common.duration,
        common.max_requests,
        common.timeout,
    ));
    let started = match (&cli.scenario, prepared) {
        (Scenario::Heartbeat(args), _) => start_heartbeat(args, targets, threads, &ctl)?,
        (Scenario::Players(_), Some(prepared)) => start_players(prepared, threads, &ctl)?,
        (Scenario::Players(_), None) => unreachable!("players are prepared above"),
    };

    let mut samplers: Vec<&mut Sampler> = servers.iter_mut().chain(loadgen.iter_mut()).collect();
    let watched = monitor::watch(
        started.handles,
        &ctl,
        &mut samplers,
        common.quiet,
        started.open_loop.is_some(),
    )?;
    let mut merged = ShardStats::new(started.op_names.len(), started.open_loop.is_some());
    for shard in &watched.shards {
        merged.merge(shard);
    }
    let end = watched.finished.min(ctl.deadline);
    let summary = report::summarize(
        RunInfo {
            scenario: scenario_name,
            op_names: started.op_names,
            targets: common.targets.iter().map(|t| t.trim().to_owned()).collect(),
            connections: common.connections,
            threads: threads as u32,
            duration: common.duration,
            elapsed: end.saturating_duration_since(ctl.start),
            stopped_by: ctl.stopped_by(),
            open_loop: started.open_loop,
            servers: common
                .server_pid
                .iter()
                .zip(&servers)
                .map(|(pid, sampler)| report::ServerUsage {
                    pid: *pid,
                    usage: sampler.usage(),
                })
                .collect(),
            loadgen: loadgen.as_ref().map(Sampler::usage),
        },
        &merged,
    );
    Ok(summary)
}

/// Writes `summary` as pretty JSON (the `--json` file), with a trailing newline.
pub fn write_json(summary: &Summary, path: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(summary).context("serializing the summary")?;
    std::fs::write(path, json + "\n").with_context(|| format!("--json: writing {}", path.display()))
}

/// Fails early, with the address, when nothing listens at a target: otherwise the run
/// would be a screenful of connect errors.
fn preflight(targets: &[Target]) -> anyhow::Result<()> {
    for t in targets {
        TcpStream::connect_timeout(&t.addr, Duration::from_secs(2))
            .with_context(|| format!("cannot connect to {} ({})", t.url, t.addr))?;
    }
    Ok(())
}

fn check_common(common: &Common) -> anyhow::Result<()> {
    if common.targets.is_empty() {
        bail!("at least one --target is needed");
    }
    // The command line refuses these already; a `Cli` built in code may not have been
    // through it.
    if common.duration.is_zero() || common.timeout.is_zero() {
        bail!("--duration and --timeout must be greater than zero");
    }
    Ok(())
}

fn start_heartbeat(
    args: &HeartbeatArgs,
    targets: Vec<Target>,
    threads: usize,
    ctl: &Arc<Control>,
) -> anyhow::Result<Started> {
    check_common(&args.common)?;
    if args.users < u64::from(args.common.connections) {
        bail!(
            "--users ({}) must be at least --connections ({}): each connection owns its own users",
            args.users,
            args.common.connections
        );
    }
    let plan = Arc::new(heartbeat::Plan {
        contract: args.contract,
        users: args.users,
        over_limit_share: args.over_limit_share,
        // playstate keeps each contract's slots apart, so runs of the two contracts must
        // not share users: the second would find them holding the first one's slots.
        prefix: match args.contract {
            Contract::V1 => format!("{}-h", args.common.id_prefix),
            Contract::Heartbeat => format!("{}-hb", args.common.id_prefix),
        },
        seed: args.common.seed,
        connections: args.common.connections,
        targets,
    });
    let mut handles = Vec::with_capacity(threads);
    for index in 0..threads {
        let (plan, ctl) = (plan.clone(), ctl.clone());
        let handle = spawn_shard(index, move || heartbeat::shard(plan, ctl, index, threads))
            .context("starting a load-generator thread")?;
        handles.push(handle);
    }
    Ok(Started {
        handles,
        op_names: &heartbeat::OPS,
        open_loop: None,
    })
}

struct PreparedPlayers {
    plan: Arc<players::Plan>,
    populations: Vec<players::Population>,
    nominal_rate: f64,
}

fn prepare_players(
    args: &PlayersArgs,
    targets: &[Target],
    threads: usize,
) -> anyhow::Result<PreparedPlayers> {
    check_common(&args.common)?;
    if !(args.speedup.is_finite() && args.speedup > 0.0) {
        bail!("--speedup must be above 0");
    }
    let scaled = |d: Duration| d.div_f64(args.speedup).max(Duration::from_micros(100));
    let plan = players::Plan {
        viewers: args.viewers,
        heartbeat_every: scaled(args.heartbeat_interval),
        progress_every: (!args.no_progress).then(|| scaled(args.progress_interval)),
        watchlist_share: if args.no_watchlist {
            0.0
        } else {
            args.watchlist_share
        },
        progress_step: args.progress_interval.as_secs().max(1),
        late_threshold: args.late_threshold,
        prefix: format!("{}-p", args.common.id_prefix),
        seed: args.common.seed,
        connections: args.common.connections,
        targets: targets.to_vec(),
    };
    let populations: Vec<_> = (0..threads)
        .map(|s| players::Population::build(&plan, s as u64, threads as u64))
        .collect();
    let nominal_rate = populations.iter().map(|p| p.schedule.nominal_rate()).sum();
    Ok(PreparedPlayers {
        plan: Arc::new(plan),
        populations,
        nominal_rate,
    })
}

fn start_players(
    prepared: PreparedPlayers,
    threads: usize,
    ctl: &Arc<Control>,
) -> anyhow::Result<Started> {
    let late = prepared.plan.late_threshold;
    let mut handles = Vec::with_capacity(threads);
    for (index, population) in prepared.populations.into_iter().enumerate() {
        let (plan, ctl) = (prepared.plan.clone(), ctl.clone());
        let handle = spawn_shard(index, move || {
            players::shard(plan, population, ctl, index, threads)
        })
        .context("starting a load-generator thread")?;
        handles.push(handle);
    }
    Ok(Started {
        handles,
        op_names: &players::OPS,
        open_loop: Some((prepared.nominal_rate, late)),
    })
}
