//! Logs: JSON lines on stdout, written by a background thread so a request never waits on
//! the terminal or a log shipper.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::ParseError;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};

use crate::api::client_faults::ClientFaultLog;
use crate::cluster::peer_health::RaftRpcNoise;
use crate::config::{LogConfig, LogFormat};

/// Why the logger could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("invalid value for `log.level`: {0}")]
    Level(#[from] ParseError),
    #[error("cannot install the logger: {0}")]
    Install(#[from] TryInitError),
}

/// Installs the global subscriber. Keep the guard alive until exit: dropping it flushes.
pub fn init_tracing(config: &LogConfig) -> Result<WorkerGuard, LoggingError> {
    let filter = EnvFilter::try_new(&config.level)?;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        // Block rather than drop lines when the writer falls behind: a lost access-log line
        // is worse than a slower request under a log storm.
        .lossy(false)
        // The writer thread flushes whenever it has drained its queue, so a buffer turns a
        // write(2) per line into one per burst without holding a quiet line back.
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    // Connections actix gives up on are a client's fault: rate-limited warnings, not errors.
    // openraft's per-call lines about a down peer give way to `PeerHealth`'s.
    let client_faults = ClientFaultLog::new();
    match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish()
            .with(client_faults)
            .with(RaftRpcNoise)
            .try_init()?,
        LogFormat::Pretty => builder
            .finish()
            .with(client_faults)
            .with(RaftRpcNoise)
            .try_init()?,
    }
    Ok(guard)
}
