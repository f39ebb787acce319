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
use crate::api::{self, AppState};
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::cluster::{NodeId, Router, ShardTable};
use crate::config::{CatalogKind, Config, EventSinkKind, StoreBackend, threads_or_cores};
use crate::domain::StreamPolicy;
use crate::events::file::FileSink;
use crate::events::sqs::SqsSink;
use crate::events::{EventSink, Outbox};
use crate::store::dynamo::DynamoStore;
use crate::store::embedded::EmbeddedStore;
use crate::store::{MeteredStore, UserStore};
use crate::telemetry::Metrics;
use crate::users::Users;

fn startup_error(what: impl std::fmt::Display) -> io::Error {
    io::Error::other(what.to_string())
}

async fn open_store(
    config: &Config,
    sdk: Option<&aws_config::SdkConfig>,
) -> io::Result<Arc<dyn UserStore>> {
    Ok(match (config.store.backend, sdk) {
        (StoreBackend::Dynamodb, Some(sdk)) => {
            let dynamo = &config.store.dynamodb;
            Arc::new(
                DynamoStore::connect(sdk, &dynamo.table, dynamo.create_table)
                    .await
                    .map_err(startup_error)?,
            )
        }
        _ => {
            let path = config.storage.data_dir.join("playstate.redb");
            Arc::new(EmbeddedStore::open(&path).map_err(startup_error)?)
        }
    })
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
/// next start can say how much was lost. Written at most once a second, off the hot path.
struct UnflushedMarker {
    path: PathBuf,
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
        let marker = UnflushedMarker { path };
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
    let needs_aws =
        config.store.backend == StoreBackend::Dynamodb || config.events.sink == EventSinkKind::Sqs;
    let sdk = if needs_aws {
        Some(crate::aws::sdk_config(&config.aws).await)
    } else {
        None
    };
    let store: Arc<dyn UserStore> = Arc::new(MeteredStore::new(
        open_store(&config, sdk.as_ref()).await?,
        metrics.clone(),
    ));
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
    });

    let listener = TcpListener::bind(config.server.listen).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {}: {e}", config.server.listen),
        )
    })?;
    let addr = listener.local_addr()?;
    let max_body = config.server.max_body_bytes;
    let dev_endpoints = config.dev.manual_clock;
    let http_workers = threads_or_cores(config.server.workers);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(max_body))
            .wrap(from_fn(api::middleware::observe))
            .configure(|cfg| api::routes(cfg, dev_endpoints))
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
    actix_rt::spawn(async move {
        let signal = shutdown_signal().await;
        tracing::info!(
            signal,
            "shutting down: no new connections, finishing in-flight requests"
        );
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
    marker.record(services.dirty.used());
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
