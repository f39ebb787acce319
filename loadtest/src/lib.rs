//! `loadtest`: simulated video players against playstate nodes on this machine.
//!
//! A library so that tests can drive it ([`run`] returns the [`Summary`]; [`start`] runs
//! in the background until [`Running::stop`]), and a binary that prints the report. See
//! README.md for the scenarios, options and how to read the report.

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
mod timeline;

use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::oneshot;

pub use cli::{Cli, Common, Contract, HeartbeatArgs, PlayersArgs, Scenario};
pub use report::{OpSummary, OpenLoop, Summary, render};
pub use runner::catch_interrupt;
pub use server_stats::Usage;
pub use stats::Percentiles;
pub use timeline::{Outcomes, SecondStats, TargetStats, Timeline};

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

/// Runs the scenario `cli` names against its targets and returns the summary: [`start`],
/// then [`Running::wait`].
///
/// Blocks until the run is over (`--duration`, `--max-requests`, or Ctrl-C if
/// [`catch_interrupt`] was called), so call it from a plain thread (in async code, inside
/// `spawn_blocking`).
pub fn run(cli: Cli) -> anyhow::Result<Summary> {
    start(cli)?.wait()
}

/// Starts the scenario `cli` names against its targets and returns at once; the load runs
/// in the background until `--duration` or `--max-requests` ends it, or [`Running::stop`].
///
/// The load is sent from `--threads` threads of its own, each with a single-threaded
/// event loop, so the caller's runtime (if any) does not matter. The run prints nothing
/// and leaves `--json` to the caller (see [`render`] and [`write_json`]); with `--quiet`
/// or when stderr is not a terminal it does not draw a progress bar either. The summary's
/// `loadgen` usage is that of the whole calling process.
///
/// Build `cli` with `Cli::try_parse_from` (clap's `Parser`) so every value is validated
/// as on the command line, or from [`PlayersArgs`] (`PlayersArgs { .., ..Default::default()
/// }.into()`). Fails when a target is not a loopback URL, nothing listens at a target
/// (`heartbeat`) or at any target (`players`, which counts a dead target's connect errors
/// instead), `--server-pid` cannot be read, or the options do not fit together.
pub fn start(cli: Cli) -> anyhow::Result<Running> {
    let common = cli.scenario.common().clone();
    check_common(&common)?;
    let targets = common
        .targets
        .iter()
        .map(|raw| target::parse(raw).with_context(|| format!("--target {raw}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (scenario_name, per_thread) = match &cli.scenario {
        Scenario::Heartbeat(_) => {
            preflight(&targets, Reachable::All)?;
            ("heartbeat", 1)
        }
        // A thread's viewers stay with their targets, so each thread needs a connection
        // to each target.
        Scenario::Players(_) => {
            preflight(&targets, Reachable::Any)?;
            ("players", targets.len() as u32)
        }
    };
    if common.connections < per_thread {
        bail!(
            "--connections ({}) must be at least the number of targets ({per_thread}): \
             every target needs connections of its own",
            common.connections
        );
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let threads = common
        .threads
        .unwrap_or(cpus)
        .min(common.connections / per_thread)
        .max(1) as usize;

    let servers = common
        .server_pid
        .iter()
        .map(|&pid| {
            Sampler::start(Proc::pid(pid)).with_context(|| {
                format!("--server-pid {pid}: cannot read /proc/{pid}/status and /proc/{pid}/stat")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let loadgen = Sampler::start(Proc::this());

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
        (Scenario::Heartbeat(args), _) => start_heartbeat(args, targets, threads, &ctl),
        (Scenario::Players(_), Some(prepared)) => start_players(prepared, threads, &ctl),
        (Scenario::Players(_), None) => unreachable!("players are prepared above"),
    };
    let started = started.inspect_err(|_| ctl.stop())?;

    let (done, summary) = oneshot::channel();
    let monitored = ctl.clone();
    std::thread::Builder::new()
        .name("loadtest-monitor".into())
        .spawn(move || {
            let run = Monitored {
                ctl: monitored,
                started,
                servers,
                loadgen,
                scenario: scenario_name,
                common,
                threads: threads as u32,
            };
            // Nobody may be waiting any more (the handle was dropped).
            let _ = done.send(run.finish());
        })
        .inspect_err(|_| ctl.stop())
        .context("starting the load-generator monitor thread")?;
    Ok(Running {
        stop_on_drop: StopOnDrop(ctl),
        summary,
    })
}

/// A run sending load in the background, from [`start`]. Dropping it stops the run.
///
/// ```no_run
/// # async fn example() -> anyhow::Result<()> {
/// let load = loadtest::start(
///     loadtest::PlayersArgs {
///         common: loadtest::Common {
///             targets: vec!["http://127.0.0.1:8080".into(), "http://127.0.0.1:8081".into()],
///             duration: std::time::Duration::from_secs(60),
///             ..Default::default()
///         },
///         ..Default::default()
///     }
///     .into(),
/// )?;
/// // ... kill a node, wait ...
/// load.stop();
/// let summary = load.finished().await?;
/// let timeline = summary.timeline.expect("players have a timeline");
/// println!("errors from {:?} to {:?}", timeline.first_error_second, timeline.last_error_second);
/// # Ok(())
/// # }
/// ```
pub struct Running {
    stop_on_drop: StopOnDrop,
    summary: oneshot::Receiver<anyhow::Result<Summary>>,
}

impl Running {
    /// Ends the run now instead of at `--duration`: no request is sent any more, those on
    /// the wire get their answer (or time out), and the summary says "stopped". Returns at
    /// once; then collect the summary with [`Running::finished`] or [`Running::wait`].
    pub fn stop(&self) {
        self.stop_on_drop.0.stop();
    }

    /// Waits for the run to end and returns its summary.
    pub async fn finished(self) -> anyhow::Result<Summary> {
        self.summary.await.unwrap_or_else(|_| Err(monitor_died()))
    }

    /// [`Running::finished`] for synchronous code; it blocks, so do not call it on an
    /// async task (use `spawn_blocking`, or `finished`).
    pub fn wait(self) -> anyhow::Result<Summary> {
        self.summary
            .blocking_recv()
            .unwrap_or_else(|_| Err(monitor_died()))
    }
}

/// Stops the run when its handle goes: a run nobody will read (e.g. that of a test that
/// failed half way) must not go on loading the machine until its duration is up.
struct StopOnDrop(Arc<Control>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

fn monitor_died() -> anyhow::Error {
    anyhow::anyhow!("the load-generator monitor thread panicked; the run has no summary")
}

/// A started run, as the monitor thread holds it until the load threads are done.
struct Monitored {
    ctl: Arc<Control>,
    started: Started,
    servers: Vec<Sampler>,
    loadgen: Option<Sampler>,
    scenario: &'static str,
    common: Common,
    threads: u32,
}

impl Monitored {
    /// Draws the progress bar and samples the processes until the load threads finish,
    /// then sums up.
    fn finish(mut self) -> anyhow::Result<Summary> {
        let ctl = &self.ctl;
        let open_loop = self.started.open_loop;
        let mut samplers: Vec<&mut Sampler> = self
            .servers
            .iter_mut()
            .chain(self.loadgen.iter_mut())
            .collect();
        let watched = monitor::watch(
            self.started.handles,
            ctl,
            &mut samplers,
            self.common.quiet,
            open_loop.is_some(),
        )?;
        let mut merged = ShardStats::new(self.started.op_names.len(), open_loop.is_some());
        for shard in &watched.shards {
            merged.merge(shard);
        }
        // Requests still on the wire after a stop or the deadline do not lengthen the run.
        let end = watched.finished.min(ctl.end());
        let common = self.common;
        Ok(report::summarize(
            RunInfo {
                scenario: self.scenario,
                op_names: self.started.op_names,
                targets: common.targets.iter().map(|t| t.trim().to_owned()).collect(),
                connections: common.connections,
                threads: self.threads,
                duration: common.duration,
                elapsed: end.saturating_duration_since(ctl.start),
                stopped_by: ctl.stopped_by(),
                open_loop,
                servers: common
                    .server_pid
                    .iter()
                    .zip(&self.servers)
                    .map(|(pid, sampler)| report::ServerUsage {
                        pid: *pid,
                        usage: sampler.usage(),
                    })
                    .collect(),
                loadgen: self.loadgen.as_ref().map(Sampler::usage),
            },
            &merged,
        ))
    }
}

/// Writes `summary` as pretty JSON (the `--json` file), with a trailing newline.
pub fn write_json(summary: &Summary, path: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(summary).context("serializing the summary")?;
    std::fs::write(path, json + "\n").with_context(|| format!("--json: writing {}", path.display()))
}

/// Which targets must accept a connection before the run starts.
#[derive(Copy, Clone)]
enum Reachable {
    All,
    /// At least one: the others' connect errors are counted per target (a fault test may
    /// start with a node down).
    Any,
}

/// Fails early, with the address, when nothing listens at a target (or at any, with
/// `Reachable::Any`): otherwise the run would be a screenful of connect errors.
fn preflight(targets: &[Target], need: Reachable) -> anyhow::Result<()> {
    let mut refused = Vec::new();
    for t in targets {
        if let Err(e) = TcpStream::connect_timeout(&t.addr, Duration::from_secs(2)) {
            let e =
                anyhow::Error::new(e).context(format!("cannot connect to {} ({})", t.url, t.addr));
            match need {
                Reachable::All => return Err(e),
                Reachable::Any => refused.push(e),
            }
        }
    }
    if refused.len() == targets.len()
        && let Some(e) = refused.into_iter().next()
    {
        return Err(e.context("no target accepts connections"));
    }
    Ok(())
}

fn check_common(common: &Common) -> anyhow::Result<()> {
    if common.targets.is_empty() {
        bail!("at least one --target is needed");
    }
    // The command line refuses these already; a `Cli` built in code may not have been
    // through it.
    if common.duration.is_zero() || common.timeout.is_zero() || common.connections == 0 {
        bail!("--duration, --timeout and --connections must be greater than zero");
    }
    Ok(())
}

fn start_heartbeat(
    args: &HeartbeatArgs,
    targets: Vec<Target>,
    threads: usize,
    ctl: &Arc<Control>,
) -> anyhow::Result<Started> {
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
