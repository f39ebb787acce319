//! Command line: one subcommand per scenario, with the options every run shares.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    about = "Simulated video players that load a playstate node on this machine",
    long_about = "Simulated video players that load a playstate node on this machine.\n\n\
        Every run is bounded by --duration and --max-requests and stops by itself. \
        Only loopback targets (127.0.0.0/8, localhost, [::1]) are accepted."
)]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Subcommand, Debug)]
pub enum Scenario {
    /// Closed loop: every connection sends stream heartbeats back to back, as fast as the
    /// server answers.
    Heartbeat(HeartbeatArgs),
    /// Open loop: viewers heartbeat and report progress on a fixed schedule; reports whether
    /// the server kept up with the offered rate.
    Players(PlayersArgs),
}

impl Scenario {
    pub fn common(&self) -> &Common {
        match self {
            Scenario::Heartbeat(args) => &args.common,
            Scenario::Players(args) => &args.common,
        }
    }
}

/// Options every scenario takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Base URL of a playstate node; for several nodes repeat it or give a comma-separated
    /// list. `heartbeat` deals its connections round-robin over them; in `players` viewer
    /// `v` stays with target `v % targets` all run long. Must be a loopback address.
    #[arg(
        long = "target",
        value_name = "URL[,URL...]",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080"
    )]
    pub targets: Vec<String>,

    /// How long to send load.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub duration: Duration,

    /// Stop after this many requests even if --duration has not passed.
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_requests: u64,

    /// HTTP/1.1 keep-alive connections, in total over all targets.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: u32,

    /// Load-generator threads, each with its own event loop and share of the connections.
    /// Defaults to the number of CPUs (never more than --connections).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,

    /// Give up on a request that has not been answered after this long (counted as a
    /// transport error, and the connection is replaced).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub timeout: Duration,

    /// Seed for the simulated population, so runs are reproducible.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Prefix of every user, session and stream id this run sends, to keep runs apart.
    #[arg(long, default_value = "lt", value_parser = parse_prefix)]
    pub id_prefix: String,

    /// PID of a server process: report its peak RSS and CPU time during the run. Give it
    /// once per node of a cluster.
    #[arg(long, value_name = "PID")]
    pub server_pid: Vec<u32>,

    /// Write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// No live progress bar (it is also off when stderr is not a terminal).
    #[arg(long, short)]
    pub quiet: bool,
}

impl Default for Common {
    /// The command line's defaults.
    fn default() -> Common {
        PlayersArgs::default().common
    }
}

impl Default for PlayersArgs {
    /// The command line's defaults (`loadtest players`), for building a run in code with
    /// `PlayersArgs { viewers: 200, ..Default::default() }`.
    fn default() -> PlayersArgs {
        match Cli::parse_from(["loadtest", "players"]).scenario {
            Scenario::Players(args) => args,
            Scenario::Heartbeat(_) => unreachable!("parsed as players"),
        }
    }
}

