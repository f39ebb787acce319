//! Builds a node from its configuration, serves it, and shuts it down gracefully.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::HeaderName;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

use std::time::Duration;

use crate::actors::{ActorSettings, DirtyBudget, Flusher, Registry, UnflushedMarker, UserServices};
use crate::api::auth::JwtVerifier;
use crate::api::limits::HttpLimits;
use crate::api::trailers::TrailersApi;
use crate::api::{self, AppState, DevRoutes};
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::cluster::{
    Cluster, ClusterError, ClusterSettings, NodeAddr, NodeId, ReplicatedTrailerCache, Router,
};
use crate::config::{CatalogKind, Config, EventSinkKind, StoreBackend, threads_or_cores};
use crate::domain::StreamPolicy;
use crate::error_chain::DisplayChain;
use crate::events::file::FileSink;
use crate::events::sqs::SqsSink;
use crate::events::sqs::resolve_queue;
use crate::events::{EventSink, Outbox};
use crate::store::dynamo::DynamoStore;
use crate::store::embedded::EmbeddedStore;
use crate::store::{MeteredStore, TrailerStore, UserStore};
use crate::telemetry::Metrics;
use crate::trailers::{Onboarding, Resolver, TrailerCache, refresher};
use crate::users::Users;
use crate::worker::{MustExit, Supervisor, WorkerError, WorkerStatuses};

/// Keeps the cause whole, for `main` to log with its chain.
fn startup_error(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::other(cause)
}

/// The configured store adapter, as both of the ports it serves.
async fn open_store(
    config: &Config,
    sdk: Option<&aws_config::SdkConfig>,
) -> io::Result<(Arc<dyn UserStore>, Arc<dyn TrailerStore>)> {
    Ok(match (config.store.backend, sdk) {
        (StoreBackend::Dynamodb, Some(sdk)) => {
            let dynamo = &config.store.dynamodb;
            let store = Arc::new(
                DynamoStore::connect(sdk, &dynamo.table, dynamo.create_table)
                    .await
                    .map_err(startup_error)?,
            );
            (store.clone(), store)
        }
        _ => {
            let path = config.storage.data_dir.join("playstate.redb");
            let store = Arc::new(EmbeddedStore::open(&path).map_err(startup_error)?);
            (store.clone(), store)
        }
    })
}

/// The trailer onboarding workers, started with the node's other workers.
struct TrailerWorkers {
    onboarding: Arc<Onboarding>,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    dead_letters: Option<String>,
    poll_wait: Duration,
    refresh_after: Duration,
    refresh_per_second: u32,
}

/// The trailer publisher's queue (when the publish utility is enabled) and, when a TMDB
/// token is configured, the onboarding workers (consumer and refresher) to start.
type Trailers = (
    Option<(aws_sdk_sqs::Client, String)>,
    Option<TrailerWorkers>,
);

/// Sets up onboarding when a TMDB token is configured, and the new-content queue for the
/// publish utility when it is enabled.
async fn open_trailers(
    config: &Config,
    sdk: Option<&aws_config::SdkConfig>,
    store: Arc<dyn TrailerStore>,
    cache: Arc<dyn TrailerCache>,
    clock: Clock,
    metrics: Arc<Metrics>,
) -> io::Result<Trailers> {
    let trailers = &config.trailers;
    let onboarding_on = !trailers.tmdb_token.is_empty();
    if !onboarding_on {
        tracing::info!(
            "trailer onboarding is off: trailers.tmdb_token is empty (reads still work)"
        );
    }
    if !onboarding_on && !config.dev.endpoints {
        return Ok((None, None));
    }
    let Some(sdk) = sdk else {
        tracing::error!(
            "no AWS configuration for the new-content queue: trailer onboarding is off"
        );
        return Ok((None, None));
    };
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let queue = &trailers.queue;
    let queue_url = match resolve_queue(
        &sqs,
        &queue.queue_url,
        &queue.queue_name,
        queue.create_queue,
    )
    .await
    {
        Ok(url) => url,
        Err(e) => {
            tracing::error!(error = %DisplayChain(&e), "new-content queue unavailable: trailer onboarding is off");
            return Ok((None, None));
        }
    };
    let mut workers = None;
    if onboarding_on {
        let resolver = Resolver::new(
            &trailers.tmdb_base_url,
            &trailers.tmdb_token,
            trailers.request_timeout,
            trailers.attempts,
            metrics.clone(),
        )
        .map_err(startup_error)?;
        let onboarding = Arc::new(Onboarding {
            resolver,
            cache,
            store,
            prefix: trailers.content_url_prefix.clone(),
            clock,
            metrics,
        });
        workers = Some(TrailerWorkers {
            onboarding,
            sqs: sqs.clone(),
            queue_url: queue_url.clone(),
            dead_letters: Some(queue.dead_letter_queue_url.clone()).filter(|u| !u.is_empty()),
            poll_wait: trailers.poll_wait,
            refresh_after: trailers.refresh_after,
            refresh_per_second: trailers.refresh_per_second,
        });
        tracing::info!(queue = %queue_url, "trailer onboarding is on");
    }
    Ok((Some((sqs, queue_url)), workers))
}

