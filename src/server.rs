//! Builds a node from its configuration, serves it, and shuts it down gracefully.

use std::collections::HashMap;
use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::http::header::HeaderName;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::actors::{ActorSettings, DirtyBudget, Flusher, Registry, UserServices};
use crate::api::auth::JwtVerifier;
use crate::api::trailers::TrailersApi;
use crate::api::{self, AppState, DevRoutes};
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::cluster::{NodeId, Router, ShardTable};
use crate::config::{CatalogKind, Config, EventSinkKind, StoreBackend, threads_or_cores};
use crate::domain::ContentUrl;
use crate::domain::StreamPolicy;
use crate::events::file::FileSink;
use crate::events::sqs::SqsSink;
use crate::events::sqs::resolve_queue;
use crate::events::{EventSink, Outbox};
use crate::retry;
use crate::store::dynamo::DynamoStore;
use crate::store::embedded::EmbeddedStore;
use crate::store::{MeteredStore, TrailerStore, UserStore};
use crate::telemetry::Metrics;
use crate::trailers::{LocalTrailerCache, Onboarding, Resolver, TrailerCache, refresher};
use crate::users::Users;

fn startup_error(what: impl std::fmt::Display) -> io::Error {
    io::Error::other(what.to_string())
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

/// Fills the trailer cache from the store, retrying until the store answers.
async fn fill_trailer_cache(store: Arc<dyn TrailerStore>, cache: Arc<dyn TrailerCache>) {
    let mut attempt = 0;
    loop {
        match store.all_trailers().await {
            Ok(entries) => {
                let count = entries.len();
                for entry in entries {
                    if let Some(url) = ContentUrl::parse(&entry.url, "") {
                        cache.put(url.key(), entry);
                    }
                }
                tracing::info!(entries = count, "trailer cache filled from the store");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read trailers from the store yet");
                tokio::time::sleep(retry::backoff(
                    attempt,
                    Duration::from_millis(500),
                    Duration::from_secs(30),
                ))
                .await;
                attempt += 1;
            }
        }
    }
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
            tracing::error!(error = %e, "new-content queue unavailable: trailer onboarding is off");
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
    JwtVerifier::rs256_pem(&pem)
        .map(Some)
        .map_err(|e| startup_error(format!("auth.jwt_rs256_public_key_file: {e}")))
}

/// Records how much acknowledged progress is not yet stored, so that after a crash the
/// next start can say how much was lost. Written at most once a second, off the hot path,
/// and once more at exit with what this run lost, so a loss counted only in the metrics
/// of a process that is gone still shows after the restart.
struct UnflushedMarker {
    path: PathBuf,
    /// What the previous run left, already added to `progress_lost` at start.
    inherited: u64,
}

impl UnflushedMarker {
    /// Reads what the previous run left: non-zero means it crashed with that much unflushed.
    fn open(data_dir: &Path, metrics: &Metrics) -> UnflushedMarker {
        let path = data_dir.join("unflushed");
        let lost: u64 = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if lost > 0 {
            tracing::error!(
                entries = lost,
                "the previous run stopped without flushing; its unflushed progress is lost"
            );
            metrics.progress_lost.inc_by(lost);
        }
        let marker = UnflushedMarker {
            path,
            inherited: lost,
        };
        marker.record(0);
        marker
    }

    fn record(&self, unflushed: usize) {
        let tmp = self.path.with_extension("tmp");
        let written = std::fs::write(&tmp, unflushed.to_string())
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot record the unflushed count");
        }
    }
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

/// Runs a node until SIGTERM or SIGINT, then drains it. Must run inside an actix `System`.
pub async fn run(config: Config) -> io::Result<()> {
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
    let trailer_cache: Arc<dyn TrailerCache> = Arc::new(LocalTrailerCache::new(metrics.clone()));
    actix_rt::spawn(fill_trailer_cache(
        trailer_store.clone(),
        trailer_cache.clone(),
    ));
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
    let marker = Arc::new(UnflushedMarker::open(&config.storage.data_dir, &metrics));
    let services = Arc::new(UserServices {
        store: store.clone(),
        flusher: Flusher::start(store.clone(), metrics.clone()),
        outbox: outbox.clone(),
        dirty: DirtyBudget::new(config.progress.max_dirty_entries, metrics.clone()),
        flush_interval: config.progress.flush_interval,
        clock: clock.clone(),
        metrics: metrics.clone(),
    });
    let unflushed_watch = {
        let services = services.clone();
        let marker = marker.clone();
        actix_rt::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = services.dirty.used();
                if now != last {
                    marker.record(now);
                    last = now;
                }
            }
        })
    };
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
        },
        services.clone(),
    );
    let local = NodeId(config.cluster.node_id);
    let router = Router::new(local, ShardTable::single_node(config.cluster.shards, local));
    let users = Users::new(
        router,
        registry.clone(),
        stream_policy(&config),
        metrics.clone(),
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
    let state = web::Data::new(AppState {
        users,
        metrics,
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
    });

    let listener = TcpListener::bind(config.server.listen).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {}: {e}", config.server.listen),
        )
    })?;
    let addr = listener.local_addr()?;
    let max_body = config.server.max_body_bytes;
    let dev_routes = DevRoutes {
        clock: config.dev.manual_clock,
        publish: config.dev.endpoints,
    };
    let http_workers = threads_or_cores(config.server.workers);
    let server = HttpServer::new(move || {
        // Runs on each worker thread as it starts.
        Registry::host_actors_on_this_thread();
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(max_body))
            .wrap(from_fn(api::middleware::observe))
            .configure(|cfg| api::routes(cfg, dev_routes))
            .default_service(web::to(api::ops::not_found))
    })
    .workers(http_workers)
    .disable_signals()
    .shutdown_timeout(config.server.shutdown_timeout.as_secs().max(1))
    .listen(listener)?
    .run();

    tracing::info!(
        addr = %addr,
        node_id = local.0,
        http_workers,
        actor_threads,
        data_dir = %config.storage.data_dir.display(),
        stream_limit = config.streams.limit,
        "listening"
    );

    let handle = server.handle();
    let leaving = registry.clone();
    let move_deadline = config.server.shutdown_timeout;
    actix_rt::spawn(async move {
        let signal = shutdown_signal().await;
        tracing::info!(
            signal,
            "shutting down: moving user actors off the HTTP workers"
        );
        leaving.move_actors_off_workers(move_deadline).await;
        tracing::info!("no new connections, finishing in-flight requests");
        handle.stop(true).await;
    });
    server.await?;
    let deadline = config.server.shutdown_timeout;
    tracing::info!(
        actors = registry.len(),
        "HTTP stopped; flushing and stopping user actors"
    );
    registry.shutdown(deadline).await;
    tracing::info!(events = outbox.depth(), "delivering queued events");
    outbox.shutdown(deadline).await;
    unflushed_watch.abort();
    // Whatever is still dirty was counted as lost by `registry.shutdown`.
    let lost_in_this_run = services.metrics.progress_lost.get() - marker.inherited;
    marker.record(lost_in_this_run as usize);
    tracing::info!("stopped");
    Ok(())
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
