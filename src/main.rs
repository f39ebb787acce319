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
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (the default).
    Serve,
    /// Print the effective configuration; exit non-zero if it is invalid.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.listen,
        data_dir: cli.data_dir,
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
            tracing::error!(error = %e, "node failed");
            ExitCode::FAILURE
        }
    }
}