async fn open_sink(
    config: &Config,
    sdk: Option<&aws_config::SdkConfig>,
) -> io::Result<Arc<dyn EventSink>> {
    Ok(match (config.events.sink, sdk) {
        (EventSinkKind::Sqs, Some(sdk)) => {
            let sqs = &config.events.sqs;
            Arc::new(
                SqsSink::connect(sdk, &sqs.queue_url, &sqs.queue_name, sqs.create_queue)
                    .await
                    .map_err(startup_error)?,
            )
        }
        _ => Arc::new(FileSink::new(
            config.storage.data_dir.join(&config.events.file),
        )),
    })
}

fn jwt_verifier(config: &Config) -> io::Result<Option<JwtVerifier>> {
    let auth = &config.auth;
    if !auth.jwt_hs256_secret.is_empty() {
        return Ok(Some(JwtVerifier::hs256(&auth.jwt_hs256_secret)));
    }
    if auth.jwt_rs256_public_key_file.as_os_str().is_empty() {
        return Ok(None);
    }
    let pem = std::fs::read(&auth.jwt_rs256_public_key_file).map_err(|e| {
        startup_error(format!(
            "auth.jwt_rs256_public_key_file {}: {e}",
            auth.jwt_rs256_public_key_file.display()
        ))
    })?;
    JwtVerifier::rs256_pem(&pem).map(Some).map_err(|e| {
        startup_error(format!(
            "auth.jwt_rs256_public_key_file: {}",
            DisplayChain(&e)
        ))
    })
}

fn stream_policy(config: &Config) -> StreamPolicy {
    let streams = &config.streams;
    StreamPolicy {
        default_limit: streams.limit,
        plans: streams
            .plans
            .iter()
            .map(|(name, limit)| (name.as_str().into(), *limit))
            .collect::<HashMap<_, _>>(),
        heartbeat_lease: config.heartbeat_lease().into(),
        subscription_lease: streams.subscription_lease.into(),
    }
}

/// Why a node stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// SIGTERM, SIGINT, or `NodeHandle::stop`: a planned stop (drains first in a cluster).
    Asked(&'static str),
    /// The cluster removed this node (`cluster leave`): it has no shards left.
    Removed,
}

/// Asks a running node to stop, as SIGTERM would.
#[derive(Clone)]
pub struct NodeHandle {
    stop: tokio::sync::watch::Sender<Option<StopReason>>,
    /// Set by a second request to stop: no drain, no waiting on the cluster, only a flush.
    hurry: tokio::sync::watch::Sender<bool>,
    pub player_addr: SocketAddr,
    pub cluster_addr: SocketAddr,
}

impl NodeHandle {
    pub fn stop(&self) {
        self.stop_because("stop");
    }

    fn stop_because(&self, signal: &'static str) {
        self.stop.send_if_modified(|reason| {
            let first = reason.is_none();
            if first {
                *reason = Some(StopReason::Asked(signal));
            }
            first
        });
    }

    /// Stops at once: what is being drained stays (its backups fail it over), dirty
    /// progress is still flushed and undelivered events spooled.
    pub fn stop_now(&self) {
        self.stop_because("stop");
        self.hurry.send_replace(true);
    }
}

/// A node built and listening, not yet serving: `run_until_stopped` serves it.
pub struct Node {
    config: Config,
    handle: NodeHandle,
    stopping: tokio::sync::watch::Receiver<Option<StopReason>>,
    hurry: tokio::sync::watch::Receiver<bool>,
    player: actix_web::dev::Server,
    cluster_server: actix_web::dev::Server,
    cluster: Cluster,
    registry: Registry,
    outbox: Outbox,
    services: Arc<UserServices>,
    marker: Arc<UnflushedMarker>,
    metrics: Arc<Metrics>,
    users: Users,
    trailer_workers: Option<TrailerWorkers>,
    workers: WorkerStatuses,
}

