use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use playstate::config::{Config, Overrides};

/// playstate: concurrent-stream limits, watch progress, watchlists and trailers for
/// video players.
// Requests allocate on HTTP workers and free on actor threads (and back); glibc's malloc
// pays for that cross-thread traffic in arena locks and consolidation, mimalloc does not.
// Measured in README "Performance".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "playstate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// A TOML file layered over the compiled-in defaults.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free one); beats the config.
    #[arg(long, global = true, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// Directory for this node's files; beats the config.
    #[arg(long = "data-dir", global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the cluster listener (port 0 picks a free one); beats the config.
    #[arg(long = "cluster-listen", global = true, value_name = "ADDR:PORT")]
    cluster_listen: Option<SocketAddr>,
    /// This node's id in the cluster (never reuse a removed node's id).
    #[arg(long = "node-id", global = true, value_name = "N")]
    node_id: Option<u64>,
    /// Cluster addresses of existing members to join through (comma-separated).
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT[,HOST:PORT...]",
        value_delimiter = ','
    )]
    join: Option<Vec<String>>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (the default).
    Serve,
    /// Print the effective configuration; exit non-zero if it is invalid.
    CheckConfig,
    /// Operate a cluster through any member (secret from PLAYSTATE_CLUSTER__SECRET).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Members, leader, term, shards per node and handoffs in progress.
    Status {
        /// Cluster address (HOST:PORT) of any member.
        #[arg(long = "cluster-addr", value_name = "HOST:PORT")]
        cluster_addr: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Drain a node and remove it from the cluster; it then exits by itself.
    Leave {
        /// Cluster address (HOST:PORT) of any member.
        #[arg(long = "cluster-addr", value_name = "HOST:PORT")]
        cluster_addr: String,
        /// The node to remove.
        #[arg(long = "node-id", value_name = "N")]
        node_id: u64,
    },
    /// Remove a node that will never return (e.g. its machine is gone): its shards go to
    /// their backups by failover once the leader has not heard from it for
    /// `cluster.failover_after`, then it is removed. Works on a live node too (as leave).
    Remove {
        /// Cluster address (HOST:PORT) of any member.
        #[arg(long = "cluster-addr", value_name = "HOST:PORT")]
        cluster_addr: String,
        /// The node to remove.
        #[arg(long = "node-id", value_name = "N")]
        node_id: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Cluster { command }) = cli.command {
        return playstate::admin::run(admin_command(command));
    }
    let overrides = Overrides {
        listen: cli.listen,
        data_dir: cli.data_dir,
        cluster_listen: cli.cluster_listen,
        node_id: cli.node_id,
        join: cli.join,
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Command::Serve => serve(config),
        Command::Cluster { .. } => unreachable!("handled before the configuration is read"),
    }
}

fn admin_command(command: ClusterCommand) -> playstate::admin::AdminCommand {
    use playstate::admin::AdminCommand;
    match command {
        ClusterCommand::Status { cluster_addr, json } => {
            AdminCommand::Status { cluster_addr, json }
        }
        ClusterCommand::Leave {
            cluster_addr,
            node_id,
        } => AdminCommand::Leave {
            cluster_addr,
            node_id,
            gone: false,
        },
        ClusterCommand::Remove {
            cluster_addr,
            node_id,
        } => AdminCommand::Leave {
            cluster_addr,
            node_id,
            gone: true,
        },
    }
}

fn serve(config: Config) -> ExitCode {
    let _log_guard = match playstate::telemetry::init_tracing(&config.log) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    match actix_rt::System::new().block_on(playstate::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %playstate::error_chain::DisplayChain(&e), "node failed");
            ExitCode::FAILURE
        }
    }
}
