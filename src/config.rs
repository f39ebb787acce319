//! Typed configuration. Defaults live in `config/default.toml`, compiled in; a `--config`
//! file and `PLAYSTATE_*` environment variables override them, in that order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

/// The compiled-in defaults.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub store: StoreConfig,
    pub aws: AwsConfig,
    pub progress: ProgressConfig,
    pub events: EventsConfig,
    pub catalog: CatalogConfig,
    pub trailers: TrailersConfig,
    pub auth: AuthConfig,
    pub streams: StreamsConfig,
    pub actors: ActorsConfig,
    pub cluster: ClusterConfig,
    pub log: LogConfig,
    pub dev: DevConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub workers: usize,
    pub max_body_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// A connection's request head must arrive within this long (else 408, closed).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A request's body must arrive within this long of its head (else 408, closed).
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Open player connections; connections beyond get 503 and are closed.
    pub max_connections: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Embedded,
    Dynamodb,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    pub dynamodb: DynamoConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoConfig {
    pub table: String,
    pub create_table: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    pub region: String,
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressConfig {
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    pub max_seconds: u32,
    pub max_dirty_entries: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventSinkKind {
    File,
    Sqs,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    pub sink: EventSinkKind,
    pub file: PathBuf,
    pub outbox_capacity: usize,
    pub sqs: SqsConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqsConfig {
    pub queue_url: String,
    pub queue_name: String,
    pub create_queue: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogKind {
    None,
    Http,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    pub kind: CatalogKind,
    pub base_url: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrailersConfig {
    pub tmdb_token: String,
    pub tmdb_base_url: String,
    pub content_url_prefix: String,
    #[serde(with = "humantime_serde")]
    pub refresh_after: Duration,
    pub refresh_per_second: u32,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    pub attempts: u32,
    #[serde(with = "humantime_serde")]
    pub poll_wait: Duration,
    pub queue: QueueConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub queue_url: String,
    pub queue_name: String,
    pub create_queue: bool,
    pub dead_letter_queue_url: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub jwt_hs256_secret: String,
    pub jwt_rs256_public_key_file: PathBuf,
    /// A gateway in front verifies bearer tokens, so a node with no key of its own may
    /// listen beyond loopback.
    pub trust_upstream: bool,
}

impl AuthConfig {
    /// Whether this node verifies bearer tokens itself.
    pub fn verifies_tokens(&self) -> bool {
        !self.jwt_hs256_secret.is_empty() || !self.jwt_rs256_public_key_file.as_os_str().is_empty()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsConfig {
    pub limit: u32,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    pub lease_intervals: u32,
    #[serde(with = "humantime_serde")]
    pub subscription_lease: Duration,
    pub trust_plan_header: bool,
    pub plan_header: String,
    #[serde(default)]
    pub plans: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActorsConfig {
    pub threads: usize,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    pub host_on_http_workers: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub node_id: u64,
    pub shards: u32,
    /// Raft, forwarding, handoff and admin: never the player listener.
    pub listen: SocketAddr,
    /// How the other nodes reach `listen`: `HOST:PORT`, or `HOST` for the port `listen`
    /// bound. Empty: `listen` itself, which must then not be a wildcard address.
    pub advertise: String,
    /// Bearer token every cluster-listener route requires.
    pub secret: String,
    /// Cluster addresses of existing members to join through.
    pub join: Vec<String>,
    /// Voters wanted; further nodes stay learners (and still own shards).
    pub voters: usize,
    /// How long a request for a shard being handed over waits before a 503.
    #[serde(with = "humantime_serde")]
    pub handoff_wait: Duration,
    /// Shards moved per handoff batch.
    pub handoff_batch: usize,
    /// Raft leader heartbeat.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Raft election timeout (randomized between this and 1.25 × this).
    #[serde(with = "humantime_serde")]
    pub election_timeout: Duration,
    /// Raft log entries between snapshots.
    pub snapshot_every: u64,
    /// How long a node may serve its shards after the leader last renewed its lease.
    #[serde(with = "humantime_serde")]
    pub ownership_lease: Duration,
    /// How long the leader waits without renewing a member's lease before it moves the
    /// member's shards to their backups (at least 1.5 × `ownership_lease`).
    #[serde(with = "humantime_serde")]
    pub failover_after: Duration,
    /// How often a shard's owner sends new slots and dirty progress to the shard's backup
    /// (a new slot goes at once).
    #[serde(with = "humantime_serde")]
    pub backup_interval: Duration,
    /// How long a planned stop (SIGTERM) waits for this node's shards to be handed over.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestLog {
    All,
    Errors,
    Off,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
    pub requests: RequestLog,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DevConfig {
    pub manual_clock: bool,
    pub endpoints: bool,
}

/// Command-line values that beat every other source.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub cluster_listen: Option<SocketAddr>,
    pub node_id: Option<u64>,
    pub join: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("{0}")]
    Parse(Box<figment::Error>),
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Config {
    /// Defaults, then `file`, then `PLAYSTATE_*` environment, then `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("PLAYSTATE_").split("__"));
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))?;
        if let Some(listen) = overrides.listen {
            config.server.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            config.storage.data_dir = dir.clone();
        }
        if let Some(listen) = overrides.cluster_listen {
            config.cluster.listen = listen;
        }
        if let Some(id) = overrides.node_id {
            config.cluster.node_id = id;
        }
        if let Some(join) = &overrides.join {
            config.cluster.join = join.clone();
        }
        config.validate()?;
        Ok(config)
    }

    /// The cluster address this node gives the others, once `listen` is bound to `bound`.
    pub fn cluster_advertised(&self, bound: SocketAddr) -> String {
        let advertise = self.cluster.advertise.trim();
        if advertise.is_empty() {
            bound.to_string()
        } else if advertise
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
        {
            advertise.to_owned()
        } else {
            format!("{advertise}:{}", bound.port())
        }
    }

    /// What every member of a multi-node cluster must share, since a shard's users' data
    /// must be readable by whichever node owns it; `None` for the node-local embedded store.
    pub fn shared_store(&self) -> Option<String> {
        match self.store.backend {
            StoreBackend::Embedded => None,
            StoreBackend::Dynamodb => Some(format!(
                "DynamoDB table {} in {}",
                self.store.dynamodb.table, self.aws.region
            )),
        }
    }

    /// Checks the rules that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                reason: reason.into(),
            })
        }
        let s = &self.streams;
        if s.limit == 0 {
            return invalid("streams.limit", "must be at least 1");
        }
        if s.heartbeat_interval.is_zero() {
            return invalid("streams.heartbeat_interval", "must be longer than 0");
        }
        if s.lease_intervals == 0 {
            return invalid("streams.lease_intervals", "must be at least 1");
        }
        if s.subscription_lease.is_zero() {
            return invalid("streams.subscription_lease", "must be longer than 0");
        }
        if s.trust_plan_header && s.plan_header.trim().is_empty() {
            return invalid("streams.plan_header", "must name a header when trusted");
        }
        if let Some((plan, _)) = s.plans.iter().find(|(_, limit)| **limit == 0) {
            return invalid(
                "streams.plans",
                format!("plan `{plan}` must allow at least 1"),
            );
        }
        if self.server.max_body_bytes < 64 {
            return invalid("server.max_body_bytes", "must be at least 64");
        }
        if self.server.header_timeout.is_zero() {
            return invalid("server.header_timeout", "must be longer than 0");
        }
        if self.server.body_timeout.is_zero() {
            return invalid("server.body_timeout", "must be longer than 0");
        }
        if self.server.max_connections == 0 {
            return invalid("server.max_connections", "must be at least 1");
        }
        if self.actors.tick.is_zero() {
            return invalid("actors.tick", "must be longer than 0");
        }
        if self.actors.idle_timeout.is_zero() {
            return invalid("actors.idle_timeout", "must be longer than 0");
        }
        if self.actors.call_timeout.is_zero() {
            return invalid("actors.call_timeout", "must be longer than 0");
        }
        if self.cluster.shards == 0 || self.cluster.shards > 65_536 {
            return invalid("cluster.shards", "must be between 1 and 65536");
        }
        if self.progress.flush_interval.is_zero() {
            return invalid("progress.flush_interval", "must be longer than 0");
        }
        if self.progress.max_dirty_entries == 0 {
            return invalid("progress.max_dirty_entries", "must be at least 1");
        }
        if self.events.outbox_capacity < crate::domain::events::BATCH {
            return invalid("events.outbox_capacity", "must be at least 500");
        }
        if self.events.sink == EventSinkKind::Sqs
            && self.events.sqs.queue_url.is_empty()
            && self.events.sqs.queue_name.is_empty()
        {
            return invalid("events.sqs.queue_url", "set queue_url or queue_name");
        }
        if self.store.backend == StoreBackend::Dynamodb && self.store.dynamodb.table.is_empty() {
            return invalid("store.dynamodb.table", "must name a table");
        }
        if self.catalog.kind == CatalogKind::Http && !self.catalog.base_url.starts_with("http") {
            return invalid(
                "catalog.base_url",
                "must be an http(s) URL when catalog.kind = \"http\"",
            );
        }
        if !self.auth.jwt_hs256_secret.is_empty()
            && !self.auth.jwt_rs256_public_key_file.as_os_str().is_empty()
        {
            return invalid(
                "auth",
                "set jwt_hs256_secret or jwt_rs256_public_key_file, not both",
            );
        }
        if !self.server.listen.ip().is_loopback()
            && !self.auth.verifies_tokens()
            && !self.auth.trust_upstream
        {
            return invalid(
                "auth",
                format!(
                    "server.listen ({}) is not a loopback address, and nothing verifies \
                     bearer tokens: anyone who reaches it could act as any user. Either set \
                     auth.jwt_hs256_secret or auth.jwt_rs256_public_key_file (e.g. \
                     PLAYSTATE_AUTH__JWT_HS256_SECRET) so that this node verifies them, or \
                     set auth.trust_upstream = true if a gateway in front of it verifies \
                     them and only the gateway can reach it",
                    self.server.listen
                ),
            );
        }
        let trailers = &self.trailers;
        if trailers.content_url_prefix.is_empty() {
            return invalid("trailers.content_url_prefix", "must not be empty");
        }
        if !trailers.tmdb_token.is_empty() && !trailers.tmdb_base_url.starts_with("http") {
            return invalid("trailers.tmdb_base_url", "must be an http(s) URL");
        }
        if trailers.refresh_after.is_zero() {
            return invalid("trailers.refresh_after", "must be longer than 0");
        }
        if trailers.attempts == 0 {
            return invalid("trailers.attempts", "must be at least 1");
        }
        if trailers.poll_wait > Duration::from_secs(20) {
            return invalid(
                "trailers.poll_wait",
                "must be at most 20s (the SQS maximum)",
            );
        }
        let cluster = &self.cluster;
        if cluster.node_id == 0 {
            return invalid("cluster.node_id", "must be at least 1");
        }
        if !cluster.listen.ip().is_loopback() && cluster.secret.is_empty() {
            return invalid(
                "cluster.secret",
                format!(
                    "must be set (e.g. PLAYSTATE_CLUSTER__SECRET) when cluster.listen ({}) is \
                     not a loopback address: anyone who reaches it could move shards",
                    cluster.listen
                ),
            );
        }
        if cluster.listen.ip().is_unspecified() && cluster.advertise.trim().is_empty() {
            return invalid(
                "cluster.advertise",
                format!(
                    "must be set when cluster.listen ({}) is a wildcard address: the other \
                     nodes need an address they can reach this node at (e.g. its DNS name)",
                    cluster.listen
                ),
            );
        }
        if !cluster.join.is_empty() && self.shared_store().is_none() {
            return invalid(
                "cluster.join",
                "needs a store every node shares (store.backend = \"dynamodb\"): the \
                 embedded store keeps users' data on one machine, so a shard moved to \
                 another node would lose its users' progress and watchlist",
            );
        }
        if cluster.voters == 0 {
            return invalid("cluster.voters", "must be at least 1");
        }
        if cluster.handoff_batch == 0 {
            return invalid("cluster.handoff_batch", "must be at least 1");
        }
        if cluster.heartbeat_interval.is_zero()
            || cluster.election_timeout <= cluster.heartbeat_interval * 2
        {
            return invalid(
                "cluster.election_timeout",
                "must be more than twice cluster.heartbeat_interval (and that more than 0)",
            );
        }
        if cluster.ownership_lease < Duration::from_millis(100) {
            return invalid("cluster.ownership_lease", "must be at least 100ms");
        }
        let min_failover = crate::domain::lease::min_failover_after(cluster.ownership_lease);
        if cluster.failover_after < min_failover {
            return invalid(
                "cluster.failover_after",
                format!(
                    "must be at least {} (1.5 × cluster.ownership_lease): a node cut off \
                     from the leader must have stopped serving before its shards move",
                    humantime::format_duration(min_failover)
                ),
            );
        }
        if cluster.backup_interval.is_zero() || cluster.backup_interval >= cluster.ownership_lease {
            return invalid(
                "cluster.backup_interval",
                "must be longer than 0 and shorter than cluster.ownership_lease",
            );
        }
        if cluster.handoff_wait.is_zero() {
            return invalid("cluster.handoff_wait", "must be longer than 0");
        }
        if cluster.snapshot_every < 10 {
            return invalid("cluster.snapshot_every", "must be at least 10");
        }
        if let Some(bad) = cluster.join.iter().find(|a| !a.contains(':')) {
            return invalid("cluster.join", format!("`{bad}` is not HOST:PORT"));
        }
        Ok(())
    }

    /// The effective configuration as TOML, for `check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// How long a heartbeat client's slot lives.
    pub fn heartbeat_lease(&self) -> Duration {
        self.streams.heartbeat_interval * self.streams.lease_intervals
    }
}

/// `0` in a thread-count setting means "one per core".
pub fn threads_or_cores(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compiled-in defaults, before validation.
    fn defaults() -> Config {
        Figment::from(Toml::string(DEFAULT_TOML)).extract().unwrap()
    }

    #[test]
    fn compiled_in_defaults_are_valid_and_run_a_local_node() {
        let config = defaults();
        config.validate().unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.storage.data_dir, PathBuf::from("./data"));
        assert_eq!(config.streams.limit, 3);
        assert_eq!(config.heartbeat_lease(), Duration::from_secs(40));
        assert_eq!(
            config.streams.subscription_lease,
            Duration::from_secs(4 * 3600)
        );
        assert_eq!(config.cluster.shards, 1024);
        assert!(!config.dev.manual_clock);
        assert_eq!(config.store.backend, StoreBackend::Embedded);
        assert_eq!(config.events.sink, EventSinkKind::File);
        assert_eq!(config.progress.flush_interval, Duration::from_secs(30));
        assert_eq!(config.catalog.kind, CatalogKind::None);
    }

    #[test]
    fn rendered_config_parses_back() {
        let config = defaults();
        let again: Config = Figment::from(Toml::string(&config.to_toml()))
            .extract()
            .unwrap();
        assert_eq!(again.to_toml(), config.to_toml());
    }

    #[test]
    fn the_cluster_address_advertised_defaults_to_the_bound_one() {
        let bound: SocketAddr = "0.0.0.0:7080".parse().unwrap();
        let mut config = defaults();
        config.cluster.advertise = String::new();
        assert_eq!(config.cluster_advertised(bound), "0.0.0.0:7080");
        config.cluster.advertise = "playstate-1.playstate-cluster".into();
        assert_eq!(
            config.cluster_advertised(bound),
            "playstate-1.playstate-cluster:7080"
        );
        config.cluster.advertise = "10.0.0.2:9000".into();
        assert_eq!(config.cluster_advertised(bound), "10.0.0.2:9000");
    }

    #[test]
    fn a_player_listener_beyond_loopback_needs_token_verification_or_a_gateway() {
        let mut config = defaults();
        config.server.listen = "0.0.0.0:8080".parse().unwrap();
        let error = config.validate().unwrap_err().to_string();
        for key in [
            "auth.jwt_hs256_secret",
            "auth.jwt_rs256_public_key_file",
            "auth.trust_upstream",
        ] {
            assert!(error.contains(key), "{error}");
        }
        config.auth.trust_upstream = true;
        config.validate().unwrap();
        config.auth.trust_upstream = false;
        config.auth.jwt_hs256_secret = "s".into();
        config.validate().unwrap();
        config.auth.jwt_hs256_secret = String::new();
        config.auth.jwt_rs256_public_key_file = "/keys/jwt.pem".into();
        config.validate().unwrap();
        config.auth.jwt_rs256_public_key_file = PathBuf::new();
        config.server.listen = "[::1]:8080".parse().unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn a_wildcard_cluster_listener_needs_an_advertised_address() {
        let mut config = defaults();
        config.cluster.listen = "0.0.0.0:7080".parse().unwrap();
        config.cluster.secret = "s".into();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("cluster.advertise"), "{error}");
        config.cluster.advertise = "node-1".into();
        config.validate().unwrap();
    }
}