fn bind(addr: SocketAddr, what: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen for {what} on {addr}: {e}")))
}

/// Runs a node until SIGTERM or SIGINT, then drains it. Must run inside an actix `System`.
pub async fn run(config: Config) -> io::Result<()> {
    let node = Node::build(config).await?;
    let handle = node.handle();
    actix_rt::spawn(async move {
        let mut signals = StopSignals::watch();
        let signal = signals.next().await;
        handle.stop_because(signal);
        let again = signals.next().await;
        tracing::warn!(
            signal = again,
            "asked again: stopping now (no drain; dirty progress is still flushed)"
        );
        handle.stop_now();
    });
    node.run_until_stopped().await
}

impl Node {
    /// Opens storage, binds both listeners and starts Raft; serves nothing until run.
    pub async fn build(config: Config) -> io::Result<Node> {
        std::fs::create_dir_all(&config.storage.data_dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot create data dir {}: {e}",
                    config.storage.data_dir.display()
                ),
            )
        })?;
        let metrics = Arc::new(Metrics::new());
        let clock = if config.dev.manual_clock {
            tracing::warn!("dev.manual_clock is on: time only moves via POST /dev/clock/advance");
            Clock::manual()
        } else {
            Clock::System
        };
        let needs_aws = config.store.backend == StoreBackend::Dynamodb
            || config.events.sink == EventSinkKind::Sqs
            || !config.trailers.tmdb_token.is_empty()
            || config.dev.endpoints;
        let sdk = if needs_aws {
            Some(crate::aws::sdk_config(&config.aws).await)
        } else {
            None
        };
        let (user_store, trailer_store) = open_store(&config, sdk.as_ref()).await?;
        let store: Arc<dyn UserStore> = Arc::new(MeteredStore::new(user_store, metrics.clone()));

        let player_listener = bind(config.server.listen, "players")?;
        let cluster_listener = bind(config.cluster.listen, "the cluster")?;
        let player_addr = player_listener.local_addr()?;
        let cluster_addr = cluster_listener.local_addr()?;
        let advertised = config.cluster_advertised(cluster_addr);
        let local = NodeId(config.cluster.node_id);
        let router = Router::new(local, config.cluster.shards);
        let cluster = Cluster::open(
            cluster_settings(&config),
            &config.storage.data_dir,
            NodeAddr {
                player_addr: player_addr.to_string(),
                cluster_addr: advertised.clone(),
            },
            router.clone(),
            metrics.clone(),
        )
        .await
        .map_err(startup_error)?;
        let trailer_cache: Arc<dyn TrailerCache> =
            Arc::new(ReplicatedTrailerCache::new(cluster.clone()));
        let (publisher, trailer_workers) = open_trailers(
            &config,
            sdk.as_ref(),
            trailer_store,
            trailer_cache.clone(),
            clock.clone(),
            metrics.clone(),
        )
        .await?;
        let sink = open_sink(&config, sdk.as_ref()).await?;
        tracing::info!(
            store = store.backend(),
            events = sink.name(),
            "storage ready"
        );
        let outbox = Outbox::start(
            sink,
            config.events.outbox_capacity,
            config.storage.data_dir.join("outbox.spool"),
            metrics.clone(),
        );
        let marker = UnflushedMarker::open(&config.storage.data_dir, &metrics)?;
        let services = Arc::new(UserServices {
            store: store.clone(),
            flusher: Flusher::start(store.clone(), metrics.clone()),
            outbox: outbox.clone(),
            dirty: DirtyBudget::new(config.progress.max_dirty_entries, metrics.clone()),
            flush_interval: config.progress.flush_interval,
            clock: clock.clone(),
            metrics: metrics.clone(),
            lease: cluster.lease().clone(),
            backup_feed: Arc::default(),
            unflushed: marker.clone(),
        });
        marker.start({
            let services = Arc::downgrade(&services);
            move || services.upgrade().map_or(0, |services| services.at_risk())
        });
        let catalog = match config.catalog.kind {
            CatalogKind::None => Catalog::Open,
            CatalogKind::Http => Catalog::http(
                &config.catalog.base_url,
                config.catalog.timeout,
                config.catalog.cache_ttl,
            )
            .map_err(startup_error)?,
        };
        let jwt = jwt_verifier(&config)?;
        let actor_threads = threads_or_cores(config.actors.threads);
        let registry = Registry::start(
            ActorSettings {
                threads: actor_threads,
                idle_timeout: config.actors.idle_timeout,
                tick: config.actors.tick,
                call_timeout: config.actors.call_timeout,
                host_on_http_workers: config.actors.host_on_http_workers,
                shards: config.cluster.shards,
            },
            services.clone(),
        );
        let users = Users::new(
            router.clone(),
            registry.clone(),
            cluster.peers().clone(),
            stream_policy(&config),
            metrics.clone(),
            config.cluster.handoff_wait,
        );
        let plan_header = if config.streams.trust_plan_header {
            Some(
                HeaderName::try_from(config.streams.plan_header.as_str()).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("streams.plan_header: {e}"),
                    )
                })?,
            )
        } else {
            None
        };
        crate::api::limits::fit_open_file_limit(config.server.max_connections);
        let limits = HttpLimits::new(
            config.server.max_connections,
            config.server.body_timeout,
            &metrics,
        );
        let connections = limits.clone();
        let workers = WorkerStatuses::default();
        let state = web::Data::new(AppState {
            users,
            metrics: metrics.clone(),
            clock,
            max_body_bytes: config.server.max_body_bytes,
            plan_header,
            request_log: config.log.requests,
            catalog,
            max_progress_seconds: config.progress.max_seconds,
            jwt,
            store,
            trailers: TrailersApi {
                cache: trailer_cache,
                prefix: config.trailers.content_url_prefix.clone(),
                publisher,
            },
            cluster: cluster.clone(),
            limits,
            workers: workers.clone(),
        });

        let max_body = config.server.max_body_bytes;
        let dev_routes = DevRoutes {
            clock: config.dev.manual_clock,
            publish: config.dev.endpoints,
        };
        let http_workers = threads_or_cores(config.server.workers);
        let player_state = state.clone();
        let users = state.users.clone();
        let player = HttpServer::new(move || {
            // Runs on each worker thread as it starts.
            Registry::host_actors_on_this_thread();
            App::new()
                .app_data(player_state.clone())
                .app_data(web::PayloadConfig::new(max_body))
                .wrap(from_fn(api::middleware::observe))
                .configure(|cfg| api::routes(cfg, dev_routes))
                .default_service(web::to(api::ops::not_found))
        })
        .workers(http_workers)
        .client_request_timeout(config.server.header_timeout)
        .on_connect(move |_, extensions| connections.on_connect(extensions))
        .disable_signals()
        .shutdown_timeout(config.server.shutdown_timeout.as_secs().max(1))
        .listen(player_listener)?
        .run();
        let cluster_server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                // Raft appends and handoff transfers are far larger than player requests.
                .app_data(web::JsonConfig::default().limit(CLUSTER_BODY_LIMIT))
                .configure(api::cluster::routes)
                .default_service(web::to(api::ops::not_found))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(config.server.shutdown_timeout.as_secs().max(1))
        .listen(cluster_listener)?
        .run();

        tracing::info!(
            addr = %player_addr,
            cluster_addr = %cluster_addr,
            advertised = %advertised,
            node_id = local.0,
            http_workers,
            actor_threads,
            data_dir = %config.storage.data_dir.display(),
            stream_limit = config.streams.limit,
            "listening"
        );
        let (stop, stopping) = tokio::sync::watch::channel(None);
        let (hurry, hurried) = tokio::sync::watch::channel(false);
        let handle = NodeHandle {
            stop,
            hurry,
            player_addr,
            cluster_addr,
        };
        Ok(Node {
            config,
            handle,
            stopping,
            hurry: hurried,
            player,
            cluster_server,
            cluster,
            registry,
            outbox,
            services,
            marker,
            metrics,
            users,
            trailer_workers,
            workers,
        })
    }

    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Serves until asked to stop, then stops gracefully: a member of a multi-node
    /// cluster first hands all its shards to the others.
    pub async fn run_until_stopped(mut self) -> io::Result<()> {
        let workers = self.start_workers();
        let player = self.player.handle();
        let cluster_http = self.cluster_server.handle();
        let player_task = actix_rt::spawn(self.player);
        let cluster_task = actix_rt::spawn(self.cluster_server);
        let reason = loop {
            if let Some(reason) = *self.stopping.borrow_and_update() {
                break reason;
            }
            if self.stopping.changed().await.is_err() {
                break StopReason::Asked("handle dropped");
            }
        };
        let deadline = self.config.server.shutdown_timeout;
        let mut failed = None;
        match reason {
            StopReason::Asked(signal) => {
                tracing::info!(signal, "stopping");
                let mut hurry = self.hurry.clone();
                tokio::select! {
                    () = drain(&self.cluster, self.config.cluster.drain_timeout) => {}
                    _ = hurry.wait_for(|hurry| *hurry) => {
                        tracing::warn!("drain given up: stopping with this node's shards still owned; their backups fail them over");
                    }
                }
            }
            StopReason::Removed if self.cluster.has_formed() => {
                tracing::info!("this node was removed from the cluster: stopping");
                // Until the others have committed the membership without this node, they
                // may still need its vote.
                if !self.cluster.wait_out_of_membership(deadline).await {
                    tracing::warn!("the others did not confirm the membership change in time");
                }
            }
            // It never served in this run: its id is gone, or it could not join.
            StopReason::Removed => {
                failed = Some(
                    self.cluster
                        .formation_error()
                        .unwrap_or(ClusterError::Removed(self.cluster.id().0)),
                );
            }
        }
        tracing::info!("moving user actors off the HTTP workers");
        self.registry.move_actors_off_workers(deadline).await;
        let hurried = *self.hurry.borrow();
        tracing::info!("no new connections, finishing in-flight requests");
        player.stop(!hurried).await;
        let _ = player_task.await;
        tracing::info!(
            actors = self.registry.len(),
            "HTTP stopped; flushing and stopping user actors"
        );
        self.registry.shutdown(deadline).await;
        tracing::info!(events = self.outbox.depth(), "delivering queued events");
        // In a hurry, what the sink does not take at once is spooled for the next start.
        let delivery = if *self.hurry.borrow() {
            Duration::from_millis(500).min(deadline)
        } else {
            deadline
        };
        self.outbox.shutdown(delivery).await;
        workers.stop(deadline).await;
        self.cluster.shutdown().await;
        cluster_http.stop(!*self.hurry.borrow()).await;
        let _ = cluster_task.await;
        // Whatever is still dirty was counted as lost by `registry.shutdown`.
        let lost_in_this_run = self.services.metrics.progress_lost.get() - self.marker.inherited();
        self.marker.finish(lost_in_this_run);
        match failed {
            Some(e) => {
                tracing::error!(error = %e, "stopped: the node could not take its place in the cluster");
                Err(io::Error::other(e.to_string()))
            }
            None => {
                tracing::info!("stopped");
                Ok(())
            }
        }
    }
}

