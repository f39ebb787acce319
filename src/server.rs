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
    ShardId,
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

/// Starts onboarding (consumer and refresher) when a TMDB token is configured, and
/// returns the new-content queue for the publish utility when it is enabled.
async fn start_trailers(
    config: &Config,
    sdk: Option<&aws_config::SdkConfig>,
    store: Arc<dyn TrailerStore>,
    cache: Arc<dyn TrailerCache>,
    clock: Clock,
    metrics: Arc<Metrics>,
) -> io::Result<Option<(aws_sdk_sqs::Client, String)>> {
    let trailers = &config.trailers;
    let onboarding_on = !trailers.tmdb_token.is_empty();
    if !onboarding_on {
        tracing::info!(
            "trailer onboarding is off: trailers.tmdb_token is empty (reads still work)"
        );
    }
    if !onboarding_on && !config.dev.endpoints {
        return Ok(None);
    }
    let Some(sdk) = sdk else {
        tracing::error!(
            "no AWS configuration for the new-content queue: trailer onboarding is off"
        );
        return Ok(None);
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
            return Ok(None);
        }
    };
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
        let dead_letters = Some(queue.dead_letter_queue_url.clone()).filter(|u| !u.is_empty());
        tokio::spawn(onboarding.clone().consume(
            sqs.clone(),
            queue_url.clone(),
            dead_letters,
            trailers.poll_wait,
        ));
        tokio::spawn(refresher::refresh_forever(
            onboarding,
            trailers.refresh_after,
            trailers.refresh_per_second,
        ));
        tracing::info!(queue = %queue_url, "trailer onboarding is on");
    }
    Ok(Some((sqs, queue_url)))
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
    pub player_addr: SocketAddr,
    pub cluster_addr: SocketAddr,
}

impl NodeHandle {
    pub fn stop(&self) {
        self.stop.send_replace(Some(StopReason::Asked("stop")));
    }
}

/// A node built and listening, not yet serving: `run_until_stopped` serves it.
pub struct Node {
    config: Config,
    handle: NodeHandle,
    stopping: tokio::sync::watch::Receiver<Option<StopReason>>,
    player: actix_web::dev::Server,
    cluster_server: actix_web::dev::Server,
    cluster: Cluster,
    registry: Registry,
    outbox: Outbox,
    services: Arc<UserServices>,
    marker: Arc<UnflushedMarker>,
    workers: Vec<tokio::task::JoinHandle<()>>,
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
        let signal = shutdown_signal().await;
        handle.stop.send_replace(Some(StopReason::Asked(signal)));
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
        let publisher = start_trailers(
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
        let handle = NodeHandle {
            stop,
            player_addr,
            cluster_addr,
        };
        let mut workers = vec![
            actix_rt::spawn(cluster.clone().watch_metrics(metrics.clone())),
            actix_rt::spawn(crate::cluster::lease::keep_lease(
                cluster.clone(),
                metrics.clone(),
            )),
            actix_rt::spawn(users.clone().send_backups(config.cluster.backup_interval)),
            actix_rt::spawn(crate::cluster::controller::run(
                cluster.clone(),
                metrics.clone(),
            )),
            actix_rt::spawn(follow_shard_table(
                users,
                cluster.clone(),
                metrics,
                handle.stop.clone(),
            )),
        ];
        workers.push(actix_rt::spawn(form_cluster(
            cluster.clone(),
            config.cluster.join.clone(),
            handle.stop.clone(),
        )));
        Ok(Node {
            config,
            handle,
            stopping,
            player,
            cluster_server,
            cluster,
            registry,
            outbox,
            services,
            marker,
            workers,
        })
    }

    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Serves until asked to stop, then stops gracefully: a member of a multi-node
    /// cluster first hands all its shards to the others.
    pub async fn run_until_stopped(mut self) -> io::Result<()> {
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
                drain(&self.cluster, self.config.cluster.drain_timeout).await;
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
        tracing::info!("no new connections, finishing in-flight requests");
        player.stop(true).await;
        let _ = player_task.await;
        tracing::info!(
            actors = self.registry.len(),
            "HTTP stopped; flushing and stopping user actors"
        );
        self.registry.shutdown(deadline).await;
        tracing::info!(events = self.outbox.depth(), "delivering queued events");
        self.outbox.shutdown(deadline).await;
        for worker in &self.workers {
            worker.abort();
        }
        self.cluster.shutdown().await;
        cluster_http.stop(true).await;
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
    if let Err(e) = cluster.drain(me).await {
        tracing::error!(error = %e, "cannot start draining; stopping with the shards");
        return;
    }
    let started = Instant::now();
    let router = &cluster.replica().router;
    let mut changes = router.subscribe();
    loop {
        let table = router.table();
        let left = table.owned_by(me).count();
        if left == 0 {
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "drained: this node owns no shards"
            );
            return;
        }
        let wait = timeout.saturating_sub(started.elapsed());
        if wait.is_zero() {
            tracing::error!(
                shards = left,
                "drain timed out; stopping with shards still owned"
            );
            return;
        }
        router.changed_within(&mut changes, wait).await;
    }
}