impl From<PlayersArgs> for Cli {
    fn from(args: PlayersArgs) -> Cli {
        Cli {
            scenario: Scenario::Players(args),
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Contract {
    /// `PUT /v1/streams/{sessionId}` with a bearer token (playstate's own API).
    V1,
    /// `POST /heartbeat` with `{"userId","streamId","sessionId"}` (seed 003's API).
    Heartbeat,
}

#[derive(Args, Debug)]
pub struct HeartbeatArgs {
    #[command(flatten)]
    pub common: Common,

    /// Which API to send heartbeats through.
    #[arg(long, value_enum, default_value_t = Contract::V1)]
    pub contract: Contract,

    /// Size of the user population; each user holds 1 to 3 sessions.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub users: u64,

    /// Fraction of requests that try a 4th+ session for a user already holding 3, so the
    /// server must refuse them (429 on /v1, 400 on /heartbeat).
    #[arg(long, default_value_t = 0.05, value_parser = parse_share)]
    pub over_limit_share: f64,
}

#[derive(Args, Debug)]
pub struct PlayersArgs {
    #[command(flatten)]
    pub common: Common,

    /// Simulated viewers; each watches 1 to 3 streams at once.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub viewers: u64,

    /// How often each stream heartbeats (`PUT /v1/streams/{sessionId}`), before --speedup.
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    pub heartbeat_interval: Duration,

    /// How often each stream reports progress (`PUT /v1/progress/{assetId}`), before
    /// --speedup.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub progress_interval: Duration,

    /// Watchlist edits (`PUT`/`DELETE /v1/watchlist/{assetId}`) as a fraction of all
    /// requests.
    #[arg(long, default_value_t = 0.01, value_parser = parse_share)]
    pub watchlist_share: f64,

    /// Divide every interval by this factor, to offer more load with fewer viewers.
    #[arg(long, default_value_t = 1.0, value_parser = parse_speedup)]
    pub speedup: f64,

    /// Send no progress reports (for servers without /v1/progress).
    #[arg(long)]
    pub no_progress: bool,

    /// Send no watchlist edits (for servers without /v1/watchlist).
    #[arg(long)]
    pub no_watchlist: bool,

    /// A request that starts this much later than scheduled counts as late.
    #[arg(long, value_parser = parse_duration, default_value = "10ms")]
    pub late_threshold: Duration,
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(raw).map_err(|e| format!("{e} (use e.g. 30s, 500ms, 2m)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

fn parse_share(raw: &str) -> Result<f64, String> {
    let v: f64 = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a number"))?;
    if !(0.0..1.0).contains(&v) {
        return Err("must be at least 0 and below 1".into());
    }
    Ok(v)
}

fn parse_speedup(raw: &str) -> Result<f64, String> {
    let v: f64 = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a number"))?;
    if !(v.is_finite() && v > 0.0 && v <= 1_000_000.0) {
        return Err("must be above 0 (and at most 1000000)".into());
    }
    Ok(v)
}

fn parse_prefix(raw: &str) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= 32
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(raw.to_owned())
    } else {
        Err("use 1 to 32 letters, digits, '-' or '_'".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides_parse() {
        let cli = Cli::try_parse_from(["loadtest", "heartbeat"]).unwrap();
        let Scenario::Heartbeat(h) = cli.scenario else {
            panic!("heartbeat")
        };
        assert_eq!(h.common.duration, Duration::from_secs(30));
        assert_eq!(h.users, 100_000);
        assert_eq!(h.contract, Contract::V1);

        let cli = Cli::try_parse_from([
            "loadtest",
            "players",
            "--target",
            "http://127.0.0.1:1",
            "--target",
            "http://127.0.0.1:2",
            "--viewers",
            "2000",
            "--speedup",
            "20",
            "--no-progress",
            "--duration",
            "5s",
        ])
        .unwrap();
        let Scenario::Players(p) = cli.scenario else {
            panic!("players")
        };
        assert_eq!(p.common.targets.len(), 2);
        assert_eq!(p.viewers, 2000);
        assert_eq!(p.speedup, 20.0);
        assert!(p.no_progress && !p.no_watchlist);
        assert_eq!(p.common.duration, Duration::from_secs(5));
    }

    #[test]
    fn targets_may_be_a_comma_separated_list() {
        let cli = Cli::try_parse_from([
            "loadtest",
            "players",
            "--target",
            "http://127.0.0.1:1,http://127.0.0.1:2",
            "--target",
            "http://127.0.0.1:3",
        ])
        .unwrap();
        assert_eq!(
            cli.scenario.common().targets,
            [
                "http://127.0.0.1:1",
                "http://127.0.0.1:2",
                "http://127.0.0.1:3"
            ]
        );
    }

    #[test]
    fn defaults_in_code_are_those_of_the_command_line() {
        let args = PlayersArgs::default();
        assert_eq!(args.viewers, 10_000);
        assert_eq!(args.common.targets, ["http://127.0.0.1:8080"]);
        assert_eq!(args.common.connections, 32);
        let cli: Cli = PlayersArgs {
            viewers: 5,
            ..Default::default()
        }
        .into();
        let Scenario::Players(p) = cli.scenario else {
            panic!("players")
        };
        assert_eq!(p.viewers, 5);
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [
            &["loadtest", "heartbeat", "--over-limit-share", "1.5"][..],
            &["loadtest", "heartbeat", "--duration", "0s"],
            &["loadtest", "heartbeat", "--duration", "soon"],
            &["loadtest", "heartbeat", "--connections", "0"],
            &["loadtest", "heartbeat", "--id-prefix", "a/b"],
            &["loadtest", "players", "--speedup", "0"],
            &["loadtest", "players", "--speedup", "NaN"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }
}