impl Node {
    /// Starts every background worker of the node under one supervisor.
    fn start_workers(&mut self) -> Supervisor {
        let mut workers = Supervisor::new(self.metrics.clone(), self.workers.clone());
        let (cluster, metrics) = (self.cluster.clone(), self.metrics.clone());
        workers.spawn("raft-metrics", move |exit| {
            until_exit(cluster.clone().watch_metrics(metrics.clone()), exit)
        });
        let (cluster, metrics) = (self.cluster.clone(), self.metrics.clone());
        workers.spawn("lease-keeper", move |exit| {
            until_exit(
                crate::cluster::lease::keep_lease(cluster.clone(), metrics.clone()),
                exit,
            )
        });
        let (users, interval) = (self.users.clone(), self.config.cluster.backup_interval);
        workers.spawn("backup-sender", move |exit| {
            until_exit(users.clone().send_backups(interval), exit)
        });
        let (cluster, metrics) = (self.cluster.clone(), self.metrics.clone());
        workers.spawn("controller", move |exit| {
            until_exit(
                crate::cluster::controller::run(cluster.clone(), metrics.clone()),
                exit,
            )
        });
        let (users, cluster, metrics, stop) = (
            self.users.clone(),
            self.cluster.clone(),
            self.metrics.clone(),
            self.handle.stop.clone(),
        );
        workers.spawn("shard-table-follower", move |exit| {
            let stop = stop.clone();
            until_exit(
                crate::users::follow_shard_table(
                    users.clone(),
                    cluster.clone(),
                    metrics.clone(),
                    move || {
                        stop.send_replace(Some(StopReason::Removed));
                    },
                ),
                exit,
            )
        });
        let (cluster, join, stop) = (
            self.cluster.clone(),
            self.config.cluster.join.clone(),
            self.handle.stop.clone(),
        );
        workers.spawn("cluster-formation", move |exit| {
            until_exit(
                form_cluster(cluster.clone(), join.clone(), stop.clone()),
                exit,
            )
        });
        if let Some(trailers) = self.trailer_workers.take() {
            let trailers = Arc::new(trailers);
            let consumer = trailers.clone();
            workers.spawn("trailer-consumer", move |exit| {
                let t = consumer.clone();
                until_exit(
                    t.onboarding.clone().consume(
                        t.sqs.clone(),
                        t.queue_url.clone(),
                        t.dead_letters.clone(),
                        t.poll_wait,
                    ),
                    exit,
                )
            });
            workers.spawn("trailer-refresher", move |exit| {
                until_exit(
                    refresher::refresh_forever(
                        trailers.onboarding.clone(),
                        trailers.refresh_after,
                        trailers.refresh_per_second,
                    ),
                    exit,
                )
            });
        }
        workers
    }
}