/// Keeps the actors in step with the shard table: serves shards this node gained (or
/// kept after a move was given up), takes over the ones that came by failover from its
/// backup copy, lets go of the ones it lost, and notices its removal.
async fn follow_shard_table(
    users: Users,
    cluster: Cluster,
    metrics: Arc<Metrics>,
    stop: tokio::sync::watch::Sender<Option<StopReason>>,
) {
    let router = users.router().clone();
    let registry = users.registry().clone();
    let me = router.local();
    let mut owned: Vec<bool> = Vec::new();
    let mut incoming: Vec<bool> = Vec::new();
    let mut changes = router.subscribe();
    loop {
        let table = router.table();
        let shards = table.shards() as usize;
        owned.resize(shards, false);
        incoming.resize(shards, false);
        let mut resumed = false;
        let mut count = 0;
        let mut moving = 0;
        let mut failed_over = Vec::new();
        for index in 0..shards {
            let shard = ShardId(index as u32);
            let owner = table.owner(shard).filter(|o| o.node == me);
            let moving_in = table.moving_to(shard) == Some(me);
            moving += i64::from(table.is_moving(shard));
            if let Some(owner) = owner {
                count += 1;
                let gained = !owned[index];
                if gained
                    && owner.by_failover
                    && let Some(backup) = users.backups().take_for(shard, owner.epoch)
                {
                    // Served once its backed-up state is in place, below.
                    failed_over.push((shard, backup));
                    owned[index] = true;
                    incoming[index] = moving_in;
                    continue;
                }
                let move_given_up = !table.is_moving(shard);
                if (gained || move_given_up) && !registry.is_serving(shard) {
                    registry.serve(shard);
                    resumed = true;
                }
            } else if owned[index] && registry.is_serving(shard) {
                // Lost without a handoff: it moved by failover while this node was cut
                // off, and its new owner holds the backed-up state.
                tracing::warn!(
                    shard = index,
                    "a shard of this node moved by failover; dropping its users' state here"
                );
                registry.discard(shard);
            } else if owned[index] || (incoming[index] && !moving_in) {
                registry.release(shard);
            }
            owned[index] = owner.is_some();
            incoming[index] = moving_in;
        }
        if !failed_over.is_empty() {
            let shards: Vec<ShardId> = failed_over.iter().map(|(shard, _)| *shard).collect();
            users.recover_shards(failed_over).await;
            for shard in shards {
                registry.serve(shard);
            }
            resumed = true;
        }
        metrics.cluster.shards_owned.set(count);
        metrics.cluster.shards.set(shards as i64);
        metrics.cluster.shards_moving.set(moving);
        metrics
            .cluster
            .backup_users
            .set(users.backups().prune(&table, me) as i64);
        let state = cluster.state();
        for member_state in ["active", "draining", "leaving"] {
            let n = state
                .members
                .values()
                .filter(|m| m.state.as_str() == member_state)
                .count();
            metrics.cluster.members(member_state).set(n as i64);
        }
        if state.removed.contains(&me) {
            stop.send_replace(Some(StopReason::Removed));
        }
        if resumed {
            router.nudge();
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; only SIGINT stops this node");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}