/// Runs a loop of the node's until it ends or the node asks its workers to exit. The
/// loops wait on timers, channels and RPCs, where stopping loses nothing, so the exit
/// drops the loop at the await it is at.
async fn until_exit(
    work: impl std::future::Future<Output = ()>,
    mut exit: MustExit,
) -> Result<(), WorkerError> {
    tokio::select! {
        () = work => {}
        () = exit.wait() => {}
    }
    Ok(())
}

/// Cluster-listener request bodies may be this large (Raft batches, handoffs).
const CLUSTER_BODY_LIMIT: usize = 64 * 1024 * 1024;

fn cluster_settings(config: &Config) -> ClusterSettings {
    let c = &config.cluster;
    ClusterSettings {
        node_id: NodeId(c.node_id),
        shards: c.shards,
        voters: c.voters,
        handoff_wait: c.handoff_wait,
        handoff_batch: c.handoff_batch,
        heartbeat_interval: c.heartbeat_interval,
        election_timeout: c.election_timeout,
        snapshot_every: c.snapshot_every,
        ownership_lease: c.ownership_lease,
        failover_after: c.failover_after,
        secret: c.secret.clone(),
        shared_store: config.shared_store(),
    }
}

/// Starts, joins or rejoins the cluster; a node that cannot (its id was removed) stops.
async fn form_cluster(
    cluster: Cluster,
    join: Vec<String>,
    stop: tokio::sync::watch::Sender<Option<StopReason>>,
) {
    if let Err(e) = cluster.form(&join).await {
        tracing::error!(error = %e, "cannot take a place in the cluster");
        cluster.set_formation_error(e);
        stop.send_replace(Some(StopReason::Removed));
    }
}

/// Hands this node's shards to the others before a planned stop, when there are others.
async fn drain(cluster: &Cluster, timeout: Duration) {
    let me = cluster.id();
    let state = cluster.state();
    let others = state
        .members
        .iter()
        .any(|(id, m)| *id != me && m.state == crate::cluster::MemberState::Active);
    let owns = state.shards.iter().any(|o| o.node == me);
    if !others || !owns || state.removed.contains(&me) {
        return;
    }
    tracing::info!("draining: handing this node's shards to the others");
    let started = Instant::now();
    // Marking the node draining is a Raft write, which waits for a quorum: without one
    // (the others down or cut off) it would wait for ever.
    match tokio::time::timeout(timeout, cluster.drain(me)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot start draining; stopping with the shards");
            return;
        }
        Err(_) => {
            tracing::error!(
                shards = state.shards.iter().filter(|o| o.node == me).count(),
                drain_timeout_ms = timeout.as_millis() as u64,
                "drain timed out before it could start: no Raft quorum took this node's draining state; stopping with its shards, whose backups fail them over"
            );
            return;
        }
    }
    let deadline = tokio::time::Instant::from_std(started + timeout);
    let drained = cluster
        .replica()
        .router
        .wait_for(|table| table.owned_by(me).count() == 0, deadline)
        .await;
    match drained {
        Some(_) => tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "drained: this node owns no shards"
        ),
        None => tracing::error!(
            shards = cluster.replica().router.table().owned_by(me).count(),
            "drain timed out; stopping with shards still owned"
        ),
    }
}

/// SIGTERM and SIGINT, each time they come (a second one hurries the stop).
enum StopSignals {
    Both {
        term: tokio::signal::unix::Signal,
        int: tokio::signal::unix::Signal,
    },
    /// The handlers could not be installed: Ctrl-C through tokio's own, as a last resort.
    CtrlC,
}

impl StopSignals {
    fn watch() -> StopSignals {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => StopSignals::Both { term, int },
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot watch SIGTERM; only SIGINT stops this node");
                StopSignals::CtrlC
            }
        }
    }

    async fn next(&mut self) -> &'static str {
        match self {
            StopSignals::Both { term, int } => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            StopSignals::CtrlC => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
}
